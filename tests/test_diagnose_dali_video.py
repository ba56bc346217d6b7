"""tools/diagnose_dali_video.py on DALI's CPU backend (VP9): every row kind is measured on the same
videos, the decoder's outputs have the asked-for shapes, and the fixed-cost fit sees that longer videos
cost more to decode whole; two processes decode at once. The GPU rows (mixed decoder, legacy file reader, NVML) need a GPU."""
from __future__ import annotations

import contextlib
import io
import json
import time

import numpy as np
import pytest

pytest.importorskip("nvidia.dali")

from tools import diagnose_dali_video  # noqa: E402


def test_cpu_rows_fit_and_json(tmp_path):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = diagnose_dali_video.main([
            "--device", "cpu", "--lengths", "8,48", "--video-frames", "24", "--videos", "4", "--short-side", "32",
            "--threads", "1", "--batch-sizes", "2", "--frames", "4", "--stride", "2", "--crop", "16",
            "--batches", "2", "--processes", "2", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "diagnose_dali_video.json").read_text())
    assert result["codec"] == "vp9" and result["backend"] == "cpu"
    rows = result["rows"]
    assert sorted({r["row"] for r in rows}) == ["decode_all", "decode_clip", "loader", "processes", "reader"]
    for row in rows:
        if row["row"] == "processes":  # two processes, each 2 batches of 2
            assert row["processes"] == 2 and row["batches"] == 4 and row["samples"] == 8, row
            assert row["cpu_pct_children_whole_life"] > 0
        else:
            assert row["batches"] == 2 and row["samples"] == 4, row
            assert row["cpu_pct"] > 0
        assert row["clips_per_s"] > 0
    whole = {r["video_frames"]: r["ms_per_sample"] for r in rows if r["row"] == "decode_all"}
    assert whole[48] > whole[8]  # six times the frames: decoding whole videos is not all fixed cost
    (fit,) = result["decode_all_fits"]
    assert fit["ms_per_frame"] > 0
    assert "decode_all fit threads=1 batch=2" in stdout.getvalue()


def test_a_failing_worker_fails_its_row_not_the_run():
    # H.264 bytes on DALI's CPU decoder: each worker's warm-up batch raises; the parent notices the
    # dead workers as soon as they exit instead of waiting out its 180 s timeout (the bound leaves room for
    # spawning two DALI processes on a loaded machine: 68 s was measured under a full training job)
    h264 = diagnose_dali_video.encode_lengths([8], 1, "h264", 32, 48, 4)[8]
    started = time.monotonic()
    row = diagnose_dali_video.measure_processes(2, "cpu", 1, 1, h264, [np.arange(4, dtype=np.int32)], 4,
                                                batches=1, max_seconds=5, on_gpu=False)
    assert "error" in row and "exit codes" in row["error"]
    assert time.monotonic() - started < 170


def test_gpu_without_cuda_says_so(capsys):
    if diagnose_dali_video.torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert diagnose_dali_video.main(["--device", "gpu"]) == 2
    assert "--device cpu" in capsys.readouterr().err
