"""CPU loaders: WebDataset shards -> uint8 batches of the contract in pipeline/contract.py.

A stream is a chain of webdataset stages per pass over the split:
  shard list (this rank's shards, shuffled per pass) -> samples (key + where its members lie)
  -> [keep index % world_size == rank] -> buffered shuffle -> positions 0, 1, 2, ...
and batch k is positions [k*B, (k+1)*B). Everything that decides which sample lands where is drawn
from seeds mixed from (seed, epoch, rank, world_size, pass): no process ids, no clocks.

Reading (pipeline/shard_reader.py): when every shard of the rank has its DALI index file (the
manifest's `index`, written by tools/make_shards.py), the stream above is built from the index files
alone, and a worker reads the tar members of the samples it decodes and nothing else: a rank reads
its share of the split once per epoch, whatever num_workers. Without an index for every shard the
loader falls back to webdataset's sequential scan, where each worker reads every tar byte of the
rank's shards up to its last batch: with W workers about W times the rank's share (and in the
by-sample-index split every rank reads every shard). The log says which path runs (`read_path`).

Splitting across ranks (disjoint within an epoch):
- by shard when the shard count splits evenly enough (a multiple of world_size, or at least
  4 shards per rank): the shard list is shuffled with (seed, epoch) and rank r takes every
  world_size-th shard, so ranks read different files;
- otherwise by sample index: rank r keeps split-order sample i when i % world_size == r, and reads
  every shard.

Splitting across DataLoader workers is by BATCH, not by shard: every worker walks the rank's
(cheap, unread) sample stream and loads and decodes only the batches k with
(k - start_step) % num_workers == its id; torch's DataLoader hands batches back round-robin, so
batch k is the same tensor for any num_workers. A worker stops after its last batch. Augmentation
draws come from a per-sample generator seeded from (seed, epoch, pass, key), so they do not depend
on the process either.

Each batch carries READ_STATS (this worker's bytes read since its previous batch); BatchLoader
takes it out and sums it into `bytes_read`, `index_bytes` and `io_read_chars` (/proc/self/io rchar).

Padding: train_loader yields exactly steps_per_epoch batches. When that needs more samples than the
rank holds, the rank starts another pass over ITS OWN samples (new shuffle, new augmentation draws);
when it needs fewer, the rest of the pass is left out. Ranks holding one sample fewer than others
(uneven split) simply repeat sooner. Ranks stay disjoint within an epoch either way.

Corrupt samples (CorruptVideoError) are skipped and counted: each batch lists them in SKIPPED_KEYS
and the loader object keeps `skipped_keys` / `skipped`. A training batch stays full: it is topped up
with fresh augmentations of the batch's own valid samples (other workers own the next positions).
An evaluation batch just gets smaller (possibly empty).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.augment import strong_view as make_strong_view
from pipeline.augment import eval_views, train_view
from pipeline.clips import eval_clip_indices, train_clip_indices
from pipeline.compressed import segment_arrays
from pipeline.contract import (KEY, LABEL, MODALITY_KEYS, SKIPPED_KEYS, STRONG_VIDEO, VIDEO, AugmentSpec, ClipSpec,
                               StrongAugmentSpec)
from pipeline.dali_index import index_mismatch
from pipeline.shard_reader import ShardReader
from pipeline.video_decode import CorruptVideoError, decode_frames, resolve_backend

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = ("mp4", "webm")
READ_STATS = "__read_stats__"  # worker -> BatchLoader only; never reaches the caller
Sample = dict[str, Any]


def read_manifest(shard_dir: str | Path) -> dict:
    """manifest.json as a plain dict. The one place to swap in pipeline.manifest.load_manifest."""
    path = Path(shard_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest.json; write shards with tools/make_shards.py first")
    return json.loads(path.read_text())


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from its parts, identical in every process (Python's hash() is salted)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class ShardRef:
    url: str
    samples: int
    first_index: int  # split-order index of the shard's first sample
    index: str | None = None  # its DALI index file, when the manifest names one that exists


@dataclass(frozen=True)
class RankPlan:
    """What one rank reads during one epoch."""

    shards: tuple[ShardRef, ...]
    by_sample_index: bool  # True: keep samples with index % world_size == rank
    rank: int
    world_size: int

    @property
    def samples(self) -> int:
        if not self.by_sample_index:
            return sum(shard.samples for shard in self.shards)
        total = sum(shard.samples for shard in self.shards)
        return len(range(self.rank, total, self.world_size))


def split_shards(manifest: dict, shard_dir: str | Path, split: str) -> list[ShardRef]:
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ValueError(f"{Path(shard_dir) / 'manifest.json'}: split {split!r} not found; "
                         f"available splits are {sorted(splits)}")
    refs, first = [], 0
    for shard in splits[split]["shards"]:
        index = Path(shard_dir) / shard["index"] if shard.get("index") else None
        refs.append(ShardRef(str(Path(shard_dir) / shard["file"]), int(shard["samples"]), first,
                             str(index) if index is not None and index.is_file() else None))
        first += int(shard["samples"])
    return refs


def shard_reader(shards: Iterable[ShardRef], where: str, num_workers: int) -> ShardReader:
    """The index path when every shard has its index file, else the scan; logs which (`where` says for whom)."""
    shards = list(shards)
    missing = []
    for shard in shards:
        reason = "no index file" if shard.index is None else index_mismatch(shard.index, shard.url, shard.samples)
        if reason is not None:
            missing.append(f"{Path(shard.url).name}: {reason}")
    where = f"{where}, {len(shards)} shards"
    if not missing:
        log.info("%s: reading by index (each worker reads only the samples it decodes)", where)
        return ShardReader({shard.url: shard.index for shard in shards})
    log.warning("%s: no usable index for %d shard(s) (%s%s): sequential scan, each of %d worker(s) reads every "
                "tar byte of the rank; write indexes with tools/make_shards.py", where, len(missing),
                "; ".join(missing[:3]), "..." if len(missing) > 3 else "", max(1, num_workers))
    return ShardReader()


def plan_rank(shards: list[ShardRef], rank: int, world_size: int, *, seed: int, epoch: int,
              shuffle: bool, need_balance: bool) -> RankPlan:
    """Which shards (and which samples of them) rank `rank` reads this epoch; see the module doc."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
    count = len(shards)
    balanced = count % world_size == 0 or count >= 4 * world_size
    if count >= world_size and (balanced or not need_balance):
        order = list(shards)
        if shuffle:
            random.Random(stable_seed(seed, epoch, "shard-assignment")).shuffle(order)
        return RankPlan(tuple(order[rank::world_size]), False, rank, world_size)
    return RankPlan(tuple(shards), True, rank, world_size)


def _tag_split_index(plan: RankPlan) -> Callable[[Iterable[Sample]], Iterator[Sample]]:
    """Stage: add `__index__` (split-order index from the shard's first index + member position)."""
    first_by_url = {shard.url: shard.first_index for shard in plan.shards}

    def stage(samples: Iterable[Sample]) -> Iterator[Sample]:
        position: dict[str, int] = {}
        for sample in samples:
            url = sample["__url__"]
            offset = position.get(url, 0)
            position[url] = offset + 1
            sample["__index__"] = first_by_url[url] + offset
            yield sample

    return stage


def _keep_rank(plan: RankPlan) -> Callable[[Iterable[Sample]], Iterator[Sample]]:
    """Stage: webdataset's split_by_node at sample granularity, with an explicit rank."""

    def stage(samples: Iterable[Sample]) -> Iterator[Sample]:
        return (s for s in samples if s["__index__"] % plan.world_size == plan.rank)

    return stage


def _rank_name(plan: RankPlan) -> str:
    split = "by sample index" if plan.by_sample_index else "by shard"
    return f"rank {plan.rank} of {plan.world_size} ({split})"


def rank_pass(plan: RankPlan, reader: ShardReader, *, shuffle: bool, shuffle_buffer: int,
              order_seed: int) -> Iterator[Sample]:
    """One pass over the rank's samples as a webdataset pipeline (by index: not yet read; by scan: bytes)."""
    shards = list(plan.shards)
    rng = random.Random(order_seed)
    if shuffle:
        rng.shuffle(shards)
    urls = [shard.url for shard in shards]
    stages: list[Any] = [lambda: reader.samples(urls), _tag_split_index(plan)]
    if plan.by_sample_index:
        stages.append(_keep_rank(plan))
    if shuffle and shuffle_buffer > 1:
        stages.append(wds.shuffle(shuffle_buffer, initial=shuffle_buffer, rng=rng))
    return iter(wds.DataPipeline(*stages))


def _video_and_meta(sample: Sample) -> tuple[bytes, dict]:
    key = sample["__key__"]
    extension = next((ext for ext in VIDEO_EXTENSIONS if ext in sample), None)
    if extension is None:
        raise CorruptVideoError(key, f"no .mp4 or .webm member (members: {sorted(sample)})")
    try:
        meta = json.loads(sample["json"])
        int(meta["frames"]), int(meta["label"])
    except (KeyError, ValueError, TypeError) as error:
        raise CorruptVideoError(key, f"missing or unreadable .json member ({error})") from error
    if int(meta["frames"]) < 1:
        raise CorruptVideoError(key, f"json says frames={meta['frames']}")
    return sample[extension], meta


def _worker_slot() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _read_chars() -> int:
    """Bytes this process has passed through read() calls so far (/proc/self/io rchar; 0 where absent)."""
    try:
        with open("/proc/self/io", "rb") as stats:
            return int(stats.readline().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


class _ReadMeter:
    """What one worker's reader read since the previous batch it handed out."""

    def __init__(self, reader: ShardReader):
        self.reader = reader
        self.last = (reader.bytes_read, reader.index_bytes, _read_chars())

    def since_last(self) -> dict:
        now = (self.reader.bytes_read, self.reader.index_bytes, _read_chars())
        delta = {"bytes": now[0] - self.last[0], "index_bytes": now[1] - self.last[1],
                 "read_chars": now[2] - self.last[2]}
        self.last = now
        return delta


class _TrainBatches(IterableDataset):
    """Worker side of train_loader: yields this worker's batches, collated, in step order."""

    def __init__(self, plan: RankPlan, clip: ClipSpec, augment: AugmentSpec, strong: StrongAugmentSpec | None,
                 *, reader: ShardReader, num_classes: int, batch_size: int, steps_per_epoch: int, start_step: int,
                 seed: int, epoch: int, shuffle_buffer: int, backend: str, modalities: tuple[str, ...] = (),
                 segments: tuple[int, int] = (0, 0), video: bool = True):
        super().__init__()
        self.plan, self.clip, self.augment, self.strong, self.reader = plan, clip, augment, strong, reader
        self.modalities, (self.segments, self.mv_block), self.video = modalities, segments, video
        self.num_classes, self.batch_size = num_classes, batch_size
        self.steps_per_epoch, self.start_step = steps_per_epoch, start_step
        self.seed, self.epoch, self.shuffle_buffer, self.backend = seed, epoch, shuffle_buffer, backend

    def epoch_stream(self) -> Iterator[tuple[int, Sample]]:
        """(pass, sample) for as many passes as the epoch needs."""
        for pass_index in itertools.count():
            order_seed = stable_seed(self.seed, self.epoch, self.plan.rank, self.plan.world_size, pass_index)
            empty = True
            for sample in rank_pass(self.plan, self.reader, shuffle=True, shuffle_buffer=self.shuffle_buffer,
                                    order_seed=order_seed):
                empty = False
                yield pass_index, sample
            if empty:
                raise RuntimeError(f"rank {self.plan.rank}: a pass over {len(self.plan.shards)} shards "
                                   f"yielded no samples ({[s.url for s in self.plan.shards][:3]}...)")

    def make_item(self, pass_index: int, sample: Sample, salt: object = "") -> dict:
        key = sample["__key__"]
        video_bytes, meta = _video_and_meta(sample)
        label = int(meta["label"])
        if not 0 <= label < self.num_classes:
            raise ValueError(f"sample {key!r}: label {label} outside the manifest's {self.num_classes} classes")
        generator = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch, pass_index, key, salt))
        item = {LABEL: label, KEY: key}
        if self.video:
            indices = train_clip_indices(int(meta["frames"]), self.clip, generator, self.augment.time_reversal)
            frames = decode_frames(video_bytes, indices, key=key, backend=self.backend)
            item[VIDEO] = train_view(frames, self.clip.crop_size, self.augment, generator)
            if self.strong is not None:
                item[STRONG_VIDEO] = make_strong_view(frames, self.clip.crop_size, self.strong, self.augment.hflip,
                                                      generator)
        item.update(_modality_tensors(sample, meta, self.modalities, self.segments, self.mv_block, generator))
        return item

    def make_batch(self, batch_samples: list[tuple[int, Sample]]) -> dict:
        items, skipped, valid = [], [], []
        batch_samples = [(pass_index, self.reader.load(sample)) for pass_index, sample in batch_samples]
        for pass_index, sample in batch_samples:
            try:
                items.append(self.make_item(pass_index, sample))
                valid.append((pass_index, sample))
            except CorruptVideoError as error:
                skipped.append(error.key)
        if not valid:
            raise RuntimeError(f"every sample of a training batch is corrupt: {skipped}")
        for refill in range(self.batch_size - len(items)):  # top up from this batch's own valid samples
            pass_index, sample = valid[refill % len(valid)]
            items.append(self.make_item(pass_index, sample, salt=("top-up", refill)))
        return collate(items, skipped)

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = _worker_slot()
        own_steps = range(self.start_step + worker, self.steps_per_epoch, num_workers)
        if not own_steps:
            return
        meter = _ReadMeter(self.reader)
        total = (own_steps[-1] + 1) * self.batch_size  # nothing past this worker's last batch is read
        pending: list[tuple[int, Sample]] = []
        for position, (pass_index, sample) in enumerate(itertools.islice(self.epoch_stream(), total)):
            step = position // self.batch_size
            if step < self.start_step or (step - self.start_step) % num_workers != worker:
                continue  # never loaded nor decoded: resume and other workers' batches cost (by index) nothing
            pending.append((pass_index, sample))
            if len(pending) == self.batch_size:
                batch = self.make_batch(pending)
                batch[READ_STATS] = meter.since_last()
                yield batch
                pending = []


class _EvalBatches(IterableDataset):
    """Worker side of eval_loader: one pass in shard order, every view of every sample."""

    def __init__(self, plan: RankPlan, clip: ClipSpec, *, reader: ShardReader, batch_size: int, multi_view: bool,
                 backend: str, modalities: tuple[str, ...] = (), segments: tuple[int, int] = (0, 0),
                 video: bool = True):
        super().__init__()
        self.plan, self.clip, self.batch_size, self.backend, self.reader = plan, clip, batch_size, backend, reader
        self.modalities, (self.segments, self.mv_block), self.video = modalities, segments, video
        self.num_clips = clip.test_clips if multi_view else 1
        self.num_crops = clip.test_crops if multi_view else 1

    def make_item(self, sample: Sample) -> dict:
        key = sample["__key__"]
        video_bytes, meta = _video_and_meta(sample)
        item = {LABEL: int(meta["label"]), KEY: key}
        if self.video:
            clips = eval_clip_indices(int(meta["frames"]), self.clip, self.num_clips)
            flat = [index for indices in clips for index in indices]
            frames = decode_frames(video_bytes, flat, key=key, backend=self.backend)  # one decode for all clips
            views = []
            for clip_frames in frames.split(self.clip.frames):
                views.extend(eval_views(clip_frames, self.clip.crop_size, self.num_crops))
            item[VIDEO] = torch.stack(views)
        item.update(_modality_tensors(sample, meta, self.modalities, self.segments, self.mv_block, None))
        return item

    def make_batch(self, samples: list[Sample]) -> dict:
        items, skipped = [], []
        for sample in samples:
            try:
                items.append(self.make_item(self.reader.load(sample)))
            except CorruptVideoError as error:
                skipped.append(error.key)
        if not items:
            size = self.clip.crop_size
            empty = torch.empty((0, self.num_clips * self.num_crops, 3, self.clip.frames, size, size),
                                dtype=torch.uint8)
            batch = {LABEL: torch.empty(0, dtype=torch.int64), KEY: [], SKIPPED_KEYS: skipped}
            if self.video:
                batch[VIDEO] = empty
            return batch  # no modality entries: their spatial size is known only from a sample
        return collate(items, skipped)

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = _worker_slot()
        own_batches = range(worker, math.ceil(self.plan.samples / self.batch_size), num_workers)
        if not own_batches:
            return
        meter = _ReadMeter(self.reader)
        pending: list[Sample] = []
        owner_batch = None
        stream = rank_pass(self.plan, self.reader, shuffle=False, shuffle_buffer=0, order_seed=0)
        total = (own_batches[-1] + 1) * self.batch_size  # nothing past this worker's last batch is read
        for position, sample in enumerate(itertools.islice(stream, total)):
            batch = position // self.batch_size
            if batch % num_workers != worker:
                continue
            if pending and batch != owner_batch:
                yield {**self.make_batch(pending), READ_STATS: meter.since_last()}
                pending = []
            owner_batch = batch
            pending.append(sample)
        if pending:
            yield {**self.make_batch(pending), READ_STATS: meter.since_last()}


def _modality_tensors(sample: Sample, meta: dict, modalities: tuple[str, ...], segments: int, mv_block: int,
                      generator) -> dict:
    """The sample's compressed-domain entries (pipeline/compressed.py) as torch tensors."""
    if not modalities:
        return {}
    try:
        arrays = segment_arrays(sample, modalities, segments, (int(meta["height"]), int(meta["width"])), mv_block,
                                sample["__key__"], generator)
    except (KeyError, ValueError, OSError) as error:  # a damaged or missing member is one bad sample
        raise CorruptVideoError(sample["__key__"], f"compressed-domain member: {error}") from error
    return {name: torch.from_numpy(array) for name, array in arrays.items()}


def collate(items: list[dict], skipped: list[str]) -> dict:
    batch = {LABEL: torch.tensor([item[LABEL] for item in items], dtype=torch.int64),
             KEY: [item[KEY] for item in items],
             SKIPPED_KEYS: skipped}
    for name in (VIDEO, STRONG_VIDEO, *MODALITY_KEYS):
        if name in items[0]:
            batch[name] = torch.stack([item[name] for item in items])
    return batch


def check_modalities(manifest: dict, shard_dir: str | Path, modalities: tuple[str, ...]) -> tuple[int, int]:
    """(K segments, mv_block) of the manifest when the shards hold every requested modality; ValueError otherwise."""
    if not modalities:
        return 0, 0
    unknown = [name for name in modalities if name not in MODALITY_KEYS]
    if unknown:
        raise ValueError(f"modalities {unknown}: allowed values are {list(MODALITY_KEYS)}")
    stored = (manifest.get("compressed") or {}).get("modalities", [])
    missing = [name for name in modalities if name not in stored]
    if missing:
        raise ValueError(f"{Path(shard_dir) / 'manifest.json'}: the shards hold no {missing} members (stored: "
                         f"{stored or 'none'}); write them with tools/make_shards.py --modalities "
                         f"{','.join(MODALITY_KEYS)}")
    return int(manifest["compressed"]["segments"]), int(manifest["compressed"]["mv_block"])


class BatchLoader:
    """Iterable over batches (CPU, uint8). Runs the worker-side dataset in `num_workers` processes
    (in this process for 0) and keeps the running list of skipped corrupt keys."""

    def __init__(self, dataset: IterableDataset, *, num_batches: int, num_workers: int, pin_memory: bool,
                 samples_per_rank: int):
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers}: must be >= 0")
        self.dataset, self.num_workers, self.pin_memory = dataset, num_workers, pin_memory
        self.num_batches, self.samples_per_rank = num_batches, samples_per_rank
        self.skipped_keys: list[str] = []
        self.read_path = getattr(getattr(dataset, "reader", None), "path_name", "scan")
        self.bytes_read = 0  # tar bytes the workers' readers read (all iterations so far)
        self.index_bytes = 0  # index files they parsed
        self.io_read_chars = 0  # the same readers' processes, as /proc/self/io rchar counts every read()

    @property
    def skipped(self) -> int:
        return len(self.skipped_keys)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict]:
        if self.num_workers == 0:
            batches: Iterable[dict] = self.dataset
        else:
            # batch_size=None: workers already collate. In-order delivery (the default) is what makes
            # the output independent of num_workers.
            batches = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers,
                                 pin_memory=self.pin_memory, in_order=True)
        for batch in batches:
            read = batch.pop(READ_STATS)
            self.bytes_read += read["bytes"]
            self.index_bytes += read["index_bytes"]
            self.io_read_chars += read["read_chars"]
            self.skipped_keys.extend(batch[SKIPPED_KEYS])
            yield batch


def _check_label_safe(manifest: dict, shard_dir: str | Path, augment: AugmentSpec) -> None:
    for flag, enabled in (("hflip_changes_label", augment.hflip),
                          ("time_reversal_changes_label", augment.time_reversal)):
        if enabled and manifest.get(flag, False):
            option = "hflip" if flag.startswith("hflip") else "time_reversal"
            raise ValueError(f"{Path(shard_dir) / 'manifest.json'}: {flag} is true for dataset "
                             f"{manifest.get('dataset')!r}, so AugmentSpec.{option} must be False "
                             f"(use AugmentSpec.label_safe(...))")


def train_loader(shard_dir: str | Path, split: str, clip: ClipSpec, augment: AugmentSpec, *, batch_size: int,
                 steps_per_epoch: int, rank: int = 0, world_size: int = 1, num_workers: int = 1, seed: int = 0,
                 epoch: int = 0, start_step: int = 0, strong_view: bool | StrongAugmentSpec = False,
                 shuffle_buffer: int = 256, pin_memory: bool = False, backend: str = "auto",
                 modalities: tuple[str, ...] = (), video: bool = True) -> BatchLoader:
    """Exactly `steps_per_epoch - start_step` training batches for (rank, epoch); see the module doc.

    Batch k is a function of (shard set, clip, augment, seed, epoch, rank, world_size, k) only.
    `start_step` resumes mid-epoch: earlier batches are read past without decoding.
    `strong_view`: True (default StrongAugmentSpec) or a StrongAugmentSpec adds STRONG_VIDEO.
    `modalities`: compressed-domain entries to add (MV, RESIDUAL, IFRAME of pipeline/contract.py);
    `video=False` leaves out VIDEO (and STRONG_VIDEO) and decodes nothing.
    """
    if batch_size < 1 or steps_per_epoch < 1:
        raise ValueError(f"batch_size={batch_size}, steps_per_epoch={steps_per_epoch}: both must be >= 1")
    if not 0 <= start_step <= steps_per_epoch:
        raise ValueError(f"start_step={start_step}: must be in [0, steps_per_epoch={steps_per_epoch}]")
    manifest = read_manifest(shard_dir)
    _check_label_safe(manifest, shard_dir, augment)
    segments = check_modalities(manifest, shard_dir, tuple(modalities))
    plan = plan_rank(split_shards(manifest, shard_dir, split), rank, world_size, seed=seed, epoch=epoch,
                     shuffle=True, need_balance=True)
    if plan.samples == 0:
        raise ValueError(f"{shard_dir}: split {split!r} has no samples for rank {rank} of {world_size}")
    strong = StrongAugmentSpec() if strong_view is True else (strong_view or None)
    dataset = _TrainBatches(plan, clip, augment, strong, reader=shard_reader(plan.shards, _rank_name(plan), num_workers),
                            num_classes=len(manifest["classes"]),
                            batch_size=batch_size, steps_per_epoch=steps_per_epoch, start_step=start_step,
                            seed=seed, epoch=epoch, shuffle_buffer=shuffle_buffer,
                            backend=resolve_backend(backend) if video else backend,
                            modalities=tuple(modalities), segments=segments, video=video)
    return BatchLoader(dataset, num_batches=steps_per_epoch - start_step, num_workers=num_workers,
                       pin_memory=pin_memory, samples_per_rank=plan.samples)


def eval_loader(shard_dir: str | Path, split: str, clip: ClipSpec, *, batch_size: int, rank: int = 0,
                world_size: int = 1, num_workers: int = 1, multi_view: bool = False, pin_memory: bool = False,
                backend: str = "auto", modalities: tuple[str, ...] = (), video: bool = True) -> BatchLoader:
    """Every sample of the split exactly once across ranks, VIDEO [B, V, 3, T, H, W].

    V = 1 (centre clip, centre crop) unless multi_view, then V = test_clips * test_crops, clip-major.
    Ranks may get different numbers of batches; gather predictions accordingly.
    `modalities` / `video` as in train_loader (modality entries are [B, K, ...], no view axis).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    manifest = read_manifest(shard_dir)
    segments = check_modalities(manifest, shard_dir, tuple(modalities))
    plan = plan_rank(split_shards(manifest, shard_dir, split), rank, world_size, seed=0, epoch=0,
                     shuffle=False, need_balance=False)
    dataset = _EvalBatches(plan, clip, reader=shard_reader(plan.shards, _rank_name(plan), num_workers), batch_size=batch_size,
                           multi_view=multi_view, backend=resolve_backend(backend) if video else backend,
                           modalities=tuple(modalities), segments=segments, video=video)
    return BatchLoader(dataset, num_batches=math.ceil(plan.samples / batch_size), num_workers=num_workers,
                       pin_memory=pin_memory, samples_per_rank=plan.samples)


def steps_to_cover(shard_dir: str | Path, split: str, batch_size: int, world_size: int = 1) -> int:
    """Steps per epoch so that every rank sees about its whole share of the split once."""
    samples = read_manifest(shard_dir)["splits"][split]["samples"]
    return max(1, math.ceil(samples / (batch_size * world_size)))
