"""DALI's webdataset index files (`<shard>.idx`), which `fn.readers.webdataset` reads so that start-up
does not scan every tar. Written by tools/make_shards.py next to each shard, and by the DALI loader
when asked to rebuild a missing one; read back by `read_index`, which lets the torch loader read
only the members of the samples it decodes. No DALI or torch import at module level: the sharding
workers use it.

Format v1.2: a line `v1.2 <samples>`, then one line per sample (tar order) holding, per member,
`<ext> <data offset> <size> <member name>`. The key is the member name up to the first dot of its
base name, as webdataset and DALI both group members.
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

INDEX_VERSION = "v1.2"


class IndexFormatError(ValueError):
    """An index file that cannot be read as DALI's v1.2 format; the message names the file and line."""


@dataclass(frozen=True)
class IndexedSample:
    """One sample of a shard as its index lists it: the key and, per member, where its bytes lie."""

    key: str
    members: tuple[tuple[str, int, int], ...]  # (extension, data offset, size), tar order

    @property
    def end(self) -> int:
        return max(offset + size for _, offset, size in self.members)


def write_index(tar_path: str | Path, idx_path: str | Path) -> Path:
    """Write the index of one tar via a .tmp rename (a killed writer leaves no half index), with DALI's
    own `wds2idx` when nvidia-dali is installed, else with `dali_index_text` (the same format)."""
    tar_path, idx_path = Path(tar_path), Path(idx_path)
    tmp = idx_path.with_name(idx_path.name + ".tmp")
    try:
        from wds2idx import IndexCreator  # ships with nvidia-dali
    except ImportError:
        IndexCreator = None
    if IndexCreator is not None:
        with IndexCreator(str(tar_path), str(tmp), verbose=False) as creator:
            creator.create_index()
    else:
        tmp.write_text(dali_index_text(tar_path))
    os.replace(tmp, idx_path)
    return idx_path


def dali_index_text(tar_path: str | Path) -> str:
    """`v1.2 <samples>` then per sample `<ext> <data offset> <size> <member name>` for each member."""
    bundles: list[list[str]] = []
    last_key = None
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isreg():
                continue
            key, ext = member.name.split(".", 1)
            if key != last_key:
                bundles.append([])
                last_key = key
            bundles[-1].append(f"{ext} {member.offset_data} {member.size} {member.name}")
    return f"v1.2 {len(bundles)}\n" + "".join(" ".join(bundle) + "\n" for bundle in bundles)


def _split_name(name: str) -> tuple[str, str]:
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


def read_index(idx_path: str | Path) -> list[IndexedSample]:
    """The samples of one shard in tar order, from its v1.2 index file."""
    idx_path = Path(idx_path)
    lines = idx_path.read_text().splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != INDEX_VERSION or not header[1].isdigit():
        raise IndexFormatError(f"{idx_path}: first line {lines[0] if lines else ''!r} is not "
                               f"'{INDEX_VERSION} <samples>' (rebuild it with pipeline.dali_index.write_index)")
    samples = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields or len(fields) % 4:
            raise IndexFormatError(f"{idx_path}:{number}: expected groups of '<ext> <offset> <size> <name>', "
                                   f"got {line!r}")
        members, key = [], None
        for at in range(0, len(fields), 4):
            ext, offset, size, name = fields[at:at + 4]
            member_key, name_ext = _split_name(name)
            if key not in (None, member_key) or name_ext != ext or not (offset.isdigit() and size.isdigit()):
                raise IndexFormatError(f"{idx_path}:{number}: member {name!r} does not fit the line {line!r}")
            key = member_key
            members.append((ext.lower(), int(offset), int(size)))
        samples.append(IndexedSample(key, tuple(members)))
    if len(samples) != int(header[1]):
        raise IndexFormatError(f"{idx_path}: header says {header[1]} samples, the file lists {len(samples)}")
    return samples


def index_mismatch(idx_path: str | Path, tar_path: str | Path, samples: int) -> str | None:
    """Why the index does not describe the tar (None when it does), from three cheap reads: the header
    line (sample count), the tar header before the last member listed (name and size, so any member
    that changed size or place before it shows), and the block after it (the end of the archive)."""
    idx_path, tar_path = Path(idx_path), Path(tar_path)
    with idx_path.open("rb") as handle:
        header = handle.readline().split()
        handle.seek(max(0, idx_path.stat().st_size - 65536))
        last_line = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1].split()
    if len(header) != 2 or header[0] != INDEX_VERSION.encode() or header[1] != str(samples).encode():
        return f"its first line is {b' '.join(header).decode(errors='replace')!r}, expected '{INDEX_VERSION} {samples}'"
    if len(last_line) < 4 or len(last_line) % 4 or not (last_line[-3].isdigit() and last_line[-2].isdigit()):
        return "its last line is not '<ext> <offset> <size> <name>' groups"
    offset, size, name = int(last_line[-3]), int(last_line[-2]), last_line[-1]
    end = offset + size + (-size % 512)
    with tar_path.open("rb") as tar:
        member_header = os.pread(tar.fileno(), 512, offset - 512) if offset >= 512 else b""
        after = os.pread(tar.fileno(), 512, end)
    if len(member_header) < 512 or member_header[:100].rstrip(b"\0") != name:
        return f"the tar holds no member {name.decode()!r} at byte {offset}"
    try:
        header_size = int(member_header[124:136].rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        return f"the tar header of {name.decode()!r} has no readable size"
    if header_size != size:
        return f"member {name.decode()!r} holds {header_size} bytes in the tar, {size} in the index"
    if after.strip(b"\0"):
        return f"the tar goes on after {name.decode()!r}, its last listed member"
    return None
