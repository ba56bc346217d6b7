"""How a loader process gets samples out of tar shards, and how many bytes that costs it.

Two read paths, one sample stream (same keys, same order, same `__url__`):
- by index: the shard's DALI index file (pipeline/dali_index.py) lists every sample's members with
  their offsets and sizes. `samples(urls)` yields the samples WITHOUT their bytes (key, url and
  where the members lie), so ordering, rank and worker splits cost no tar reading; `load(sample)`
  then reads exactly that sample's members with positioned reads. A process reads only what it decodes.
- by scan: webdataset's sequential tar reader (the path used where a shard has no index).
  `samples(urls)` reads every byte of every tar it walks; `load` has nothing left to do.

The reader counts what it reads (`bytes_read`: tar bytes returned to it, `index_bytes`: index
files parsed), per process: each DataLoader worker holds its own copy.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from webdataset.tariterators import group_by_keys, tar_file_expander

from pipeline.dali_index import IndexedSample, read_index

Sample = dict[str, Any]
MEMBERS = "__members__"  # on an index-path sample before load: ((ext, offset, size), ...)


class ShardReadError(RuntimeError):
    """A shard that cannot be read as its index says (missing, shorter than the index, or index out of
    date). Fatal, like a broken tar on the scan path: it is the data set, not one sample, that is wrong."""


class _CountingFile(io.RawIOBase):
    """A read-only file that adds every byte it returns to its reader's `bytes_read`."""

    def __init__(self, handle: BinaryIO, reader: "ShardReader"):
        super().__init__()
        self.handle, self.reader = handle, reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.handle.readinto(buffer)
        self.reader.bytes_read += count or 0
        return count

    def close(self) -> None:
        self.handle.close()
        super().close()


class ShardReader:
    """Reads samples of tar shards by index when `index_paths` names an index for each url, else by scan."""

    def __init__(self, index_paths: dict[str, str] | None = None):
        self.index_paths = dict(index_paths or {})
        self.bytes_read = 0
        self.index_bytes = 0
        self._indices: dict[str, list[IndexedSample]] = {}
        self._files: dict[str, int] = {}

    @property
    def path_name(self) -> str:
        return "index" if self.index_paths else "scan"

    def samples(self, urls: Iterable[str]) -> Iterator[Sample]:
        urls = list(urls)
        if not self.index_paths:
            yield from self._scan(urls)
            return
        for url in urls:
            for entry in self.index(url):
                yield {"__key__": entry.key, "__url__": url, MEMBERS: entry.members}

    def index(self, url: str) -> list[IndexedSample]:
        """The shard's samples from its index file, parsed once per process and checked against the tar."""
        if url not in self._indices:
            if url not in self.index_paths:
                raise ShardReadError(f"{url}: no index file given for this shard (the reader has "
                                     f"{len(self.index_paths)} others)")
            idx_path = Path(self.index_paths[url])
            entries = read_index(idx_path)
            self.index_bytes += idx_path.stat().st_size
            tar_size = os.stat(url).st_size
            if entries and max(entry.end for entry in entries) > tar_size:
                raise ShardReadError(f"{idx_path}: lists bytes past the end of {url} ({tar_size} bytes): the index "
                                     f"is out of date; rebuild it with pipeline.dali_index.write_index")
            self._indices[url] = entries
        return self._indices[url]

    def load(self, sample: Sample) -> Sample:
        """The sample with its members' bytes (extension -> bytes); scan-path samples come back as they are."""
        members = sample.get(MEMBERS)
        if members is None:
            return sample
        url = sample["__url__"]
        loaded = {"__key__": sample["__key__"], "__url__": url}
        for key in sample:
            if key.startswith("__") and key not in loaded and key != MEMBERS:
                loaded[key] = sample[key]
        for ext, offset, size in members:
            data = os.pread(self._descriptor(url), size, offset)
            self.bytes_read += len(data)
            if len(data) != size:
                raise ShardReadError(f"{url}: member {sample['__key__']}.{ext} should hold {size} bytes at {offset}, "
                                     f"read {len(data)}: the tar is shorter than its index says")
            loaded[ext] = data
        return loaded

    def _descriptor(self, url: str) -> int:
        if url not in self._files:
            self._files[url] = os.open(url, os.O_RDONLY)
        return self._files[url]

    def _scan(self, urls: list[str]) -> Iterator[Sample]:
        def opened() -> Iterator[dict]:
            for url in urls:
                yield {"url": url, "stream": io.BufferedReader(_CountingFile(open(url, "rb", buffering=0), self))}

        # a broken tar (not a broken member) is fatal, as in wds.tarfile_to_samples
        yield from group_by_keys(tar_file_expander(opened()))

    def close(self) -> None:
        for descriptor in self._files.values():
            os.close(descriptor)
        self._files.clear()

    def __getstate__(self) -> dict:  # worker processes start with no open files of their own
        state = dict(self.__dict__)
        state["_files"] = {}
        return state
