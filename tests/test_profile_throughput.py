"""tools/profile_throughput.py on tiny real inputs (synthetic UCF-like AVIs, shards written by
tools/make_shards.py): every CPU section runs in one invocation, and the JSON, the PNG and the table
report what a user reads from them (contenders side by side, ratios to the peer from the same run).
"""
from __future__ import annotations

import contextlib
import io
import json

import importlib.util

import pytest

from tools import profile_throughput

VIDEOS = 12
ARGS = ["--videos", str(VIDEOS), "--what", "loaders,peer,dali_cpu,jedi_step,sweep,ceiling,reads,scale", "--workers", "1",
        "--repeats", "1", "--clip-frames", "4", "--stride", "2", "--crop", "32", "--batch-size", "2",
        "--timed-clips", "4", "--warmup-batches", "1", "--short-side", "40", "--gop", "8", "--sweep-gops", "4",
        "--sweep-short-sides", "", "--jedi-backbone", "x3d_tiny", "--jedi-batch-size", "1", "--jedi-steps", "1",
        "--jedi-warmup-steps", "0", "--shard-workers", "2", "--read-workers", "1", "--read-ranks", "2",
        "--scale-samples", "24"]


@pytest.fixture(scope="module")
def profile(tiny_raw, tmp_path_factory):
    work = tmp_path_factory.mktemp("throughput")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = profile_throughput.main(["--work-dir", str(work), "--raw-root", str(tiny_raw), *ARGS])
    return result, stdout.getvalue(), work


def rows_of(result, section):
    return [row for row in result["rows"] if row["section"] == section]


def test_every_contender_is_measured_on_the_same_videos(profile):
    result, _, work = profile
    loaders = {(row["contender"], row["data"]) for row in rows_of(result, "loader")}
    expected = {("torch loader", "H.264 shards"), ("PyTorchVideo", "raw .avi files"),
                ("PyTorchVideo", "re-encoded .mp4 files"), ("decode only", "H.264 shard clips in memory")}
    if importlib.util.find_spec("nvidia.dali") is not None:
        expected |= {("DALI cpu", "VP9 shards"), ("torch loader", "VP9 shards")}
    else:
        assert any(note.startswith("DALI skipped") for note in result["notes"])
    assert loaders == expected
    for row in rows_of(result, "loader"):
        assert row["workers"] == 1 and row["clips_per_s"] > 0
        assert row["frames_per_s"] == pytest.approx(row["clips_per_s"] * 4, rel=0.01)
    assert result["inputs"]["videos"] == VIDEOS
    manifest = json.loads((work / "shards" / "h264_g8_s40_f25" / "manifest.json").read_text())
    assert manifest["splits"]["labelled"]["samples"] == VIDEOS  # the peer's raw list is the shards' sources
    assert len(list((work / "reencoded" / "h264_g8_s40_f25").glob("*.mp4"))) == VIDEOS


def test_ratios_come_from_the_same_run(profile):
    result, _, _ = profile
    loaders = rows_of(result, "loader")
    peer_raw = next(r for r in loaders if r["contender"] == "PyTorchVideo" and r["data"].startswith("raw"))
    ours = next(r for r in loaders if r["contender"] == "torch loader" and r["data"] == "H.264 shards")
    assert ours["ratio_vs_peer_raw"] == pytest.approx(ours["clips_per_s"] / peer_raw["clips_per_s"], abs=0.01)
    assert peer_raw["ratio_vs_peer_raw"] == 1.0


def test_decode_ceiling_and_the_loaders_share_of_it(profile):
    result, stdout, _ = profile
    loaders = rows_of(result, "loader")
    ceiling = next(r for r in loaders if r["contender"] == "decode only")
    ours = next(r for r in loaders if r["contender"] == "torch loader" and r["data"] == "H.264 shards")
    assert ours["share_of_ceiling"] == pytest.approx(ours["clips_per_s"] / ceiling["clips_per_s"], abs=0.001)
    assert "of the decode-only ceiling" in stdout


def test_bytes_read_per_epoch_by_index_and_by_scan(profile):
    result, stdout, _ = profile
    reads = rows_of(result, "reads")
    # one worker, then two ranks: 12 videos in one shard, so the ranks split it by sample index
    assert {(r["read_path"], r["world_size"]) for r in reads} == {("index", 1), ("scan", 1), ("index", 2), ("scan", 2)}
    for row in reads:
        assert row["clips"] == VIDEOS // row["world_size"] and row["rank_share_bytes"] > 0
        if row["read_path"] == "index":
            assert row["bytes_per_share"] <= 1.1
        elif row["world_size"] == 2:
            assert row["split"] == "by sample index" and row["bytes_per_share"] > 1.8  # every rank reads every shard
    scale = rows_of(result, "scale")
    assert {r["read_path"] for r in scale} == {"index", "scan"} and all(r["samples"] == 24 for r in scale)
    assert "bytes read per epoch per rank" in stdout


def test_jedi_step_and_sweep_report_what_they_measure(profile):
    result, _, _ = profile
    (jedi,) = rows_of(result, "jedi_step")
    assert jedi["backbone"] == "x3d_tiny" and jedi["students"] == 4 and jedi["clips_per_step"] == 8
    assert 0 <= jedi["data_wait_pct"] <= 100 and jedi["step_s"] > 0
    assert jedi["clips_per_s"] == pytest.approx(8 / jedi["step_s"], rel=0.02)
    sweep = rows_of(result, "sweep")
    assert sorted(row["gop"] for row in sweep) == [4, 8]
    assert all(row["bytes_per_video"] > 0 and row["clips_per_s"] > 0 for row in sweep)
    assert next(row for row in sweep if row["gop"] == 8)["ratio_vs_default_point"] == 1.0
    assert not any("DALI gpu" in note for note in result["notes"])  # not asked for: no note


def test_outputs_json_png_and_table(profile):
    result, stdout, work = profile
    written = json.loads((work / "throughput.json").read_text())
    assert written["rows"] == result["rows"] and written["machine"]["cpus"] >= 1 and written["machine"]["date"]
    assert (work / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "clips/s" in stdout and "ratio" in stdout
    for name in ("torch loader", "PyTorchVideo", "jedi_step", "sweep"):
        assert name in stdout


def test_unknown_section_is_refused_with_the_allowed_ones(capsys):
    with pytest.raises(SystemExit):
        profile_throughput.parse_args(["--what", "loaders,nvdec"])
    assert "allowed values are loaders,peer,dali_cpu,dali_gpu,jedi_step,sweep,sharding" in capsys.readouterr().err
