"""Which backbone learns the small clips of the synthetic benchmark? Each candidate is trained as an expert
(labelled split only, cross-entropy) on clips decoded once, outside the trainer, and scored on the test split.

    python tools/bench_backbones.py --shards shards/synthetic_seed0 --datasets kinetics400 ucf101 \
        --backbones cnn3d_small x3d_tiny --steps 400

Clips come from the project's eval loader at a larger centre crop (--decode-size), so every training step
takes a random --crop-size window of it (and a horizontal flip where the manifest allows it) and the test
uses the centre window: the same budget and augmentation for every backbone. Prints top-1, parameters and
seconds per candidate, and writes the rows as JSON (--out).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from jedi_train.models import build_backbone  # noqa: E402
from pipeline.contract import ClipSpec, to_model_input  # noqa: E402
from pipeline.cpu_loader import eval_loader  # noqa: E402
from pipeline.manifest import load_manifest  # noqa: E402



def decode_split(shard_dir: Path, split: str, clip: ClipSpec) -> tuple[torch.Tensor, torch.Tensor]:
    videos, labels = [], []
    for batch in eval_loader(shard_dir, split, clip, batch_size=64, num_workers=1):
        videos.append(batch["video"][:, 0])
        labels.append(batch["label"])
    return torch.cat(videos), torch.cat(labels)


def random_windows(videos: torch.Tensor, size: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    b, _, _, h, w = videos.shape
    tops = torch.randint(0, h - size + 1, (b,), generator=generator)
    lefts = torch.randint(0, w - size + 1, (b,), generator=generator)
    out = torch.stack([v[:, :, t:t + size, l:l + size] for v, t, l in zip(videos, tops.tolist(), lefts.tolist())])
    if flip:
        flips = torch.rand(b, generator=generator) < 0.5
        out[flips] = out[flips].flip(-1)
    return out


def centre_windows(videos: torch.Tensor, size: int) -> torch.Tensor:
    h, w = videos.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return videos[..., top:top + size, left:left + size]


def train_and_test(backbone_name: str, norm: str, train: tuple, test: tuple, num_classes: int, steps: int,
                   crop_size: int, flip: bool, lr: float, batch_size: int, seed: int) -> dict:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    backbone = build_backbone(backbone_name, norm)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.feature_dim, num_classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    videos, labels = train
    started = time.perf_counter()
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        clips = to_model_input(random_windows(videos[index], crop_size, flip, generator))
        loss = F.cross_entropy(model(clips), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    train_seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        test_videos, test_labels = test
        hits = sum((model(to_model_input(centre_windows(test_videos[i:i + 64], crop_size))).argmax(1)
                    == test_labels[i:i + 64]).sum().item() for i in range(0, len(test_labels), 64))
    return {"backbone": backbone_name, "norm": norm, "params": sum(p.numel() for p in backbone.parameters()),
            "test_top1": 100.0 * hits / len(test_labels), "test_clips": len(test_labels),
            "train_seconds": round(train_seconds, 1), "steps": steps}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, required=True, help="folder holding one shard folder per dataset")
    parser.add_argument("--datasets", nargs="+", default=["kinetics400", "ucf101"], help="shard folders to use")
    parser.add_argument("--backbones", nargs="+", default=["cnn3d_small", "x3d_tiny"],
                        help="backbone names of jedi_train/models.py (datasets.<name>.backbone values)")
    parser.add_argument("--norms", nargs="+", default=["groupnorm"], choices=["groupnorm", "batchnorm"],
                        help="norm layers to try with every backbone (model.norm values)")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per candidate")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (one-cycle schedule)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--stride", type=int, default=2, help="source frames between sampled frames")
    parser.add_argument("--decode-size", type=int, default=36, help="centre crop decoded once per clip")
    parser.add_argument("--crop-size", type=int, default=32, help="window the backbone reads")
    parser.add_argument("--seed", type=int, default=0, help="seeds weights and the batch order")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    clip = ClipSpec(frames=args.frames, stride=args.stride, crop_size=args.decode_size)
    rows = []
    for dataset in args.datasets:
        shard_dir = args.shards / dataset
        manifest = load_manifest(shard_dir)
        train, test = decode_split(shard_dir, "labelled", clip), decode_split(shard_dir, "test", clip)
        for backbone in args.backbones:
            for norm in args.norms:
                row = {"dataset": dataset, "labelled_clips": len(train[1]), "chance": 100.0 / len(manifest.classes),
                       **train_and_test(backbone, norm, train, test, len(manifest.classes), args.steps,
                                        args.crop_size, not manifest.hflip_changes_label, args.lr,
                                        args.batch_size, args.seed)}
                rows.append(row)
                print(f"{dataset:<12} {backbone:<12} {norm:<10} {row['params']:>8} params  test top-1 "
                      f"{row['test_top1']:5.1f} (chance {row['chance']:.1f}, {row['test_clips']} clips, "
                      f"{row['labelled_clips']} labelled)  {row['train_seconds']:6.1f} s", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
