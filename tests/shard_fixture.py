"""Write a small, real shard set (H.264 mp4 or VP9 webm + json in tar shards, DALI index files, plus
manifest.json) as in docs/architecture.md section 2, for tests and loader benchmarks.

Videos are synthetic (a textured background panning one way and a class-coloured square moving),
encoded with pipeline.video_encode; samples can be damaged on purpose to test corrupt-sample
handling. The manifest is written with plain json so this helper does not depend on
tools/make_shards.py.

Benchmark shards:  python -m tests.shard_fixture --out /tmp/bench --short-side 128 --samples 160
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from pipeline.dali_index import write_index
from pipeline.video_encode import EncodeSettings, encode_video_bytes

CORRUPTIONS = ("truncated", "empty")


@dataclass(frozen=True)
class FixtureSpec:
    """What to write. `frames` cycles over samples (so a split can mix lengths); `corrupt` lists
    (split, sample index within the split, kind) with kind in CORRUPTIONS."""

    dataset: str = "fixture"
    splits: dict[str, int] = field(default_factory=lambda: {"labelled": 10, "val": 6})
    samples_per_shard: int = 4
    num_classes: int = 3
    width: int = 48
    height: int = 40
    frames: Sequence[int] = (24,)
    fps: float = 25.0
    gop: int = 8
    codec: str = "h264"  # or "vp9" (webm), which DALI's CPU decoder reads
    seed: int = 0
    corrupt: Sequence[tuple[str, int, str]] = ()
    direction_sensitive: bool = False  # manifest flags: flip and time reversal change the label
    show_progress: bool = False


def sample_key(dataset: str, source: str) -> str:
    return f"{dataset}_{hashlib.sha1(source.encode()).hexdigest()[:16]}"


def synthetic_frames(num_frames: int, height: int, width: int, label: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, H, W, 3]: a panning noise texture (so the codec has real work) and a moving square."""
    texture = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((4, 4, 1), dtype=np.uint8))[:height, :width]
    colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 160) % 256], np.uint8)
    side = max(4, min(height, width) // 5)
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frame = np.roll(texture, shift=t, axis=1) // 2 + 64
        x = (t * 2) % max(1, width - side)
        y = (height - side) // 2
        frame[y:y + side, x:x + side] = colour
        out[t] = frame
    return out


def _corrupt(video: bytes, kind: str) -> bytes:
    if kind == "truncated":
        return video[: len(video) // 2]
    if kind == "empty":
        return b""
    raise ValueError(f"corruption kind {kind!r}: allowed values are {CORRUPTIONS}")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible bytes, so sha256 is stable across reruns
    tar.addfile(info, io.BytesIO(data))


def write_shard_set(out_dir: str | Path, spec: FixtureSpec = FixtureSpec()) -> Path:
    """Write `<out_dir>/<dataset>/{<split>-NNNNNN.tar, <split>-NNNNNN.idx, manifest.json}`; returns the shard
    directory."""
    shard_dir = Path(out_dir) / spec.dataset
    shard_dir.mkdir(parents=True, exist_ok=True)
    classes = [f"class_{c:02d}" for c in range(spec.num_classes)]
    settings = EncodeSettings(codec=spec.codec, fps=spec.fps, gop=spec.gop, bframes=0)
    video_ext = settings.container_format
    corrupt = {(split, index): kind for split, index, kind in spec.corrupt}
    rng = np.random.default_rng(spec.seed)
    split_entries = {}
    total = sum(spec.splits.values())
    bar = tqdm(total=total, desc=f"writing {spec.dataset} shards", disable=not spec.show_progress)
    for split, count in spec.splits.items():
        shards, per_class = [], [0] * spec.num_classes
        for shard_index, first in enumerate(range(0, count, spec.samples_per_shard)):
            name = f"{split}-{shard_index:06d}.tar"
            buffer = io.BytesIO()
            members = 0
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for index in range(first, min(count, first + spec.samples_per_shard)):
                    label = index % spec.num_classes
                    num_frames = spec.frames[index % len(spec.frames)]
                    source = f"{classes[label]}/{split}_{index:05d}.avi"
                    key = sample_key(spec.dataset, source)
                    video = encode_video_bytes(
                        synthetic_frames(num_frames, spec.height, spec.width, label, rng), settings)
                    if (split, index) in corrupt:
                        video = _corrupt(video, corrupt[(split, index)])
                    meta = {"label": label, "class_name": classes[label], "dataset": spec.dataset,
                            "source": source, "frames": num_frames, "fps": spec.fps,
                            "width": spec.width, "height": spec.height, "split": split}
                    _add_member(tar, f"{key}.{video_ext}", video)
                    _add_member(tar, f"{key}.json", json.dumps(meta).encode())
                    per_class[label] += 1
                    members += 1
                    bar.update(1)
            data = buffer.getvalue()
            (shard_dir / name).write_bytes(data)
            index = write_index(shard_dir / name, (shard_dir / name).with_suffix(".idx"))
            shards.append({"file": name, "samples": members, "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(), "index": index.name})
        split_entries[split] = {"samples": count, "per_class": per_class, "shards": shards}
    bar.close()
    manifest = {
        "format_version": 1, "dataset": spec.dataset, "layout": "synthetic-fixture", "source_root": "",
        "classes": classes, "hflip_changes_label": spec.direction_sensitive,
        "time_reversal_changes_label": spec.direction_sensitive,
        "splits": split_entries,
        "encode": {"codec": spec.codec, "container": video_ext, "short_side": min(spec.width, spec.height),
                   "fps": spec.fps, "gop": spec.gop, "bframes": 0, "pix_fmt": "yuv420p"},
        "seed": spec.seed, "label_fraction": 1.0, "val_fraction": 0.0, "skipped": [],
    }
    (shard_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return shard_dir


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic H.264 shard set (tar + manifest.json) "
                                                 "for loader tests and benchmarks.")
    parser.add_argument("--out", required=True, help="parent directory; shards go to <out>/<dataset>/")
    parser.add_argument("--dataset", default="bench", help="dataset name (key prefix and folder name)")
    parser.add_argument("--short-side", type=int, default=128, help="frame height; width is 4/3 of it, made even")
    parser.add_argument("--frames", type=int, default=64, help="frames per video")
    parser.add_argument("--samples", type=int, default=160, help="samples in the 'labelled' split")
    parser.add_argument("--samples-per-shard", type=int, default=32, help="samples per tar shard")
    parser.add_argument("--gop", type=int, default=8, help="frames between keyframes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic content")
    args = parser.parse_args()
    width = int(round(args.short_side * 4 / 3 / 2)) * 2
    spec = FixtureSpec(dataset=args.dataset, splits={"labelled": args.samples},
                       samples_per_shard=args.samples_per_shard, num_classes=6, width=width,
                       height=args.short_side, frames=(args.frames,), gop=args.gop, seed=args.seed,
                       show_progress=True)
    print(write_shard_set(args.out, spec))


if __name__ == "__main__":
    main()
