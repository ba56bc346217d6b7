"""What the torch loader reads per epoch, by index and by scan: bytes per rank next to the rank's share
of the split, and wall time, over real tar shards. tools/profile_throughput.py runs it as its `reads`
and `scale` sections; it also runs alone:

    python tools/read_cost.py --shards runs/throughput/shards/h264_g8_s128_f25 --workers 1,2,8
    python tools/read_cost.py --scale-samples 20000 --workers 8 --work-dir runs/read_cost   # scale simulation

A row is one full epoch (`steps_to_cover`: every sample of the rank once) for one rank, read path and
worker count. "share" = the bytes of the rank's samples (their members, from the index), so
`bytes / share` = 1.0 means each byte of the rank's samples was read once. The scan path is measured
on a scan view of the same shards: the same tar files, linked, under a manifest without index files.

The scale simulation (`--scale-samples N`) writes N samples that all hold the same small encoded clip
under different keys (the bytes are real H.264, the decoding cost is one tiny clip per sample), so
the split is large in samples and tar bytes while decoding stays cheap.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/read_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm import tqdm

from pipeline.contract import KEY, AugmentSpec, ClipSpec
from pipeline.cpu_loader import plan_rank, read_manifest, split_shards, steps_to_cover, train_loader
from pipeline.dali_index import read_index, write_index
from pipeline.video_encode import EncodeSettings, encode_video_bytes

SPLIT = "labelled"
SCALE_CLIP = ClipSpec(frames=4, stride=2, crop_size=32)


def scan_view(shard_dir: Path, out: Path) -> Path:
    """`out`: the same tar files (symlinks) under a manifest that names no index files."""
    manifest = read_manifest(shard_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            link = out / shard["file"]
            if not link.exists():
                link.symlink_to(Path(shard_dir).resolve() / shard["file"])
            shard["index"] = None
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def sample_bytes(shard_dir: Path, split: str) -> dict[str, int]:
    """key -> bytes of its members (from the index files: what reading the sample once costs)."""
    out = {}
    for shard in read_manifest(shard_dir)["splits"][split]["shards"]:
        for entry in read_index(Path(shard_dir) / shard["index"]):
            out[entry.key] = sum(size for _, _, size in entry.members)
    return out


def epoch_reads(shard_dir: Path, clip: ClipSpec, *, batch_size: int, workers: int, rank: int = 0,
                world_size: int = 1, share_of: dict[str, int], label: str = "", seed: int = 0) -> dict:
    """One full epoch of one rank: bytes read (reader-counted and /proc rchar), wall time, clips/s."""
    manifest = read_manifest(shard_dir)
    plan = plan_rank(split_shards(manifest, shard_dir, SPLIT), rank, world_size, seed=seed, epoch=0,
                     shuffle=True, need_balance=True)
    steps = steps_to_cover(shard_dir, SPLIT, batch_size, world_size)
    loader = train_loader(shard_dir, SPLIT, clip, AugmentSpec(), batch_size=batch_size, steps_per_epoch=steps,
                          rank=rank, world_size=world_size, num_workers=workers, seed=seed)
    rank_keys = set()
    clips = 0
    started = time.perf_counter()
    for batch in tqdm(loader, desc=f"{label or loader.read_path} w{workers} r{rank}/{world_size}", unit="batch",
                      leave=False):
        rank_keys.update(batch[KEY])
        clips += len(batch[KEY])
    seconds = time.perf_counter() - started
    share = sum(share_of[key] for key in rank_keys)
    split_bytes = sum(share_of.values())
    return {"read_path": loader.read_path, "workers": workers, "rank": rank, "world_size": world_size,
            "split": "by sample index" if plan.by_sample_index else "by shard", "steps": steps, "clips": clips,
            "seconds": round(seconds, 2), "clips_per_s": round(clips / seconds, 1),
            "bytes_read": loader.bytes_read, "index_bytes": loader.index_bytes,
            "io_read_chars": loader.io_read_chars, "rank_share_bytes": share, "split_bytes": split_bytes,
            "bytes_per_share": round((loader.bytes_read + loader.index_bytes) / share, 3),
            "read_chars_per_share": round(loader.io_read_chars / share, 3)}


def read_rows(shard_dir: Path, work_dir: Path, clip: ClipSpec, *, batch_size: int, workers: tuple[int, ...],
              ranks: int = 2, section: str = "reads") -> list[dict]:
    """Both read paths at each worker count (rank 0 of 1), then each rank of `ranks` by sample index."""
    scan_dir = scan_view(shard_dir, work_dir / f"{Path(shard_dir).name}_scan_view")
    sizes = sample_bytes(shard_dir, SPLIT)
    rows = []
    for count in workers:
        for path_dir in (shard_dir, scan_dir):
            rows.append(epoch_reads(path_dir, clip, batch_size=batch_size, workers=count, share_of=sizes))
    if ranks > 1:
        shard_count = len(read_manifest(shard_dir)["splits"][SPLIT]["shards"])
        if shard_count % ranks == 0 or shard_count >= 4 * ranks:
            print(f"note: {shard_count} shards split by shard over {ranks} ranks, not by sample index")
        for path_dir in (shard_dir, scan_dir):
            for rank in range(ranks):
                rows.append(epoch_reads(path_dir, clip, batch_size=batch_size, workers=max(workers), rank=rank,
                                        world_size=ranks, share_of=sizes))
    for row in rows:
        row["section"] = section
    return rows


def write_scale_shards(out: Path, samples: int, *, samples_per_shard: int = 1000, frames: int = 8,
                       width: int = 48, height: int = 32, classes: int = 10) -> Path:
    """`samples` samples (one H.264 clip of `frames` frames under many keys), their index files and a
    manifest (docs/architecture.md section 2); returns the shard directory. Reuses a finished one."""
    if (out / "manifest.json").is_file() and read_manifest(out)["splits"][SPLIT]["samples"] == samples:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    video = encode_video_bytes(pixels, EncodeSettings(codec="h264", fps=25.0, gop=8, bframes=0))
    shards, per_class = [], [0] * classes
    bar = tqdm(total=samples, desc="writing scale shards", unit="sample")
    for shard_index, first in enumerate(range(0, samples, samples_per_shard)):
        name = f"{SPLIT}-{shard_index:06d}.tar"
        with tarfile.open(out / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(first, min(samples, first + samples_per_shard)):
                label = index % classes
                meta = json.dumps({"label": label, "class_name": f"class_{label:02d}", "dataset": "scale",
                                   "source": f"copy_{index:08d}", "frames": frames, "fps": 25.0, "width": width,
                                   "height": height, "split": SPLIT}).encode()
                for member, data in ((f"scale_{index:08d}.mp4", video), (f"scale_{index:08d}.json", meta)):
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                per_class[label] += 1
                bar.update(1)
        write_index(out / name, (out / name).with_suffix(".idx"))
        shards.append({"file": name, "samples": min(samples, first + samples_per_shard) - first,
                       "bytes": (out / name).stat().st_size, "sha256": "", "index": Path(name).with_suffix(".idx").name})
    bar.close()
    empty = {"samples": 0, "per_class": [0] * classes, "shards": []}
    manifest = {"format_version": 1, "dataset": "scale", "layout": "filelist", "source_root": "",
                "classes": [f"class_{c:02d}" for c in range(classes)], "hflip_changes_label": False,
                "time_reversal_changes_label": False,
                "splits": {SPLIT: {"samples": samples, "per_class": per_class, "shards": shards},
                           "unlabelled": empty, "val": empty, "test": empty},
                "encode": {"codec": "h264", "container": "mp4", "short_side": height, "fps": 25.0, "gop": 8,
                           "bframes": 0, "pix_fmt": "yuv420p"},
                "seed": 0, "label_fraction": 1.0, "val_fraction": 0.0, "skipped": []}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def scale_rows(work_dir: Path, samples: int, workers: int, batch_size: int) -> list[dict]:
    """The scale simulation: one epoch with `workers` workers by index and by scan, side by side."""
    shard_dir = write_scale_shards(work_dir / f"scale_{samples}", samples)
    rows = read_rows(shard_dir, work_dir, SCALE_CLIP, batch_size=batch_size, workers=(workers,), ranks=1,
                     section="scale")
    for row in rows:
        row["samples"] = samples
    return rows


def format_rows(rows: list[dict]) -> str:
    header = (f"{'section':<7} {'path':<5} {'wk':>3} {'rank':>6} {'split':<15} {'clips':>6} {'wall s':>7} "
              f"{'clips/s':>8} {'MB read':>9} {'MB share':>9} {'read/share':>10} {'rchar/share':>11}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['section']:<7} {row['read_path']:<5} {row['workers']:>3} "
                     f"{row['rank']:>2}/{row['world_size']:<3} {row['split']:<15} {row['clips']:>6} {row['seconds']:>7} "
                     f"{row['clips_per_s']:>8} {(row['bytes_read'] + row['index_bytes']) / 1e6:>9.2f} "
                     f"{row['rank_share_bytes'] / 1e6:>9.2f} {row['bytes_per_share']:>10} {row['read_chars_per_share']:>11}")
    return "\n".join(lines)


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, help="shard directory to read (its 'labelled' split, with index files)")
    parser.add_argument("--scale-samples", type=int, default=0,
                        help="instead of --shards: write this many one-clip-under-many-keys samples and read them")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/read_cost"),
                        help="scan views, scale shards and the JSON go here")
    parser.add_argument("--workers", type=int_list, default=(1, 2, 8), help="DataLoader workers to try, e.g. 1,2,8")
    parser.add_argument("--ranks", type=int, default=2,
                        help="with --shards: also read each rank of this many (by sample index if few shards); 1 = off")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    parser.add_argument("--clip-frames", type=int, default=16, help="with --shards: frames per clip")
    parser.add_argument("--stride", type=int, default=2, help="with --shards: source frames between sampled frames")
    parser.add_argument("--crop", type=int, default=112, help="with --shards: output height and width")
    parser.add_argument("--json", type=Path, help="rows as JSON (default <work-dir>/read_cost.json)")
    args = parser.parse_args(argv)
    if (args.shards is None) == (args.scale_samples == 0):
        parser.error("give exactly one of --shards and --scale-samples")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.shards is not None:
        clip = ClipSpec(frames=args.clip_frames, stride=args.stride, crop_size=args.crop)
        rows = read_rows(args.shards, args.work_dir, clip, batch_size=args.batch_size, workers=args.workers,
                         ranks=args.ranks)
    else:
        rows = [row for count in args.workers
                for row in scale_rows(args.work_dir, args.scale_samples, count, args.batch_size)]
    print(format_rows(rows))
    path = args.json or args.work_dir / "read_cost.json"
    path.write_text(json.dumps({"command": " ".join(["python", "tools/read_cost.py", *(argv or sys.argv[1:])]),
                                "cpus": os.cpu_count(), "rows": rows}, indent=1))
    print(f"json: {path}")
    return rows


if __name__ == "__main__":
    main()
