"""Where a dataset's videos sit below its root, and which folders hold videos when none were found.

Archives unpack differently (`UCF-101/` or `UCF101/`, HMDB's `hmdb51_org/`, a flat Kinetics folder),
so a layout names its usual folders and this module picks the one that holds the most of what the
annotations list. `folders_with_videos` feeds the error a user sees when most listed videos are missing.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # layouts.py imports this module
    from pipeline.layouts import DatasetListing

VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
ARCHIVE_SUFFIXES = (".rar", ".zip", ".tar", ".tar.gz", ".tgz")


def is_video_name(name: str) -> bool:
    # AppleDouble junk (`._name.mp4`) ships inside some Kinetics tarballs
    return name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("._")


def candidate_dirs(root: Path, named: tuple[str, ...]) -> list[Path]:
    """The layout's usual folders, then the root itself, then every other folder one level below it."""
    ordered = [root / name for name in named] + [root]
    try:
        below = sorted(entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    except OSError:
        below = []
    return [path for path in dict.fromkeys(ordered + below) if path.is_dir()]


def locate_video_dir(root: Path, named: tuple[str, ...], score: Callable[[Path], int],
                     override: Path | None = None) -> Path:
    """The folder among `candidate_dirs` with the highest `score` (listed entries it holds); ties go to
    the earlier candidate. `override` (--videos-dir) wins unconditionally. With no candidate holding
    anything, the first usual folder that exists (else the root), so the missing-videos check names it."""
    if override is not None:
        return override
    candidates = candidate_dirs(root, named)
    best, best_score = None, 0
    for path in candidates:
        found = score(path)
        if found > best_score:
            best, best_score = path, found
    return best or next((root / name for name in named if (root / name).is_dir()), root)


def count_subdirs(names: set[str]) -> Callable[[Path], int]:
    """Score for class-folder layouts: how many of the class folders `names` a candidate holds."""
    return lambda path: sum((path / name).is_dir() for name in names)


def count_files(names: set[str]) -> Callable[[Path], int]:
    """Score for flat layouts: how many of the file names `names` a candidate holds directly."""
    def score(path: Path) -> int:
        try:
            return len(names.intersection(os.listdir(path)))
        except OSError:
            return 0
    return score


@dataclass(frozen=True)
class VideoFolder:
    path: Path
    videos: int
    subfolders: int  # > 0: `path` holds class folders with the videos, not the videos themselves

    def describe(self) -> str:
        where = f"in {self.subfolders} subfolders" if self.subfolders else "directly"
        return f"{self.path} ({self.videos} videos {where})"


def folders_with_videos(root: Path, max_depth: int = 4, limit: int = 5) -> tuple[list[VideoFolder], list[Path]]:
    """Folders below `root` (at most `max_depth` levels) that hold videos, largest first, and archives
    that may still need extracting. A folder whose subfolders hold the videos (class folders) is
    reported once as their parent, which is what --videos-dir wants."""
    per_dir: Counter[Path] = Counter()
    archives: list[Path] = []
    root_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if len(here.parts) - root_depth >= max_depth:
            dirnames.clear()
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        per_dir[here] = sum(is_video_name(name) for name in filenames)
        archives += [here / name for name in sorted(filenames) if name.lower().endswith(ARCHIVE_SUFFIXES)]
    children_with_videos: Counter[Path] = Counter()
    for path, count in per_dir.items():
        if count and path != root:
            children_with_videos[path.parent] += 1
    folders = []
    for path, count in per_dir.items():
        if not count or (path != root and children_with_videos[path.parent] > 1):
            continue
        folders.append(VideoFolder(path, count, 0))
    for parent, n_children in children_with_videos.items():
        if n_children > 1:
            total = sum(count for path, count in per_dir.items() if path.parent == parent and path != root)
            folders.append(VideoFolder(parent, total, n_children))
    folders.sort(key=lambda folder: (-folder.videos, str(folder.path)))
    return folders[:limit], archives


# --- never succeed with nothing ------------------------------------------------------------------

class MissingVideosError(ValueError):
    """Too few of the listed videos are on disk; the message says where we looked and what is there."""


def check_found(listing: DatasetListing, max_missing_fraction: float) -> None:
    """Raise MissingVideosError when nothing was found, or when an official split that lists videos
    found none of them or misses more than `max_missing_fraction` of them. A few missing videos pass:
    the caller skips them and records them in the manifest."""
    problems = []
    for split in ("train", "test"):
        found = sum(video.official_split == split for video in listing.videos)
        missing = [item for item in listing.missing if item.official_split == split]
        listed = found + len(missing)
        if listed and (found == 0 or len(missing) / listed > max_missing_fraction):
            problems.append((split, found, missing, listed))
    if listing.videos and not problems:
        return
    lines = [f"{listing.layout}: too many listed videos are missing (--max-missing-fraction "
             f"{max_missing_fraction:g})" if problems else f"{listing.layout}: no videos found"]
    for split, found, missing, listed in problems:
        lines.append(f"  official {split}: {len(missing)} of {listed} missing ({len(missing) / listed:.0%})")
    searched = sorted({str(path) for path in listing.video_dirs.values()}) or [str(listing.root)]
    lines.append(f"  searched: {', '.join(searched)}")
    examples = [item for _, _, missing, _ in problems for item in missing][:3]
    if examples:
        lines.append("  missing, e.g.: " + ", ".join(str(item.path) for item in examples))
    scan_roots = [listing.root] + [path for path in listing.video_dirs.values() if not path.is_relative_to(listing.root)]
    folders, archives = [], []
    for scan_root in dict.fromkeys(scan_roots):
        found_folders, found_archives = folders_with_videos(scan_root)
        folders += found_folders
        archives += found_archives
    if folders:
        lines.append("  folders that hold videos: " + "; ".join(folder.describe() for folder in folders))
    else:
        lines.append(f"  no folder below {listing.root} holds videos (looked 4 levels deep)")
    if archives:
        more = f" (+{len(archives) - 3} more)" if len(archives) > 3 else ""
        lines.append(f"  archives still to extract?: {', '.join(map(str, archives[:3]))}{more}")
    lines.append("  Point --videos-dir at the folder that holds the videos (the class folders for ucf101, hmdb51 "
                 "and folder), or raise --max-missing-fraction if this many are missing for a reason.")
    raise MissingVideosError("\n".join(lines))
