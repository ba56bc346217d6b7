"""The torch loader's compressed-domain keys (pipeline/contract.py): dtypes, shapes, both read paths,
segment choice, normalisation; and the refusals (shards without the members, the DALI loader)."""
from __future__ import annotations

import math

import pytest
import torch

import tools.make_shards as make_shards
from pipeline.contract import (IFRAME, KEY, LABEL, MV, RESIDUAL, VIDEO, AugmentSpec, ClipSpec,
                               to_modality_input)
from pipeline.cpu_loader import eval_loader, train_loader
from pipeline.manifest import load_manifest
from tests.test_make_shards import make_ucf, shard_args

MODALITIES = (MV, RESIDUAL, IFRAME)
CLIP = ClipSpec(frames=4, stride=2, crop_size=16)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    make_ucf(root, groups=2, clips=2)  # 12 videos of 16..20 source frames at 15 fps, 64 x 48
    out = tmp_path_factory.mktemp("shards") / "ucf101"
    assert make_shards.main(shard_args(root, out, "--modalities", "mv,residual,iframe", "--segments", "3",
                                       "--gop", "4", "--workers", "1")) == 0
    return out


def check_modalities(batch: dict, size: int) -> None:
    side = 32  # videos of 42 x 32 (short side 32 of 64 x 48): the centred 32 x 32 square
    assert batch[MV].dtype == torch.float16 and batch[MV].shape == (size, 3, 2, side // 4, side // 4)
    assert batch[RESIDUAL].dtype == torch.float16 and batch[RESIDUAL].shape == (size, 3, 3, side, side)
    assert batch[IFRAME].dtype == torch.uint8 and batch[IFRAME].shape == (size, 3, 3, side, side)
    assert batch[MV].abs().sum() > 0 and batch[RESIDUAL].abs().sum() > 0  # the square moves


def test_eval_loader_returns_the_modality_keys_without_video(shards):
    batches = list(eval_loader(shards, "test", CLIP, batch_size=4, num_workers=0, modalities=MODALITIES, video=False))
    assert sum(len(batch[KEY]) for batch in batches) == 6
    for batch in batches:
        assert VIDEO not in batch and batch[LABEL].dtype == torch.int64
        check_modalities(batch, len(batch[KEY]))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_loader_adds_them_beside_the_video_and_is_deterministic(shards, num_workers):
    def epoch():
        return list(train_loader(shards, "labelled", CLIP, AugmentSpec(), batch_size=2, steps_per_epoch=2,
                                 num_workers=num_workers, seed=3, modalities=MODALITIES))
    first, second = epoch(), epoch()
    for batch, again in zip(first, second):
        assert batch[VIDEO].shape == (2, 3, 4, 16, 16)
        check_modalities(batch, 2)
        assert all(torch.equal(batch[name], again[name]) for name in MODALITIES)


def test_the_scan_path_returns_the_same_arrays_as_the_index_path(shards, tmp_path):
    scan = tmp_path / "scan"
    scan.mkdir()
    for path in shards.iterdir():
        if path.suffix != ".idx":
            (scan / path.name).write_bytes(path.read_bytes())
    by_index = list(eval_loader(shards, "test", CLIP, batch_size=8, num_workers=0, modalities=MODALITIES, video=False))
    by_scan = list(eval_loader(scan, "test", CLIP, batch_size=8, num_workers=0, modalities=MODALITIES, video=False))
    assert [b[KEY] for b in by_index] == [b[KEY] for b in by_scan]
    assert all(torch.equal(a[name], b[name]) for a, b in zip(by_index, by_scan) for name in MODALITIES)


def test_videos_of_different_aspect_ratios_batch_as_their_centred_square():
    from pipeline.compressed import MEMBER_EXT, centre_square, npz_bytes, segment_arrays

    assert centre_square(64, 86, 4) == (0, 8, 64) and centre_square(86, 64, 4) == (8, 0, 64)
    shapes = set()
    for height, width in ((64, 86), (64, 96), (72, 64)):
        cells = (math.ceil(height / 4), math.ceil(width / 4))
        mv = torch.arange(cells[0] * cells[1], dtype=torch.float32).view(1, 1, *cells).expand(16, 2, -1, -1)
        members = {MEMBER_EXT["mv"]: npz_bytes({"mv": mv.numpy().astype("float16"),
                                                "frame_types": torch.tensor([1, 2, 2, 2] * 4).numpy().astype("uint8")}),
                   MEMBER_EXT["iframe"]: npz_bytes({"iframe": torch.zeros(4, height, width, 3, dtype=torch.uint8).numpy(),
                                                    "index": torch.tensor([0, 4, 8, 12]).numpy()})}
        arrays = segment_arrays(members, ("mv", "iframe"), 4, (height, width), 4)
        shapes.add((arrays["mv"].shape, arrays["iframe"].shape))
        top, left, _ = centre_square(height, width, 4)
        assert arrays["mv"][0, 0, 0, 0] == (top // 4) * cells[1] + left // 4  # the cell at the crop's corner
    assert shapes == {((4, 2, 16, 16), (4, 3, 64, 64))}


def test_normalisation_happens_on_the_device_side():
    iframe = torch.full((1, 3, 3, 4, 4), 255, dtype=torch.uint8)
    assert to_modality_input(iframe, IFRAME).dtype == torch.float32
    assert torch.allclose(to_modality_input(iframe, IFRAME), torch.full((1, 3, 3, 4, 4), (1 - 0.45) / 0.225))
    assert torch.equal(to_modality_input(torch.full((2,), 8.0, dtype=torch.float16), MV), torch.full((2,), 2.0))
    with pytest.raises(TypeError):
        to_modality_input(iframe.float(), IFRAME)


def test_shards_without_the_members_are_refused_naming_what_is_missing(tmp_path):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=1)
    plain = tmp_path / "plain"
    assert make_shards.main(shard_args(root, plain, "--workers", "1")) == 0
    with pytest.raises(ValueError, match=r"no \['mv'\] members.*--modalities"):
        eval_loader(plain, "test", CLIP, batch_size=2, modalities=(MV,))
    assert len(list(eval_loader(plain, "test", CLIP, batch_size=2, num_workers=0))) >= 1  # plain use unchanged
    assert load_manifest(plain).compressed is None and '"compressed"' not in (plain / "manifest.json").read_text()


def test_the_manifest_records_the_settings(shards):
    manifest = load_manifest(shards)
    assert (manifest.compressed.modalities, manifest.compressed.segments, manifest.compressed.mv_block) == \
        (["mv", "residual", "iframe"], 3, 4)
    assert (manifest.encode.codec, manifest.encode.gop) == ("h264", 4)


def test_the_dali_loader_refuses_modalities_naming_the_keys(shards):
    from pipeline.dali_loader import dali_eval_loader

    with pytest.raises(ValueError, match=r"\['mv', 'iframe'\].*torch loader"):
        dali_eval_loader(shards, "test", CLIP, batch_size=2, modalities=(MV, IFRAME))
