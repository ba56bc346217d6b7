"""The shard manifest (`shards/<dataset>/manifest.json`): schema, validation, atomic write.

The manifest is the one source of truth for classes, splits, shard files and encode settings
(docs/architecture.md section 2). The shard writer produces it; loaders and the trainer read it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("labelled", "unlabelled", "val", "test")


class ManifestError(ValueError):
    """A manifest is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ShardInfo:
    file: str  # tar file name, relative to the shard directory
    samples: int
    bytes: int
    sha256: str
    index: str | None = None  # DALI webdataset index file (wds2idx format) next to the tar


@dataclass(frozen=True)
class SplitInfo:
    samples: int
    per_class: list[int]  # sample count per label; unlabelled sources (label -1) are not counted
    shards: list[ShardInfo]


@dataclass(frozen=True)
class EncodeInfo:
    codec: str  # "h264" | "vp9"
    container: str  # "mp4" | "webm" (also the sample's video member extension)
    short_side: int
    fps: float
    gop: int
    bframes: int = 0
    pix_fmt: str = "yuv420p"


@dataclass(frozen=True)
class CompressedInfo:
    """Compressed-domain members written with `make_shards --modalities` (pipeline/compressed.py).
    Codec and GOP are the `encode` entry's: the modalities are read from the stored video."""

    modalities: list[str]  # subset of mv, residual, iframe
    segments: int  # K: I-frames per video on the segment grid
    mv_block: int  # motion field cell size in pixels
    members: dict[str, str]  # modality -> tar member extension, e.g. mv -> mv.npz
    mv_source: str = "decoder export_mvs of the stored video"
    residual: str = "int16 P-frame minus its motion-compensated previous frame"


@dataclass(frozen=True)
class SkippedSource:
    source: str
    reason: str


@dataclass
class Manifest:
    dataset: str
    layout: str
    source_root: str
    classes: list[str]  # index = label
    hflip_changes_label: bool
    time_reversal_changes_label: bool
    splits: dict[str, SplitInfo]
    encode: EncodeInfo
    seed: int
    label_fraction: float
    val_fraction: float
    skipped: list[SkippedSource] = field(default_factory=list)
    video_dirs: dict[str, str] = field(default_factory=dict)  # official split -> folder its videos came from
    compressed: CompressedInfo | None = None  # absent (None) unless make_shards ran with --modalities
    format_version: int = FORMAT_VERSION
    shard_dir: Path | None = field(default=None, compare=False)  # where it was loaded from

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_info(self, split: str) -> SplitInfo:
        if split not in self.splits:
            raise KeyError(f"split {split!r}: allowed values are {list(self.splits)}")
        return self.splits[split]

    _split = split_info  # older callers

    def _in_dir(self, name: str) -> Path:
        return (self.shard_dir or Path(".")) / name

    def shard_paths(self, split: str) -> list[Path]:
        return [self._in_dir(shard.file) for shard in self.split_info(split).shards]

    def index_paths(self, split: str) -> list[Path]:
        """DALI index files, in the same order as `shard_paths` (for `fn.readers.webdataset`)."""
        shards = self.split_info(split).shards
        missing = [shard.file for shard in shards if shard.index is None]
        if missing:
            raise ManifestError(f"split {split!r}: shards {missing} have no index file recorded")
        return [self._in_dir(shard.index) for shard in shards]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("shard_dir")
        if data["compressed"] is None:  # manifests without modalities keep their old shape
            data.pop("compressed")
        return {"format_version": data.pop("format_version"), **data}


def _check(value: Any, kind: type | tuple[type, ...], where: Path, key: str) -> Any:
    # bool is an int subclass: never accept it where a count is expected
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in
                                       (kind if isinstance(kind, tuple) else (kind,))):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ManifestError(f"{where}: key {key!r} must be {names}, got {type(value).__name__} {value!r}")
    return value


def _get(data: dict, key: str, kind, where: Path, prefix: str = "") -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ManifestError(f"{where}: missing key {prefix + key!r}")
    return _check(data[key], kind, where, prefix + key)


def manifest_from_dict(data: Any, where: Path) -> Manifest:
    """Validate a parsed manifest.json; every error names `where` and the offending key."""
    _check(data, dict, where, "<top level>")
    version = _get(data, "format_version", int, where)
    if version != FORMAT_VERSION:
        raise ManifestError(f"{where}: format_version {version} is not supported (this reader knows {FORMAT_VERSION})")
    classes = _get(data, "classes", list, where)
    for i, name in enumerate(classes):
        _check(name, str, where, f"classes[{i}]")
    splits_data = _get(data, "splits", dict, where)
    unknown = sorted(set(splits_data) - set(SPLITS))
    if unknown:
        raise ManifestError(f"{where}: unknown split(s) {unknown} in 'splits': allowed values are {list(SPLITS)}")
    splits = {}
    for split in SPLITS:
        prefix = f"splits.{split}."
        split_data = _get(splits_data, split, dict, where, "splits.")
        samples = _get(split_data, "samples", int, where, prefix)
        per_class = _get(split_data, "per_class", list, where, prefix)
        if len(per_class) != len(classes) or not all(isinstance(n, int) for n in per_class):
            raise ManifestError(f"{where}: key {prefix + 'per_class'!r} must hold {len(classes)} ints (one per class)")
        shards = []
        for i, shard in enumerate(_get(split_data, "shards", list, where, prefix)):
            shard_prefix = f"{prefix}shards[{i}]."
            shards.append(ShardInfo(
                file=_get(shard, "file", str, where, shard_prefix),
                samples=_get(shard, "samples", int, where, shard_prefix),
                bytes=_get(shard, "bytes", int, where, shard_prefix),
                sha256=_get(shard, "sha256", str, where, shard_prefix),
                index=_check(shard.get("index"), (str, type(None)), where, shard_prefix + "index")))
        if sum(shard.samples for shard in shards) != samples:
            raise ManifestError(f"{where}: key {prefix + 'samples'!r} = {samples} but its shards hold "
                                f"{sum(shard.samples for shard in shards)}")
        # unlabelled may hold sources without a label, which no class counts
        if sum(per_class) > samples or (split != "unlabelled" and sum(per_class) != samples):
            raise ManifestError(f"{where}: key {prefix + 'per_class'!r} sums to {sum(per_class)}, samples = {samples}")
        splits[split] = SplitInfo(samples, per_class, shards)
    encode_data = _get(data, "encode", dict, where)
    encode = EncodeInfo(
        codec=_get(encode_data, "codec", str, where, "encode."),
        container=_get(encode_data, "container", str, where, "encode."),
        short_side=_get(encode_data, "short_side", int, where, "encode."),
        fps=float(_get(encode_data, "fps", (int, float), where, "encode.")),
        gop=_get(encode_data, "gop", int, where, "encode."),
        bframes=_get(encode_data, "bframes", int, where, "encode."),
        pix_fmt=_get(encode_data, "pix_fmt", str, where, "encode."))
    skipped = [SkippedSource(_get(item, "source", str, where, f"skipped[{i}]."),
                             _get(item, "reason", str, where, f"skipped[{i}]."))
               for i, item in enumerate(_get(data, "skipped", list, where))]
    video_dirs = _check(data.get("video_dirs", {}), dict, where, "video_dirs")  # absent in older manifests
    for split, folder in video_dirs.items():
        _check(folder, str, where, f"video_dirs.{split}")
    compressed = None
    if data.get("compressed") is not None:  # absent in older manifests and without --modalities
        info = _check(data["compressed"], dict, where, "compressed")
        modalities = _get(info, "modalities", list, where, "compressed.")
        members = _get(info, "members", dict, where, "compressed.")
        for name in modalities:
            _check(name, str, where, "compressed.modalities[]")
            if not isinstance(members.get(name), str):
                raise ManifestError(f"{where}: key 'compressed.members.{name}' must name the tar member extension")
        compressed = CompressedInfo(modalities=modalities, segments=_get(info, "segments", int, where, "compressed."),
                                    mv_block=_get(info, "mv_block", int, where, "compressed."), members=members,
                                    mv_source=str(info.get("mv_source", "")), residual=str(info.get("residual", "")))
    return Manifest(
        dataset=_get(data, "dataset", str, where),
        layout=_get(data, "layout", str, where),
        source_root=_get(data, "source_root", str, where),
        classes=classes,
        hflip_changes_label=_get(data, "hflip_changes_label", bool, where),
        time_reversal_changes_label=_get(data, "time_reversal_changes_label", bool, where),
        splits=splits,
        encode=encode,
        seed=_get(data, "seed", int, where),
        label_fraction=float(_get(data, "label_fraction", (int, float), where)),
        val_fraction=float(_get(data, "val_fraction", (int, float), where)),
        skipped=skipped,
        video_dirs=video_dirs,
        compressed=compressed,
        format_version=version,
        shard_dir=where.parent)


def load_manifest(shard_dir: str | Path) -> Manifest:
    """Read and validate `<shard_dir>/manifest.json` (or a path to the manifest file itself)."""
    path = Path(shard_dir)
    if path.is_dir() or path.suffix != ".json":
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path} (write it with tools/make_shards.py)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not valid JSON ({error})") from None
    return manifest_from_dict(data, path.resolve())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary name, fsync, then rename: readers never see a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_manifest(manifest: Manifest, shard_dir: str | Path) -> Path:
    """Validate and write `<shard_dir>/manifest.json` atomically; returns its path."""
    path = Path(shard_dir) / MANIFEST_NAME
    data = manifest.to_dict()
    manifest_from_dict(json.loads(json.dumps(data)), path)  # never write what we could not read back
    write_json_atomic(path, data)
    return path
