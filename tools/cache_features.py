"""Fill the zarr feature caches (pipeline/feature_cache.py) of every dataset of a run: per sample, each
student's penultimate feature and the teacher's logits, for the unlabelled split (cached-teacher mode)
and optionally labelled / val / test (teacher_init=fit, linear probes).

  accelerate launch tools/cache_features.py --config configs/synthetic_demo.yaml [key=value ...]
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tools/cache_features.py --config ...

All ranks fill one cache together: rank r writes chunks r, r + W, ... A killed run resumes where it
stopped (finished chunks are kept; the status array says which are missing). A cache built for other
weights, another manifest or clip view is refused unless --rebuild is given. With --probe it also caches
labelled and test and prints a frozen-backbone linear-probe table (top-1 on test, single clip).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by `accelerate launch tools/cache_features.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accelerate import Accelerator  # noqa: E402

from jedi_train.cached_teacher import refresh_teacher_cache  # noqa: E402
from jedi_train.premise import format_probe_table, linear_probes  # noqa: E402
from jedi_train.config import ConfigError, describe_keys, load_config  # noqa: E402
from jedi_train.data import Streams, dataset_infos  # noqa: E402
from jedi_train.methods.jedi import teacher_cache_dir  # noqa: E402
from jedi_train.train_methods import build_from_experts, load_selected  # noqa: E402
from pipeline.feature_cache import FeatureCacheError  # noqa: E402

SPLITS = ("unlabelled", "labelled", "val", "test")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (set in the YAML file or as key=value overrides):\n" + "\n".join(describe_keys()))
    parser.add_argument("--config", help="the run's YAML file under configs/ (datasets, clip, run name)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. name=demo seed=1")
    parser.add_argument("--weights", choices=("experts", "jedi", "self_training"), default="experts",
                        help="which checkpoint of the run produces the rows: the experts (students = experts, "
                             "teachers = experts, as at the first JEDI step) or a trained JEDI / control model "
                             "(<run_dir>/<arm>/best.pt, the weights selected for the first dataset's teacher). "
                             "Default: experts")
    parser.add_argument("--splits", default="unlabelled",
                        help=f"comma-separated splits to cache, from {', '.join(SPLITS)}. Default: unlabelled")
    parser.add_argument("--out", default="",
                        help="cache root (one <dataset>/<split>.zarr per dataset and split). Default: the directory "
                             "stage=jedi refreshes: jedi.teacher_cache_dir, else <run_dir>/feature_cache, "
                             "then /<jedi|self_training>")
    parser.add_argument("--rebuild", action="store_true",
                        help="replace caches built for other weights / manifest / clip view instead of refusing them")
    parser.add_argument("--chunk-rows", type=int, default=64, help="rows per zarr chunk (unit of work and resume)")
    parser.add_argument("--batch-size", type=int, default=0, help="clips per forward pass (0: data.eval_batch_size)")
    parser.add_argument("--probe", action="store_true",
                        help="also cache labelled and test, then fit and score linear probes on frozen features "
                             "(own backbone, and all backbones concatenated); writes <out>/linear_probe.json")
    parser.add_argument("--probe-steps", type=int, default=300, help="L-BFGS iterations of each probe")
    parser.add_argument("--probe-weight-decay", type=float, default=1e-3, help="L2 weight of each probe")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        print(f"--splits {args.splits!r}: allowed values are {', '.join(SPLITS)}", file=sys.stderr)
        return 2
    if args.probe:
        splits += [s for s in ("labelled", "test") if s not in splits]
    try:
        config = load_config(args.config, args.overrides)
        infos = dataset_infos(config)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    accelerator = Accelerator()
    variant = "self_training" if args.weights == "self_training" else "jedi"
    try:
        model = (build_from_experts(config, infos, variant) if args.weights == "experts"
                 else load_selected(config, infos, variant)[f"{next(iter(infos))}/teacher"])
    except (FileNotFoundError, ValueError) as error:
        print(f"checkpoint error: {error}", file=sys.stderr)
        return 2
    model.to(accelerator.device)
    out = Path(args.out) if args.out else teacher_cache_dir(config, variant)
    streams = Streams(config, infos, accelerator.process_index, accelerator.num_processes, accelerator.device)
    accelerator.print(f"caching {', '.join(splits)} of {', '.join(infos)} with {args.weights} weights into {out} "
                      f"({accelerator.num_processes} process(es) on {accelerator.device})")
    caches = {}
    try:
        for split in splits:
            caches[split] = refresh_teacher_cache(model, streams, accelerator, out, split=split,
                                                  chunk_rows=args.chunk_rows, rebuild=args.rebuild,
                                                  batch_size=args.batch_size or None)
            for name, cache in caches[split].items():
                print(f"rank {accelerator.process_index}: {name}/{split} wrote chunks {cache.filled_chunks}", flush=True)
    except FeatureCacheError as error:
        print(f"cache error: {error}", file=sys.stderr)
        return 1
    if args.probe and accelerator.is_main_process:
        results = linear_probes(model, caches["labelled"], caches["test"], args.probe_steps, args.probe_weight_decay)
        print("\n" + format_probe_table(results, args.weights))
        (out / "linear_probe.json").write_text(json.dumps({"weights": args.weights, "probe": results}, indent=2))
        print(f"wrote {out / 'linear_probe.json'}")
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
