"""The DALI data path on DALI's CPU backend (device="cpu"), over tiny real VP9 shards with index files.

The PyPI DALI CPU video decoder reads VP9 but not H.264, so these shards are VP9 `.webm` members;
the GPU (mixed, NVDEC) path is checked by tools/gpu_check_dali.py on a machine with a GPU.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

pytest.importorskip("nvidia.dali")

from pipeline.contract import KEY, LABEL, SKIPPED_KEYS, STRONG_VIDEO, VIDEO, AugmentSpec, ClipSpec
from pipeline.cpu_loader import eval_loader
from pipeline.dali_index import write_index
from pipeline.dali_loader import dali_eval_loader, dali_train_loader
from pipeline.video_encode import EncodeSettings, encode_video_bytes
from tests.shard_fixture import FixtureSpec, sample_key, synthetic_frames, write_shard_set

WIDTH, HEIGHT, CLASSES = 48, 40, 3
CLIP = ClipSpec(frames=4, stride=2, crop_size=32, test_clips=2, test_crops=3)
SPLITS = {"labelled": 10, "val": 7}
FRAMES = (20, 12, 5)  # span = 7: random starts in 20 and 12, the 5-frame video is clamped


def write_vp9_shards(shard_dir: Path, *, samples_per_shard: int = 4, corrupt: dict | None = None) -> Path:
    """A VP9 shard set as tools/make_shards.py --codec vp9 writes it: tars, .idx files, manifest.json.
    `corrupt` maps (split, index) -> bytes that replace that sample's video."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    classes = [f"class_{c}" for c in range(CLASSES)]
    settings = EncodeSettings(codec="vp9", fps=12.0, gop=4)
    rng = np.random.default_rng(0)
    splits = {}
    for split in ("labelled", "unlabelled", "val", "test"):
        count = SPLITS.get(split, 0)
        shards, per_class = [], [0] * CLASSES
        for shard_index, first in enumerate(range(0, count, samples_per_shard)):
            name = f"{split}-{shard_index:06d}"
            with wds.TarWriter(str(shard_dir / f"{name}.tar")) as tar:
                members = range(first, min(count, first + samples_per_shard))
                for index in members:
                    label, frames = index % CLASSES, FRAMES[index % len(FRAMES)]
                    source = f"{classes[label]}/{split}_{index:03d}.webm"
                    video = encode_video_bytes(synthetic_frames(frames, HEIGHT, WIDTH, label, rng), settings)
                    video = (corrupt or {}).get((split, index), video)
                    meta = {"label": label, "class_name": classes[label], "dataset": "vp9fix", "source": source,
                            "frames": frames, "fps": 12.0, "width": WIDTH, "height": HEIGHT, "split": split}
                    tar.write({"__key__": sample_key("vp9fix", source), "webm": video,
                               "json": json.dumps(meta).encode()})
                    per_class[label] += 1
            write_index(shard_dir / f"{name}.tar", shard_dir / f"{name}.idx")
            data = (shard_dir / f"{name}.tar").read_bytes()
            shards.append({"file": f"{name}.tar", "samples": len(members), "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(), "index": f"{name}.idx"})
        splits[split] = {"samples": count, "per_class": per_class, "shards": shards}
    manifest = {"format_version": 1, "dataset": "vp9fix", "layout": "test", "source_root": "", "classes": classes,
                "hflip_changes_label": False, "time_reversal_changes_label": False, "splits": splits,
                "encode": {"codec": "vp9", "container": "webm", "short_side": HEIGHT, "fps": 12.0, "gop": 4,
                           "bframes": 0, "pix_fmt": "yuv420p"},
                "seed": 0, "label_fraction": 1.0, "val_fraction": 0.0, "skipped": []}
    (shard_dir / "manifest.json").write_text(json.dumps(manifest))
    return shard_dir


def split_keys(shard_dir: Path, split: str) -> dict[str, int]:
    """key -> label of every sample of a split, read straight from the tars."""
    keys = {}
    for tar in sorted(shard_dir.glob(f"{split}-*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            keys[sample["__key__"]] = json.loads(sample["json"])["label"]
    return keys


@pytest.fixture(scope="module")
def vp9_shards(tmp_path_factory) -> Path:
    return write_vp9_shards(tmp_path_factory.mktemp("dali") / "vp9fix")


def test_train_batches_follow_the_contract(vp9_shards):
    loader = dali_train_loader(vp9_shards, "labelled", CLIP, AugmentSpec(time_reversal=True), batch_size=4,
                               steps_per_epoch=3, device="cpu", strong_view=True, seed=1)
    truth = split_keys(vp9_shards, "labelled")
    for _epoch in range(2):
        batches = list(loader)
        assert len(batches) == 3  # exactly steps_per_epoch, epoch after epoch
        for batch in batches:
            for name in (VIDEO, STRONG_VIDEO):
                assert batch[name].dtype == torch.uint8 and batch[name].shape == (4, 3, 4, 32, 32)
            assert batch[LABEL].dtype == torch.int64
            assert [truth[k] for k in batch[KEY]] == batch[LABEL].tolist()
            assert batch[SKIPPED_KEYS] == []
            # the strong view is a different augmentation of the same clip, and not a blank frame
            assert not torch.equal(batch[VIDEO], batch[STRONG_VIDEO])
            assert batch[VIDEO].float().std() > 10
    assert loader.skipped_keys == []


def test_eval_ranks_are_disjoint_and_cover_the_split(vp9_shards):
    truth = split_keys(vp9_shards, "val")
    seen = []
    for rank in range(2):
        loader = dali_eval_loader(vp9_shards, "val", CLIP, batch_size=2, rank=rank, world_size=2,
                                  multi_view=True, device="cpu")
        passes = [[k for batch in loader for k in batch[KEY]] for _ in range(2)]
        assert passes[0] == passes[1]  # every pass starts again at the rank's first sample
        assert len(passes[0]) == len(set(passes[0])) == loader.num_samples
        batch = next(iter(loader))
        assert batch[VIDEO].shape == (2, 6, 3, 4, 32, 32) and batch[VIDEO].dtype == torch.uint8
        assert [truth[k] for k in batch[KEY]] == batch[LABEL].tolist()
        seen.append(set(passes[0]))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(truth)


def test_dali_centre_clip_matches_the_cpu_loader(vp9_shards):
    # crop_size = frame height: the centre crop needs no resampling, so only the decoders differ
    clip = ClipSpec(frames=4, stride=2, crop_size=HEIGHT)
    dali = {k: v for batch in dali_eval_loader(vp9_shards, "val", clip, batch_size=3, device="cpu")
            for k, v in zip(batch[KEY], batch[VIDEO])}
    cpu = {k: v for batch in eval_loader(vp9_shards, "val", clip, batch_size=3, num_workers=0, backend="pyav")
           for k, v in zip(batch[KEY], batch[VIDEO])}
    assert dali.keys() == cpu.keys() and len(dali) == SPLITS["val"]
    for key in dali:
        assert dali[key].shape == cpu[key].shape == (1, 3, 4, HEIGHT, HEIGHT)
        # YUV->RGB conversion (chroma upsampling) differs between DALI and FFmpeg's swscale: on this
        # fixture's 4-pixel noise texture the frames differ by ~6 levels on average (measured 5.7-6.8)
        diff = (dali[key].float() - cpu[key].float()).abs().mean().item()
        assert diff < 9.0, f"{key}: mean abs diff {diff:.2f} between DALI and PyAV frames"
        # a frame or pixel off would show: those differ by ~22 (next sampled frame) and ~12 (one pixel)
        next_frame = (dali[key][:, :, 1:].float() - cpu[key][:, :, :-1].float()).abs().mean().item()
        next_pixel = (dali[key][..., 1:].float() - cpu[key][..., :-1].float()).abs().mean().item()
        assert next_frame > 2.5 * diff and next_pixel > 1.5 * diff


def test_h264_shards_on_the_cpu_backend_name_the_fix(tmp_path):
    shard_dir = write_shard_set(tmp_path, FixtureSpec(splits={"labelled": 2, "unlabelled": 0, "val": 0, "test": 0}))
    with pytest.raises(ValueError, match=r"h264.*Use a GPU.*make_shards.py --codec vp9"):
        dali_train_loader(shard_dir, "labelled", CLIP, AugmentSpec(), batch_size=2, steps_per_epoch=1, device="cpu")


def test_missing_index_file_is_named_or_rebuilt(tmp_path):
    shard_dir = write_vp9_shards(tmp_path / "vp9fix")
    index = shard_dir / "val-000001.idx"
    expected = index.read_text()
    index.unlink()
    with pytest.raises(FileNotFoundError, match="val-000001.idx"):
        dali_eval_loader(shard_dir, "val", CLIP, batch_size=4, device="cpu")
    loader = dali_eval_loader(shard_dir, "val", CLIP, batch_size=4, device="cpu", build_missing_index=True)
    assert index.read_text() == expected
    assert sum(len(batch[KEY]) for batch in loader) == SPLITS["val"]


def test_checkpoint_restore_resumes_the_same_batches(vp9_shards):
    def make():
        return dali_train_loader(vp9_shards, "labelled", CLIP, AugmentSpec(), batch_size=3, steps_per_epoch=2,
                                 device="cpu", seed=5)

    first = make()
    list(first)  # one epoch
    state = json.loads(json.dumps(first.state_dict()))  # a state survives a JSON round trip
    expected = list(first)
    resumed = make()
    resumed.load_state_dict(state)
    again = list(resumed)
    for want, got in zip(expected, again):
        assert want[KEY] == got[KEY]
        assert torch.equal(want[VIDEO], got[VIDEO])
    fresh = list(make())  # and the resumed stream is not simply the first epoch again
    assert [b[KEY] for b in fresh] != [b[KEY] for b in again]


def test_corrupt_samples_are_skipped_and_counted(tmp_path):
    corrupt = {("labelled", 1): b"", ("labelled", 4): b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8,
               ("val", 2): b"not a video"}
    shard_dir = write_vp9_shards(tmp_path / "vp9fix", corrupt=corrupt)
    truth = split_keys(shard_dir, "labelled")
    bad_keys = {k for k in truth if k in {sample_key("vp9fix", f"class_{i % CLASSES}/labelled_{i:03d}.webm")
                                          for i in (1, 4)}}
    loader = dali_train_loader(shard_dir, "labelled", CLIP, AugmentSpec(), batch_size=5, steps_per_epoch=4,
                               device="cpu", strong_view=True)
    batches = list(loader)
    assert all(batch[VIDEO].shape[0] == 5 for batch in batches)  # batch size kept
    assert not bad_keys & {k for batch in batches for k in batch[KEY]}
    assert set(loader.skipped_keys) == bad_keys
    assert {k for batch in batches for k in batch[SKIPPED_KEYS]} == bad_keys
    evaluation = list(dali_eval_loader(shard_dir, "val", CLIP, batch_size=4, device="cpu"))
    assert sum(len(batch[KEY]) for batch in evaluation) == SPLITS["val"] - 1  # evaluation drops it
    assert [k for batch in evaluation for k in batch[SKIPPED_KEYS]] == \
        [sample_key("vp9fix", "class_2/val_002.webm")]
