"""Evaluate a model bundle (jedi_train/bundle.py) on any shards: top-1 / top-5, single-clip and multi-view,
the confusion matrix as a PNG, and per-clip predictions.

    python tools/evaluate.py --bundle runs/<run>/bundles/ucf101/jedi_student --shards shards/new_ucf --out /tmp/eval

The shards are read by the eval stage's loader and scorer (pipeline/cpu_loader.py `eval_loader`,
jedi_train/evaluate.py `evaluate_models`): the centre clip and crop for single-clip; the bundle's
clip.test_clips x clip.test_crops views, averaged in probability space, for multi-view. The shards'
manifest must list the bundle's classes in the bundle's order; shards encoded at another fps or short
side than the bundle's are evaluated, with a warning (the model then sees another frame rate or scale).
Writes to --out: metrics.json, predictions.json (the eval stage's format: {dataset: {view: {model:
{sample key: [top-1 class, label]}}}}) and confusion_<view>.png (rows: true class, normalised per row).
Exit status: 0 done; 2 bad arguments, bundle or shards.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/evaluate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from tqdm import tqdm  # noqa: E402

from jedi_train.bundle import Bundle, BundleError, load_bundle  # noqa: E402
from jedi_train.evaluate import evaluate_models  # noqa: E402
from pipeline.cpu_loader import eval_loader  # noqa: E402
from pipeline.manifest import ManifestError, load_manifest  # noqa: E402

VIEWS = {"single_clip": False, "multi_view": True}


def confusion_matrix(predictions: dict[str, list[int]], num_classes: int) -> np.ndarray:
    """counts[true class, predicted class] from {key: [predicted, label]}."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    for predicted, label in predictions.values():
        counts[label, predicted] += 1
    return counts


def save_confusion(counts: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    if len(classes) <= 30:  # counts in the cells while they stay legible
        for (row, col), count in np.ndenumerate(counts):
            if count:
                ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                        color="white" if shares[row, col] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_shards(bundle: Bundle, shard_dir: Path) -> list[str]:
    """Raise if the shards' classes differ from the bundle's; return warnings for other differences."""
    manifest = load_manifest(shard_dir)
    if manifest.classes != bundle.classes:
        raise ManifestError(f"{shard_dir / 'manifest.json'} lists classes {manifest.classes[:4]}... "
                            f"({manifest.num_classes}); the bundle {bundle.path} predicts {bundle.classes[:4]}... "
                            f"({len(bundle.classes)}), in this order: labels would not mean the same class")
    video = bundle.meta["video"]
    warnings = []
    if (manifest.encode.fps, manifest.encode.short_side) != (video["fps"], video["short_side"]):
        warnings.append(f"the shards are at {manifest.encode.fps:g} fps, short side {manifest.encode.short_side}; "
                        f"the model was trained at {video['fps']:g} fps, short side {video['short_side']}")
    return warnings


def evaluate_bundle(bundle: Bundle, shard_dir: Path, split: str, *, batch_size: int, workers: int,
                    accelerator: Accelerator) -> tuple[dict, dict]:
    """(metrics {view: {top1, top5, clips}}, predictions {view: {key: [predicted, label]}})."""
    metrics, predictions = {}, {}
    for view, multi_view in VIEWS.items():
        loader = eval_loader(shard_dir, split, bundle.clip, batch_size=batch_size, num_workers=workers,
                             multi_view=multi_view)
        batches = tqdm(loader, desc=f"{bundle.name} {view}", unit="batch", dynamic_ncols=True, file=sys.stderr)
        score = evaluate_models({"model": bundle.model}, batches, accelerator, predictions=True)["model"]
        predictions[view] = score.pop("predictions")
        metrics[view] = score | {"skipped_samples": len(loader.skipped_keys) if hasattr(loader, "skipped_keys") else 0}
    return metrics, predictions


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path,
                        help="model bundle folder (<run>/bundles/<dataset>/<model>, with bundle.json)")
    parser.add_argument("--shards", required=True, type=Path,
                        help="shard folder with manifest.json (tools/make_shards.py output)")
    parser.add_argument("--split", default="test", help="split of the shards to evaluate (default test)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for metrics.json, predictions.json and confusion_<view>.png")
    parser.add_argument("--batch-size", type=int, default=32, help="videos per batch (default 32)")
    parser.add_argument("--workers", type=int, default=1, help="decoding worker processes (default 1)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: the GPU when there is one (default)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available()))
    try:
        bundle = load_bundle(args.bundle, accelerator.device)
        warnings = check_shards(bundle, args.shards)
        if args.split not in load_manifest(args.shards).splits:
            raise ManifestError(f"{args.shards / 'manifest.json'} has no split {args.split!r}")
    except (BundleError, ManifestError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    metrics, predictions = evaluate_bundle(bundle, args.shards, args.split, batch_size=args.batch_size,
                                           workers=args.workers, accelerator=accelerator)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = bundle.meta
    (args.out / "metrics.json").write_text(json.dumps(
        {"bundle": str(args.bundle), "model": bundle.name, "shards": str(args.shards), "split": args.split,
         "chance": 100.0 / len(bundle.classes), "warnings": warnings, "metrics": metrics}, indent=2))
    (args.out / "predictions.json").write_text(json.dumps({meta["dataset"]: {
        view: {meta["model"]: rows} for view, rows in predictions.items()}}))
    clip = bundle.clip
    for view, rows in predictions.items():
        views = "centre clip" if view == "single_clip" else f"{clip.test_clips} clips x {clip.test_crops} crops"
        title = (f"{bundle.name} on {args.shards.name}/{args.split} ({views}): top-1 "
                 f"{metrics[view]['top1']:.1f}%, {metrics[view]['clips']} videos")
        save_confusion(confusion_matrix(rows, len(bundle.classes)), bundle.classes, title,
                       args.out / f"confusion_{view}.png")
    print(f"{bundle.name} on {args.shards}/{args.split} (chance {100.0 / len(bundle.classes):.1f}%)")
    for view, score in metrics.items():
        print(f"  {view:<12} top-1 {score['top1']:5.1f}  top-5 {score['top5']:5.1f}  ({score['clips']} videos)")
    print(f"wrote {args.out}/metrics.json, predictions.json, confusion_single_clip.png, confusion_multi_view.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
