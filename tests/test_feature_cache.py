"""Zarr feature caches on tiny real shards: round trip, refusal of stale caches, resume after a kill,
two processes filling one cache, batched reads, and clear errors for read-only paths and a full disk."""
import errno
import json
import multiprocessing
import os
import shutil
import signal
import time

import numpy as np
import pytest
import torch
import zarr

from pipeline.contract import ClipSpec
from pipeline.cpu_loader import eval_loader
from pipeline.feature_cache import (STATUS, WRITTEN, CacheLayout, FeatureCacheError, IncompleteCacheError,
                                    StaleCacheError, cache_identity, fill_cache, open_cache, prepare_cache,
                                    state_dict_fingerprint)

CLIP = ClipSpec(frames=8, stride=2, crop_size=32)
LAYOUT = CacheLayout(students=("colour", "motion"), feature_dims=(3, 2), num_classes=4, chunk_rows=5)
DATASET, SPLIT = "ucf101", "unlabelled"  # 12 samples in 2 shards of 8: chunks of 5 cross the shard boundary


def clip_statistics(clips_uint8: torch.Tensor, delay: float = 0.0) -> dict:
    """A cheap, exact function of the decoded clip standing in for backbones and teacher."""
    time.sleep(delay)
    x = clips_uint8.float() / 255
    colour = x.mean(dim=(2, 3, 4))  # [B, 3]
    motion = torch.stack([(x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4)), x.std(dim=(1, 2, 3, 4))], 1)
    logits = torch.cat([colour, motion[:, :1]], 1) * 10
    return {"features": {"colour": colour, "motion": motion}, "teacher_logits": logits}


def identity_for(shard_dir, weights="weights-A", clip=CLIP):
    return cache_identity(weights, clip, shard_dir)


def new_cache(tmp_path, shard_dir, **kwargs):
    return prepare_cache(tmp_path / "cache" / DATASET / f"{SPLIT}.zarr", shard_dir=shard_dir, split=SPLIT,
                         dataset=DATASET, identity=identity_for(shard_dir, **kwargs), layout=LAYOUT)


@pytest.fixture(scope="module")
def shard_dir(tiny_shards):
    return tiny_shards[DATASET]


@pytest.fixture(scope="module")
def reference(shard_dir):
    """key -> (outputs, label) computed from the evaluation loader's single-clip view."""
    out = {}
    for batch in eval_loader(shard_dir, SPLIT, CLIP, batch_size=4, num_workers=0, multi_view=False):
        stats = clip_statistics(batch["video"][:, 0])
        for i, key in enumerate(batch["key"]):
            out[key] = ({"features/colour": stats["features"]["colour"][i].numpy(),
                         "features/motion": stats["features"]["motion"][i].numpy(),
                         "teacher_logits": stats["teacher_logits"][i].numpy()}, int(batch["label"][i]))
    return out


def assert_matches_reference(cache, reference, keys=None):
    keys = keys or list(reference)
    rows = cache.read_rows(keys)
    for i, key in enumerate(keys):
        values, label = reference[key]
        for name, value in values.items():
            tolerance = 1e-3 if name.startswith("features/") else 1e-5  # features are float16 on disk
            np.testing.assert_allclose(rows[name][i], value, rtol=tolerance, atol=tolerance, err_msg=f"{key} {name}")
        assert rows["labels"][i] == label


def test_round_trip_by_key_in_any_order(tmp_path, shard_dir, reference):
    cache = new_cache(tmp_path, shard_dir)
    assert cache.rows == len(reference) == 12 and cache.num_chunks == 3
    assert fill_cache(cache, shard_dir, CLIP, clip_statistics, progress=False) == [0, 1, 2]
    reopened = open_cache(cache.path, identity_for(shard_dir), LAYOUT)
    assert reopened.is_complete and reopened.keys == cache.keys
    assert reopened.arrays["features/colour"].dtype == np.float16
    keys = list(reference)[::-1][:7] + list(reference)[:2]  # reversed, with repeats
    assert_matches_reference(reopened, reference, keys)
    by_row = reopened.read_rows([reopened.keys.index(k) for k in keys], arrays=["teacher_logits"])
    np.testing.assert_array_equal(by_row["teacher_logits"], reopened.read_rows(keys)["teacher_logits"])
    with pytest.raises(KeyError, match="not in the ucf101 unlabelled split"):
        reopened.read_rows(["ucf101_0000000000000000"])


def test_stale_cache_is_refused_never_used(tmp_path, shard_dir):
    cache = new_cache(tmp_path, shard_dir)
    fill_cache(cache, shard_dir, CLIP, clip_statistics, progress=False)
    with pytest.raises(StaleCacheError, match="other weights") as error:
        open_cache(cache.path, identity_for(shard_dir, weights="weights-B"), LAYOUT)
    assert str(cache.path) in str(error.value) and "--rebuild" in str(error.value)
    with pytest.raises(StaleCacheError, match="another clip view"):
        open_cache(cache.path, identity_for(shard_dir, clip=ClipSpec(frames=4, stride=2, crop_size=32)), LAYOUT)
    with pytest.raises(StaleCacheError, match="weights_fingerprint"):  # prepare without rebuild refuses too
        prepare_cache(cache.path, shard_dir=shard_dir, split=SPLIT, dataset=DATASET,
                      identity=identity_for(shard_dir, weights="weights-B"), layout=LAYOUT)

    other_manifest = tmp_path / "changed_shards"
    shutil.copytree(shard_dir, other_manifest)
    manifest = json.loads((other_manifest / "manifest.json").read_text())
    manifest["seed"] += 1  # any change to manifest.json makes rows of another split assignment possible
    (other_manifest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StaleCacheError, match="another manifest.json"):
        open_cache(cache.path, identity_for(other_manifest), LAYOUT)

    rebuilt = prepare_cache(cache.path, shard_dir=shard_dir, split=SPLIT, dataset=DATASET,
                            identity=identity_for(shard_dir, weights="weights-B"), layout=LAYOUT, rebuild=True)
    assert rebuilt.missing_chunks() == [0, 1, 2] and not rebuilt.is_complete  # old rows are not carried over
    with pytest.raises(IncompleteCacheError, match="never written"):
        rebuilt.read_rows(rebuilt.keys[:1])
    with pytest.raises(StaleCacheError):  # and the old identity is gone
        open_cache(cache.path, identity_for(shard_dir), LAYOUT)


def test_weights_fingerprint_follows_the_weights():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    before = state_dict_fingerprint(model.state_dict())
    assert before == state_dict_fingerprint({k: v.clone() for k, v in model.state_dict().items()})
    model[1].running_mean += 1  # statistics change the features as much as weights do
    assert state_dict_fingerprint(model.state_dict()) != before
    assert state_dict_fingerprint(model.state_dict(), prefixes=("0.",)) == state_dict_fingerprint(
        {k: v for k, v in model.state_dict().items() if k.startswith("0.")})


def test_resume_fills_only_missing_chunks(tmp_path, shard_dir, reference):
    cache = new_cache(tmp_path, shard_dir)
    assert fill_cache(cache, shard_dir, CLIP, clip_statistics, rank=0, world_size=2, progress=False) == [0, 2]
    zarr.open_group(str(cache.path), mode="r+")[STATUS][0:5] = np.zeros(5, np.uint8)  # drop chunk 0's mask
    resumed = open_cache(cache.path, identity_for(shard_dir), LAYOUT, mode="r+")
    assert resumed.missing_chunks() == [0, 1]
    computed = []
    fill = lambda clips: computed.append(len(clips)) or clip_statistics(clips)  # noqa: E731
    assert fill_cache(resumed, shard_dir, CLIP, fill, progress=False) == [0, 1]
    assert sum(computed) == 10  # chunk 2's two rows were not recomputed
    assert resumed.is_complete
    assert_matches_reference(open_cache(cache.path, identity_for(shard_dir), LAYOUT), reference)


def test_half_written_chunk_is_detected_through_the_mask(tmp_path, shard_dir, reference, monkeypatch):
    cache = new_cache(tmp_path, shard_dir)
    original = zarr.Array.__setitem__

    def killed_before_status(array, selection, value):
        if array.path == STATUS and selection == slice(5, 10):
            raise KeyboardInterrupt("killed after chunk 1's data, before its status")
        return original(array, selection, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", killed_before_status)
    with pytest.raises(KeyboardInterrupt):
        fill_cache(cache, shard_dir, CLIP, clip_statistics, progress=False)
    monkeypatch.undo()
    after_kill = open_cache(cache.path, identity_for(shard_dir), LAYOUT, mode="r+")
    assert after_kill.missing_chunks() == [1, 2]
    written = after_kill.arrays["teacher_logits"][5:10]
    assert np.abs(written).sum() > 0  # the data of chunk 1 is on disk, only its mask is not
    with pytest.raises(IncompleteCacheError):
        after_kill.read_rows(after_kill.keys[5:6])
    assert fill_cache(after_kill, shard_dir, CLIP, clip_statistics, progress=False) == [1, 2]
    assert_matches_reference(after_kill, reference)


def _fill_in_process(path, shard_dir, identity, rank, world_size, delay, queue):
    torch.set_num_threads(1)
    cache = open_cache(path, identity, LAYOUT, mode="r+")
    written = fill_cache(cache, shard_dir, CLIP, lambda clips: clip_statistics(clips, delay),
                         rank=rank, world_size=world_size, batch_size=5, progress=False)
    if queue is not None:
        queue.put((rank, written))


def test_real_kill_mid_fill_then_resume(tmp_path, shard_dir, reference):
    cache = new_cache(tmp_path, shard_dir)
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_fill_in_process,
                              args=(cache.path, shard_dir, identity_for(shard_dir), 0, 1, 1.5, None))
    process.start()
    deadline = time.time() + 60
    while time.time() < deadline and not (zarr.open_group(str(cache.path), mode="r")[STATUS][:] == WRITTEN).any():
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    after_kill = open_cache(cache.path, identity_for(shard_dir), LAYOUT, mode="r+")
    done = [c for c in range(after_kill.num_chunks) if c not in after_kill.missing_chunks()]
    assert done and after_kill.missing_chunks(), "the kill should land between chunks 1 and 3"
    assert_matches_reference(after_kill, reference, [after_kill.keys[r] for c in done for r in after_kill.chunk_range(c)])
    missing = after_kill.missing_chunks()
    assert fill_cache(after_kill, shard_dir, CLIP, clip_statistics, progress=False) == missing
    assert after_kill.is_complete
    assert_matches_reference(after_kill, reference)


def test_two_processes_fill_disjoint_chunks(tmp_path, shard_dir, reference):
    cache = new_cache(tmp_path, shard_dir)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_fill_in_process,
                                 args=(cache.path, shard_dir, identity_for(shard_dir), rank, 2, 0.0, queue))
                 for rank in range(2)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert results == {0: [0, 2], 1: [1]}  # rank r writes chunks r, r + W, ...: no overlap, nothing left out
    filled = open_cache(cache.path, identity_for(shard_dir), LAYOUT)
    assert filled.is_complete
    assert_matches_reference(filled, reference)


def test_reads_are_one_call_per_array_not_per_row(tmp_path, shard_dir, monkeypatch):
    cache = new_cache(tmp_path, shard_dir)
    fill_cache(cache, shard_dir, CLIP, clip_statistics, progress=False)
    reader = open_cache(cache.path, identity_for(shard_dir), LAYOUT)
    calls = {"array": 0, "store": 0}
    selection, store_get = zarr.Array.get_orthogonal_selection, zarr.storage.LocalStore.get

    def counted_selection(*args, **kwargs):
        calls["array"] += 1
        return selection(*args, **kwargs)

    async def counted_get(*args, **kwargs):
        calls["store"] += 1
        return await store_get(*args, **kwargs)

    for name in ("__getitem__", "get_basic_selection", "get_coordinate_selection"):
        monkeypatch.setattr(zarr.Array, name, lambda *a, **k: pytest.fail(f"per-row style read through {name}"))
    monkeypatch.setattr(zarr.Array, "get_orthogonal_selection", counted_selection)
    monkeypatch.setattr(zarr.storage.LocalStore, "get", counted_get)
    rows = reader.read_rows(reader.keys * 4)  # 48 rows over 3 chunks, 4 arrays
    assert rows["teacher_logits"].shape == (48, 4)
    arrays = len(reader.array_names)
    assert calls["array"] == arrays
    assert calls["store"] <= arrays * reader.num_chunks < 48


def test_read_only_cache_refuses_writes_with_the_path(tmp_path, shard_dir, monkeypatch):
    cache = new_cache(tmp_path, shard_dir)
    read_only = open_cache(cache.path, identity_for(shard_dir), LAYOUT, mode="r")
    with pytest.raises(FeatureCacheError, match="read-only") as error:
        fill_cache(read_only, shard_dir, CLIP, clip_statistics, progress=False)
    assert str(cache.path) in str(error.value)

    async def no_permission(self, key, value):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.root / key))

    monkeypatch.setattr(zarr.storage.LocalStore, "set", no_permission)  # a directory we may not write
    with pytest.raises(FeatureCacheError, match="read-only or no permission") as error:
        prepare_cache(tmp_path / "elsewhere" / "c.zarr", shard_dir=shard_dir, split=SPLIT, dataset=DATASET,
                      identity=identity_for(shard_dir), layout=LAYOUT)
    assert "elsewhere" in str(error.value)


def test_full_disk_names_the_path_and_keeps_finished_chunks(tmp_path, shard_dir, reference, monkeypatch):
    cache = new_cache(tmp_path, shard_dir)
    original = zarr.storage.LocalStore.set

    async def disk_fills_up(self, key, value):
        if key.startswith("features/") and key.endswith("c/1/0"):  # chunk 1's first data file
            raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", disk_fills_up)
    with pytest.raises(FeatureCacheError, match="no space left on device") as error:
        fill_cache(cache, shard_dir, CLIP, clip_statistics, progress=False)
    assert str(cache.path) in str(error.value) and "chunk 1" in str(error.value)
    monkeypatch.undo()
    resumed = open_cache(cache.path, identity_for(shard_dir), LAYOUT, mode="r+")
    assert resumed.missing_chunks() == [1, 2]
    assert fill_cache(resumed, shard_dir, CLIP, clip_statistics, progress=False) == [1, 2]
    assert_matches_reference(resumed, reference)


def test_cache_killed_while_being_created_is_recreated(tmp_path, shard_dir):
    path = tmp_path / "cache" / DATASET / f"{SPLIT}.zarr"
    zarr.open_group(str(path), mode="w").create_array("keys", shape=(3,), dtype=str)  # no identity written yet
    with pytest.raises(StaleCacheError, match="format_version"):
        open_cache(path, identity_for(shard_dir), LAYOUT)
    cache = new_cache(tmp_path, shard_dir)
    assert cache.rows == 12 and cache.missing_chunks() == [0, 1, 2]
    assert {k: v for k, v in cache.read_rows([]).items()}["teacher_logits"].shape == (0, 4)
