"""Data-loading throughput, side by side: our torch loader vs the PyTorchVideo peer vs DALI, on the same
videos and the same clip spec, plus data-wait under a real JEDI step and a shard-settings sweep.

    python tools/profile_throughput.py --work-dir runs/throughput --videos 64 --workers 1,2 --repeats 3
    python tools/profile_throughput.py --preset gpu_quick --work-dir /tmp/tp     # GPU machine, see the preset

Sections (`--what`, comma separated):
  loaders    pipeline.cpu_loader.train_loader over our H.264 shards, for each --workers count
  peer       PyTorchVideo LabeledVideoDataset (PyAV decoder, UniformTemporalSubsample ->
             RandomShortSideScale -> RandomCrop) in a torch DataLoader with the same workers, once over
             the RAW source videos and once over the RE-ENCODED shard members extracted to files
  dali_cpu   DALI's CPU decoder over VP9 shards (threads = --workers), next to the torch loader on the
             same VP9 shards
  dali_gpu   DALI on the GPU (NVDEC) over the H.264 shards, GPU and decoder utilisation sampled with NVML
  jedi_step  four students (--jedi-backbone), JediModel.forward + backward + AdamW, fed by the loader:
             step time, clips/s, data-wait %
  sweep      re-shards the same source videos per --sweep-gops / --sweep-short-sides point and measures
             the torch loader (and DALI GPU when dali_gpu is selected) on each
  sharding   videos/s of tools/make_shards.py at each --workers count (fresh output every time)
  ceiling    the decode-only ceiling (tools/decode_ceiling.py): the same shard clips decoded by the same
             decoder in --workers plain processes, no tar, augmentation or DataLoader; interleaved with
             the loaders, and the torch loader's rows get `share_of_ceiling` at the same worker count
  reads      bytes read per epoch per rank (tools/read_cost.py), by index and by scan, for each
             --read-workers count, and each of --read-ranks ranks (by sample index when the shards are
             too few to split by shard), next to the rank's share of the split
  scale      the scale simulation: --scale-samples copies of one small clip under different keys,
             one epoch with the largest --read-workers count, by index and by scan

Every contender of a section runs in this one process, interleaved within each repeat so they see the
same machine load; a figure is the median of --repeats timed windows, each after a warm-up (worker
start, first batches). `frames/s` = clips/s x --clip-frames (frames delivered, not frames decoded).
`ratio` = contender clips/s / the peer's clips/s on the raw videos at the same worker count.
Inputs are generated in --work-dir (tools/make_synthetic.py + tools/make_shards.py in subprocesses)
unless --raw-root / --shards point at existing ones. Outputs: a table on stdout, --json, --png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

if __package__ in (None, ""):  # run as `python tools/profile_throughput.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from pipeline.contract import LABEL, VIDEO, AugmentSpec, ClipSpec, to_model_input
from pipeline.cpu_loader import train_loader
from tools import read_cost
from tools.decode_ceiling import decode_ceiling, shard_clips

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("loaders", "peer", "dali_cpu", "dali_gpu", "jedi_step", "sweep", "sharding", "ceiling", "reads", "scale")
SOURCES = {"ucf101": ".avi", "hmdb51": ".avi", "kinetics400": ".mp4"}  # class = parent folder name
VIDEO_SUFFIXES = (".avi", ".mp4", ".webm")
SPLIT = "labelled"  # every selected video goes to this split (label fraction 1, val fraction 0)
JEDI_STUDENTS = ("ucf101", "hmdb51", "kinetics400", "ssv2")  # names only: all four read the same stream
PRESETS = {
    # One GPU machine: 75 s including input generation without DALI; with DALI's GPU path at the ~12 clips/s
    # measured on an H200 (docs/benchmarks.md) each DALI contender took ~65 s, so the whole preset would take
    # an estimated ~15 min (it was stopped at 330 s, not run to the end).
    # DALI GPU + torch loader with 16 workers,
    # the JEDI step with four X3D-S students, NVML sampling, a small keyframe-interval sweep.
    "gpu_quick": dict(what=("loaders", "peer", "dali_gpu", "jedi_step", "sweep"), videos=128, workers=(16,),
                      repeats=3, timed_clips=512, synthetic_size="demo", jedi_backbone="x3d_s",
                      jedi_batch_size=8, jedi_steps=8, sweep_gops=(4, 8, 16), sweep_short_sides=()),
}


@dataclass(frozen=True)
class ProfileSettings:
    work_dir: Path
    what: tuple[str, ...] = ("loaders", "peer", "dali_cpu", "jedi_step")
    source: str = "ucf101"
    synthetic_size: str = "demo"
    raw_root: Path | None = None  # a make_synthetic.py output folder (holds <source>/)
    shards: Path | None = None  # existing H.264 shards (their manifest names the raw videos)
    videos: int = 64  # 0 = every video of the source
    clip: ClipSpec = ClipSpec(frames=16, stride=2, crop_size=112)
    batch_size: int = 8
    workers: tuple[int, ...] = (1, 2)
    repeats: int = 3
    timed_clips: int = 160
    warmup_batches: int = 0  # 0 = 2 * workers + 1 (every worker has delivered a batch)
    fps: float = 25.0
    gop: int = 8
    short_side: int = 128
    shard_workers: int = os.cpu_count() or 1
    sweep_gops: tuple[int, ...] = (4, 16, 32)
    sweep_short_sides: tuple[int, ...] = (96, 192)
    jedi_backbone: str = ""  # "" = x3d_s on a GPU, x3d_tiny on the CPU
    jedi_batch_size: int = 1  # clips per stream; a step reads 8 streams (labelled + unlabelled x 4)
    jedi_steps: int = 3
    jedi_warmup_steps: int = 3  # the first steps pick conv kernels (CPU: ~15 s for the very first)
    nvml_interval_s: float = 0.05
    read_workers: tuple[int, ...] = (1, 2, 8)
    read_ranks: int = 2
    scale_samples: int = 20000
    json_path: Path | None = None
    png_path: Path | None = None

    def __post_init__(self):
        unknown = [w for w in self.what if w not in SECTIONS]
        if unknown:
            raise ValueError(f"--what {','.join(unknown)}: allowed values are {','.join(SECTIONS)}")
        if self.source not in SOURCES:
            raise ValueError(f"--source {self.source!r}: allowed values are {sorted(SOURCES)}")
        for name in ("batch_size", "repeats", "timed_clips", "jedi_batch_size", "jedi_steps", "shard_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)}: must be >= 1")
        if not self.workers or min(self.workers) < 1:
            raise ValueError(f"--workers {self.workers}: need one or more counts >= 1")

    def warmup_for(self, workers: int) -> int:
        return self.warmup_batches or 2 * workers + 1

    @property
    def timed_batches(self) -> int:
        return max(2, math.ceil(self.timed_clips / self.batch_size))


# ---------------------------------------------------------------- inputs
def run_tool(*args: str) -> str:
    """Run a repo tool with this interpreter; its stdout (the tools print their own timings)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def source_root(settings: ProfileSettings) -> Path:
    """The raw dataset folder, written by make_synthetic.py first if no --raw-root was given."""
    raw = settings.raw_root or settings.work_dir / "raw"
    if settings.raw_root is None:
        run_tool("tools/make_synthetic.py", "--out", str(raw), "--size", settings.synthetic_size, "--seed", "0",
                 "--datasets", settings.source, "--workers", str(os.cpu_count() or 1))
    root = raw / settings.source
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no {settings.source}/ folder in --raw-root {raw} (make_synthetic.py output)")
    return root


def write_video_list(root: Path, settings: ProfileSettings, out_dir: Path) -> tuple[Path, Path]:
    """A make_shards `filelist` of --videos videos, taken round-robin over classes (class = parent folder)."""
    by_class: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix in VIDEO_SUFFIXES and not path.name.startswith("."):
            by_class.setdefault(path.parent.name, []).append(path.relative_to(root).as_posix())
    if not by_class:
        raise FileNotFoundError(f"{root}: no {'/'.join(VIDEO_SUFFIXES)} videos below it")
    classes = sorted(by_class)
    order: list[tuple[int, str]] = []
    longest = max(len(v) for v in by_class.values())
    for i in range(longest):
        order += [(label, by_class[c][i]) for label, c in enumerate(classes) if i < len(by_class[c])]
    if settings.videos:
        order = order[:settings.videos]
    out_dir.mkdir(parents=True, exist_ok=True)
    list_file, classes_file = out_dir / "videos.txt", out_dir / "classes.txt"
    list_file.write_text("".join(f"{rel} {label}\n" for label, rel in order))
    classes_file.write_text("".join(f"{c}\n" for c in classes))
    return list_file, classes_file


def make_shards(root: Path, lists: tuple[Path, Path], out: Path, *, codec: str, gop: int, short_side: int,
                fps: float, workers: int) -> float:
    """Shard the listed videos with tools/make_shards.py; returns the videos/s it reports (0 if reused)."""
    stdout = run_tool("tools/make_shards.py", "--layout", "filelist", "--root", str(root), "--train-list", str(lists[0]),
                      "--classes", str(lists[1]), "--out", str(out), "--name", "bench", "--label-fraction", "1",
                      "--val-fraction", "0", "--codec", codec, "--gop", str(gop), "--short-side", str(short_side),
                      "--fps", str(fps), "--samples-per-shard", "32", "--workers", str(workers))
    match = re.search(r"\(([\d.]+) videos/s", stdout)
    return float(match.group(1)) if match else 0.0


def shard_dir_name(codec: str, gop: int, short_side: int, fps: float) -> str:
    return f"{codec}_g{gop}_s{short_side}_f{fps:g}"


@dataclass
class Inputs:
    """What every contender reads: the same samples as shards, re-encoded files and raw files."""

    root: Path | None
    lists: tuple[Path, Path] | None
    h264: Path
    raw_videos: list[tuple[str, int]]  # (path, label)
    reencoded_videos: list[tuple[str, int]]
    fps: float
    vp9: Path | None = None
    shard_speed: dict[str, float] = field(default_factory=dict)


def extract_members(shard_dir: Path, out_dir: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Write every video member of the shards to `out_dir/<key>.<ext>`; returns (re-encoded, raw) lists,
    the raw path read from the manifest's source_root + the sample's json `source`."""
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    reencoded, raw = [], []
    for shard in manifest["splits"][SPLIT]["shards"]:
        with tarfile.open(shard_dir / shard["file"]) as tar:
            members = {m.name: m for m in tar if m.isreg()}
            for name in sorted(n for n in members if n.endswith(".json")):
                key = name[:-len(".json")]
                meta = json.loads(tar.extractfile(members[name]).read())
                video_name = next(f"{key}.{ext}" for ext in ("mp4", "webm") if f"{key}.{ext}" in members)
                target = out_dir / video_name
                if not target.is_file():
                    target.write_bytes(tar.extractfile(members[video_name]).read())
                reencoded.append((str(target), int(meta["label"])))
                raw.append((str(Path(manifest["source_root"]) / meta["source"]), int(meta["label"])))
    if not reencoded:
        raise ValueError(f"{shard_dir}: split {SPLIT!r} has no samples")
    return reencoded, raw


def prepare_inputs(settings: ProfileSettings) -> Inputs:
    if settings.shards is not None:
        manifest = json.loads((settings.shards / "manifest.json").read_text())
        reencoded, raw = extract_members(settings.shards, settings.work_dir / "reencoded")
        return Inputs(None, None, settings.shards, raw, reencoded, float(manifest["encode"]["fps"]))
    root = source_root(settings)
    lists = write_video_list(root, settings, settings.work_dir)
    speed = {}
    h264 = settings.work_dir / "shards" / shard_dir_name("h264", settings.gop, settings.short_side, settings.fps)
    print(f"sharding {settings.source} -> {h264}")
    speed["h264"] = make_shards(root, lists, h264, codec="h264", gop=settings.gop, short_side=settings.short_side,
                                fps=settings.fps, workers=settings.shard_workers)
    vp9 = None
    if "dali_cpu" in settings.what:
        vp9 = settings.work_dir / "shards" / shard_dir_name("vp9", settings.gop, settings.short_side, settings.fps)
        speed["vp9"] = make_shards(root, lists, vp9, codec="vp9", gop=settings.gop, short_side=settings.short_side,
                                   fps=settings.fps, workers=settings.shard_workers)
    reencoded, raw = extract_members(h264, settings.work_dir / "reencoded" / h264.name)
    return Inputs(root, lists, h264, raw, reencoded, settings.fps, vp9, speed)


# ---------------------------------------------------------------- contenders
def our_batches(shard_dir: Path, settings: ProfileSettings, workers: int, steps: int,
                pin_memory: bool = False) -> Iterator[dict]:
    return iter(train_loader(shard_dir, SPLIT, settings.clip, AugmentSpec(), batch_size=settings.batch_size,
                             steps_per_epoch=steps, num_workers=workers, pin_memory=pin_memory))


def import_pytorchvideo():
    """pytorchvideo 0.1.5 imports a torchvision module that was renamed; alias it before importing."""
    import torchvision
    sys.modules.setdefault("torchvision.transforms.functional_tensor", torchvision.transforms._functional_tensor)
    import pytorchvideo.data
    import pytorchvideo.transforms
    return pytorchvideo


def peer_batches(videos: list[tuple[str, int]], settings: ProfileSettings, workers: int, steps: int,
                 fps: float) -> Iterator[dict]:
    """The loader a user would otherwise pick: LabeledVideoDataset + PyAV + the standard transform chain."""
    pytorchvideo = import_pytorchvideo()
    from torchvision.transforms import Compose, RandomCrop  # pytorchvideo's tutorials use torchvision's crop
    transforms = pytorchvideo.transforms
    clip = settings.clip
    crop = clip.crop_size
    chain = Compose([transforms.UniformTemporalSubsample(clip.frames),
                     transforms.RandomShortSideScale(min_size=round(crop * 8 / 7), max_size=round(crop * 10 / 7)),
                     RandomCrop(crop)])
    needed = steps * settings.batch_size + workers * settings.batch_size  # each worker may leave a partial batch
    paths = [(path, {"label": label}) for path, label in videos] * math.ceil(needed / len(videos))
    dataset = pytorchvideo.data.LabeledVideoDataset(
        paths, pytorchvideo.data.make_clip_sampler("random", clip.frames * clip.stride / fps),
        video_sampler=torch.utils.data.RandomSampler,
        transform=transforms.ApplyTransformToKey("video", chain), decode_audio=False, decoder="pyav")
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, num_workers=workers)
    return (batch for _, batch in zip(range(steps), loader))


def dali_batches(shard_dir: Path, settings: ProfileSettings, threads: int, steps: int, device: str) -> Iterator[dict]:
    from pipeline.dali_loader import dali_train_loader

    loader = dali_train_loader(shard_dir, SPLIT, settings.clip, AugmentSpec(), batch_size=settings.batch_size,
                               steps_per_epoch=steps, device=device, num_threads=threads, build_missing_index=True)
    try:
        yield from loader
    finally:
        loader.close()


def time_batches(batches: Iterator[dict], warmup: int, timed: int) -> dict:
    """Consume `warmup` batches untimed, then time `timed` batches; clips/s over the timed window."""
    for _ in range(warmup):
        next(batches)
    clips = 0
    started = time.perf_counter()
    for _ in range(timed):
        batch = next(batches)
        clips += batch[VIDEO].shape[0]
    if batch[VIDEO].is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    close = getattr(batches, "close", None)
    if close is not None:
        close()  # stops DataLoader workers / drains DALI before the next contender starts
    return {"clips": clips, "seconds": seconds, "clips_per_s": clips / seconds}


class NvmlSampler:
    """GPU and NVDEC utilisation (%) sampled in a background thread (nvidia-ml-py's pynvml)."""

    def __init__(self, interval_s: float = 0.05, device_index: int = 0):
        import pynvml

        self.nvml, self.interval_s = pynvml, interval_s
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self.gpu: list[int] = []
        self.decoder: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.gpu.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            self.decoder.append(self.nvml.nvmlDeviceGetDecoderUtilization(self.handle)[0])
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "NvmlSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        def stats(values):
            return {"mean": round(statistics.fmean(values), 1), "max": max(values)} if values else None
        return {"samples": len(self.gpu), "gpu_util_pct": stats(self.gpu), "nvdec_util_pct": stats(self.decoder)}


def maybe_nvml(settings: ProfileSettings, notes: list[str]):
    if not torch.cuda.is_available():
        return None
    try:
        return NvmlSampler(settings.nvml_interval_s, torch.cuda.current_device())
    except Exception as error:  # no pynvml, or a driver without NVML
        note = f"NVML sampling off: {type(error).__name__}: {error}"
        if note not in notes:
            notes.append(note)
        return None


# ---------------------------------------------------------------- sections
@dataclass
class Contender:
    name: str  # what the table shows
    data: str  # which files it reads
    make: Callable[[int, int], Iterator[dict]]  # (workers, steps) -> batches
    nvml: bool = False
    extra: dict = field(default_factory=dict)  # copied into the contender's row (sweep point settings)
    measure: Callable[[int, int], dict] | None = None  # (workers, clips) -> result, instead of timing batches


def dali_available(notes: list[str]) -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as error:
        note = f"DALI skipped: nvidia.dali does not import ({error})"
        if note not in notes:
            notes.append(note)
        return False
    return True


def loader_contenders(settings: ProfileSettings, inputs: Inputs, notes: list[str]) -> list[Contender]:
    contenders = []
    if "loaders" in settings.what:
        contenders.append(Contender("torch loader", "H.264 shards",
                                    lambda w, n: our_batches(inputs.h264, settings, w, n)))
    if "peer" in settings.what:
        contenders.append(Contender("PyTorchVideo", f"raw {Path(inputs.raw_videos[0][0]).suffix} files",
                                    lambda w, n: peer_batches(inputs.raw_videos, settings, w, n, inputs.fps)))
        contenders.append(Contender("PyTorchVideo", "re-encoded .mp4 files",
                                    lambda w, n: peer_batches(inputs.reencoded_videos, settings, w, n, inputs.fps)))
    if "dali_cpu" in settings.what and inputs.vp9 is not None and dali_available(notes):
        contenders.append(Contender("DALI cpu", "VP9 shards", lambda w, n: dali_batches(inputs.vp9, settings, w, n, "cpu")))
        contenders.append(Contender("torch loader", "VP9 shards", lambda w, n: our_batches(inputs.vp9, settings, w, n)))
    if "ceiling" in settings.what:
        clips = shard_clips(inputs.h264, SPLIT, settings.clip)
        contenders.append(Contender("decode only", "H.264 shard clips in memory", lambda w, n: iter(()),
                                    measure=lambda w, n: decode_ceiling(clips, w, n)))
    if "dali_gpu" in settings.what:
        if not torch.cuda.is_available():
            notes.append("DALI gpu skipped: CUDA is not available on this machine")
        elif dali_available(notes):
            contenders.append(Contender("DALI gpu", "H.264 shards",
                                        lambda w, n: dali_batches(inputs.h264, settings, w, n, "gpu"), nvml=True))
    return contenders


def measure_contenders(contenders: list[Contender], settings: ProfileSettings, notes: list[str],
                       section: str, workers_list=None) -> list[dict]:
    """All contenders at each worker count, interleaved within each repeat; medians."""
    workers_list = workers_list or settings.workers
    runs: dict[tuple[int, int], list[dict]] = {}
    jobs = [(w, r, i) for w in workers_list for r in range(settings.repeats) for i in range(len(contenders))]
    for workers, _, index in tqdm(jobs, desc=f"timing {section}", unit="run", leave=False):
        contender = contenders[index]
        warmup = settings.warmup_for(workers)
        sampler = maybe_nvml(settings, notes) if contender.nvml else None
        if contender.measure is not None:
            runs.setdefault((workers, index), []).append(
                contender.measure(workers, max(workers, settings.timed_batches * settings.batch_size)))
            continue
        batches = contender.make(workers, warmup + settings.timed_batches)
        if sampler is None:
            result = time_batches(batches, warmup, settings.timed_batches)
        else:
            with sampler:
                result = time_batches(batches, warmup, settings.timed_batches)
            result["nvml"] = sampler.summary()
        runs.setdefault((workers, index), []).append(result)
    rows = []
    for (workers, index), results in runs.items():
        contender = contenders[index]
        clips_per_s = statistics.median(r["clips_per_s"] for r in results)
        row = {"section": section, "contender": contender.name, "data": contender.data, "workers": workers,
               "clips_per_s": round(clips_per_s, 2), "frames_per_s": round(clips_per_s * settings.clip.frames, 1),
               "runs_clips_per_s": [round(r["clips_per_s"], 2) for r in results], **contender.extra}
        nvml = [r["nvml"] for r in results if "nvml" in r]
        if nvml:
            row["nvml"] = nvml[len(nvml) // 2]
        rows.append(row)
    add_peer_ratios(rows)
    add_ceiling_shares(rows)
    return rows


def add_ceiling_shares(rows: list[dict]) -> None:
    """share_of_ceiling = the torch loader's clips/s (H.264 shards) / decode-only clips/s, same worker count."""
    for row in rows:
        ceiling = next((c for c in rows if c["contender"] == "decode only" and c["workers"] == row["workers"]), None)
        if ceiling is not None and row["contender"] == "torch loader" and row["data"] == "H.264 shards":
            row["share_of_ceiling"] = round(row["clips_per_s"] / ceiling["clips_per_s"], 3)


def add_peer_ratios(rows: list[dict]) -> None:
    """ratio = clips/s / the peer's at the same worker count (raw files; and re-encoded files)."""
    for row in rows:
        for label, pick in (("ratio_vs_peer_raw", "raw"), ("ratio_vs_peer_reencoded", "re-encoded")):
            peer = next((p for p in rows if p["contender"] == "PyTorchVideo" and p["data"].startswith(pick)
                         and p["workers"] == row["workers"]), None)
            if peer is not None:
                row[label] = round(row["clips_per_s"] / peer["clips_per_s"], 2)


def jedi_rows(settings: ProfileSettings, inputs: Inputs, notes: list[str]) -> list[dict]:
    """Data-wait % of the joint step: 8 batches per step (labelled + unlabelled for 4 students)."""
    from jedi_train.jedi import JediModel
    from jedi_train.models import build_backbone

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    backbone = settings.jedi_backbone or ("x3d_s" if on_gpu else "x3d_tiny")
    classes = len(json.loads((inputs.h264 / "manifest.json").read_text())["classes"])
    model = JediModel({name: build_backbone(backbone, "batchnorm") for name in JEDI_STUDENTS},
                      {name: classes for name in JEDI_STUDENTS}).to(device)
    model.init_teachers_from_students()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    streams = 2 * len(JEDI_STUDENTS)
    steps = settings.jedi_warmup_steps + settings.jedi_steps
    jedi_settings = replace(settings, batch_size=settings.jedi_batch_size)
    workers = max(settings.workers)
    # feeders give one iterator per stream. The torch loader: one DataLoader whose workers serve all
    # streams. DALI: one loader per stream, as the trainer builds them (jedi_train/data.py), each with one
    # batch decoding while the step runs, its CPU threads a share of the workers.
    def torch_streams():
        shared = our_batches(inputs.h264, jedi_settings, workers, steps * streams, pin_memory=on_gpu)
        return [shared] * streams

    def dali_streams():
        threads = max(1, workers // streams)
        return [dali_batches(inputs.h264, jedi_settings, threads, steps, "gpu") for _ in range(streams)]

    feeders = [("torch loader", "H.264 shards", workers, torch_streams)]
    if on_gpu and "dali_gpu" in settings.what and dali_available(notes):
        feeders.append(("DALI gpu", "H.264 shards, a loader per stream", workers, dali_streams))
    precision = torch.bfloat16 if on_gpu else None
    rows = []
    for name, data, feeder_workers, make in feeders:
        per_stream = make()
        sampler = maybe_nvml(settings, notes)
        timings = []
        if sampler is not None:
            sampler.__enter__()
        for step in tqdm(range(steps), desc=f"JEDI step ({name})", unit="step", leave=False):
            started = time.perf_counter()
            parts = [next(stream) for stream in per_stream]
            waited = time.perf_counter() - started
            clips = [to_model_input(p[VIDEO].to(device, non_blocking=True)) for p in parts]
            labels = [p[LABEL].to(device, non_blocking=True) for p in parts]
            names = JEDI_STUDENTS
            with torch.autocast(device.type, dtype=precision, enabled=precision is not None):
                out = model(dict(zip(names, clips[:4])), dict(zip(names, labels[:4])), dict(zip(names, clips[4:])))
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            if on_gpu:
                torch.cuda.synchronize()
            if step >= settings.jedi_warmup_steps:
                timings.append((time.perf_counter() - started, waited))
        if sampler is not None:
            sampler.__exit__(None, None, None)
        for stream in set(per_stream):
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        step_s = statistics.median(t for t, _ in timings)
        wait = sum(w for _, w in timings) / sum(t for t, _ in timings)
        row = {"section": "jedi_step", "contender": name, "data": data, "workers": feeder_workers,
               "backbone": backbone, "students": len(JEDI_STUDENTS), "clips_per_step": streams * settings.jedi_batch_size,
               "step_s": round(step_s, 3), "clips_per_s": round(streams * settings.jedi_batch_size / step_s, 2),
               "data_wait_pct": round(100 * wait, 1), "device": str(device),
               "precision": "bf16 autocast" if precision else "fp32", "steps": settings.jedi_steps}
        if sampler is not None:
            row["nvml"] = sampler.summary()
        rows.append(row)
    return rows


def sweep_rows(settings: ProfileSettings, inputs: Inputs, notes: list[str]) -> list[dict]:
    """Shard every point first, then time all points interleaved (same load for each point)."""
    if inputs.root is None:
        notes.append("sweep skipped: it re-shards raw videos, and --shards was given without them")
        return []
    points = [(g, settings.short_side) for g in sorted(set(settings.sweep_gops) | {settings.gop})]
    points += [(settings.gop, s) for s in sorted(set(settings.sweep_short_sides) - {settings.short_side})]
    with_dali = "dali_gpu" in settings.what and torch.cuda.is_available() and dali_available(notes)
    contenders = []
    for gop, short_side in tqdm(points, desc="sharding sweep points", unit="point", leave=False):
        out = settings.work_dir / "shards" / shard_dir_name("h264", gop, short_side, settings.fps)
        speed = make_shards(inputs.root, inputs.lists, out, codec="h264", gop=gop, short_side=short_side,
                            fps=settings.fps, workers=settings.shard_workers)
        info = json.loads((out / "manifest.json").read_text())["splits"][SPLIT]
        extra = {"gop": gop, "short_side": short_side,
                 "bytes_per_video": round(sum(s["bytes"] for s in info["shards"]) / max(1, info["samples"]))}
        if speed:
            extra["shard_videos_per_s"] = speed
        contenders.append(Contender("torch loader", f"H.264 g{gop} s{short_side}",
                                    lambda w, n, out=out: our_batches(out, settings, w, n), extra=extra))
        if with_dali:
            contenders.append(Contender("DALI gpu", f"H.264 g{gop} s{short_side}",
                                        lambda w, n, out=out: dali_batches(out, settings, w, n, "gpu"),
                                        nvml=True, extra=extra))
    rows = measure_contenders(contenders, settings, notes, "sweep", workers_list=(max(settings.workers),))
    for row in rows:  # relative to the default shard settings, same contender
        base = next((b for b in rows if b["contender"] == row["contender"] and b["gop"] == settings.gop
                     and b["short_side"] == settings.short_side), None)
        if base:
            row["ratio_vs_default_point"] = round(row["clips_per_s"] / base["clips_per_s"], 2)
    return rows


def sharding_rows(settings: ProfileSettings, inputs: Inputs, notes: list[str]) -> list[dict]:
    if inputs.root is None:
        notes.append("sharding skipped: needs raw videos (not --shards)")
        return []
    videos = len(inputs.raw_videos)
    results: dict[int, list[float]] = {}
    for workers in settings.workers:
        for _ in range(settings.repeats):
            out = settings.work_dir / "shards" / f"sharding_w{workers}"
            shutil.rmtree(out, ignore_errors=True)  # fresh output: make_shards would reuse finished shards
            started = time.perf_counter()
            reported = make_shards(inputs.root, inputs.lists, out, codec="h264", gop=settings.gop,
                                   short_side=settings.short_side, fps=settings.fps, workers=workers)
            results.setdefault(workers, []).append((reported, videos / (time.perf_counter() - started)))
            shutil.rmtree(out, ignore_errors=True)
    return [{"section": "sharding", "contender": "make_shards.py", "data": f"{videos} {settings.source} videos",
             "workers": workers, "videos_per_s": round(statistics.median(r for r, _ in runs), 2),
             "videos_per_s_incl_startup": round(statistics.median(w for _, w in runs), 2),
             "runs_videos_per_s": [r for r, _ in runs]} for workers, runs in results.items()]


# ---------------------------------------------------------------- report
def format_table(rows: list[dict]) -> str:
    lines = []
    header = f"{'section':<10} {'contender':<14} {'data':<24} {'wk':>3} {'clips/s':>9} {'frames/s':>9} " \
             f"{'ratio':>6}  notes"
    lines += [header, "-" * len(header)]
    for row in rows:
        if row["section"] in ("reads", "scale"):
            continue  # their own table (read_cost.format_rows)
        notes = []
        if "ratio_vs_peer_reencoded" in row:
            notes.append(f"x{row['ratio_vs_peer_reencoded']} vs peer on re-encoded")
        if "step_s" in row:
            notes.append(f"step {row['step_s']} s, data-wait {row['data_wait_pct']}% ({row['backbone']} x{row['students']}, "
                         f"{row['clips_per_step']} clips/step, {row['precision']})")
        if "gop" in row:
            notes.append(f"{row['bytes_per_video'] / 1024:.1f} KiB/video, x{row.get('ratio_vs_default_point', '?')} "
                         f"vs default point")
        if "share_of_ceiling" in row:
            notes.append(f"{100 * row['share_of_ceiling']:.0f}% of the decode-only ceiling")
        if "videos_per_s" in row:
            notes.append(f"{row['videos_per_s']} videos/s ({row['videos_per_s_incl_startup']} incl. start-up)")
        if row.get("nvml"):
            nv = row["nvml"]
            notes.append(f"GPU {nv['gpu_util_pct']} NVDEC {nv['nvdec_util_pct']}")
        clips = f"{row['clips_per_s']:>9.1f}" if "clips_per_s" in row else f"{'':>9}"
        frames = f"{row['frames_per_s']:>9.0f}" if "frames_per_s" in row else f"{'':>9}"
        ratio = f"{row['ratio_vs_peer_raw']:>6.2f}" if "ratio_vs_peer_raw" in row else f"{'':>6}"
        lines.append(f"{row['section']:<10} {row['contender']:<14} {row['data'][:24]:<24} {row['workers']:>3} "
                     f"{clips} {frames} {ratio}  {'; '.join(notes)}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("loaders", "jedi_step", "sweep", "sharding") if any(
        r["section"] == p or (p == "loaders" and r["section"] == "loader") for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "loaders":
            subset = [r for r in rows if r["section"] == "loader"]
            labels = list(dict.fromkeys(f"{r['contender']}\n{r['data']}" for r in subset))
            workers = sorted({r["workers"] for r in subset})
            width = 0.8 / len(workers)
            for k, w in enumerate(workers):
                values = [next((r["clips_per_s"] for r in subset if f"{r['contender']}\n{r['data']}" == label
                                and r["workers"] == w), 0) for label in labels]
                bars = ax.bar([i + k * width for i in range(len(labels))], values, width, label=f"{w} workers")
                ax.bar_label(bars, fmt="%.0f", fontsize=7)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, fontsize=7)
            ax.set_ylabel("clips/s (median)")
            ax.set_title("loaders, same videos and clip spec")
        elif panel == "jedi_step":
            subset = [r for r in rows if r["section"] == "jedi_step"]
            bars = ax.bar([r["contender"] for r in subset], [r["data_wait_pct"] for r in subset])
            ax.bar_label(bars, [f"{r['data_wait_pct']}% of {r['step_s']} s" for r in subset], fontsize=8)
            ax.set_ylabel("data-wait % of step time")
            ax.set_ylim(0, 100)
            ax.set_title(f"JEDI step ({subset[0]['backbone']} x{subset[0]['students']})")
        elif panel == "sweep":
            subset = [r for r in rows if r["section"] == "sweep"]
            for contender in dict.fromkeys(r["contender"] for r in subset):
                for side in sorted({r["short_side"] for r in subset}):
                    points = sorted((r["gop"], r["clips_per_s"]) for r in subset
                                    if r["contender"] == contender and r["short_side"] == side)
                    ax.plot(*zip(*points), marker="o", label=f"{contender}, short side {side}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("keyframe interval (--gop)")
            ax.set_ylabel("clips/s")
            ax.set_title("shard settings sweep")
        else:
            subset = [r for r in rows if r["section"] == "sharding"]
            ax.bar([str(r["workers"]) for r in subset], [r["videos_per_s"] for r in subset])
            ax.set_xlabel("make_shards.py --workers")
            ax.set_ylabel("videos/s")
            ax.set_title("sharding throughput")
        if panel in ("loaders", "sweep"):
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info() -> dict:
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "python": platform.python_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def run_profile(settings: ProfileSettings, argv: list[str] | None = None) -> dict:
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    machine = machine_info()
    inputs = prepare_inputs(settings)
    rows: list[dict] = []
    contenders = loader_contenders(settings, inputs, notes)
    if contenders:
        rows += measure_contenders(contenders, settings, notes, "loader")
    if "jedi_step" in settings.what:
        rows += jedi_rows(settings, inputs, notes)
    if "sweep" in settings.what:
        rows += sweep_rows(settings, inputs, notes)
    if "sharding" in settings.what:
        rows += sharding_rows(settings, inputs, notes)
    if "reads" in settings.what:
        rows += read_cost.read_rows(inputs.h264, settings.work_dir, settings.clip, batch_size=settings.batch_size,
                                    workers=settings.read_workers, ranks=settings.read_ranks)
    if "scale" in settings.what:
        rows += read_cost.scale_rows(settings.work_dir, settings.scale_samples, max(settings.read_workers),
                                     settings.batch_size)
    if hasattr(os, "getloadavg"):
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"command": " ".join(["python", "tools/profile_throughput.py", *(argv or [])]),
              "machine": machine, "settings": json.loads(json.dumps(asdict(settings), default=str)),
              "inputs": {"videos": len(inputs.raw_videos), "raw_example": inputs.raw_videos[0][0],
                         "h264_shards": str(inputs.h264), "vp9_shards": str(inputs.vp9) if inputs.vp9 else None,
                         "shard_videos_per_s": inputs.shard_speed, "fps": inputs.fps},
              "rows": rows, "notes": notes}
    table = format_table(rows)
    print(f"\n{machine['date']}  {machine['cpus']} CPUs  GPU: {machine['cuda'] or 'none'}  "
          f"load {machine.get('load_average_at_start')} -> {machine.get('load_average_at_end')}")
    print(f"{len(inputs.raw_videos)} videos; clip {settings.clip.frames}x stride {settings.clip.stride}, crop "
          f"{settings.clip.crop_size}; batch {settings.batch_size}; median of {settings.repeats}\n")
    print(table)
    read_rows = [row for row in rows if row["section"] in ("reads", "scale")]
    if read_rows:
        print("\nbytes read per epoch per rank (tools/read_cost.py; share = the rank's samples' bytes)\n")
        print(read_cost.format_rows(read_rows))
    for note in notes:
        print(f"note: {note}")
    json_path = settings.json_path or settings.work_dir / "throughput.json"
    png_path = settings.png_path or settings.work_dir / "throughput.png"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    if rows:
        plot(rows, png_path, f"{machine['date']}  {machine['cpus']} CPUs  GPU: {machine['cuda'] or 'none'}")
    print(f"\njson: {json_path}\npng:  {png_path if rows else '(nothing measured)'}")
    return result


# ---------------------------------------------------------------- command line
def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,2") from None


def parse_args(argv: list[str] | None = None) -> ProfileSettings:
    d = ProfileSettings(work_dir=Path("."))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="gpu_quick: loaders+peer+dali_gpu+jedi_step+sweep, 16 workers, x3d_s students, 128 videos, "
                        "gop sweep 4,8,16; 75 s on an H200 without DALI, ~15 min with DALI (an estimate from its measured speed) "
                        "(flags given after it win)")
    p.add_argument("--what", default=None, help=f"comma-separated sections from {','.join(SECTIONS)} "
                                                f"(default {','.join(d.what)})")
    p.add_argument("--work-dir", type=Path, default=Path("runs/throughput"),
                   help="generated videos, shards, extracted files and the outputs go here")
    p.add_argument("--source", choices=sorted(SOURCES), default=d.source,
                   help="which synthetic dataset's raw videos to use (ucf101: MPEG-4 AVI; kinetics400: H.264 MP4)")
    p.add_argument("--synthetic-size", choices=("tiny", "demo", "large"), default=None,
                   help="make_synthetic.py --size when generating raw videos (default demo; tiny clips have 16 frames)")
    p.add_argument("--raw-root", type=Path, help="existing make_synthetic.py output folder (skips generation)")
    p.add_argument("--shards", type=Path,
                   help="existing H.264 shards to read (raw videos = manifest source_root + each sample's source); "
                        "no VP9/sweep/sharding sections then")
    p.add_argument("--videos", type=int, default=None, help=f"videos to use, round-robin over classes (0 = all; "
                                                            f"default {d.videos})")
    p.add_argument("--clip-frames", type=int, default=d.clip.frames, help="frames per clip (T)")
    p.add_argument("--stride", type=int, default=d.clip.stride, help="source frames between sampled frames")
    p.add_argument("--crop", type=int, default=d.clip.crop_size, help="output height and width")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="clips per batch for every loader")
    p.add_argument("--workers", type=int_list, default=None,
                   help=f"worker processes (DALI: threads) to try, e.g. 1,2 (default {','.join(map(str, d.workers))})")
    p.add_argument("--repeats", type=int, default=None, help=f"timed windows per figure; the median is reported "
                                                             f"(default {d.repeats})")
    p.add_argument("--timed-clips", type=int, default=None, help=f"clips per timed window (default {d.timed_clips})")
    p.add_argument("--warmup-batches", type=int, default=0, help="untimed batches first (0 = 2 x workers + 1)")
    p.add_argument("--fps", type=float, default=d.fps, help="shard frame rate (25 keeps every UCF-like frame)")
    p.add_argument("--gop", type=int, default=d.gop, help="shard keyframe interval (make_shards --gop)")
    p.add_argument("--short-side", type=int, default=d.short_side, help="shard short side (make_shards --short-side)")
    p.add_argument("--shard-workers", type=int, default=d.shard_workers, help="make_shards --workers for inputs")
    p.add_argument("--sweep-gops", type=int_list, default=None,
                   help=f"keyframe intervals of the sweep, at --short-side (default {','.join(map(str, d.sweep_gops))})")
    p.add_argument("--sweep-short-sides", type=int_list, default=None,
                   help=f"short sides of the sweep, at --gop (default {','.join(map(str, d.sweep_short_sides))}; "
                        f"'' for none)")
    p.add_argument("--jedi-backbone", choices=("x3d_tiny", "x3d_xs", "x3d_s", "x3d_m", "slow_r50"), default=None,
                   help="student backbone of the JEDI step (default x3d_s on a GPU, x3d_tiny on the CPU)")
    p.add_argument("--jedi-batch-size", type=int, default=None,
                   help=f"clips per stream in the JEDI step; 8 streams per step (default {d.jedi_batch_size})")
    p.add_argument("--jedi-steps", type=int, default=None, help=f"timed JEDI steps (default {d.jedi_steps})")
    p.add_argument("--jedi-warmup-steps", type=int, default=d.jedi_warmup_steps,
                   help="untimed JEDI steps first (kernel selection makes the first steps slow)")
    p.add_argument("--read-workers", type=int_list, default=d.read_workers,
                   help=f"reads/scale sections: DataLoader workers per epoch measured (default "
                        f"{','.join(map(str, d.read_workers))}; scale uses the largest)")
    p.add_argument("--read-ranks", type=int, default=d.read_ranks,
                   help="reads section: also read each rank of this many (1 = off); by sample index when the "
                        "shards are fewer than 4 per rank and not a multiple of it (e.g. --videos 96: 3 shards)")
    p.add_argument("--scale-samples", type=int, default=d.scale_samples,
                   help="scale section: samples written (one small H.264 clip under as many keys)")
    p.add_argument("--json", type=Path, help="JSON output (default <work-dir>/throughput.json)")
    p.add_argument("--png", type=Path, help="plot (default <work-dir>/throughput.png)")
    args = p.parse_args(argv)
    preset = PRESETS.get(args.preset, {})

    def pick(name, value):
        return value if value is not None else preset.get(name, getattr(d, name))

    what = tuple(w.strip() for w in args.what.split(",") if w.strip()) if args.what else pick("what", None)
    try:
        return ProfileSettings(
            work_dir=args.work_dir, what=what, source=args.source, synthetic_size=pick("synthetic_size", args.synthetic_size),
            raw_root=args.raw_root, shards=args.shards, videos=pick("videos", args.videos),
            clip=ClipSpec(frames=args.clip_frames, stride=args.stride, crop_size=args.crop), batch_size=args.batch_size,
            workers=pick("workers", args.workers), repeats=pick("repeats", args.repeats),
            timed_clips=pick("timed_clips", args.timed_clips), warmup_batches=args.warmup_batches, fps=args.fps,
            gop=args.gop, short_side=args.short_side, shard_workers=args.shard_workers,
            sweep_gops=pick("sweep_gops", args.sweep_gops), sweep_short_sides=pick("sweep_short_sides", args.sweep_short_sides),
            jedi_backbone=pick("jedi_backbone", args.jedi_backbone), jedi_batch_size=pick("jedi_batch_size", args.jedi_batch_size),
            jedi_steps=pick("jedi_steps", args.jedi_steps),
            jedi_warmup_steps=args.jedi_warmup_steps, read_workers=args.read_workers, read_ranks=args.read_ranks,
            scale_samples=args.scale_samples, json_path=args.json, png_path=args.png)
    except ValueError as error:
        p.error(str(error))


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    return run_profile(parse_args(argv), argv)


if __name__ == "__main__":
    main()
