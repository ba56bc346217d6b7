"""Compressed-domain extraction (pipeline/compressed.py) and `make_shards --modalities`: motion vectors
of a known translation, residual size, all-intra videos, codecs without motion vectors."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import tools.make_shards as make_shards
from pipeline.compressed import (MODALITIES, AllIntraWarning, CompressedSettings, NoMotionVectorsError, extract,
                                 load_npz)
from pipeline.manifest import load_manifest
from pipeline.video_decode import decode_frames
from pipeline.video_encode import EncodeSettings, encode_video_bytes
from tests.test_make_shards import make_ucf, read_shard, shard_args

BLOCK = 4
SETTINGS = CompressedSettings(MODALITIES, segments=4, mv_block=BLOCK)


def translation(frames: int, dx: int, dy: int, height: int = 64, width: int = 96) -> np.ndarray:
    """A blocky random texture whose content moves by (dx, dy) pixels per frame (right, down > 0)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8).repeat(6, 0).repeat(6, 1)
    x0, y0 = 100, 60
    return np.stack([np.ascontiguousarray(texture[y0 - dy * t:y0 - dy * t + height, x0 - dx * t:x0 - dx * t + width])
                     for t in range(frames)])


@pytest.mark.parametrize("dx, dy", [(3, 0), (0, -2), (-4, 2)])
def test_motion_vectors_of_a_translation_match_its_displacement_within_one_block(dx, dy):
    video = encode_video_bytes(translation(12, dx, dy), EncodeSettings(codec="h264", fps=8, gop=6))
    arrays = extract(video, SETTINGS, "translation.mp4")["mv"]
    p_frames = arrays["frame_types"] == 2
    assert p_frames.sum() == 10  # frames 0 and 6 are keyframes
    interior = arrays["mv"][p_frames][:, :, 2:-2, 2:-2].astype(np.float32)  # border blocks see new content
    # FFmpeg's sign: a block's source lies at +mv in the reference, so content moving by d gives -d
    measured = np.median(interior[:, 0]), np.median(interior[:, 1])
    assert abs(measured[0] - (-dx)) <= BLOCK and abs(measured[1] - (-dy)) <= BLOCK, measured
    assert np.sign(np.round(measured[0])) == -np.sign(dx) and np.sign(np.round(measured[1])) == -np.sign(dy)


def test_residual_of_a_pure_translation_is_small_next_to_the_frame_difference():
    # an even shift: an odd one moves the 4:2:0 chroma by half a sample, which the codec's own
    # reconstruction blurs (residual ~40 % of the difference at 3 px; ~6 % here)
    video = encode_video_bytes(translation(12, -4, 2), EncodeSettings(codec="h264", fps=8, gop=12))
    arrays = extract(video, SETTINGS, "translation.mp4")["residual"]
    decoded = decode_frames(video, list(range(12)), backend="pyav").numpy().astype(np.int16)
    p_frames = np.flatnonzero(arrays["frame_types"] == 2)
    residual = np.abs(arrays["residual"][p_frames]).mean()
    difference = np.abs(decoded[p_frames] - decoded[p_frames - 1]).mean()
    assert residual < 0.2 * difference, (residual, difference)
    assert np.abs(arrays["residual"][arrays["frame_types"] == 1]).max() == 0  # I-frames carry none


def test_iframes_sit_on_the_segment_grid():
    video = encode_video_bytes(translation(16, 2, 0), EncodeSettings(codec="h264", fps=8, gop=4))
    arrays = extract(video, SETTINGS, "v.mp4")["iframe"]
    assert arrays["index"].tolist() == [0, 4, 8, 12]
    assert arrays["iframe"].shape == (4, 64, 96, 3) and arrays["iframe"].dtype == np.uint8


def test_an_all_intra_video_gives_zero_vectors_and_one_warning_naming_it():
    video = encode_video_bytes(translation(8, 3, 0), EncodeSettings(codec="h264", fps=8, gop=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays = extract(video, SETTINGS, "UCF-101/Walk/all_intra.avi")
    intra = [item for item in caught if issubclass(item.category, AllIntraWarning)]
    assert len(intra) == 1 and "UCF-101/Walk/all_intra.avi" in str(intra[0].message)
    assert not np.any(arrays["mv"]["mv"]) and not np.any(arrays["residual"]["residual"])


def test_make_shards_with_an_all_intra_gop_warns_once_per_video_and_writes_zero_vectors(tmp_path, capsys):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=1)
    out = tmp_path / "shards"
    assert make_shards.main(shard_args(root, out, "--gop", "1", "--modalities", "mv", "--workers", "1")) == 0
    stdout = capsys.readouterr()
    manifest = load_manifest(out)
    warned = [line for line in (stdout.out + stdout.err).splitlines() if line.startswith("warning:")]
    sources = [json.loads(sample["json"])["source"] for path in out.glob("*.tar") for sample in read_shard(path).values()]
    assert len(sources) == 6 and sorted(len([w for w in warned if s in w]) for s in sources) == [1] * 6
    assert manifest.compressed.modalities == ["mv"] and manifest.encode.gop == 1
    for path in out.glob("*.tar"):
        for sample in read_shard(path).values():
            assert not np.any(load_npz(sample["mv.npz"])["mv"])


def test_a_video_whose_codec_exports_no_vectors_is_recorded_as_skipped_or_stops_the_job(tmp_path, monkeypatch, capsys):
    root = tmp_path / "ucf"
    make_ucf(root, groups=2, clips=1)
    odd = "v_Walk_g02_c01.avi"
    real_transcode = make_shards.transcode

    def transcode(path, settings):  # this one source arrives as VP9, whose decoder exports no vectors
        video, frames, width, height = real_transcode(path, settings)
        if path.name == odd:
            video = encode_video_bytes(np.stack(decode_frames(video, list(range(frames)), backend="pyav").numpy()),
                                       EncodeSettings(codec="vp9", fps=settings.fps, gop=settings.gop))
        return video, frames, width, height

    monkeypatch.setattr(make_shards, "transcode", transcode)
    out = tmp_path / "skip"
    assert make_shards.main(shard_args(root, out, "--modalities", "mv,residual", "--workers", "1")) == 0
    skipped = {item.source: item.reason for item in load_manifest(out).skipped}
    assert list(skipped) == [f"UCF-101/Walk/{odd}"]
    assert "exports no motion vectors" in skipped[f"UCF-101/Walk/{odd}"] and "vp9" in skipped[f"UCF-101/Walk/{odd}"]

    capsys.readouterr()
    assert make_shards.main(shard_args(root, tmp_path / "error", "--modalities", "mv", "--on-no-mvs", "error",
                                       "--workers", "1")) == 1
    error = capsys.readouterr().err
    assert odd in error and "vp9" in error and "--on-no-mvs" in error
    assert not (tmp_path / "error" / "manifest.json").exists()


def test_extract_raises_for_a_vp9_video_and_modalities_are_checked():
    video = encode_video_bytes(translation(8, 3, 0), EncodeSettings(codec="vp9", fps=8, gop=8))
    with pytest.raises(NoMotionVectorsError, match="clip.webm.*vp9"):
        extract(video, SETTINGS, "clip.webm")
    with pytest.raises(ValueError, match="allowed values"):
        CompressedSettings(("mv", "flow"))


def test_shards_without_modalities_keep_their_plan_and_manifest_shape(tmp_path):
    plain = make_shards.ShardSettings(dataset="d")
    assert "modalities" not in plain.plan_fields() and "segments" not in plain.plan_fields()
    assert make_shards.ShardSettings(dataset="d", modalities=("mv",)).plan_fields()["modalities"] == ("mv",)
