"""Read a raw video dataset in its official on-disk layout into a list of source videos.

One parser per layout; each returns a `DatasetListing` (ordered classes, videos with their official
split, and listed-but-missing files). The facts each parser relies on (CRLF lists, 1-based UCF
indices, the HandstandPushups folder, HMDB tags, Kinetics CSV variants, SSv2 templates) are in
`/work/shared/reference/dataset-layouts.md`.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.video_dirs import count_files, count_subdirs, is_video_name, locate_video_dir

OFFICIAL_SPLITS = ("train", "test")
LISTED_BUT_MISSING = "listed but missing"


@dataclass(frozen=True)
class SourceVideo:
    """One raw video. `class_name` is None only for unlabelled list entries (a lone path)."""

    path: Path
    rel_path: str  # relative to the dataset root, '/'-separated; the stable identity of the video
    class_name: str | None
    official_split: str  # 'train' | 'test'


@dataclass(frozen=True)
class MissingSource:
    rel_path: str
    reason: str
    official_split: str  # 'train' | 'test'
    path: Path  # where it was looked for


@dataclass
class DatasetListing:
    layout: str
    root: Path
    classes: list[str]  # index = label
    videos: list[SourceVideo]
    missing: list[MissingSource] = field(default_factory=list)
    hflip_changes_label: bool = False  # True where left/right classes exist (SSv2)
    time_reversal_changes_label: bool = False  # True where a clip played backwards is another class (SSv2)
    video_dirs: dict[str, Path] = field(default_factory=dict)  # official split -> folder searched for its videos


class LayoutError(ValueError):
    """The dataset root does not look like the requested layout (names the path and what was expected)."""


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise LayoutError(f"{what} not found: {path}")
    return path


def _rel(path: Path, root: Path, video_dir: Path | None = None) -> str:
    """Relative to the root; a --videos-dir outside the root gives paths relative to that folder."""
    if path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    if video_dir is not None and path.is_relative_to(video_dir):
        return path.relative_to(video_dir).as_posix()
    return path.as_posix()


def _text_lines(path: Path) -> list[str]:
    """Non-empty lines without CR/LF (official UCF lists are CRLF, the last line may lack a newline)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _is_video(path: Path) -> bool:
    return is_video_name(path.name) and path.is_file()


def _listed(root: Path, video_dir: Path, path: Path, class_name: str | None, split: str,
            videos: list[SourceVideo], missing: list[MissingSource]) -> None:
    rel_path = _rel(path, root, video_dir)
    if path.is_file():
        videos.append(SourceVideo(path, rel_path, class_name, split))
    else:
        missing.append(MissingSource(rel_path, LISTED_BUT_MISSING, split, path))


def _check_videos_dir(videos_dir: Path | None) -> Path | None:
    if videos_dir is None:
        return None
    videos_dir = Path(videos_dir).resolve()
    if not videos_dir.is_dir():
        raise LayoutError(f"--videos-dir {videos_dir} is not a folder")
    return videos_dir


# --- UCF-101 -------------------------------------------------------------------------------------

UCF_VIDEO_DIRS = ("UCF-101", "UCF101", "videos")  # unrar's folder, its common rename, mmaction2's


def read_ucf101(root: Path, split_id: int = 1, videos_dir: Path | None = None) -> DatasetListing:
    if split_id not in (1, 2, 3):
        raise LayoutError(f"ucf101: split_id={split_id}: allowed values are 1, 2, 3")
    list_dir = root / "ucfTrainTestlist"
    if not list_dir.is_dir():
        raise LayoutError(f"ucf101: folder not found: {list_dir} (expected {root}/UCF-101/<Class>/*.avi "
                          f"and {root}/ucfTrainTestlist/{{classInd,trainlist0K,testlist0K}}.txt)")
    class_ind = _require_file(list_dir / "classInd.txt", "ucf101 class index")
    by_index: dict[int, str] = {}
    for line in _text_lines(class_ind):
        index, name = line.split(maxsplit=1)
        by_index[int(index)] = name.strip()
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise LayoutError(f"{class_ind}: indices must run 1..N without gaps, got {sorted(by_index)[:5]}...")
    classes = [by_index[i] for i in range(1, len(by_index) + 1)]
    # exact folder name first, case-insensitive second: edited copies rename HandstandPushups
    known = set(classes)
    by_lower = {name.lower(): name for name in classes}
    video_dir = locate_video_dir(root, UCF_VIDEO_DIRS, count_subdirs(known), videos_dir)

    videos: list[SourceVideo] = []
    missing: list[MissingSource] = []
    for split, stem in (("train", "trainlist"), ("test", "testlist")):
        list_file = _require_file(list_dir / f"{stem}{split_id:02d}.txt", f"ucf101 {split} list")
        for line_no, line in enumerate(_text_lines(list_file), 1):
            entry = line.split()[0]  # testlists carry no label; trainlists' label is the folder's classInd
            folder = entry.split("/")[0]
            class_name = folder if folder in known else by_lower.get(folder.lower())
            if class_name is None:
                raise LayoutError(f"{list_file}:{line_no}: class folder {folder!r} is not in {class_ind}")
            _listed(root, video_dir, video_dir / entry, class_name, split, videos, missing)
    return DatasetListing("ucf101", root, classes, videos, missing,
                          video_dirs={split: video_dir for split in OFFICIAL_SPLITS})


# --- HMDB-51 -------------------------------------------------------------------------------------

HMDB_TAGS = {"1": "train", "2": "test"}  # "0" = not used in this split


HMDB_VIDEO_DIRS = ("videos", "hmdb51_org")  # mmaction2's folder; the outer archive's name


def read_hmdb51(root: Path, split_id: int = 1, videos_dir: Path | None = None) -> DatasetListing:
    if split_id not in (1, 2, 3):
        raise LayoutError(f"hmdb51: split_id={split_id}: allowed values are 1, 2, 3")
    split_dir = root / "testTrainMulti_7030_splits"
    if not split_dir.is_dir():
        raise LayoutError(f"hmdb51: folder not found: {split_dir} (expected "
                          f"{split_dir}/<class>_test_split<K>.txt and {root}/videos/<class>/*.avi)")
    split_files = sorted(split_dir.glob(f"*_test_split{split_id}.txt"))
    if not split_files:
        raise LayoutError(f"hmdb51: no split files {split_dir}/<class>_test_split{split_id}.txt")
    # class names contain '_': strip only the trailing `_test_splitK`
    classes = sorted(path.stem.rsplit("_", 2)[0] for path in split_files)
    video_dir = locate_video_dir(root, HMDB_VIDEO_DIRS, count_subdirs(set(classes)), videos_dir)
    videos: list[SourceVideo] = []
    missing: list[MissingSource] = []
    for split_file in split_files:
        class_name = split_file.stem.rsplit("_", 2)[0]
        for line_no, line in enumerate(_text_lines(split_file), 1):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise LayoutError(f"{split_file}:{line_no}: expected '<clip>.avi <0|1|2>', got {line!r}")
            split = HMDB_TAGS.get(fields[1])
            if split is not None:
                _listed(root, video_dir, video_dir / class_name / fields[0], class_name, split, videos, missing)
    return DatasetListing("hmdb51", root, classes, videos, missing,
                          video_dirs={split: video_dir for split in OFFICIAL_SPLITS})


# --- Kinetics-400/600/700 ------------------------------------------------------------------------

KINETICS_CSVS = {"train": ("train.csv",), "test": ("val.csv", "validate.csv")}
# CVDF / torchvision, mmaction2, CVDF's arrange_by_classes.py; else a flat folder anywhere below the root
KINETICS_VIDEO_DIRS = {"train": ("train", "videos_train", "videos/train"),
                       "test": ("val", "validate", "videos_val", "videos/val")}


def _kinetics_rows(csv_path: Path) -> list[tuple[str, str, str]]:
    """(label, youtube_id, clip stem) per row; label with any stray quotes removed."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        needed = ("label", "youtube_id", "time_start", "time_end")
        absent = [name for name in needed if name not in columns]
        if absent:
            raise LayoutError(f"{csv_path}: missing column(s) {absent}; header is {columns}, "
                              f"expected {list(needed)} (+ optional split, is_cc)")
        rows = []
        for line_no, row in enumerate(reader, 2):
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise LayoutError(f"{csv_path}:{line_no}: time_start/time_end must be numbers, got "
                                  f"{row['time_start']!r}, {row['time_end']!r}") from None
            youtube_id = row["youtube_id"].strip()
            rows.append((row["label"].replace('"', "").strip(), youtube_id,
                         f"{youtube_id}_{start:06d}_{end:06d}"))
        return rows


def _videos_by_stem(video_dir: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for path in sorted(video_dir.rglob("*")):
        if _is_video(path):
            by_stem.setdefault(path.stem, path)
    return by_stem


def _kinetics_video_dir(root: Path, split: str, rows: list[tuple[str, str, str]],
                        scans: dict[Path, dict[str, Path]]) -> Path:
    """The first usual folder holding any of the split's clips, else the root (a flat folder, or any
    other arrangement below it: clips are found by name)."""
    wanted = {stem for _, _, stem in rows} | {youtube_id for _, youtube_id, _ in rows}
    named = [root / name for name in KINETICS_VIDEO_DIRS[split] if (root / name).is_dir()]
    for path in [*named, root]:
        if path not in scans:
            scans[path] = _videos_by_stem(path)
        if wanted.intersection(scans[path]):
            return path
    return named[0] if named else root


def read_kinetics(root: Path, videos_dir: Path | None = None) -> DatasetListing:
    annotations = root / "annotations"
    if not annotations.is_dir():
        raise LayoutError(f"kinetics: folder not found: {annotations} (expected annotations/train.csv, "
                          f"annotations/val.csv or validate.csv, and videos under {root}/{{train,val}}/)")
    rows_by_split = {}
    for split, names in KINETICS_CSVS.items():
        candidates = [annotations / name for name in names]
        csv_path = next((path for path in candidates if path.is_file()), None)
        if csv_path is None:
            raise LayoutError(f"kinetics: none of {[str(p) for p in candidates]} exists")
        rows_by_split[split] = _kinetics_rows(csv_path)
    # mmaction2 convention: index = position among the sorted raw labels
    classes = sorted({label for rows in rows_by_split.values() for label, _, _ in rows})

    videos: list[SourceVideo] = []
    missing: list[MissingSource] = []
    video_dirs: dict[str, Path] = {}
    scans: dict[Path, dict[str, Path]] = {}  # one scan per folder, shared by the splits
    for split, rows in rows_by_split.items():
        video_dir = videos_dir or _kinetics_video_dir(root, split, rows, scans)
        video_dirs[split] = video_dir
        # label folders come in several normalisations (spaces, '_', stripped punctuation) or not at
        # all (CVDF flat): find files by clip name and take the label from the CSV
        if video_dir not in scans:
            scans[video_dir] = _videos_by_stem(video_dir)
        by_stem = scans[video_dir]
        for label, youtube_id, stem in rows:
            path = by_stem.get(stem) or by_stem.get(youtube_id)  # MIM copies name files `<id>.mp4`
            if path is None:
                expected = video_dir / f"{stem}.mp4"
                missing.append(MissingSource(_rel(expected, root, video_dir), LISTED_BUT_MISSING, split, expected))
            else:
                videos.append(SourceVideo(path, _rel(path, root, video_dir), label, split))
    return DatasetListing("kinetics", root, classes, videos, missing, video_dirs=video_dirs)


# --- Something-Something-v2 ----------------------------------------------------------------------

def _ssv2_label_file(root: Path, kind: str) -> Path:
    candidates = [root / "labels" / f"{kind}.json", root / f"something-something-v2-{kind}.json",
                  root / "labels" / f"something-something-v2-{kind}.json"]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise LayoutError(f"ssv2: {kind} file not found; looked for {[str(p) for p in candidates]}")
    return found


SSV2_VIDEO_DIRS = ("20bn-something-something-v2", "videos")  # `cat parts | tar zx`; mmaction2's folder


def read_ssv2(root: Path, videos_dir: Path | None = None) -> DatasetListing:
    labels_file = _ssv2_label_file(root, "labels")
    index_by_template = {template: int(index) for template, index in
                         json.loads(labels_file.read_text(encoding="utf-8")).items()}
    if sorted(index_by_template.values()) != list(range(len(index_by_template))):
        raise LayoutError(f"{labels_file}: class indices must be 0..N-1 without gaps")
    classes = sorted(index_by_template, key=index_by_template.__getitem__)
    entries: list[tuple[str, str, str]] = []  # (official split, id, template)
    for split, kind in (("train", "train"), ("test", "validation")):
        split_file = _ssv2_label_file(root, kind)
        for entry in json.loads(split_file.read_text(encoding="utf-8")):
            if "id" not in entry or "template" not in entry:
                raise LayoutError(f"{split_file}: entry {entry!r} lacks 'id' or 'template'")
            template = entry["template"].replace("[", "").replace("]", "")
            if template not in index_by_template:
                raise LayoutError(f"{split_file}: id {entry['id']}: template {template!r} not in {labels_file}")
            entries.append((split, str(entry["id"]), template))
    file_names = {f"{video_id}{ext}" for _, video_id, _ in entries for ext in (".webm", ".mp4")}
    video_dir = locate_video_dir(root, SSV2_VIDEO_DIRS, count_files(file_names), videos_dir)
    videos: list[SourceVideo] = []
    missing: list[MissingSource] = []
    for split, video_id, template in entries:
        path = next((video_dir / f"{video_id}{ext}" for ext in (".webm", ".mp4")
                     if (video_dir / f"{video_id}{ext}").is_file()), video_dir / f"{video_id}.webm")
        _listed(root, video_dir, path, template, split, videos, missing)
    return DatasetListing("ssv2", root, classes, videos, missing, hflip_changes_label=True,
                          time_reversal_changes_label=True,
                          video_dirs={split: video_dir for split in OFFICIAL_SPLITS})


# --- plain folders and file lists ----------------------------------------------------------------

def read_folder(root: Path, videos_dir: Path | None = None) -> DatasetListing:
    class_root = videos_dir or root
    if not class_root.is_dir():
        raise LayoutError(f"folder: root not found: {class_root} (expected {class_root}/<class>/<video>)")
    classes = sorted(path.name for path in class_root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not classes:
        raise LayoutError(f"folder: no class folders in {class_root} (expected {class_root}/<class>/<video>)")
    videos = [SourceVideo(path, _rel(path, root, class_root), class_name, "train")
              for class_name in classes for path in sorted((class_root / class_name).rglob("*")) if _is_video(path)]
    return DatasetListing("folder", root, classes, videos, video_dirs={"train": class_root})


def _read_filelist(list_file: Path) -> list[tuple[str, int | None]]:
    """`<path> <label>` lines; rsplit keeps spaces inside paths; a lone field means unlabelled."""
    entries = []
    for line_no, line in enumerate(_text_lines(list_file), 1):
        fields = line.rsplit(maxsplit=1)
        if len(fields) == 2 and fields[1].lstrip("-").isdigit():
            label = int(fields[1])
            if label < 0:
                raise LayoutError(f"{list_file}:{line_no}: label {label} must be >= 0 (labels are 0-based)")
            entries.append((fields[0], label))
        else:
            entries.append((line, None))
    return entries


def read_filelist(root: Path, train_list: Path | None, test_list: Path | None = None,
                  classes_file: Path | None = None, videos_dir: Path | None = None) -> DatasetListing:
    if train_list is None:
        raise LayoutError("filelist: --train-list is required (lines '<path> <0-based label>')")
    entries = {"train": _read_filelist(_require_file(Path(train_list), "filelist train list"))}
    if test_list is not None:
        entries["test"] = _read_filelist(_require_file(Path(test_list), "filelist test list"))
    max_label = max((label for rows in entries.values() for _, label in rows if label is not None), default=-1)
    if classes_file is not None:
        classes = _text_lines(_require_file(Path(classes_file), "filelist classes file"))
        if max_label >= len(classes):
            raise LayoutError(f"filelist: label {max_label} out of range for {len(classes)} classes in {classes_file}")
    else:
        classes = [f"class_{k}" for k in range(max_label + 1)]
    base = videos_dir or root  # relative list paths resolve against it
    videos: list[SourceVideo] = []
    missing: list[MissingSource] = []
    for split, rows in entries.items():
        for rel, label in rows:
            path = Path(rel) if Path(rel).is_absolute() else base / rel
            class_name = None if label is None else classes[label]
            if path.is_file():
                videos.append(SourceVideo(path, _rel(path, root, base), class_name, split))
            else:
                missing.append(MissingSource(rel, LISTED_BUT_MISSING, split, path))
    return DatasetListing("filelist", root, classes, videos, missing, video_dirs={split: base for split in entries})


# --- entry points --------------------------------------------------------------------------------

LAYOUTS = ("ucf101", "hmdb51", "kinetics", "ssv2", "folder", "filelist")
# (layout, marker below the root; a trailing '/' means a folder): the first one present decides
LAYOUT_MARKERS = (
    ("ucf101", "ucfTrainTestlist/"),
    ("hmdb51", "testTrainMulti_7030_splits/"),
    ("kinetics", "annotations/train.csv"),
    ("ssv2", "labels/labels.json"),
    ("ssv2", "something-something-v2-labels.json"),
    ("ssv2", "labels/something-something-v2-labels.json"),
)


def read_layout(layout: str, root: str | Path, *, split_id: int = 1, train_list: Path | None = None,
                test_list: Path | None = None, classes_file: Path | None = None,
                videos_dir: str | Path | None = None) -> DatasetListing:
    """Parse `root` as `layout` (one of LAYOUTS, or 'auto' to detect it). `videos_dir` overrides the
    folder the layout's videos are looked for in (by default the usual folders, see video_dirs.py)."""
    root = Path(root).resolve()
    if layout == "auto":
        layout, _ = detect_layout(root)
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}: allowed values are {list(LAYOUTS)} (or 'auto')")
    if not root.is_dir():
        raise LayoutError(f"{layout}: dataset root not found: {root}")
    videos_dir = _check_videos_dir(videos_dir)
    if layout == "ucf101":
        return read_ucf101(root, split_id, videos_dir)
    if layout == "hmdb51":
        return read_hmdb51(root, split_id, videos_dir)
    if layout == "kinetics":
        return read_kinetics(root, videos_dir)
    if layout == "ssv2":
        return read_ssv2(root, videos_dir)
    if layout == "folder":
        return read_folder(root, videos_dir)
    return read_filelist(root, train_list, test_list, classes_file, videos_dir)


def _holds_videos(folder: Path) -> bool:
    try:
        return any(is_video_name(name) for name in os.listdir(folder))
    except OSError:
        return False


def detect_layout(root: str | Path) -> tuple[str, str]:
    """(layout, why) from marker files; 'folder' when class folders hold videos and no marker is there."""
    root = Path(root)
    for layout, marker in LAYOUT_MARKERS:
        path = root / marker.rstrip("/")
        if path.is_dir() if marker.endswith("/") else path.is_file():
            return layout, f"found {path}"
    class_dirs = [path for path in sorted(root.iterdir()) if path.is_dir() and _holds_videos(path)] \
        if root.is_dir() else []
    if class_dirs:
        return "folder", (f"none of the marker files is there, and {len(class_dirs)} folders of {root} hold videos "
                          f"(class folders, e.g. {class_dirs[0].name}/)")
    looked_for = ", ".join(f"{root / marker} ({layout})" for layout, marker in LAYOUT_MARKERS)
    raise LayoutError(f"cannot detect the layout of {root}: looked for {looked_for}, and for class folders "
                      f"holding videos (folder); found none. Pass --layout, one of {list(LAYOUTS)}")
