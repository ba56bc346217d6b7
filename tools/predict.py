"""Predict the action classes of video files with a model bundle (jedi_train/bundle.py).

    python tools/predict.py --bundle runs/<run>/bundles/ucf101/jedi_student my_videos/ clip.mp4 --out preds.csv
    python tools/predict.py --bundle runs/<run>/bundles/ucf101/jedi_student \\
        --layout ucf101 --root data/synthetic/seed0/ucf101 --split test --compare runs/<run>/predictions.json

Each video is read the way tools/make_shards.py made the training shards: decoded, resampled to the
bundle's fps, resized to its short side (`resampled_frames`), and by default (--frames shard) re-encoded
with the shards' codec (`encode_frames`) and decoded again with the project's decoder
(pipeline/video_decode.py), so the model sees the frames evaluation showed it. The clips are the eval
stage's (pipeline/clips.py: the centre clip, or --clips evenly spaced clips for multi-view), the crops its
centre / three crops (pipeline/augment.py), the normalisation pipeline/contract.py's. Views of a clip are
averaged in probability space, as the eval stage does.

Any container and codec FFmpeg reads (AVI/MPEG-4, MP4/H.264, WebM/VP9, MKV, ...), any length: a video
shorter than one clip is padded by repeating its last frame (pipeline/clips.py) and marked `padded`.
A missing path, a file that is not a video, or a truncated one (fewer seconds decode than its header
declares) gets status `error` with the reason; the other videos are still predicted.
Output: a table on stdout, JSON or CSV with --out, throughput (clips/s) on stderr.
Exit status: 0 every video predicted; 1 some videos could not be read; 2 bad arguments or bundle.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/predict.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from tqdm import tqdm  # noqa: E402

from jedi_train.bundle import Bundle, BundleError, load_bundle  # noqa: E402
from pipeline.augment import eval_views  # noqa: E402
from pipeline.clips import eval_clip_indices  # noqa: E402
from pipeline.contract import ClipSpec, to_model_input  # noqa: E402
from pipeline.layouts import LAYOUTS, LayoutError, read_layout  # noqa: E402
from pipeline.video_decode import BACKENDS, CorruptVideoError, decode_frames, resolve_backend  # noqa: E402
from pipeline.video_dirs import is_video_name  # noqa: E402
from tools.make_shards import BadVideo, ShardSettings, encode_frames, resampled_frames, sample_key  # noqa: E402

# A video whose decodable part is shorter than this share of its declared duration is called truncated.
TRUNCATED_BELOW = 0.9


# --- inputs ----------------------------------------------------------------------------------------

def video_inputs(paths: list[Path], list_file: Path | None) -> list[dict]:
    """One entry {"path"} per video: files as given (tried whatever their name), folders searched
    recursively for video file names, list files one path per line (relative to the list's folder,
    `#` comments)."""
    entries = []
    for path in paths:
        if path.is_dir():
            entries += [{"path": p} for p in sorted(path.rglob("*")) if p.is_file() and is_video_name(p.name)]
        else:
            entries.append({"path": path})
    if list_file is not None:
        for line in list_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line)
                entries.append({"path": path if path.is_absolute() else list_file.parent / path})
    return entries


def layout_inputs(layout: str, root: Path, split: str, bundle: Bundle) -> list[dict]:
    """The official `split` ('train' | 'test') of a dataset layout, with labels and the shard sample keys
    (the keys of the eval stage's predictions.json)."""
    listing = read_layout(layout, root)
    if listing.classes != bundle.classes:
        raise LayoutError(f"{root} ({layout}) lists classes {listing.classes[:4]}... but the bundle was trained on "
                          f"{bundle.classes[:4]}... ({len(bundle.classes)} classes)")
    entries = [{"path": video.path, "label": listing.classes.index(video.class_name),
                "key": sample_key(bundle.meta["shard_dataset"], video.rel_path)}
               for video in listing.videos if video.official_split == split and video.class_name is not None]
    entries += [{"path": missing.path, "error": f"{missing.reason} (listed in the {layout} {split} split)"}
                for missing in listing.missing if missing.official_split == split]
    return entries


# --- one video -> views ----------------------------------------------------------------------------

def declared_seconds(path: Path) -> float | None:
    """The duration the header declares for the video stream, else for the container (which also covers
    audio, often a little longer); None when it declares none."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / av.time_base
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        pass  # resampled_frames says why it does not open
    return None


class VideoViews(Dataset):
    """Entry i -> {"views": uint8 [V, 3, T, S, S], "frames", "padded", ...} or {"error": reason}."""

    def __init__(self, entries: list[dict], meta: dict, clip: ClipSpec, num_clips: int, num_crops: int,
                 frames_mode: str, backend: str):
        self.entries = entries
        video = meta["video"]
        self.settings = ShardSettings(dataset=meta["dataset"], codec=video["codec"], short_side=video["short_side"],
                                      fps=video["fps"], gop=video["gop"], min_frames=1)
        self.clip, self.num_clips, self.num_crops = clip, num_clips, num_crops
        self.frames_mode = frames_mode
        self.backend = backend

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        entry = dict(self.entries[i])
        entry["path"] = str(entry["path"])
        if "error" in entry:
            return entry
        try:
            return entry | self.read(Path(entry["path"]))
        except FileNotFoundError:
            return entry | {"error": "missing: no such file"}
        except IsADirectoryError:
            return entry | {"error": "a folder, not a video file"}
        except (BadVideo, CorruptVideoError) as error:
            return entry | {"error": str(error)}

    def read(self, path: Path) -> dict:
        frames = resampled_frames(path, self.settings)
        fps = self.settings.fps
        declared = declared_seconds(path)
        decoded = len(frames) / fps
        if declared is not None and decoded < TRUNCATED_BELOW * declared - 1 / fps:
            raise BadVideo(f"truncated: the header declares {declared:.2f} s but only {decoded:.2f} s decode")
        clips = eval_clip_indices(len(frames), self.clip, self.num_clips)
        flat = [index for indices in clips for index in indices]
        if self.frames_mode == "shard":  # the shard's bytes, decoded as the loaders decode them
            picked = decode_frames(encode_frames(frames, self.settings), flat, key=str(path), backend=self.backend)
        else:
            picked = torch.from_numpy(np.stack([frames[index] for index in flat]))
        views = []
        for clip_frames in picked.split(self.clip.frames):
            views.extend(eval_views(clip_frames, self.clip.crop_size, self.num_crops))
        height, width = frames[0].shape[:2]
        return {"views": torch.stack(views), "frames": len(frames), "seconds": round(decoded, 3),
                "size": f"{width}x{height}", "padded": len(frames) < self.clip.span}


def _as_list(items: list[dict]) -> list[dict]:
    return items


# --- the model -------------------------------------------------------------------------------------

@torch.no_grad()
def predict(bundle: Bundle, dataset: VideoViews, *, top_k: int, batch_size: int, workers: int,
            device: torch.device) -> tuple[list[dict], dict]:
    """One result row per entry, in input order, and the throughput."""
    loader = DataLoader(dataset, batch_size=max(1, batch_size // max(1, dataset.num_clips * dataset.num_crops)),
                        num_workers=workers, collate_fn=_as_list)
    rows, clips_done, start = [], 0, time.perf_counter()
    k = min(top_k, len(bundle.classes))
    with tqdm(total=len(dataset), unit="video", desc="predicting", dynamic_ncols=True, file=sys.stderr) as bar:
        for items in loader:
            ready = [item for item in items if "error" not in item]
            if ready:
                views = torch.cat([item.pop("views") for item in ready]).to(device)
                probs = bundle.model(to_model_input(views)).float().softmax(dim=1).cpu()
                probs = probs.view(len(ready), -1, probs.shape[1]).mean(dim=1)
                clips_done += views.shape[0]
                for item, p in zip(ready, probs):
                    top = p.topk(k)
                    item["top_k"] = [{"class": bundle.classes[i], "index": int(i), "prob": round(float(q), 4)}
                                     for q, i in zip(top.values, top.indices)]
            for item in items:
                item["status"] = "error" if "error" in item else "ok"
                rows.append(item)
            bar.update(len(items))
    seconds = time.perf_counter() - start
    return rows, {"videos": len(rows), "clips": clips_done, "seconds": round(seconds, 3),
                  "clips_per_s": round(clips_done / seconds, 2) if seconds else None}


# --- output ----------------------------------------------------------------------------------------

def format_table(rows: list[dict]) -> str:
    width = min(60, max([len(Path(r["path"]).name) for r in rows] + [5]))
    lines = [f"{'video':<{width}}  {'frames':>6}  top classes (probability)"]
    for row in rows:
        name = Path(row["path"]).name[-width:]
        if row["status"] == "error":
            lines.append(f"{name:<{width}}  {'-':>6}  ERROR {row['error']}")
            continue
        guesses = ", ".join(f"{g['class']} {g['prob']:.2f}" for g in row["top_k"])
        padded = "  [padded: shorter than one clip]" if row["padded"] else ""
        lines.append(f"{name:<{width}}  {row['frames']:>6}  {guesses}{padded}")
    return "\n".join(lines)


def write_rows(rows: list[dict], path: Path, summary: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "status", "error", "frames", "padded", "label", "top1", "top1_prob", "top_k"])
        for row in rows:
            top = row.get("top_k") or [{}]
            writer.writerow([row["path"], row["status"], row.get("error", ""), row.get("frames", ""),
                             row.get("padded", ""), row.get("label", ""), top[0].get("class", ""),
                             top[0].get("prob", ""), ";".join(f"{g['class']}:{g['prob']}" for g in row.get("top_k", []))])
        path.write_text(buffer.getvalue())
    else:
        path.write_text(json.dumps({"summary": summary, "videos": rows}, indent=2))


def accuracy_lines(rows: list[dict], compare: Path | None, meta: dict, view: str) -> list[str]:
    """Top-1 over labelled rows; with `compare`, the eval stage's top-1 on the same videos and how often
    the two top-1 classes agree."""
    labelled = [r for r in rows if r["status"] == "ok" and "label" in r]
    if not labelled:
        return []
    hits = sum(r["top_k"][0]["index"] == r["label"] for r in labelled)
    lines = [f"top-1 {100 * hits / len(labelled):.1f}% ({hits}/{len(labelled)} labelled videos)"]
    if compare is None:
        return lines
    stage = json.loads(compare.read_text())
    try:
        eval_rows = stage[meta["dataset"]][view][meta["model"]]
    except KeyError:
        return lines + [f"{compare} holds no {view} predictions of {meta['dataset']}/{meta['model']}"]
    shared = [r for r in labelled if r.get("key") in eval_rows]
    eval_hits = sum(eval_rows[r["key"]][0] == eval_rows[r["key"]][1] for r in shared)
    ours = sum(r["top_k"][0]["index"] == r["label"] for r in shared)
    agree = sum(r["top_k"][0]["index"] == eval_rows[r["key"]][0] for r in shared)
    n = max(len(shared), 1)
    return lines + [f"on the {len(shared)} videos also in {compare} ({view}): predict top-1 {100 * ours / n:.1f}%, "
                    f"eval stage top-1 {100 * eval_hits / n:.1f}%, same top-1 class on {agree}/{len(shared)} videos"]


# --- command line ----------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="video files and folders (searched recursively for "
                        "video file names: " + ".avi .mp4 .webm .mkv .mov .m4v .mpg .mpeg .flv)")
    parser.add_argument("--bundle", required=True, type=Path,
                        help="model bundle folder (<run>/bundles/<dataset>/<model>, with bundle.json)")
    parser.add_argument("--list", type=Path, dest="list_file",
                        help="text file with one video path per line (relative to the list's folder; # comments)")
    parser.add_argument("--layout", choices=LAYOUTS,
                        help="read the videos of an official split of a dataset in this layout (labels known, so "
                             "top-1 is reported); needs --root")
    parser.add_argument("--root", type=Path, help="dataset root for --layout")
    parser.add_argument("--split", default="test", choices=("train", "test"),
                        help="official split for --layout (default test, the eval stage's split)")
    parser.add_argument("--views", default="single", choices=("single", "multi"),
                        help="single: the centre clip and centre crop; multi: --clips clips x --crops crops, "
                             "probabilities averaged (default single)")
    parser.add_argument("--clips", type=int, default=None,
                        help="clips per video for --views multi (default: the bundle's clip.test_clips)")
    parser.add_argument("--crops", type=int, default=None, choices=(1, 3),
                        help="crops per clip for --views multi (default: the bundle's clip.test_crops)")
    parser.add_argument("--frames", default="shard", choices=("shard", "direct"),
                        help="shard: re-encode the resampled frames like the shards and decode them with the "
                             "project's decoder (what evaluation showed the model; default); direct: skip the "
                             "codec round trip (faster, frames differ from the shards' by the codec's loss)")
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per video (default 5)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=64, help="clips per forward pass (default 64)")
    parser.add_argument("--workers", type=int, default=0,
                        help="decoding processes (default 0: decode in this process)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="decoder of the re-encoded clip for --frames shard (pipeline/video_decode.py)")
    parser.add_argument("--out", type=Path, help="write every row to this file: .json (with the throughput) or .csv")
    parser.add_argument("--compare", type=Path,
                        help="the eval stage's predictions.json: report its top-1 on the same videos and how often "
                             "the top-1 classes agree (needs --layout, whose videos have shard sample keys)")
    args = parser.parse_args(argv)
    if not args.paths and not args.list_file and not args.layout:
        parser.error("give video paths, --list or --layout/--root")
    if args.layout and not args.root:
        parser.error("--layout needs --root")
    for flag in ("clips", "top_k", "batch_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    if args.compare and not args.layout:
        parser.error("--compare needs --layout (the sample keys come from the layout's relative paths)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    try:
        bundle = load_bundle(args.bundle, device)
        entries = video_inputs(args.paths, args.list_file)
        if args.layout:
            entries += layout_inputs(args.layout, args.root, args.split, bundle)
    except (BundleError, LayoutError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    clip = bundle.clip
    num_clips, num_crops = ((args.clips or clip.test_clips, args.crops or clip.test_crops)
                            if args.views == "multi" else (1, 1))
    backend = resolve_backend(args.backend)  # before the workers start: they inherit the loaded libraries
    dataset = VideoViews(entries, bundle.meta, clip, num_clips, num_crops, args.frames, backend)
    rows, summary = predict(bundle, dataset, top_k=args.top_k, batch_size=args.batch_size, workers=args.workers,
                            device=device)
    summary |= {"bundle": str(args.bundle), "model": bundle.name, "views": f"{num_clips} clips x {num_crops} crops",
                "frames": args.frames, "device": str(device)}
    print(format_table(rows))
    view = "multi_view" if args.views == "multi" else "single_clip"
    for line in accuracy_lines(rows, args.compare, bundle.meta, view):
        print(line)
    errors = [row for row in rows if row["status"] == "error"]
    if errors:
        print(f"{len(errors)} of {len(rows)} videos could not be read (status error, reason given)")
    print(f"{summary['clips']} clips of {summary['videos']} videos in {summary['seconds']:.1f} s: "
          f"{summary['clips_per_s']} clips/s on {device} (decode, resample, re-encode and model)", file=sys.stderr)
    if args.out:
        write_rows(rows, args.out, summary)
        print(f"wrote {args.out}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
