"""Entry point: `accelerate launch jedi_train/run.py --config configs/<name>.yaml [key=value ...]`.

Stages: experts -> probe (the premise check: linear probes on the experts' frozen features) -> methods
(every method of `methods`, or the one `method=<name>`, from the same experts: JEDI, the self-training
control, ... see jedi_train/methods/) -> eval; `stage=all` runs them in order (`stage=jedi` is the older
name of `stage=methods`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by `accelerate launch jedi_train/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accelerate import Accelerator  # noqa: E402
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed  # noqa: E402

from jedi_train.bundle import write_run_bundles  # noqa: E402
from jedi_train.config import ConfigError, describe_keys, load_config, to_dict  # noqa: E402
from jedi_train.data import Streams, dataset_infos  # noqa: E402
from jedi_train.premise import premise_check  # noqa: E402
from jedi_train.report import evaluate_all, write_report  # noqa: E402
from jedi_train.train_experts import train_experts  # noqa: E402
from jedi_train.checkpoint import Interrupted, NonFiniteLoss  # noqa: E402
from jedi_train.methods import METHODS  # noqa: E402
from jedi_train.train_methods import method_path, train_method  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train JEDI (joint expert distillation) on WebDataset video shards.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (set in the YAML file or as key=value overrides):\n" + "\n".join(describe_keys())
        + "\n\nmethods (methods=a,b,... or method=<name>):\n"
        + "\n".join(f"  {name:<22}{entry.about}" for name, entry in METHODS.items()))
    parser.add_argument("--config", help="YAML experiment file under configs/ (its header says how to launch it)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint of each stage (finished experts and "
                             "methods are kept, the stage in progress resumes exactly where it stopped)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stage=methods method=fixmatch schedule.epochs=5 seed=1")
    return parser.parse_intermixed_args(argv)  # --resume may follow the overrides


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        run_dir = config.run_dir
        # some methods leave parts unused in some steps (a phase, a role): DDP must not wait for their gradients
        accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with="tensorboard",
                                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                                  project_config=ProjectConfiguration(project_dir=str(run_dir),
                                                                      logging_dir=str(run_dir / "tensorboard")))
        infos = dataset_infos(config)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    set_seed(config.seed)
    accelerator.init_trackers("jedi", config={k: v for k, v in _flat(to_dict(config)).items()})
    streams = Streams(config, infos, accelerator.process_index, accelerator.num_processes, accelerator.device)
    accelerator.print(f"run {config.name} | {accelerator.num_processes} process(es) on {accelerator.device} | "
                      f"loader {streams.kind} | datasets {', '.join(infos)}")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))
    try:
        summary = train(config, accelerator, streams, infos, args.resume)
    except (Interrupted, NonFiniteLoss) as stop:
        accelerator.print(f"{type(stop).__name__}: {stop}")
        accelerator.end_training()
        return 1
    if config.stage in ("methods", "jedi", "eval", "all") and accelerator.is_main_process:
        bundles = write_run_bundles(config, infos)  # what tools/predict.py, export.py and evaluate.py read
        print(f"wrote {len(bundles)} model bundles under {run_dir / 'bundles'}")
    if config.stage in ("eval", "all"):
        metrics, predictions = evaluate_all(config, accelerator, streams, infos)
        if accelerator.is_main_process:
            table = write_report(config, metrics, predictions, {"config": to_dict(config), "seed": config.seed,
                                                                "processes": accelerator.num_processes, **summary})
            print(table)
            print(f"\nwrote {run_dir / 'metrics.json'} and {run_dir / 'results.png'}")
    accelerator.end_training()
    return 0


def train(config, accelerator, streams, infos, resume: bool) -> dict:
    summary = {}
    if config.stage in ("experts", "all"):
        summary["experts_val"] = train_experts(config, accelerator, streams, infos, resume)
    if config.stage in ("probe", "all"):
        summary["premise_probe"] = premise_check(config, accelerator, streams, infos)
    if config.stage in ("methods", "jedi", "all"):
        for method in config.method_names:
            if resume and method_path(config, method).is_file():
                accelerator.print(f"[{method}] already trained ({method_path(config, method)}), kept")
                continue
            set_seed(config.seed)
            summary[f"{method}_val"] = train_method(config, accelerator, streams, infos, method, resume)
    return summary


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
