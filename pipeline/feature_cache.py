"""Zarr (v3) caches of per-sample penultimate features and teacher logits for one dataset's split.

Why: in the full JEDI step every unlabelled clip passes all N backbones to build the teacher's target,
so the unlabelled half costs N^2 backbone passes. With a cache the target is read by sample key and an
unlabelled clip passes only its own student's backbone; the cache is refreshed every few epochs.

Layout of `<root>/<dataset>/<split>.zarr` (one zarr group):
  keys               str      [rows]             sample keys in split order (shard order, then member
                                                 order): the key -> row index, stored with the cache
  labels             int64    [rows]             manifest label (unlabelled: diagnostics only)
  features/<student> float16  [rows, dim]        penultimate feature of that student's backbone
  teacher_logits     float32  [rows, classes]    this dataset's teacher on concat(features of its sources)
  status             uint8    [rows]             MISSING 0 | WRITTEN 1 | UNREADABLE 2 (corrupt sample)
Group attributes: format_version, dataset, split, rows, chunk_rows, students, feature_dims, num_classes,
and the identity: weights_fingerprint, clip_fingerprint, manifest_sha256.

Trust: a cache is used only for the identity it was built for. Opening it for other weights, another
clip view or another manifest raises StaleCacheError (or rebuilds it when the caller asks).
Crash safety: every array is chunked by `chunk_rows` rows, one file per chunk and no zarr sharding, so
ranks filling disjoint chunks never write the same file. A chunk's status is written only after all of
its data, and zarr's LocalStore writes each file atomically (temporary file + rename): a killed writer
leaves chunks that are complete with status, or chunks without status that the next fill redoes.
Reads are batched: one zarr call per array, never one per row.

The cached view of a clip is the single-clip evaluation view (centre clip, centre crop), decoded by the
same code as `pipeline.cpu_loader.eval_loader(multi_view=False)`, so it is the same for every rank and
every refresh.
"""
from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from pipeline.contract import KEY, LABEL, SKIPPED_KEYS, VIDEO, ClipSpec
from pipeline.cpu_loader import RankPlan, _EvalBatches, rank_pass, read_manifest, shard_reader, split_shards
from pipeline.manifest import MANIFEST_NAME
from pipeline.video_decode import resolve_backend

FORMAT_VERSION = 1
MISSING, WRITTEN, UNREADABLE = 0, 1, 2
TEACHER_LOGITS, LABELS, STATUS, KEYS = "teacher_logits", "labels", "status", "keys"
CACHED_VIEW = "single_clip_centre_crop"  # what the rows hold; part of the clip fingerprint


class FeatureCacheError(RuntimeError):
    """A cache cannot be used or written; the message names the path and what to do."""


class StaleCacheError(FeatureCacheError):
    """The cache on disk was built for other weights, another clip view, manifest or layout."""


class IncompleteCacheError(FeatureCacheError):
    """Rows were asked for that no fill has written yet (or whose sample could not be decoded)."""


# ----- identity ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheIdentity:
    """What produced the rows. Any difference makes the cache stale."""

    weights_fingerprint: str
    clip_fingerprint: str
    manifest_sha256: str


@dataclass(frozen=True)
class CacheLayout:
    """Shape of the cache: which students' features, their widths, the teacher's classes, rows per chunk."""

    students: tuple[str, ...]
    feature_dims: tuple[int, ...]
    num_classes: int
    chunk_rows: int = 64

    def __post_init__(self):
        if len(self.students) != len(self.feature_dims) or not self.students:
            raise ValueError(f"CacheLayout: students {self.students} and feature_dims {self.feature_dims} "
                             f"must be non-empty and of equal length")
        if self.chunk_rows < 1 or self.num_classes < 1:
            raise ValueError(f"CacheLayout: chunk_rows={self.chunk_rows}, num_classes={self.num_classes} must be >= 1")


def state_dict_fingerprint(state_dict: Mapping[str, torch.Tensor], prefixes: Sequence[str] = ()) -> str:
    """sha256 over names, dtypes, shapes and bytes of the tensors (only names starting with one of
    `prefixes`, when given). Identical weights on any device give the same string."""
    digest = hashlib.sha256()
    names = sorted(n for n in state_dict if not prefixes or any(n.startswith(p) for p in prefixes))
    if not names:
        raise ValueError(f"state_dict_fingerprint: no tensor name starts with {list(prefixes)}")
    for name in names:
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def clip_fingerprint(clip: ClipSpec) -> str:
    """Only what decides the cached view enters (test_clips / test_crops do not change it)."""
    spec = {"view": CACHED_VIEW, "frames": clip.frames, "stride": clip.stride, "crop_size": clip.crop_size}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def manifest_sha256(shard_dir: str | Path) -> str:
    path = Path(shard_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest.json; write shards with tools/make_shards.py first")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_identity(weights_fingerprint: str, clip: ClipSpec, shard_dir: str | Path) -> CacheIdentity:
    return CacheIdentity(weights_fingerprint, clip_fingerprint(clip), manifest_sha256(shard_dir))


def cache_path(root: str | Path, dataset: str, split: str) -> Path:
    return Path(root) / dataset / f"{split}.zarr"


# ----- keys of a split, from tar headers only ------------------------------------------------------------
def split_keys(shard_dir: str | Path, split: str) -> list[str]:
    """Sample keys in split order, read from the tar headers (no video bytes are read). Grouping by the
    part of the member name before its first dot is webdataset's rule, so rows match the loaders."""
    manifest = read_manifest(shard_dir)
    keys: list[str] = []
    for shard in manifest["splits"][split]["shards"]:
        path = Path(shard_dir) / shard["file"]
        shard_keys: list[str] = []
        with tarfile.open(path) as tar:
            for member in tar:
                match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", member.name)
                if member.isreg() and match and (not shard_keys or shard_keys[-1] != match.group(1)):
                    shard_keys.append(match.group(1))
        if len(shard_keys) != shard["samples"]:
            raise FeatureCacheError(f"{path}: holds {len(shard_keys)} samples but {Path(shard_dir) / MANIFEST_NAME} "
                                    f"says {shard['samples']}; rebuild the shards with tools/make_shards.py")
        keys.extend(shard_keys)
    if len(set(keys)) != len(keys):
        raise FeatureCacheError(f"{shard_dir}: split {split!r} has duplicate sample keys")
    return keys


# ----- errors from the store, with the path ---------------------------------------------------------------
def _store_error(path: Path, action: str, error: BaseException) -> FeatureCacheError:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return FeatureCacheError(f"no space left on device while {action} {path}: free disk space or put the "
                                 f"cache elsewhere; finished chunks are kept and a rerun fills only the rest")
    if isinstance(error, (PermissionError, OSError)) and getattr(error, "errno", None) in (errno.EACCES, errno.EPERM,
                                                                                          errno.EROFS):
        return FeatureCacheError(f"cannot write the feature cache at {path} while {action} (read-only or no "
                                 f"permission: {error.strerror}); choose a writable cache directory")
    if isinstance(error, ValueError) and ("read-only" in str(error).lower() or "read only" in str(error).lower()):
        return FeatureCacheError(f"the feature cache at {path} was opened read-only; open it with mode='r+' "
                                 f"to fill it ({error})")
    return FeatureCacheError(f"{action} {path} failed: {error!r}")


# ----- the cache ------------------------------------------------------------------------------------------
class FeatureCache:
    """One dataset's split: open with `open_cache` / `prepare_cache`, read with `read_rows`."""

    def __init__(self, path: Path, group: zarr.Group, writable: bool):
        self.path, self.group, self.writable = path, group, writable
        attrs = dict(group.attrs)
        self.dataset: str = attrs["dataset"]
        self.split: str = attrs["split"]
        self.rows: int = attrs["rows"]
        self.layout = CacheLayout(tuple(attrs["students"]), tuple(attrs["feature_dims"]), attrs["num_classes"],
                                  attrs["chunk_rows"])
        self.identity = CacheIdentity(attrs["weights_fingerprint"], attrs["clip_fingerprint"], attrs["manifest_sha256"])
        self.keys: list[str] = [str(k) for k in group[KEYS][:]]
        self._row_of = {key: row for row, key in enumerate(self.keys)}
        self.arrays = {name: group[name] for name in self.array_names}
        self.status = np.asarray(group[STATUS][:])
        self.filled_chunks: list[int] = []  # chunks the last fill_cache call of this process wrote
        self.resident: dict[str, np.ndarray] = {}  # whole arrays held in memory by load_resident

    # ---- shape
    @property
    def students(self) -> tuple[str, ...]:
        return self.layout.students

    @property
    def chunk_rows(self) -> int:
        return self.layout.chunk_rows

    @property
    def num_chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    @property
    def array_names(self) -> list[str]:
        return [f"features/{s}" for s in self.students] + [TEACHER_LOGITS, LABELS]

    def chunk_range(self, chunk: int) -> range:
        return range(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.rows))

    # ---- state
    def reload_status(self) -> None:
        """Re-read the status (one call); other processes may have filled chunks."""
        self.status = np.asarray(self.group[STATUS][:])

    def chunk_done(self, chunk: int) -> bool:
        rows = self.chunk_range(chunk)
        return bool((self.status[rows.start:rows.stop] != MISSING).all())

    def missing_chunks(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Chunks without status that rank `rank` owns (chunks rank, rank + world_size, ...)."""
        return [c for c in range(rank, self.num_chunks, world_size) if not self.chunk_done(c)]

    @property
    def is_complete(self) -> bool:
        return bool((self.status != MISSING).all())

    # ---- reads
    def rows_of(self, keys: Sequence[str]) -> np.ndarray:
        unknown = [k for k in keys if k not in self._row_of]
        if unknown:
            raise KeyError(f"{self.path}: keys {unknown[:3]} are not in the {self.dataset} {self.split} split "
                           f"this cache was built for ({self.rows} rows)")
        return np.fromiter((self._row_of[k] for k in keys), dtype=np.int64, count=len(keys))

    def read_rows(self, selection: Sequence[str] | Sequence[int] | np.ndarray,
                  arrays: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Rows by sample key or row index, in the order asked, as {array name: ndarray}. One zarr call per
        array (orthogonal selection of the sorted unique rows). Rows never written raise IncompleteCacheError."""
        if len(selection) and isinstance(selection[0], str):
            rows = self.rows_of(selection)  # type: ignore[arg-type]
        else:
            rows = np.asarray(selection, dtype=np.int64).reshape(-1)
            if rows.size and (rows.min() < 0 or rows.max() >= self.rows):
                raise IndexError(f"{self.path}: row indices must be in [0, {self.rows})")
        bad = rows[self.status[rows] != WRITTEN]
        if bad.size:
            states = {MISSING: "never written", UNREADABLE: "sample could not be decoded"}
            detail = ", ".join(f"{self.keys[r]} ({states[int(self.status[r])]})" for r in bad[:3])
            raise IncompleteCacheError(f"{self.path}: {bad.size} asked rows hold no data: {detail}; fill the cache "
                                       f"(tools/cache_features.py) or refresh it before reading")
        if not rows.size:
            return {name: np.zeros((0, *self.arrays[name].shape[1:]), self.arrays[name].dtype)
                    for name in arrays or self.array_names}
        unique, inverse = np.unique(rows, return_inverse=True)
        out = {}
        for name in arrays or self.array_names:
            if name not in self.arrays:
                raise KeyError(f"{self.path}: no array {name!r}; arrays are {self.array_names}")
            if name in self.resident:
                out[name] = self.resident[name][rows]
                continue
            array = self.arrays[name]
            out[name] = array.get_orthogonal_selection((unique,) + (slice(None),) * (array.ndim - 1))[inverse]
        return out

    def load_resident(self, arrays: Sequence[str] = (TEACHER_LOGITS,)) -> None:
        """Hold whole arrays in memory (one zarr call each) so that per-step reads cost no file access;
        a step's read of a few rows from zarr costs milliseconds, which is what the cache saves on a GPU.
        Call it once the cache is complete; writes afterwards are not seen."""
        self.resident = {name: np.asarray(self.arrays[name][:]) for name in arrays}

    def read_all(self, arrays: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every WRITTEN row (one call per array) and the row indices they came from."""
        rows = np.flatnonzero(self.status == WRITTEN)
        return self.read_rows(rows, arrays) if rows.size else {}, rows

    # ---- writes
    def write_chunk(self, chunk: int, *, features: Mapping[str, np.ndarray], teacher_logits: np.ndarray,
                    labels: np.ndarray, readable: np.ndarray) -> None:
        """Write one whole chunk: data arrays first, the status last (it is what marks the chunk done).
        Unreadable rows hold zeros and get status UNREADABLE."""
        if not self.writable:
            raise FeatureCacheError(f"the feature cache at {self.path} was opened read-only; open it with "
                                    f"mode='r+' to fill it")
        rows = self.chunk_range(chunk)
        n = len(rows)
        if set(features) != set(self.students):
            raise ValueError(f"{self.path}: write_chunk got features for {sorted(features)}, expected {list(self.students)}")
        for student, dim in zip(self.students, self.layout.feature_dims):
            half = np.asarray(features[student], dtype=np.float32)
            if half.shape != (n, dim):
                raise ValueError(f"{self.path}: features/{student} for chunk {chunk} has shape {half.shape}, "
                                 f"expected {(n, dim)}")
            if np.abs(half[readable]).max(initial=0.0) > np.finfo(np.float16).max:
                raise FeatureCacheError(f"{self.path}: features/{student} exceed the float16 range "
                                        f"({np.abs(half).max():.3g}); they cannot be cached in float16")
        if teacher_logits.shape != (n, self.layout.num_classes):
            raise ValueError(f"{self.path}: teacher_logits for chunk {chunk} has shape {teacher_logits.shape}, "
                             f"expected {(n, self.layout.num_classes)}")
        try:
            for student in self.students:
                self.arrays[f"features/{student}"][rows.start:rows.stop] = np.asarray(features[student], np.float16)
            self.arrays[TEACHER_LOGITS][rows.start:rows.stop] = np.asarray(teacher_logits, np.float32)
            self.arrays[LABELS][rows.start:rows.stop] = np.asarray(labels, np.int64)
            status = np.where(np.asarray(readable, bool), WRITTEN, UNREADABLE).astype(np.uint8)
            self.group[STATUS][rows.start:rows.stop] = status
        except (OSError, ValueError) as error:
            raise _store_error(self.path, f"writing chunk {chunk} of", error) from error
        self.status[rows.start:rows.stop] = status


def _describe(identity: CacheIdentity, layout: CacheLayout) -> dict:
    return {**asdict(identity), "students": list(layout.students), "feature_dims": list(layout.feature_dims),
            "num_classes": layout.num_classes, "chunk_rows": layout.chunk_rows}


def _differences(path: Path, attrs: dict, identity: CacheIdentity, layout: CacheLayout | None) -> list[str]:
    expected = asdict(identity) if layout is None else _describe(identity, layout)
    expected.pop("chunk_rows", None)  # the chunking on disk wins: it changes no value a reader gets
    reasons = {"weights_fingerprint": "built with other weights", "manifest_sha256": "built for another manifest.json",
               "clip_fingerprint": "built for another clip view (frames / stride / crop_size)"}
    found = []
    for name, want in expected.items():
        have = attrs.get(name)
        if have != want:
            short = (lambda v: v[:12] + "..." if isinstance(v, str) and len(v) > 16 else v)
            found.append(f"{name}: cache has {short(have)}, expected {short(want)} "
                         f"({reasons.get(name, 'another layout')})")
    return found


def open_cache(path: str | Path, expect: CacheIdentity, layout: CacheLayout | None = None,
               mode: str = "r") -> FeatureCache:
    """Open an existing cache, refusing it (StaleCacheError) unless it was built for `expect` (and
    `layout`, when given). mode 'r' is read-only; 'r+' allows fills."""
    path = Path(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"open_cache mode={mode!r}: allowed values are r, r+")
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"no feature cache at {path}; build it with tools/cache_features.py")
    try:
        group = zarr.open_group(zarr.storage.LocalStore(path, read_only=mode == "r"), mode=mode)
    except OSError as error:
        raise _store_error(path, "opening", error) from error
    attrs = dict(group.attrs)
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StaleCacheError(f"{path}: cache format_version {attrs.get('format_version')} is not "
                              f"{FORMAT_VERSION}; rebuild it (tools/cache_features.py --rebuild)")
    differences = _differences(path, attrs, expect, layout)
    if differences:
        raise StaleCacheError(f"refusing the stale feature cache {path}: " + "; ".join(differences)
                              + ". Rebuild it (tools/cache_features.py --rebuild, or rebuild=True).")
    return FeatureCache(path, group, writable=mode == "r+")


def create_cache(path: str | Path, *, keys: Sequence[str], identity: CacheIdentity, layout: CacheLayout,
                 dataset: str, split: str) -> FeatureCache:
    """A new, empty cache (every row MISSING); replaces whatever is at `path`."""
    path = Path(path)
    rows, chunk = len(keys), layout.chunk_rows
    if rows == 0:
        raise FeatureCacheError(f"{path}: the {dataset} {split} split has no samples to cache")
    try:
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(zarr.storage.LocalStore(path), mode="w")
        group.create_array(KEYS, shape=(rows,), chunks=(rows,), dtype=str)[:] = np.asarray(list(keys), dtype=object)
        for student, dim in zip(layout.students, layout.feature_dims):
            group.create_array(f"features/{student}", shape=(rows, dim), chunks=(chunk, dim), dtype="float16",
                               fill_value=0)
        group.create_array(TEACHER_LOGITS, shape=(rows, layout.num_classes), chunks=(chunk, layout.num_classes),
                           dtype="float32", fill_value=0)
        group.create_array(LABELS, shape=(rows,), chunks=(chunk,), dtype="int64", fill_value=-1)
        group.create_array(STATUS, shape=(rows,), chunks=(chunk,), dtype="uint8", fill_value=MISSING)
        # identity last: a cache killed during creation has no identity and is refused, never used
        group.attrs.update({"format_version": FORMAT_VERSION, "dataset": dataset, "split": split, "rows": rows,
                            **_describe(identity, layout)})
    except OSError as error:
        raise _store_error(path, "creating", error) from error
    return FeatureCache(path, group, writable=True)


def prepare_cache(path: str | Path, *, shard_dir: str | Path, split: str, dataset: str, identity: CacheIdentity,
                  layout: CacheLayout, rebuild: bool = False) -> FeatureCache:
    """The cache to fill for `identity`: created when absent, reopened (to resume) when it matches, and
    on a mismatch refused, or with `rebuild` emptied and relabelled. Call it in one process only."""
    path = Path(path)
    created = (path / "zarr.json").is_file() and "weights_fingerprint" in json.loads((path / "zarr.json").read_text()).get(
        "attributes", {})
    if not created:  # absent, or killed while being created (the identity is written last)
        return create_cache(path, keys=split_keys(shard_dir, split), identity=identity, layout=layout,
                            dataset=dataset, split=split)
    try:
        return open_cache(path, identity, layout, mode="r+")
    except StaleCacheError:
        if not rebuild:
            raise
    try:
        group = zarr.open_group(zarr.storage.LocalStore(path), mode="r+")
        attrs = dict(group.attrs)
        same_rows = attrs.get("format_version") == FORMAT_VERSION and all(
            attrs.get(name) == value for name, value in _describe(identity, layout).items()
            if name not in ("weights_fingerprint", "clip_fingerprint", "chunk_rows"))
        if not same_rows:
            return create_cache(path, keys=split_keys(shard_dir, split), identity=identity, layout=layout,
                                dataset=dataset, split=split)
        # Only the weights or the view changed: keep the keys, clear the status, then relabel. In this
        # order a kill in between leaves an empty cache under the old identity, never old rows under the new.
        group[STATUS][:] = np.zeros(attrs["rows"], np.uint8)
        group.attrs.update(asdict(identity))
    except OSError as error:
        raise _store_error(path, "resetting", error) from error
    return FeatureCache(path, group, writable=True)


# ----- filling --------------------------------------------------------------------------------------------
class _ChunkClips(IterableDataset):
    """Decodes the single-clip evaluation view of the samples of each chunk; DataLoader workers share
    the chunks round-robin. Yields (chunk, batch) with batch as in eval_loader (VIDEO [B, 1, 3, T, H, W])."""

    def __init__(self, shard_dir: Path, split: str, keys: list[str], chunks: list[tuple[int, int, int]],
                 clip: ClipSpec, backend: str):
        super().__init__()
        self.shards = split_shards(read_manifest(shard_dir), shard_dir, split)
        self.reader = shard_reader(self.shards, f"feature cache of split {split!r}", num_workers=1)
        self.keys, self.chunks, self.clip, self.backend = keys, chunks, clip, backend

    def chunk_batch(self, start: int, stop: int) -> dict:
        shards = tuple(s for s in self.shards if s.first_index < stop and s.first_index + s.samples > start)
        samples = []
        for sample in rank_pass(RankPlan(shards, False, 0, 1), self.reader, shuffle=False, shuffle_buffer=0,
                                order_seed=0):
            index = sample["__index__"]
            if index >= stop:
                break
            if index >= start:
                if sample["__key__"] != self.keys[index]:
                    raise FeatureCacheError(f"{sample['__url__']}: sample {index} is {sample['__key__']!r} but the "
                                            f"cache expects {self.keys[index]!r}; the shards changed, rebuild the cache")
                samples.append(sample)
        if len(samples) != stop - start:
            raise FeatureCacheError(f"rows {start}..{stop - 1}: found {len(samples)} samples in the shards")
        decoder = _EvalBatches(RankPlan(shards, False, 0, 1), self.clip, reader=self.reader, batch_size=len(samples),
                               multi_view=False, backend=self.backend)
        return decoder.make_batch(samples)

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for position, (chunk, start, stop) in enumerate(self.chunks):
            if position % workers == worker:
                yield chunk, self.chunk_batch(start, stop)


CacheOutputs = Callable[[torch.Tensor], Mapping]  # uint8 clips [B,3,T,H,W] -> {"features": {s: [B,dim]}, "teacher_logits": [B,C]}


def fill_cache(cache: FeatureCache, shard_dir: str | Path, clip: ClipSpec, compute: CacheOutputs, *, rank: int = 0,
               world_size: int = 1, batch_size: int = 32, num_workers: int = 0, backend: str = "auto",
               progress: bool = True) -> list[int]:
    """Fill the chunks this rank owns (rank, rank + world_size, ...) that have no status yet; returns
    them. `compute` maps uint8 clips to features per student and teacher logits (numpy or tensors)."""
    if not cache.writable:
        raise FeatureCacheError(f"the feature cache at {cache.path} was opened read-only; open it with mode='r+'")
    chunks = cache.missing_chunks(rank, world_size)
    cache.filled_chunks = chunks
    if not chunks:
        return []
    spans = [(c, cache.chunk_range(c).start, cache.chunk_range(c).stop) for c in chunks]
    source = _ChunkClips(Path(shard_dir), cache.split, cache.keys, spans, clip, resolve_backend(backend))
    loader = source if num_workers == 0 else DataLoader(source, batch_size=None, num_workers=num_workers)
    bar = tqdm(total=sum(stop - start for _, start, stop in spans), unit="clip", disable=not progress,
               desc=f"cache {cache.dataset}/{cache.split} rank {rank}")
    for chunk, batch in loader:
        rows = cache.chunk_range(chunk)
        row_of = {cache.keys[r]: i for i, r in enumerate(rows)}
        readable = np.zeros(len(rows), bool)
        features = {s: np.zeros((len(rows), d), np.float32) for s, d in zip(cache.students, cache.layout.feature_dims)}
        logits = np.zeros((len(rows), cache.layout.num_classes), np.float32)
        labels = np.full(len(rows), -1, np.int64)
        where = np.array([row_of[k] for k in batch[KEY]], dtype=np.int64)
        video = batch[VIDEO][:, 0]
        for part in range(0, len(where), batch_size):
            out = compute(video[part:part + batch_size])
            at = where[part:part + batch_size]
            for s in cache.students:
                features[s][at] = _numpy(out["features"][s])
            logits[at] = _numpy(out["teacher_logits"])
        readable[where] = True
        labels[where] = batch[LABEL].numpy()
        cache.write_chunk(chunk, features=features, teacher_logits=logits, labels=labels, readable=readable)
        bar.update(len(rows))
        if batch[SKIPPED_KEYS]:
            bar.write(f"{cache.path}: unreadable samples kept out of the cache: {batch[SKIPPED_KEYS]}")
    bar.close()
    return chunks


def _numpy(value) -> np.ndarray:
    return value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, np.float32)
