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
