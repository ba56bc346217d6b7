"""The CPU loader on real H.264 tar shards: decoding, batch contract, rank split, determinism, resume,
evaluation coverage and corrupt samples."""
import io
import json
import math
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import pipeline.cpu_loader as cpu_loader
from pipeline.contract import KEY, LABEL, SKIPPED_KEYS, STRONG_VIDEO, VIDEO, AugmentSpec, ClipSpec
from pipeline.cpu_loader import eval_loader, train_loader
from pipeline.video_decode import CorruptVideoError, decode_frames, torchcodec_available
from pipeline.video_encode import EncodeSettings, encode_video_bytes
from tests.shard_fixture import FixtureSpec, synthetic_frames, write_shard_set

CLIP = ClipSpec(frames=8, stride=2, crop_size=32)


@pytest.fixture(scope="module")
def three_shards(tmp_path_factory) -> Path:
    """10 labelled samples in 3 shards (4, 4, 2) with one 10-frame video; too few shards for 2 ranks."""
    return write_shard_set(tmp_path_factory.mktemp("three"),
                           FixtureSpec(splits={"labelled": 10, "val": 7}, frames=(24, 24, 24, 10)))


@pytest.fixture(scope="module")
def four_shards(tmp_path_factory) -> Path:
    """16 labelled samples in 4 shards: split by shard for 2 ranks."""
    return write_shard_set(tmp_path_factory.mktemp("four"), FixtureSpec(splits={"labelled": 16, "val": 8}))


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory) -> Path:
    return write_shard_set(tmp_path_factory.mktemp("corrupt"), FixtureSpec(
        splits={"labelled": 8, "val": 6},
        corrupt=[("labelled", 2, "truncated"), ("labelled", 5, "empty"),
                 ("val", 0, "empty"), ("val", 4, "truncated")]))


def split_members(shard_dir: Path, split: str) -> dict[str, dict]:
    """key -> json of every sample in the split, read straight from the tars."""
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    out = {}
    for shard in manifest["splits"][split]["shards"]:
        with tarfile.open(shard_dir / shard["file"]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    out[member.name[:-5]] = json.loads(tar.extractfile(member).read())
    return out


def keys_of(batches) -> list[str]:
    return [key for batch in batches for key in batch[KEY]]


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[KEY] == y[KEY]
        assert torch.equal(x[VIDEO], y[VIDEO]) and torch.equal(x[LABEL], y[LABEL])


# ---- decoding ----

def reference_frames(video: bytes) -> np.ndarray:
    with av.open(io.BytesIO(video)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.fixture(scope="module", params=["h264", "vp9"])  # shard members: .mp4 (default) or .webm
def clip_bytes(request) -> bytes:
    frames = synthetic_frames(40, 40, 48, label=1, rng=np.random.default_rng(0))
    return encode_video_bytes(frames, EncodeSettings(codec=request.param, gop=8))


BACKENDS = ["pyav"] + (["torchcodec"] if torchcodec_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_equals_pyav_reference(clip_bytes, backend):
    reference = reference_frames(clip_bytes)
    for indices in ([0, 2, 4, 6], [25, 27, 29, 31, 33, 35, 37, 39], [30, 10, 10, 39]):  # seeks, repeats, reversal
        frames = decode_frames(clip_bytes, indices, key="k", backend=backend)
        assert frames.dtype == torch.uint8 and frames.shape == (len(indices), 40, 48, 3)
        np.testing.assert_array_equal(frames.numpy(), reference[indices])


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_rejects_corrupt_and_short_videos(clip_bytes, backend):
    # a truncated webm still streams its first frames; only frames past the cut are lost
    for damaged in (b"", clip_bytes[: len(clip_bytes) // 2], b"not a video at all" * 10):
        with pytest.raises(CorruptVideoError, match="'bad_key'"):
            decode_frames(damaged, [0, 38, 39], key="bad_key", backend=backend)
    with pytest.raises(CorruptVideoError, match="40"):
        decode_frames(clip_bytes, [38, 40], key="k", backend=backend)


# ---- training batches ----

def test_train_batch_contract_and_labels_match_json(three_shards):
    members = split_members(three_shards, "labelled")
    loader = train_loader(three_shards, "labelled", CLIP, AugmentSpec(), batch_size=4, steps_per_epoch=3,
                          num_workers=0, strong_view=True)
    batches = list(loader)
    for batch in batches:
        assert set(batch) == {VIDEO, STRONG_VIDEO, LABEL, KEY, SKIPPED_KEYS}
        assert batch[VIDEO].dtype == torch.uint8 and batch[VIDEO].shape == (4, 3, 8, 32, 32)
        assert batch[STRONG_VIDEO].dtype == torch.uint8 and batch[STRONG_VIDEO].shape == (4, 3, 8, 32, 32)
        assert not torch.equal(batch[VIDEO], batch[STRONG_VIDEO])
        assert batch[LABEL].dtype == torch.int64
        assert batch[LABEL].tolist() == [members[key]["label"] for key in batch[KEY]]
        assert batch[SKIPPED_KEYS] == []
    assert set(keys_of(batches)) == set(members)  # 12 slots over 10 samples: every sample seen
    assert loader.skipped == 0


@pytest.mark.parametrize("steps", [1, 7])
def test_exactly_steps_per_epoch_full_batches(three_shards, steps):
    loader = train_loader(three_shards, "labelled", CLIP, AugmentSpec(), batch_size=4, steps_per_epoch=steps,
                          num_workers=2)
    batches = list(loader)
    assert len(loader) == steps and len(batches) == steps
    assert all(len(batch[KEY]) == 4 for batch in batches)
    if steps == 7:  # 28 slots from 10 samples: the epoch repeats the split, each sample 2-3 times
        counts = {key: keys_of(batches).count(key) for key in set(keys_of(batches))}
        assert len(counts) == 10 and set(counts.values()) <= {2, 3}


@pytest.mark.parametrize("fixture_name", ["three_shards", "four_shards"])  # by sample index / by shard
def test_two_ranks_read_disjoint_samples_and_cover_the_split(fixture_name, request):
    shard_dir = request.getfixturevalue(fixture_name)
    members = split_members(shard_dir, "labelled")
    shards = cpu_loader.split_shards(cpu_loader.read_manifest(shard_dir), shard_dir, "labelled")
    plan = cpu_loader.plan_rank(shards, 0, 2, seed=5, epoch=1, shuffle=True, need_balance=True)
    assert plan.by_sample_index == (fixture_name == "three_shards")
    half = len(members) // 2
    per_rank = []
    for rank in range(2):
        loader = train_loader(shard_dir, "labelled", CLIP, AugmentSpec(), batch_size=half, steps_per_epoch=3,
                              rank=rank, world_size=2, num_workers=0, seed=5, epoch=1)
        per_rank.append(keys_of(loader))
    for keys in per_rank:  # each pass (one batch here) holds the rank's share once; later passes repeat it
        assert len(keys) == 3 * half and len(set(keys[:half])) == half and set(keys) == set(keys[:half])
    assert not set(per_rank[0]) & set(per_rank[1])
    assert set(per_rank[0]) | set(per_rank[1]) == set(members)


def test_same_batches_for_zero_and_two_workers_and_new_ones_next_epoch(four_shards):
    def run(num_workers, epoch=0):
        return list(train_loader(four_shards, "labelled", CLIP, AugmentSpec(), batch_size=3, steps_per_epoch=6,
                                 rank=1, world_size=2, num_workers=num_workers, seed=11, epoch=epoch,
                                 strong_view=True))

    in_process = run(0)
    assert_same_batches(in_process, run(2))
    assert all(torch.equal(a[STRONG_VIDEO], b[STRONG_VIDEO]) for a, b in zip(in_process, run(2)))
    assert keys_of(in_process) != keys_of(run(0, epoch=1))


def test_start_step_resumes_without_decoding_the_skipped_batches(three_shards, monkeypatch):
    def run(num_workers, start_step):
        return list(train_loader(three_shards, "labelled", CLIP, AugmentSpec(), batch_size=4, steps_per_epoch=6,
                                 num_workers=num_workers, seed=3, start_step=start_step))

    full = run(0, 0)
    assert_same_batches(run(2, 3), full[3:])
    decoded = []
    real_decode = cpu_loader.decode_frames

    def counting_decode(video, indices, *, key, backend):
        decoded.append(key)
        return real_decode(video, indices, key=key, backend=backend)

    monkeypatch.setattr(cpu_loader, "decode_frames", counting_decode)
    assert_same_batches(run(0, 4), full[4:])
    assert len(decoded) == 2 * 4  # only the two remaining batches were decoded


def test_direction_changing_augmentation_is_refused(tmp_path):
    shard_dir = write_shard_set(tmp_path, FixtureSpec(splits={"labelled": 2}, direction_sensitive=True))
    with pytest.raises(ValueError, match="hflip_changes_label"):
        train_loader(shard_dir, "labelled", CLIP, AugmentSpec(hflip=True), batch_size=2, steps_per_epoch=1)
    safe = AugmentSpec(hflip=True).label_safe(True, True)
    assert len(list(train_loader(shard_dir, "labelled", CLIP, safe, batch_size=2, steps_per_epoch=1))) == 1
    with pytest.raises(ValueError, match="available splits"):
        train_loader(shard_dir, "nope", CLIP, safe, batch_size=2, steps_per_epoch=1)


# ---- evaluation batches ----

@pytest.mark.parametrize("multi_view", [False, True])
def test_eval_covers_every_sample_once_across_ranks(three_shards, multi_view):
    clip = ClipSpec(frames=8, stride=2, crop_size=32, test_clips=2, test_crops=3)
    members = split_members(three_shards, "val")
    views = 6 if multi_view else 1
    seen = []
    for rank in range(2):
        loader = eval_loader(three_shards, "val", clip, batch_size=2, rank=rank, world_size=2, num_workers=2,
                             multi_view=multi_view)
        batches = list(loader)
        assert len(batches) == len(loader)
        for batch in batches:
            assert batch[VIDEO].dtype == torch.uint8
            assert batch[VIDEO].shape[1:] == (views, 3, 8, 32, 32)
            assert batch[LABEL].tolist() == [members[key]["label"] for key in batch[KEY]]
        seen += keys_of(batches)
    assert sorted(seen) == sorted(members)


# ---- corrupt samples ----

def test_corrupt_members_are_skipped_and_counted(corrupt_shards):
    members = split_members(corrupt_shards, "labelled")
    broken = {key for key, meta in members.items() if meta["source"].endswith(("_00002.avi", "_00005.avi"))}
    loader = train_loader(corrupt_shards, "labelled", CLIP, AugmentSpec(), batch_size=4, steps_per_epoch=2,
                          num_workers=2)
    batches = list(loader)
    assert len(batches) == 2 and all(len(batch[KEY]) == 4 for batch in batches)  # topped up, still full
    assert set(loader.skipped_keys) == broken and loader.skipped == 2
    assert not broken & set(keys_of(batches))

    val = split_members(corrupt_shards, "val")
    eval_batches = eval_loader(corrupt_shards, "val", CLIP, batch_size=4, num_workers=0)
    kept = keys_of(eval_batches)
    assert eval_batches.skipped == 2 and len(kept) == len(val) - 2
    assert set(kept) | set(eval_batches.skipped_keys) == set(val)
    assert math.isclose(len(kept) / len(val), 4 / 6)


# ---- reading by index ----

def test_index_and_scan_paths_give_the_same_batches_and_the_log_names_the_path(four_shards, tmp_path, caplog):
    from tools.read_cost import scan_view

    scan_dir = scan_view(four_shards, tmp_path / "scan")

    def run(shard_dir):
        loader = train_loader(shard_dir, "labelled", CLIP, AugmentSpec(), batch_size=3, steps_per_epoch=5, rank=1,
                              world_size=2, num_workers=2, seed=4, strong_view=True)
        return loader, list(loader)

    with caplog.at_level("INFO", logger="pipeline.cpu_loader"):
        by_index, index_batches = run(four_shards)
        by_scan, scan_batches = run(scan_dir)
    assert (by_index.read_path, by_scan.read_path) == ("index", "scan")
    assert "reading by index" in caplog.text and "sequential scan" in caplog.text
    assert_same_batches(index_batches, scan_batches)
    assert all(torch.equal(a[STRONG_VIDEO], b[STRONG_VIDEO]) for a, b in zip(index_batches, scan_batches))
    assert keys_of(eval_loader(four_shards, "val", CLIP, batch_size=3, num_workers=2)) == \
           keys_of(eval_loader(scan_dir, "val", CLIP, batch_size=3, num_workers=2))


def member_sizes(shard_dir: Path, split: str) -> dict[str, int]:
    from tools.read_cost import sample_bytes
    return sample_bytes(shard_dir, split)


def test_an_epoch_by_index_reads_each_decoded_sample_once(three_shards):
    sizes = member_sizes(three_shards, "labelled")
    for rank in range(2):  # 3 shards, 2 ranks: split by sample index, where a scan reads every shard
        loader = train_loader(three_shards, "labelled", CLIP, AugmentSpec(), batch_size=2, steps_per_epoch=3,
                              rank=rank, world_size=2, num_workers=2, seed=1)
        keys = keys_of(loader)
        assert loader.bytes_read == sum(sizes[key] for key in keys)  # padding repeats re-read, nothing else is read
        assert 0 < loader.index_bytes < loader.bytes_read
        assert loader.io_read_chars >= loader.bytes_read


def test_a_worker_reads_no_member_of_another_workers_samples(four_shards, tmp_path, monkeypatch):
    import os
    import pipeline.shard_reader as shard_reader

    log_path = tmp_path / "reads.txt"

    class LoggedOs:  # the reader's `os`, with every positioned read written down by the reading process
        def __getattr__(self, name):
            return getattr(os, name)

        def pread(self, descriptor, size, offset):
            with open(log_path, "a") as log:
                log.write(f"{os.getpid()} {os.readlink(f'/proc/self/fd/{descriptor}')} {offset}\n")
            return os.pread(descriptor, size, offset)

    monkeypatch.setattr(shard_reader, "os", LoggedOs())
    workers = 2
    batches = list(train_loader(four_shards, "labelled", CLIP, AugmentSpec(), batch_size=2, steps_per_epoch=7,
                                num_workers=workers, seed=2))
    owner = {}  # (tar, member offset) -> key
    for tar in four_shards.glob("labelled-*.tar"):
        with tarfile.open(tar) as archive:
            owner.update({(str(tar.resolve()), m.offset_data): m.name.split(".")[0] for m in archive if m.isreg()})
    read_by_process: dict[str, set[str]] = {}
    for line in log_path.read_text().splitlines():
        pid, tar, offset = line.split()
        read_by_process.setdefault(pid, set()).add(owner[(str(Path(tar).resolve()), int(offset))])
    decoded_by_worker = [set(keys_of(batches[w::workers])) for w in range(workers)]
    assert sorted(map(sorted, read_by_process.values())) == sorted(map(sorted, decoded_by_worker))
