"""Re-encode a raw video dataset into WebDataset tar shards plus `manifest.json`.

    python -m tools.make_shards --layout ucf101 --root data/synthetic/ucf101 --out shards/ucf101

Official train videos are split per class (seeded) into `labelled` (--label-fraction, at least one
per class), `val` (--val-fraction of the labelled part) and `unlabelled` (the rest); `test` is the
official test split (the official val split for Kinetics and SSv2). Each sample is `<key>.mp4`
(or `.webm` with --codec vp9) + `<key>.json` (docs/architecture.md section 2), and with
--modalities mv,residual,iframe the compressed-domain members `<key>.mv.npz`, `<key>.residual.npz`,
`<key>.iframe.npz` read from that stored video (pipeline/compressed.py; settings in the manifest's
`compressed` entry).

Videos are looked for where the layout's archives unpack (e.g. HMDB-51 in `videos/`, `hmdb51_org/`,
the root or another folder below it; see pipeline/video_dirs.py); --videos-dir names the folder.
A few missing or undecodable videos are skipped and recorded in the manifest; an official split with
none of its videos, or with more than --max-missing-fraction missing, stops the job before it writes.
--dry-run prints what would be sharded (per split and class) and writes nothing.

Restartable: the sample -> shard plan is deterministic, every shard is written to `.tmp` and renamed,
and a sidecar `<shard>.json` (checksum, members, skipped sources) is written last. A rerun keeps the
shards whose sidecar and checksum match the plan and writes only the missing ones.

Exit status: 0 done; 1 too few videos found or encoded (no manifest written); 2 bad arguments or layout.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import random
import re
import sys
import tarfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/make_shards.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from pipeline.compressed import (MEMBER_EXT, AllIntraWarning, CompressedSettings, NoMotionVectorsError, extract,
                                  npz_bytes, parse_modalities)
from pipeline.dali_index import write_index
from pipeline.layouts import (LAYOUTS, LISTED_BUT_MISSING, DatasetListing, LayoutError, SourceVideo,
                              detect_layout, read_layout)
from pipeline.manifest import (SPLITS, CompressedInfo, EncodeInfo, Manifest, ShardInfo, SkippedSource, SplitInfo,
                               write_json_atomic, write_manifest)
from pipeline.video_dirs import MissingVideosError, check_found
from pipeline.video_encode import CODECS, EncodeSettings, encode_video_bytes, even_size

SHARD_FILE = re.compile(r"^(labelled|unlabelled|val|test)-\d{6}\.(tar|idx|json)(\.tmp)?$")
UNLABELLED = -1  # label of a source without a class (a lone path in a file list)


@dataclass(frozen=True)
class ShardSettings:
    dataset: str
    codec: str = "h264"
    short_side: int = 128
    fps: float = 15.0
    gop: int = 8
    max_frames: int | None = None
    min_frames: int = 8
    modalities: tuple[str, ...] = ()  # compressed-domain members (pipeline/compressed.py); () = video only
    segments: int = 4
    mv_block: int = 4
    on_no_mvs: str = "skip"  # a video whose codec exports no motion vectors: "skip" (recorded) or "error"

    @property
    def container(self) -> str:
        return CODECS[self.codec][1]

    @property
    def compressed(self) -> CompressedSettings:
        return CompressedSettings(self.modalities, self.segments, self.mv_block)

    def plan_fields(self) -> dict:
        """What the shard plan hashes: without modalities, the fields shards had before they existed
        (so shards written before --modalities stay complete for a rerun)."""
        fields = asdict(self)
        if not self.modalities:
            for name in ("modalities", "segments", "mv_block", "on_no_mvs"):
                fields.pop(name)
        return fields


@dataclass(frozen=True)
class Sample:
    key: str
    source: SourceVideo
    label: int
    split: str


@dataclass(frozen=True)
class ShardTask:
    out_dir: Path
    name: str  # e.g. "labelled-000003" (tar = name + ".tar")
    samples: tuple[Sample, ...]
    settings: ShardSettings
    plan_hash: str


class BadVideo(Exception):
    """A source that cannot become a sample; the message is the reason recorded in the manifest."""


class NoMotionVectors(Exception):
    """--on-no-mvs error: a video's codec exports no motion vectors; the message names the video."""


class NothingEncoded(Exception):
    """A split was planned with videos but none of them could be encoded."""


# --- planning ------------------------------------------------------------------------------------

def sample_key(dataset: str, rel_path: str) -> str:
    return f"{dataset}_{hashlib.sha1(rel_path.encode('utf-8')).hexdigest()[:16]}"


def _round_half_up(x: float) -> int:
    return int(x + 0.5 + 1e-9)  # round() goes to even: 2.5 -> 2 would surprise a user


def assign_splits(listing: DatasetListing, label_fraction: float, val_fraction: float,
                  seed: int) -> tuple[dict[str, list[SourceVideo]], list[SkippedSource]]:
    """Official train -> labelled / val / unlabelled, stratified per class; official test -> test.

    Each class keeps max(1, label_fraction * n) labelled videos (rounded half up), of which
    val_fraction * that go to val while at least one stays labelled. Seeded, and independent of listing order.
    """
    splits: dict[str, list[SourceVideo]] = {split: [] for split in SPLITS}
    skipped: list[SkippedSource] = []
    seen: dict[str, str] = {}
    train_by_class: dict[str | None, list[SourceVideo]] = defaultdict(list)
    for video in listing.videos:
        if video.rel_path in seen:
            reason = f"listed more than once (kept in official {seen[video.rel_path]})"
            skipped.append(SkippedSource(video.rel_path, reason))
            continue
        seen[video.rel_path] = video.official_split
        if video.official_split == "test":
            if video.class_name is None:
                skipped.append(SkippedSource(video.rel_path, "test video without a label"))
            else:
                splits["test"].append(video)
        else:
            train_by_class[video.class_name].append(video)
    rng = random.Random(f"assign-splits/{seed}")
    for class_name in listing.classes:
        videos = sorted(train_by_class.get(class_name, []), key=lambda v: v.rel_path)
        rng.shuffle(videos)
        if not videos:
            continue
        n_labelled = min(len(videos), max(1, _round_half_up(label_fraction * len(videos))))
        n_val = min(n_labelled - 1, _round_half_up(val_fraction * n_labelled))
        splits["val"] += videos[:n_val]
        splits["labelled"] += videos[n_val:n_labelled]
        splits["unlabelled"] += videos[n_labelled:]
    splits["unlabelled"] += sorted(train_by_class.get(None, []), key=lambda v: v.rel_path)
    return splits, skipped


def plan_shards(listing: DatasetListing, splits: dict[str, list[SourceVideo]], settings: ShardSettings,
                out_dir: Path, samples_per_shard: int, seed: int) -> list[ShardTask]:
    label_of = {name: i for i, name in enumerate(listing.classes)}
    tasks = []
    for split in SPLITS:
        samples = sorted((Sample(sample_key(settings.dataset, v.rel_path), v,
                                 UNLABELLED if v.class_name is None else label_of[v.class_name], split)
                          for v in splits[split]), key=lambda s: s.key)
        random.Random(f"shard-order/{seed}/{split}").shuffle(samples)  # mix classes within each shard
        for start in range(0, len(samples), samples_per_shard):
            members = tuple(samples[start:start + samples_per_shard])
            plan = json.dumps([settings.plan_fields(), [(s.key, s.source.rel_path, s.label) for s in members]])
            tasks.append(ShardTask(out_dir, f"{split}-{start // samples_per_shard:06d}", members, settings,
                                   hashlib.sha256(plan.encode()).hexdigest()))
    return tasks


# --- one video -----------------------------------------------------------------------------------

def _frames_at_fps(decoded, fps: float, source_rate: float, max_frames: int | None):
    """Source frames shown at output times k / fps (each output repeats the latest source frame whose
    timestamp is <= k / fps): drops frames for a faster source, duplicates them for a slower one."""
    step, eps = 1.0 / fps, 1e-6
    t0 = previous = previous_time = None
    emitted = 0
    limit = max_frames if max_frames else float("inf")
    for index, frame in enumerate(decoded):
        t = frame.time if frame.time is not None else index / source_rate
        t0 = t if t0 is None else t0
        t -= t0
        while previous is not None and emitted * step < t - eps and emitted < limit:
            yield previous
            emitted += 1
        if emitted >= limit:
            return
        previous, previous_time = frame, t
    if previous is not None:
        end = previous_time + 1.0 / source_rate  # the last frame is shown for one source frame period
        while emitted * step < end - eps and emitted < limit:
            yield previous
            emitted += 1


def resampled_frames(path: Path, settings: ShardSettings) -> list[np.ndarray]:
    """Decode `path`, resample to settings.fps and resize to the short side: the RGB uint8 frames
    [H, W, 3] a shard stores before encoding (tools/predict.py reads raw videos the same way).
    Raises BadVideo with a reason (FileNotFoundError for a missing file)."""
    if path.stat().st_size == 0:
        raise BadVideo("empty file (0 bytes)")
    try:
        # metadata_errors: some HMDB AVIs carry non-UTF-8 tags
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise BadVideo("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            source_rate = float(stream.average_rate or stream.guessed_rate or 25)
            reformatter = VideoReformatter()  # one per video: building a scaler per frame is slow
            frames: list[np.ndarray] = []
            size = last_frame = last_rgb = None
            for frame in _frames_at_fps(container.decode(stream), settings.fps, source_rate, settings.max_frames):
                if frame is not last_frame:  # a duplicated frame is resized once
                    size = size or even_size(frame.width, frame.height, settings.short_side)
                    # swscale's bilinear widens its filter when shrinking; AREA cost 3.6x more here
                    last_rgb = reformatter.reformat(frame, size[0], size[1], format="rgb24",
                                                    interpolation="BILINEAR", threads=1).to_ndarray()
                    last_frame = frame
                frames.append(last_rgb)
    except (av.FFmpegError, UnicodeDecodeError, EOFError, OSError) as error:
        raise BadVideo(f"cannot decode ({type(error).__name__}: {error})") from None
    if len(frames) < settings.min_frames:
        raise BadVideo(f"too short: {len(frames)} frames at {settings.fps:g} fps (--min-frames {settings.min_frames})")
    return frames


def encode_frames(frames: list[np.ndarray], settings: ShardSettings) -> bytes:
    """The shard member's bytes for `frames` (codec, fps and keyframe interval of `settings`, no B-frames)."""
    return encode_video_bytes(np.stack(frames), EncodeSettings(codec=settings.codec, fps=settings.fps,
                                                               gop=settings.gop, bframes=0))


def transcode(path: Path, settings: ShardSettings) -> tuple[bytes, int, int, int]:
    """Decode `path`, resample to settings.fps, resize to the short side, re-encode.
    Returns (video bytes, frames, width, height); raises BadVideo with a reason."""
    frames = resampled_frames(path, settings)
    height, width = frames[0].shape[:2]
    return encode_frames(frames, settings), len(frames), width, height


def probe(path: Path) -> str | None:
    """Why `path` cannot become a sample, judged from its header and first frame (the dry run's check,
    far cheaper than `transcode`); None if it opens. Too-short videos show up only in the real run."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                return "no video stream"
            if next(container.decode(container.streams.video[0]), None) is None:
                return "cannot decode (no frames)"
    except FileNotFoundError:
        return LISTED_BUT_MISSING
    except (av.FFmpegError, UnicodeDecodeError, EOFError, OSError) as error:
        return f"cannot decode ({type(error).__name__}: {error})"
    return None


def probe_all(paths: list[Path], workers: int) -> list[str | None]:
    """`probe` of every path, in order, with a progress bar."""
    with tqdm(total=len(paths), unit="video", desc="probing", dynamic_ncols=True) as bar:
        if workers <= 1:
            reasons = []
            for path in paths:
                reasons.append(probe(path))
                bar.update(1)
            return reasons
        with multiprocessing.Pool(workers) as pool:
            reasons = []
            for reason in pool.imap(probe, paths, chunksize=16):
                reasons.append(reason)
                bar.update(1)
            return reasons


# --- one shard -----------------------------------------------------------------------------------

def _paths(task: ShardTask) -> tuple[Path, Path, Path]:
    return (task.out_dir / f"{task.name}.tar", task.out_dir / f"{task.name}.idx",
            task.out_dir / f"{task.name}.json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def completed_sidecar(task: ShardTask) -> dict | None:
    """The shard's sidecar if the shard on disk is complete for this plan (checksum verified)."""
    tar_path, idx_path, sidecar_path = _paths(task)
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if sidecar.get("plan") != task.plan_hash:
        return None
    if sidecar["samples"] == 0:  # every source of this shard was bad: no tar to verify
        return sidecar
    if not (tar_path.is_file() and idx_path.is_file()) or tar_path.stat().st_size != sidecar["bytes"]:
        return None
    return sidecar if file_sha256(tar_path) == sidecar["sha256"] else None


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o444  # fixed metadata: reruns give equal bytes
    tar.addfile(info, io.BytesIO(payload))


_videos_done = None  # multiprocessing.Value shared with pool workers, for the progress bar


def _init_worker(counter) -> None:
    global _videos_done
    _videos_done = counter


def write_shard(task: ShardTask, on_video=None) -> dict:
    """Encode every sample of `task` into `<name>.tar.tmp`, rename, index, then write the sidecar."""
    tar_path, idx_path, sidecar_path = _paths(task)
    tmp_path = tar_path.with_name(tar_path.name + ".tmp")
    members, skipped, warned = [], [], []
    settings = task.settings
    with tarfile.open(tmp_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in task.samples:
            try:
                video, frames, width, height = transcode(sample.source.path, settings)
                modalities, messages = compressed_members(video, settings, sample.source.rel_path)
                warned += messages
            except BadVideo as error:
                skipped.append({"source": sample.source.rel_path, "reason": str(error)})
            except FileNotFoundError:
                skipped.append({"source": sample.source.rel_path, "reason": "listed but missing"})
            else:
                meta = {"label": sample.label, "class_name": sample.source.class_name,
                        "dataset": settings.dataset, "source": sample.source.rel_path, "frames": frames,
                        "fps": float(settings.fps), "width": width, "height": height, "split": sample.split}
                _add_member(tar, f"{sample.key}.{settings.container}", video)
                _add_member(tar, f"{sample.key}.json", json.dumps(meta).encode())
                for ext, payload in modalities.items():
                    _add_member(tar, f"{sample.key}.{ext}", payload)
                members.append({"key": sample.key, "label": sample.label, "source": sample.source.rel_path,
                                "frames": frames})
            if on_video is not None:
                on_video()
            elif _videos_done is not None:
                with _videos_done.get_lock():
                    _videos_done.value += 1
    sidecar = {"file": None, "samples": len(members), "bytes": 0, "sha256": None, "index": None,
               "plan": task.plan_hash, "members": members, "skipped": skipped, "warnings": warned}
    if members:
        with tmp_path.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, tar_path)
        write_index(tar_path, idx_path)
        sidecar.update(file=tar_path.name, bytes=tar_path.stat().st_size, sha256=file_sha256(tar_path),
                       index=idx_path.name)
    else:
        tmp_path.unlink()
    write_json_atomic(sidecar_path, sidecar)  # last: its presence marks the shard complete
    return sidecar


# --- the job -------------------------------------------------------------------------------------

def compressed_members(video: bytes, settings: ShardSettings, name: str) -> tuple[dict[str, bytes], list[str]]:
    """The sample's compressed-domain members ({extension: npz bytes}) and the warnings raised making
    them (an all-intra video: one, naming it). A codec without motion vectors: BadVideo (recorded as
    skipped) or NoMotionVectors (stops the job), as settings.on_no_mvs says."""
    if not settings.modalities:
        return {}, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AllIntraWarning)
        try:
            arrays = extract(video, settings.compressed, name)
        except NoMotionVectorsError as error:
            if settings.on_no_mvs == "error":
                raise NoMotionVectors(f"{error} (--on-no-mvs error; --on-no-mvs skip records it in the "
                                      f"manifest's skipped list instead)") from None
            raise BadVideo(str(error)) from None
    messages = [str(item.message) for item in caught if issubclass(item.category, AllIntraWarning)]
    return {MEMBER_EXT[name]: npz_bytes(arrays[name]) for name in settings.modalities}, messages


def remove_stale_files(out_dir: Path, tasks: list[ShardTask]) -> list[str]:
    """Delete `.tmp` leftovers and shard files of an earlier plan that this plan does not have."""
    wanted = {f"{task.name}.{ext}" for task in tasks for ext in ("tar", "idx", "json")}
    stale = sorted(p.name for p in out_dir.iterdir() if SHARD_FILE.match(p.name) and p.name not in wanted)
    for name in stale:
        (out_dir / name).unlink()
    return stale


def run_tasks(tasks: list[ShardTask], workers: int) -> dict[str, dict]:
    """Write the shards of `tasks` (one shard per pool task); returns sidecars by shard name."""
    sidecars: dict[str, dict] = {}
    if not tasks:
        return sidecars
    total = sum(len(task.samples) for task in tasks)
    with tqdm(total=total, unit="video", desc="sharding", dynamic_ncols=True) as bar:
        def report(task: ShardTask, sidecar: dict) -> None:
            sidecars[task.name] = sidecar
            for item in sidecar["skipped"]:
                bar.write(f"skipped {item['source']}: {item['reason']}")
            for message in sidecar.get("warnings", []):
                bar.write(f"warning: {message}")
        if workers <= 1:
            for task in tasks:
                report(task, write_shard(task, on_video=lambda: bar.update(1)))
            return sidecars
        counter = multiprocessing.Value("l", 0)
        with multiprocessing.Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
            results = pool.imap_unordered(_write_shard_named, tasks)
            by_name = {task.name: task for task in tasks}
            done = 0
            while done < len(tasks):
                try:
                    name, sidecar = results.next(timeout=0.5)
                except multiprocessing.TimeoutError:
                    pass
                else:
                    report(by_name[name], sidecar)
                    done += 1
                bar.update(counter.value - bar.n)
    return sidecars


def _write_shard_named(task: ShardTask) -> tuple[str, dict]:
    return task.name, write_shard(task)


def build_manifest(listing: DatasetListing, tasks: list[ShardTask], sidecars: dict[str, dict],
                   skipped: list[SkippedSource], args: argparse.Namespace, settings: ShardSettings,
                   hflip_changes_label: bool, time_reversal_changes_label: bool) -> Manifest:
    splits = {}
    for split in SPLITS:
        per_class = [0] * len(listing.classes)
        shards = []
        for task in tasks:
            sidecar = sidecars[task.name]
            if not task.name.startswith(split + "-") or sidecar["samples"] == 0:
                continue
            for member in sidecar["members"]:
                if member["label"] != UNLABELLED:
                    per_class[member["label"]] += 1
            shards.append(ShardInfo(sidecar["file"], sidecar["samples"], sidecar["bytes"], sidecar["sha256"],
                                    sidecar["index"]))
        splits[split] = SplitInfo(sum(shard.samples for shard in shards), per_class, shards)
    skipped = [SkippedSource(m.rel_path, m.reason) for m in listing.missing] + skipped + [
        SkippedSource(item["source"], item["reason"]) for task in tasks for item in sidecars[task.name]["skipped"]]
    return Manifest(
        dataset=settings.dataset, layout=listing.layout, source_root=str(listing.root), classes=listing.classes,
        hflip_changes_label=hflip_changes_label, time_reversal_changes_label=time_reversal_changes_label,
        splits=splits,
        encode=EncodeInfo(codec=settings.codec, container=settings.container, short_side=settings.short_side,
                          fps=float(settings.fps), gop=settings.gop),
        compressed=(CompressedInfo(modalities=list(settings.modalities), segments=settings.segments,
                                   mv_block=settings.mv_block, members={m: MEMBER_EXT[m] for m in settings.modalities})
                    if settings.modalities else None),
        seed=args.seed, label_fraction=args.label_fraction, val_fraction=args.val_fraction, skipped=skipped,
        video_dirs={split: str(path) for split, path in listing.video_dirs.items()})


def check_encoded(tasks: list[ShardTask], sidecars: dict[str, dict]) -> None:
    """Raise NothingEncoded when a split planned with videos came out of the encoder empty."""
    for split in SPLITS:
        split_tasks = [task for task in tasks if task.name.startswith(split + "-")]
        planned = sum(len(task.samples) for task in split_tasks)
        if planned and not any(sidecars[task.name]["samples"] for task in split_tasks):
            reasons = Counter(item["reason"].split(" (")[0] for task in split_tasks
                              for item in sidecars[task.name]["skipped"])
            raise NothingEncoded(f"split {split!r}: none of its {planned} videos could be encoded ("
                                 + ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
                                 + "); no manifest written. Each video's reason is in the log above.")


# --- dry run -------------------------------------------------------------------------------------

def dry_run(listing: DatasetListing, splits: dict[str, list[SourceVideo]], skipped: list[SkippedSource],
            args: argparse.Namespace) -> None:
    """Print what `make_shards` would write: samples per split and class, missing and unreadable sources."""
    print("dry run: nothing is written or encoded")
    planned = [video for split in SPLITS for video in splits[split]]
    reasons = dict(zip((video.rel_path for video in planned),
                       probe_all([video.path for video in planned], args.workers)))
    unreadable = {rel: reason for rel, reason in reasons.items() if reason is not None}
    rows = {name: dict.fromkeys(SPLITS, 0) for name in [*listing.classes, None]}
    for split in SPLITS:
        for video in splits[split]:
            if video.rel_path not in unreadable:
                rows[video.class_name][split] += 1
    if not any(rows[None].values()):
        del rows[None]
    print(f"samples per split and class (--label-fraction {args.label_fraction:g}, --val-fraction "
          f"{args.val_fraction:g}, --seed {args.seed}; unreadable sources left out):")
    print("  " + " ".join(f"{split:>10}" for split in SPLITS) + "  class")
    for name, counts in rows.items():
        print("  " + " ".join(f"{counts[split]:>10}" for split in SPLITS) + f"  {name or '(no label)'}")
    totals = {split: sum(counts[split] for counts in rows.values()) for split in SPLITS}
    print("  " + " ".join(f"{totals[split]:>10}" for split in SPLITS) + "  (all classes)")
    print()
    shards = {split: -(-len(splits[split]) // args.samples_per_shard) for split in SPLITS}
    print("would write: " + ", ".join(f"{split} {shards[split]} shards" for split in SPLITS)
          + f" to {args.out} ({args.codec}, short side {args.short_side}, {args.fps:g} fps)")
    print(f"missing      {len(listing.missing):>7}")
    for item in listing.missing[:20]:
        print(f"  {item.path}")
    if len(listing.missing) > 20:
        print(f"  ... {len(listing.missing) - 20} more")
    print(f"unreadable   {len(unreadable):>7}")
    for rel, reason in unreadable.items():
        print(f"  {rel}: {reason}")
    if skipped:
        print(f"listed twice {len(skipped):>7}")


def make_shards(args: argparse.Namespace) -> Manifest | None:
    """Shard the dataset (or with --dry-run only report the plan, returning None)."""
    layout = args.layout
    if layout == "auto":
        layout, why = detect_layout(args.root.resolve())
        print(f"layout: {layout} ({why})")
    listing = read_layout(layout, args.root, split_id=args.split_id, train_list=args.train_list,
                          test_list=args.test_list, classes_file=args.classes, videos_dir=args.videos_dir)
    for folder in dict.fromkeys(listing.video_dirs.values()):
        official = [split for split, path in listing.video_dirs.items() if path == folder]
        found = sum(video.official_split in official for video in listing.videos)
        print(f"videos of official {' and '.join(official)}: {folder} ({found} found)")
    out_dir = Path(args.out)
    settings = ShardSettings(dataset=args.name or out_dir.name, codec=args.codec, short_side=args.short_side,
                             fps=args.fps, gop=args.gop, max_frames=args.max_frames, min_frames=args.min_frames,
                             modalities=args.modalities, segments=args.segments, mv_block=args.mv_block,
                             on_no_mvs=args.on_no_mvs)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", settings.dataset):
        raise SystemExit(f"--name {settings.dataset!r}: use letters, digits, '_' and '-' only (keys hold no dots)")
    splits, skipped = assign_splits(listing, args.label_fraction, args.val_fraction, args.seed)
    if args.dry_run:
        dry_run(listing, splits, skipped, args)
        check_found(listing, args.max_missing_fraction)
        return None
    check_found(listing, args.max_missing_fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_shards(listing, splits, settings, out_dir, args.samples_per_shard, args.seed)
    for name in remove_stale_files(out_dir, tasks):
        print(f"removed {out_dir / name} (not part of this plan)")
    for item in listing.missing:
        print(f"skipped {item.rel_path}: {item.reason}")

    started = time.perf_counter()
    sidecars = {task.name: sidecar for task in tasks if (sidecar := completed_sidecar(task)) is not None}
    pending = [task for task in tasks if task.name not in sidecars]
    print(f"{settings.dataset}: {len(listing.videos)} videos, {len(listing.classes)} classes, {len(tasks)} shards "
          f"({len(sidecars)} already complete, {len(pending)} to write) -> {out_dir}")
    sidecars.update(run_tasks(pending, args.workers))
    elapsed = time.perf_counter() - started
    check_encoded(tasks, sidecars)

    hflip = listing.hflip_changes_label if args.hflip_changes_label is None else args.hflip_changes_label
    reversal = (listing.time_reversal_changes_label if args.time_reversal_changes_label is None
                else args.time_reversal_changes_label)
    manifest = build_manifest(listing, tasks, sidecars, skipped, args, settings, hflip, reversal)
    write_manifest(manifest, out_dir)
    encoded = sum(len(task.samples) for task in pending)
    print(f"done in {elapsed:.1f} s: {encoded} videos processed ({encoded / max(elapsed, 1e-9):.1f} videos/s, "
          f"{args.workers} workers), {len(tasks) - len(pending)} shards reused")
    for split, info in manifest.splits.items():
        print(f"  {split:<10} {info.samples:>7} samples in {len(info.shards)} shards")
    reasons = Counter(item.reason.split(":")[0].split(" (")[0] for item in manifest.skipped)
    print(f"  skipped    {len(manifest.skipped):>7}" + "".join(f"  [{n} {r}]" for r, n in reasons.most_common()))
    print(f"manifest: {out_dir / 'manifest.json'}")
    return manifest


def _modalities_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_modalities(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", required=True, choices=LAYOUTS + ("auto",),
                        help="on-disk layout of --root ('auto' detects it from marker files)")
    parser.add_argument("--root", required=True, type=Path,
                        help="dataset root folder (holds the annotation files, e.g. ucfTrainTestlist/)")
    parser.add_argument("--videos-dir", type=Path,
                        help="folder that holds the videos (the class folders for ucf101, hmdb51 and folder; "
                             "relative list paths for filelist). Default: found below --root where the "
                             "layout's archives unpack, e.g. hmdb51: videos/, hmdb51_org/, the root, or "
                             "another folder holding the class folders")
    parser.add_argument("--max-missing-fraction", type=float, default=0.5,
                        help="stop (exit 1, nothing written) when more than this fraction of an official "
                             "split's listed videos is missing; below it, missing videos are skipped and "
                             "recorded in the manifest")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be sharded (samples per split and class, missing and "
                             "unreadable sources, shard counts) and write nothing; probes each video's "
                             "header and first frame")
    parser.add_argument("--out", required=True, type=Path, help="shard folder, e.g. shards/ucf101")
    parser.add_argument("--name",
                        help="dataset name used in sample keys and the manifest (default: --out's folder name)")
    parser.add_argument("--split-id", type=int, default=1, help="official split 1..3 (ucf101, hmdb51)")
    parser.add_argument("--train-list", type=Path,
                        help="filelist layout: '<path> <0-based label>' lines for official train")
    parser.add_argument("--test-list", type=Path, help="filelist layout: the same for official test (optional)")
    parser.add_argument("--classes", type=Path, help="filelist layout: class names, one per line (default class_<k>)")
    parser.add_argument("--label-fraction", type=float, default=0.1,
                        help="fraction of each class's official train videos that keep their label (at least 1)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="fraction of each class's labelled videos held out as 'val' (at least 1 stays labelled)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split assignment and shard order")
    parser.add_argument("--codec", choices=("h264", "vp9"), default="h264",
                        help="h264 -> .mp4 members; vp9 -> .webm members (DALI's CPU decoder reads VP9, not H.264)")
    parser.add_argument("--short-side", type=int, default=128,
                        help="output short side in pixels (sizes rounded to even)")
    parser.add_argument("--fps", type=float, default=15.0,
                        help="output frame rate (frames dropped/duplicated by timestamp)")
    parser.add_argument("--gop", type=int, default=8, help="frames between keyframes (small = cheap clip seeking)")
    parser.add_argument("--max-frames", type=int, default=None, help="keep at most this many output frames per video")
    parser.add_argument("--min-frames", type=int, default=8, help="skip videos with fewer output frames than this")
    parser.add_argument("--modalities", type=_modalities_arg, default=(),
                        help="compressed-domain members to store beside each video, comma-separated from "
                             "mv,residual,iframe (default: none). Read from the stored video: motion vectors "
                             "exported by the decoder, residuals = P-frame minus its motion-compensated "
                             "reference, I-frames on the segment grid (pipeline/compressed.py)")
    parser.add_argument("--segments", type=int, default=4,
                        help="with --modalities: K segments per video (one I-frame each)")
    parser.add_argument("--mv-block", type=int, default=4,
                        help="with --modalities: motion-vector field cell size in pixels")
    parser.add_argument("--on-no-mvs", choices=("skip", "error"), default="skip",
                        help="with --modalities: a video whose codec exports no motion vectors (e.g. vp9) is "
                             "skipped and named in the manifest's skipped list (skip) or stops the job (error)")
    parser.add_argument("--samples-per-shard", type=int, default=64, help="videos per tar shard")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (one shard per task)")
    parser.add_argument("--hflip-changes-label", action=argparse.BooleanOptionalAction, default=None,
                        help="record that a horizontal flip changes the class (default: True for ssv2, else False)")
    parser.add_argument("--time-reversal-changes-label", action=argparse.BooleanOptionalAction, default=None,
                        help="record that playing a clip backwards changes the class "
                             "(default: True for ssv2, else False)")
    args = parser.parse_args(argv)
    for flag in ("label_fraction", "val_fraction", "max_missing_fraction"):
        if not 0.0 <= getattr(args, flag) <= 1.0:
            parser.error(f"--{flag.replace('_', '-')} must be in [0, 1], got {getattr(args, flag)}")
    for flag in ("short_side", "fps", "gop", "samples_per_shard", "workers", "segments", "mv_block"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        make_shards(args)
    except LayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (MissingVideosError, NothingEncoded, NoMotionVectors) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
