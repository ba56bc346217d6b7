"""Using what was trained: the bundles a run writes, predict on raw video files, export, evaluate on shards.

One small real run (two tiny datasets, the jedi arm) feeds every test: its bundles, its eval stage's
per-clip predictions, the raw videos its shards were made from."""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_run_args
from jedi_train.bundle import BundleError, load_bundle
from jedi_train.config import load_config
from jedi_train.data import dataset_infos
from jedi_train.train_methods import load_selected
from pipeline.contract import to_model_input
from pipeline.cpu_loader import eval_loader
from pipeline.video_encode import EncodeSettings, encode_video
from tools import evaluate as evaluate_tool
from tools import export as export_tool
from tools import predict as predict_tool

NAMES = ["ucf101", "ssv2"]


@pytest.fixture(scope="module")
def bundle_run(tiny_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle_runs")
    args = tiny_run_args(tiny_shards, out, names=NAMES) + ["methods=jedi", "experts.epochs=1", "schedule.epochs=1"]
    from jedi_train.run import main
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return out / "tiny", args


def test_run_writes_a_bundle_per_expert_student_and_teacher(bundle_run, tiny_shards):
    run_dir, args = bundle_run
    for name in NAMES:
        assert sorted(p.name for p in (run_dir / "bundles" / name).iterdir()) == ["expert", "jedi_student",
                                                                                  "jedi_teacher"]
    config = load_config(None, args)
    selected = load_selected(config, dataset_infos(config), "jedi")
    clips = to_model_input(torch.randint(0, 256, (3, 3, 8, 32, 32), dtype=torch.uint8))
    teacher = load_bundle(run_dir / "bundles" / "ucf101" / "jedi_teacher")
    assert [b["student_of"] for b in teacher.meta["backbones"]] == NAMES  # a JEDI teacher reads every backbone
    assert teacher.meta["video"]["fps"] == 25.0 and teacher.meta["video"]["short_side"] == 40
    assert teacher.classes == json.loads((tiny_shards["ucf101"] / "manifest.json").read_text())["classes"]
    with torch.no_grad():
        assert torch.equal(teacher.model(clips), selected["ucf101/teacher"].eval().teacher_logits("ucf101", clips))
        student = load_bundle(run_dir / "bundles" / "ssv2" / "jedi_student").model
        assert torch.equal(student(clips), selected["ssv2/student"].eval().student_logits("ssv2", clips))


def test_a_bundle_of_another_format_version_is_refused(bundle_run, tmp_path):
    run_dir, _ = bundle_run
    copy = shutil.copytree(run_dir / "bundles" / "ucf101" / "expert", tmp_path / "old")
    meta = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps(meta | {"format_version": 0}))
    with pytest.raises(BundleError, match="format version 0.*reads version 1"):
        load_bundle(copy)
    assert predict_tool.main(["--bundle", str(copy), str(tmp_path)]) == 2


def test_predict_on_raw_test_videos_equals_the_eval_stage(bundle_run, tiny_raw, tiny_shards, tmp_path, capsys):
    """The README's acceptance check in small: the raw test videos (not the shards), read like the shards
    were made, give the eval stage's single-clip top-1 class for every video."""
    run_dir, _ = bundle_run
    out = tmp_path / "predictions.json"
    argv = ["--bundle", str(run_dir / "bundles" / "ucf101" / "jedi_student"), "--layout", "ucf101",
            "--root", str(tiny_raw / "ucf101"), "--compare", str(run_dir / "predictions.json"), "--out", str(out),
            "--device", "cpu"]
    assert predict_tool.main(argv) == 0
    rows = json.loads(out.read_text())["videos"]
    stage = json.loads((run_dir / "predictions.json").read_text())["ucf101"]["single_clip"]["jedi_student"]
    test_samples = json.loads((tiny_shards["ucf101"] / "manifest.json").read_text())["splits"]["test"]["samples"]
    assert len(rows) == len(stage) == test_samples
    assert {row["key"]: [row["top_k"][0]["index"], row["label"]] for row in rows} == stage
    assert f"same top-1 class on {test_samples}/{test_samples} videos" in capsys.readouterr().out


def test_predicted_views_equal_the_eval_loaders_bit_for_bit(bundle_run, tiny_raw, tiny_shards):
    """--frames shard re-encodes like make_shards and decodes with the project's decoder: the same uint8
    views as the eval loader reads from the shards (x264 is deterministic for the same frames and settings)."""
    run_dir, _ = bundle_run
    bundle = load_bundle(run_dir / "bundles" / "ssv2" / "expert")
    entries = predict_tool.layout_inputs("ssv2", tiny_raw / "ssv2", "test", bundle)
    clip = bundle.clip
    views = predict_tool.VideoViews(entries, bundle.meta, clip, clip.test_clips, clip.test_crops, "shard", "auto")
    by_key = {entry["key"]: i for i, entry in enumerate(entries)}
    compared = 0
    for batch in eval_loader(tiny_shards["ssv2"], "test", clip, batch_size=4, num_workers=0, multi_view=True):
        for key, video in zip(batch["key"], batch["video"]):
            assert torch.equal(views[by_key[key]]["views"], video)
            compared += 1
    assert compared == len(entries)
    direct = predict_tool.VideoViews(entries[:1], bundle.meta, clip, 1, 1, "direct", "auto")[0]["views"]
    assert direct.shape == (1, 3, clip.frames, clip.crop_size, clip.crop_size)


def test_predict_names_bad_input_and_still_predicts_the_rest(bundle_run, tiny_raw, tmp_path, capsys):
    run_dir, _ = bundle_run
    good = sorted((tiny_raw / "ucf101").rglob("*.avi"))[0]
    webm = sorted((tiny_raw / "ssv2").rglob("*.webm"))[0]
    mp4 = sorted((tiny_raw / "kinetics400").rglob("*.mp4"))[0]
    (tmp_path / "notes.mp4").write_text("not a video")
    for source in (good, webm, mp4):
        data = source.read_bytes()
        (tmp_path / f"truncated_{source.name}").write_bytes(data[:len(data) // 2])
    frames = np.zeros((3, 48, 64, 3), dtype=np.uint8)  # 3 frames: shorter than one 8-frame clip
    encode_video(frames, tmp_path / "short.mkv", EncodeSettings(codec="h264", fps=25, container="matroska"))
    listed = tmp_path / "videos.txt"
    listed.write_text(f"# one path per line\n{good}\nshort.mkv\nnotes.mp4\n")
    out = tmp_path / "rows.csv"
    argv = ["--bundle", str(run_dir / "bundles" / "ucf101" / "expert"), "--list", str(listed),
            str(tmp_path / f"truncated_{good.name}"),
            str(tmp_path / f"truncated_{webm.name}"), str(tmp_path / f"truncated_{mp4.name}"),
            str(tmp_path / "missing.avi"), str(webm), "--views", "multi", "--out", str(out), "--top-k", "3"]
    assert predict_tool.main(argv) == 1  # some videos could not be read
    rows = {row["path"]: row for row in csv.DictReader(out.open())}
    reason = {name: rows[str(tmp_path / name)]["error"] for name in
              ("notes.mp4", "missing.avi", f"truncated_{good.name}", f"truncated_{webm.name}",
               f"truncated_{mp4.name}")}
    assert "cannot decode" in reason["notes.mp4"]
    assert reason["missing.avi"] == "missing: no such file"
    assert reason[f"truncated_{good.name}"].startswith("truncated")  # AVI: the header says how long it was
    assert reason[f"truncated_{webm.name}"].startswith("truncated")  # WebM: likewise
    assert "cannot decode" in reason[f"truncated_{mp4.name}"]  # MP4: the index at the end is gone
    for ok in (str(good), str(webm), str(tmp_path / "short.mkv")):
        assert rows[ok]["status"] == "ok" and len(rows[ok]["top_k"].split(";")) == 3
    assert rows[str(tmp_path / "short.mkv")]["padded"] == "True"
    assert "[padded: shorter than one clip]" in capsys.readouterr().out


def test_exported_program_runs_without_the_project_and_matches_eager(bundle_run, tmp_path):
    """torch.export program of a JEDI teacher (two backbones), loaded by a Python that cannot import this
    project; its logits equal the eager bundle's within 1e-4 (measured here: 0, the same kernels)."""
    run_dir, _ = bundle_run
    bundle_dir = run_dir / "bundles" / "ucf101" / "jedi_teacher"
    assert export_tool.main(["--bundle", str(bundle_dir), "--out", str(tmp_path / "exported")]) == 0
    clips = torch.randint(0, 256, (5, 3, 8, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    torch.save(clips, tmp_path / "clips.pt")
    script = ("import sys, torch; assert 'jedi_train' not in sys.modules; "
              "p = torch.export.load('exported/model.pt2').module(); c = torch.load('clips.pt'); "
              "torch.save([p(c), p(c[:1])], 'logits.pt')")
    subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, check=True, capture_output=True)
    exported, exported_one = torch.load(tmp_path / "logits.pt")
    with torch.no_grad():
        eager = load_bundle(bundle_dir).model(to_model_input(clips))
    assert exported.shape == (5, 6)
    assert (exported - eager).abs().max() <= export_tool.DEFAULT_TOLERANCE
    assert (exported_one - eager[:1]).abs().max() <= export_tool.DEFAULT_TOLERANCE
    check = json.loads((tmp_path / "exported" / "export.json").read_text())["check"]
    assert check["max_abs_logit_difference"] <= export_tool.DEFAULT_TOLERANCE


def test_evaluate_a_bundle_on_shards_reproduces_the_eval_stage(bundle_run, tiny_shards, tmp_path):
    run_dir, _ = bundle_run
    out = tmp_path / "eval"
    assert evaluate_tool.main(["--bundle", str(run_dir / "bundles" / "ssv2" / "jedi_student"),
                               "--shards", str(tiny_shards["ssv2"]), "--out", str(out), "--device", "cpu",
                               "--workers", "0"]) == 0
    stage = json.loads((run_dir / "metrics.json").read_text())["metrics"]["ssv2"]["jedi_student"]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for view in ("single_clip", "multi_view"):
        assert metrics[view]["top1"] == pytest.approx(stage[view]["top1"])
        assert metrics[view]["top5"] == pytest.approx(stage[view]["top5"])
        assert (out / f"confusion_{view}.png").stat().st_size > 5000
    # shards of another dataset (other classes) are refused with both class lists named
    assert evaluate_tool.main(["--bundle", str(run_dir / "bundles" / "ssv2" / "expert"),
                               "--shards", str(tiny_shards["ucf101"]), "--out", str(out)]) == 2
