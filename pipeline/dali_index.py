"""DALI's webdataset index files (`<shard>.idx`), which `fn.readers.webdataset` reads so that start-up
does not scan every tar. Written by tools/make_shards.py next to each shard, and by the DALI loader
when asked to rebuild a missing one. No DALI or torch import at module level: the sharding workers use it.
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path


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
