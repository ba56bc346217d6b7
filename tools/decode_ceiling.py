"""The decode-only ceiling: the clips the torch loader decodes, decoded by the same decoder in a tight
loop, with no tar, no augmentation, no collation and no DataLoader, in W plain processes at once.

The loader's clips/s divided by this at the same W is the share of the decoder's speed the loader
delivers; what is left is the loader's own cost (tar reading, the sample stream, crop/flip,
collation, handing batches between processes). tools/profile_throughput.py runs it as its `ceiling`
contender, interleaved with the loader.

The clips: the shard members' video bytes are read into memory first (outside the timing); each clip
is a training clip of the loader's ClipSpec, its frame list drawn by pipeline.clips.train_clip_indices
from a generator seeded by the sample key, as the loader seeds its own.
"""
from __future__ import annotations

import json
import multiprocessing
import tarfile
import time
from pathlib import Path

import torch

from pipeline.clips import train_clip_indices
from pipeline.contract import ClipSpec
from pipeline.cpu_loader import stable_seed
from pipeline.video_decode import decode_frames, resolve_backend

Clip = tuple[bytes, list[int], str]  # video bytes, frame indices, key


def shard_clips(shard_dir: Path, split: str, clip: ClipSpec, *, seed: int = 0) -> list[Clip]:
    """One training clip per sample of the split, in shard order, its bytes read into memory."""
    manifest = json.loads((Path(shard_dir) / "manifest.json").read_text())
    clips = []
    for shard in manifest["splits"][split]["shards"]:
        with tarfile.open(Path(shard_dir) / shard["file"]) as tar:
            members = {m.name: m for m in tar if m.isreg()}
            for name in sorted(n for n in members if n.endswith(".json")):
                key = name[:-len(".json")]
                meta = json.loads(tar.extractfile(members[name]).read())
                video = next((f"{key}.{ext}" for ext in ("mp4", "webm") if f"{key}.{ext}" in members), None)
                if video is None:
                    continue
                generator = torch.Generator().manual_seed(stable_seed(seed, "ceiling", key))
                indices = train_clip_indices(int(meta["frames"]), clip, generator, False)
                clips.append((tar.extractfile(members[video]).read(), list(indices), key))
    if not clips:
        raise ValueError(f"{shard_dir}: split {split!r} has no video samples")
    return clips


_CLIPS: list[Clip] = []  # the forked processes' copy (set before they start: no pickling of the bytes)


def _decode_share(worker: int, workers: int, count: int, backend: str, start, results) -> None:
    torch.set_num_threads(1)  # as a DataLoader worker runs
    mine = [_CLIPS[i % len(_CLIPS)] for i in range(worker, count, workers)]
    decode_frames(mine[0][0], mine[0][1], key=mine[0][2], backend=backend)  # warm-up: codec set-up, first pages
    start.wait()
    started = time.perf_counter()
    for video, indices, key in mine:
        decode_frames(video, indices, key=key, backend=backend)
    results.put((len(mine), time.perf_counter() - started))


def decode_ceiling(clips: list[Clip], workers: int, count: int, backend: str = "auto") -> dict:
    """`count` clips (cycling over `clips`) decoded by `workers` processes at once; clips/s over the slowest."""
    global _CLIPS
    if workers < 1 or count < workers:
        raise ValueError(f"workers={workers}, count={count}: need 1 <= workers <= count")
    backend = resolve_backend(backend)  # before the fork, as the loader does
    _CLIPS = clips
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_decode_share, args=(w, workers, count, backend, start, results))
                 for w in range(workers)]
    for process in processes:
        process.start()
    shares = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a decode-ceiling process exited with {process.exitcode}")
    decoded = sum(n for n, _ in shares)
    seconds = max(s for _, s in shares)
    return {"clips": decoded, "seconds": seconds, "clips_per_s": decoded / seconds, "backend": backend}
