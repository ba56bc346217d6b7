"""End to end on tiny real shards: every stage, golden first losses, two CPU processes, bad input."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_run_args
from jedi_train.run import main

# First JEDI step losses of the tiny seeded run (torch 2.14.1, CPU, 1 thread). A change that alters
# them changed the data order, the augmentation, the initialisation or the loss: find out which.
GOLDEN_FIRST_LOSSES = [14.0006, 15.2195, 15.871]


def main_one_thread(args: list[str]) -> int:
    """The trainer in this process with one torch thread, as the golden losses were recorded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tiny_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main_one_thread(tiny_run_args(tiny_shards, out)) == 0
    return out / "tiny"


def test_all_stages_write_metrics_table_and_chart(tiny_run, tiny_shards):
    report = json.loads((tiny_run / "metrics.json").read_text())
    metrics = report["metrics"]
    assert set(metrics) == set(tiny_shards)
    for dataset, per_model in metrics.items():
        assert set(per_model) == {"expert", "jedi_student", "jedi_teacher",
                                  "self_training_student", "self_training_teacher"}
        test_clips = json.loads((tiny_shards[dataset] / "manifest.json").read_text())["splits"]["test"]["samples"]
        for scores in per_model.values():
            for view in ("single_clip", "multi_view"):
                assert scores[view]["clips"] == test_clips
                assert 0 <= scores[view]["top1"] <= scores[view]["top5"] <= 100
    assert (tiny_run / "results.png").stat().st_size > 1000
    assert any((tiny_run / "tensorboard").rglob("events.out.tfevents*"))


def test_golden_first_losses(tiny_run):
    steps = [json.loads(line) for line in (tiny_run / "jedi" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 6  # 2 epochs x 3 steps
    first = [round(s["loss"], 4) for s in steps[:3]]
    assert all(torch.isfinite(torch.tensor(first)))
    assert first == pytest.approx(GOLDEN_FIRST_LOSSES, abs=2e-3), first


def test_jedi_and_control_start_from_the_same_experts(tiny_run):
    # teacher == expert at step 0, so the first loss of JEDI and of the control are the same number
    first = [json.loads((tiny_run / v / "steps.jsonl").read_text().splitlines()[0])["loss"]
             for v in ("jedi", "self_training")]
    assert first[0] == pytest.approx(first[1], rel=1e-6)


def test_cached_teacher_mode_trains_from_the_experts(tiny_run, tiny_shards, tmp_path):
    """jedi.teacher_cache + teacher_cache_labelled (foreign_grad_scale=0): the stage fills the unlabelled
    and labelled caches of every dataset, trains every step with finite losses and evaluates."""
    shutil.copytree(tiny_run / "experts", tmp_path / "tiny" / "experts")
    assert main_one_thread([*tiny_run_args(tiny_shards, tmp_path), "stage=jedi", "jedi.run_control=false",
                            "jedi.teacher_cache=true", "jedi.teacher_cache_labelled=true",
                            "jedi.foreign_grad_scale=0"]) == 0
    steps = [json.loads(line) for line in (tmp_path / "tiny" / "jedi" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 6 and all(torch.isfinite(torch.tensor(s["loss"])) for s in steps)
    for name in tiny_shards:
        for split in ("unlabelled", "labelled"):
            assert (tmp_path / "tiny" / "feature_cache" / "jedi" / name / f"{split}.zarr").is_dir()


def test_manifest_classes_disagreeing_with_checkpoint_is_named(tiny_run, tiny_shards, tmp_path, capsys):
    changed = tmp_path / "ucf101"
    shutil.copytree(tiny_shards["ucf101"], changed)
    manifest = json.loads((changed / "manifest.json").read_text())
    manifest["classes"] = list(reversed(manifest["classes"]))
    (changed / "manifest.json").write_text(json.dumps(manifest))
    args = [f"output_dir={tiny_run.parent}", "name=tiny", "stage=eval", f"datasets.ucf101.shards={changed}"]
    with pytest.raises(ValueError) as error:
        main(args)
    assert "experts/ucf101.pt" in str(error.value) and "manifest.json" in str(error.value)


def test_two_cpu_processes_under_accelerate(tiny_shards, tmp_path, cpu_env):
    names = ["ucf101", "ssv2"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "jedi_train/run.py", *tiny_run_args(tiny_shards, tmp_path, names), "jedi.run_control=false"]
    result = subprocess.run(cmd, cwd=ROOT, env=cpu_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    report = json.loads((tmp_path / "tiny" / "metrics.json").read_text())
    assert report["processes"] == 2
    for name in names:
        test_clips = json.loads((tiny_shards[name] / "manifest.json").read_text())["splits"]["test"]["samples"]
        # each test clip counted once across the two ranks
        assert report["metrics"][name]["jedi_student"]["single_clip"]["clips"] == test_clips
