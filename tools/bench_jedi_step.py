"""Step time of the full JEDI step against cached-teacher mode, for N = 2, 3, 4 datasets, side by side.

  python tools/bench_jedi_step.py                        # CPU: demo clips 3x8x32x32, x3d_tiny, 16+16 per dataset
  python tools/bench_jedi_step.py --foreign-grad-scale 0 # frozen teacher path: adds the cached_all mode

Modes (one model, steps interleaved full, cached, [cached_all], full, ... so load from other processes
hits every mode alike; the median of --steps steps after --warmup is reported):
  full        every clip, labelled and unlabelled, passes all N backbones (unlabelled without gradient)
  cached      jedi.teacher_cache: unlabelled clips pass only their own backbone; the teacher's logits are
              read by key from a real zarr feature cache (pipeline/feature_cache.py) inside the timed step
  cached_all  jedi.teacher_cache_labelled (only with --foreign-grad-scale 0): the foreign backbones'
              features of the labelled clips come from the cache too, so every clip passes one backbone
Backbone clip-passes per step: full 2BN (own) + BN(N-1) (foreign labelled) + BN(N-1) (foreign
unlabelled, no gradient); cached drops the last term; cached_all drops both, leaving 2BN, linear in N.
Writes <out>/bench_jedi_step.json and <out>/bench_jedi_step.png.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from jedi_train.cached_teacher import cached_foreign_features, cached_teacher_targets  # noqa: E402
from jedi_train.jedi import DistillSettings, JediModel  # noqa: E402
from jedi_train.models import build_backbone  # noqa: E402
from pipeline.contract import to_model_input  # noqa: E402
from pipeline.feature_cache import CacheIdentity, CacheLayout, create_cache  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="2,3,4", help="comma-separated N values. Default: 2,3,4")
    parser.add_argument("--batch", type=int, default=16, help="labelled and unlabelled clips per dataset. Default: 16")
    parser.add_argument("--classes", type=int, default=6, help="classes per dataset. Default: 6")
    parser.add_argument("--clip", default="3x8x32x32", help="clip shape CxTxHxW. Default: 3x8x32x32 (demo)")
    parser.add_argument("--backbone", default="x3d_tiny", help="backbone of every dataset. Default: x3d_tiny")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode and N. Default: 3")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode and N (median). Default: 10")
    parser.add_argument("--foreign-grad-scale", type=float, default=1.0,
                        help="gradient into foreign backbones from teacher losses (0: frozen path). Default: 1")
    parser.add_argument("--cache-rows", type=int, default=1024, help="rows of each dataset's zarr cache. Default: 1024")
    parser.add_argument("--zarr-reads", action="store_true",
                        help="read each step's teacher logits from the zarr files instead of the resident copy "
                             "that refresh_teacher_cache keeps by default")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda. Default: auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--out", default="runs/bench_jedi_step", help="folder for the JSON and PNG")
    return parser.parse_args(argv)


def make_caches(root: Path, names: list[str], feature_dim: int, rows: int, classes: int, generator: torch.Generator,
                resident: bool) -> dict:
    """A real zarr cache per dataset (features of every backbone + teacher logits), filled with random
    values (they do not change the cost); the unlabelled and the labelled lookups both read it."""
    caches = {}
    for name in names:
        keys = [f"{name}_{i:016x}" for i in range(rows)]
        cache = create_cache(root / name / "cache.zarr", keys=keys, identity=CacheIdentity("bench", "bench", "bench"),
                             layout=CacheLayout(tuple(names), (feature_dim,) * len(names), classes, chunk_rows=64),
                             dataset=name, split="unlabelled")
        for chunk in range(cache.num_chunks):
            n = len(cache.chunk_range(chunk))
            cache.write_chunk(chunk, features={j: torch.randn(n, feature_dim, generator=generator).numpy() for j in names},
                              teacher_logits=torch.randn(n, classes, generator=generator).numpy(),
                              labels=np.zeros(n, np.int64), readable=np.ones(n, bool))
        if resident:
            cache.load_resident(cache.array_names)
        caches[name] = cache
    return caches


def bench_n(n: int, args, device: torch.device, cache_root: Path) -> dict:
    torch.manual_seed(n)
    generator = torch.Generator().manual_seed(n)
    names = [f"d{i}" for i in range(n)]
    shape = tuple(int(x) for x in args.clip.split("x"))
    model = JediModel({d: build_backbone(args.backbone, "batchnorm") for d in names}, {d: args.classes for d in names},
                      settings=DistillSettings(distillation="soft")).to(device)
    model.init_teachers_from_students()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = lambda: torch.randint(0, 256, (args.batch, *shape), dtype=torch.uint8, generator=generator)  # noqa: E731
    labelled = {d: to_model_input(video().to(device)) for d in names}
    labels = {d: torch.randint(0, args.classes, (args.batch,), generator=generator).to(device) for d in names}
    unlabelled = {d: to_model_input(video().to(device)) for d in names}
    feature_dim = model.backbones[names[0]].feature_dim
    caches = make_caches(cache_root / f"n{n}", names, feature_dim, args.cache_rows, args.classes, generator,
                         not args.zarr_reads)

    def random_keys(d: str) -> list[str]:
        return [caches[d].keys[r] for r in torch.randint(0, args.cache_rows, (args.batch,), generator=generator).tolist()]

    def step(mode: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        targets, foreign = None, None
        if mode in ("cached", "cached_all"):
            targets = cached_teacher_targets(caches, {d: {"key": random_keys(d)} for d in names}, device)
        if mode == "cached_all":
            foreign = cached_foreign_features(model, caches, {d: {"key": random_keys(d)} for d in names}, device)
        losses = model(labelled, labels, unlabelled, foreign_grad_scale=args.foreign_grad_scale,
                       cached_teacher_logits=targets, cached_foreign_features=foreign)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times = {mode: [] for mode in modes(args)}
    for i in range(args.warmup + args.steps):
        for mode in times:  # interleaved: background load hits every mode alike
            seconds = step(mode)
            if i >= args.warmup:
                times[mode].append(seconds)
    clips = 2 * args.batch * n
    result = {"N": n, "clips_per_step": clips}
    for mode, samples in times.items():
        median = statistics.median(samples)
        result[mode] = {"median_s": median, "clips_per_s": clips / median, "samples_s": samples}
    b = args.batch
    result["backbone_clip_passes"] = {"full": 2 * b * n + 2 * b * n * (n - 1), "cached": 2 * b * n + b * n * (n - 1),
                                      "cached_all": 2 * b * n}
    result["speedup"] = {mode: result["full"]["median_s"] / result[mode]["median_s"] for mode in times if mode != "full"}
    return result


def modes(args) -> list[str]:
    return ["full", "cached"] + (["cached_all"] if args.foreign_grad_scale == 0 else [])


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = [r["N"] for r in results]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for mode, marker in (("full", "o"), ("cached", "s"), ("cached_all", "^")):
        if mode not in results[0]:
            continue
        ax.plot(ns, [1000 * r[mode]["median_s"] for r in results], marker=marker, label=f"{mode} step")
    ax.set_xlabel("datasets N")
    ax.set_ylabel("median step time (ms)")
    ax.set_xticks(ns)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ns = [int(x) for x in args.datasets.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        for n in ns:
            results.append(bench_n(n, args, device, Path(tmp)))
            r = results[-1]
            print(f"N={n}: " + ", ".join(f"{m} {1000 * r[m]['median_s']:.0f} ms" for m in modes(args)), flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"\nJEDI step, {args.backbone}, clips {args.clip}, {args.batch}+{args.batch} per dataset, "
          f"foreign_grad_scale {args.foreign_grad_scale}, lookups {'zarr' if args.zarr_reads else 'resident'}, "
          f"{device_name}, median of {args.steps} steps")
    names = modes(args)
    print(f"{'N':>3} {'mode':>11} {'step ms':>9} {'clips/s':>9} {'full/mode':>10} {'backbone clip-passes':>21}")
    for r in results:
        for mode in names:
            ratio = r["speedup"].get(mode, 1.0)
            print(f"{r['N']:>3} {mode:>11} {1000 * r[mode]['median_s']:>9.1f} {r[mode]['clips_per_s']:>9.1f} "
                  f"{ratio:>10.2f} {r['backbone_clip_passes'][mode]:>21}")
    summary = {"device": device_name, "args": vars(args), "results": results}
    if len(results) >= 2:
        first, last = results[0], results[-1]
        growth = {mode: last[mode]["median_s"] / first[mode]["median_s"] for mode in names}
        summary["growth_first_to_last_N"] = growth
        print(f"step time N={first['N']} -> N={last['N']}: " + ", ".join(f"{m} x{g:.2f}" for m, g in growth.items())
              + f" (linear would be x{last['N'] / first['N']:.2f}, quadratic x{(last['N'] / first['N']) ** 2:.2f})")
    if 4 in ns:
        ratios = next(r["speedup"] for r in results if r["N"] == 4)
        summary["ratio_full_over_mode_at_N4"] = ratios
        print("ratio full / mode at N=4: " + ", ".join(f"{m} {x:.2f}" for m, x in ratios.items()))
    (out / "bench_jedi_step.json").write_text(json.dumps(summary, indent=2))
    plot(results, out / "bench_jedi_step.png",
         f"{args.backbone} {args.clip}, B={args.batch}+{args.batch}, fgs={args.foreign_grad_scale}, {device_name}")
    print(f"wrote {out / 'bench_jedi_step.json'} and {out / 'bench_jedi_step.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
