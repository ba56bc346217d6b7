"""Training that survives: exact resume after SIGKILL, SIGTERM checkpoints, kills during a checkpoint
write, non-finite losses and corrupt samples. All on CPU, on tiny real shards."""
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import ROOT, subprocess_env, tiny_run_args
from jedi_train.checkpoint import latest_checkpoint

NAMES = ["ucf101", "ssv2"]
JEDI = ["stage=jedi", "methods=jedi", "schedule.epochs=2", "schedule.steps_per_epoch=4", "checkpoint_every=1",
        "schedule.patience=10"]


def launch(args, env, output_dir) -> subprocess.Popen:
    cmd = [sys.executable, "jedi_train/run.py", *args]
    log = open(Path(output_dir) / "log.txt", "a")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def experts_dir(tiny_shards, tmp_path_factory):
    """Experts trained once; each test copies them into its own run folder."""
    out = tmp_path_factory.mktemp("experts_run")
    env = subprocess_env()
    code = subprocess.run([sys.executable, "jedi_train/run.py", *tiny_run_args(tiny_shards, out, NAMES),
                           "stage=experts"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert code.returncode == 0, code.stdout[-2000:] + code.stderr[-2000:]
    return out / "tiny" / "experts"


def _prepared_run(tmp_path: Path, experts_dir: Path, name: str) -> Path:
    shutil.copytree(experts_dir, tmp_path / name / "experts", ignore=shutil.ignore_patterns("checkpoints"))
    return tmp_path


def _final_weights(run_dir: Path) -> dict:
    return load_file(str(latest_checkpoint(run_dir / "jedi" / "checkpoints") / "model.safetensors"))


def _wait_for_step(run_dir: Path, step: int, process: subprocess.Popen, timeout=300):
    steps_file = run_dir / "jedi" / "steps.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if steps_file.is_file() and len(steps_file.read_text().splitlines()) >= step:
            return
        assert process.poll() is None, "run ended before it could be killed"
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tiny_shards, experts_dir, tmp_path):
    env = subprocess_env()
    straight = _prepared_run(tmp_path / "a", experts_dir, "tiny")
    args_a = tiny_run_args(tiny_shards, straight, NAMES) + JEDI
    assert launch(args_a, env, straight).wait(timeout=600) == 0

    killed = _prepared_run(tmp_path / "b", experts_dir, "tiny")
    args_b = tiny_run_args(tiny_shards, killed, NAMES) + JEDI
    process = launch(args_b, env, killed)
    _wait_for_step(killed / "tiny", 3, process)  # mid-epoch 1 (4 steps an epoch)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert launch(args_b + ["--resume"], env, killed).wait(timeout=600) == 0
    assert "resumed from" in (killed / "log.txt").read_text()

    a, b = _final_weights(straight / "tiny"), _final_weights(killed / "tiny")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), f"{key} differs after resume"
    losses_a = (straight / "tiny" / "jedi" / "steps.jsonl").read_text().splitlines()
    losses_b = (killed / "tiny" / "jedi" / "steps.jsonl").read_text().splitlines()
    assert losses_a == losses_b


def test_sigterm_writes_a_checkpoint_and_resume_finishes(tiny_shards, experts_dir, tmp_path):
    env = subprocess_env()
    run = _prepared_run(tmp_path, experts_dir, "tiny")
    args = tiny_run_args(tiny_shards, run, NAMES) + JEDI[:-2] + ["checkpoint_every=0", "schedule.patience=10"]
    process = launch(args, env, run)
    _wait_for_step(run / "tiny", 2, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 1
    assert "stopped by signal" in (run / "log.txt").read_text()
    checkpoints = sorted((run / "tiny" / "jedi" / "checkpoints").glob("step-*"))
    assert checkpoints, "SIGTERM left no checkpoint"
    assert launch(args + ["--resume"], env, run).wait(timeout=600) == 0
    assert (run / "tiny" / "jedi" / "best.pt").is_file()


def test_sigkill_during_checkpoint_write_keeps_previous_checkpoint(tiny_shards, experts_dir, tmp_path):
    env = subprocess_env()
    run = _prepared_run(tmp_path, experts_dir, "tiny")
    args = tiny_run_args(tiny_shards, run, NAMES) + JEDI
    process = launch(args, env, run)
    checkpoints = run / "tiny" / "jedi" / "checkpoints"
    deadline = time.time() + 300
    caught = None
    while time.time() < deadline and process.poll() is None:
        tmp = list(checkpoints.glob(".tmp-step-*")) if checkpoints.is_dir() else []
        if tmp and list(checkpoints.glob("step-*")):
            process.send_signal(signal.SIGKILL)
            caught = tmp[0]
            break
        time.sleep(0.002)
    process.wait()
    assert caught is not None, "never saw a checkpoint being written"
    latest = latest_checkpoint(checkpoints)
    assert latest is not None and latest.name != caught.name.removeprefix(".tmp-")
    load_file(str(latest / "model.safetensors"))  # loadable
    assert launch(args + ["--resume"], env, run).wait(timeout=600) == 0


def test_non_finite_losses_stop_the_run_with_last_good_checkpoint(tiny_shards, experts_dir, tmp_path):
    env = subprocess_env()
    run = _prepared_run(tmp_path, experts_dir, "tiny")
    args = tiny_run_args(tiny_shards, run, NAMES) + JEDI + ["schedule.lr=1e15", "max_bad_steps=2"]
    result = subprocess.run([sys.executable, "jedi_train/run.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "non-finite loss" in output and "batch keys" in output and "2 non-finite losses in a row" in output
    assert "Traceback" not in output
    latest = latest_checkpoint(run / "tiny" / "jedi" / "checkpoints")
    assert latest is not None and f"last good checkpoint is {latest}" in output
    load_file(str(latest / "model.safetensors"))


def _corrupt_copy(shard_dir: Path, out: Path) -> list[str]:
    """Copy a shard set, truncating one video member and emptying another in the labelled split."""
    shutil.copytree(shard_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    shard = out / manifest["splits"]["labelled"]["shards"][0]["file"]
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    videos = [m.name for m, _ in members if m.name.endswith((".mp4", ".webm"))]
    truncated, empty = videos[0], videos[1]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name == truncated:
                data = data[: len(data) // 3]
            elif member.name == empty:
                data = b""
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return sorted(name.rsplit(".", 1)[0] for name in (truncated, empty))


def test_corrupt_samples_are_skipped_and_counted(tiny_shards, tmp_path):
    broken = tmp_path / "ucf101"
    corrupt_keys = _corrupt_copy(tiny_shards["ucf101"], broken)
    args = tiny_run_args({"ucf101": broken}, tmp_path, ["ucf101"]) + ["stage=experts", "experts.epochs=2"]
    result = subprocess.run([sys.executable, "jedi_train/run.py", *args], cwd=ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    checkpoints = sorted((tmp_path / "tiny" / "experts" / "checkpoints" / "ucf101").glob("step-*"))
    progress = json.loads((checkpoints[-1] / "progress.json").read_text())
    for epoch, keys in progress["skipped_samples"].items():
        assert keys == corrupt_keys, (epoch, keys)


def test_an_expert_resumes_after_other_experts_of_the_same_process(experts_dir, tiny_shards, tmp_path):
    """The experts were trained one after another in one process; each checkpoint holds that expert alone,
    so a run killed during the second expert resumes it after the first one is kept from disk."""
    assert sorted(p.name for p in latest_checkpoint(experts_dir / "checkpoints" / "ssv2").glob("model*")) == [
        "model.safetensors"]
    shutil.copytree(experts_dir, tmp_path / "tiny" / "experts")
    (tmp_path / "tiny" / "experts" / "ssv2.pt").unlink()  # as if killed during ssv2's last epoch
    result = subprocess.run([sys.executable, "jedi_train/run.py", *tiny_run_args(tiny_shards, tmp_path, NAMES),
                             "stage=experts", "--resume"], cwd=ROOT, env=subprocess_env(), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "expert ucf101: already trained" in result.stdout and "expert ssv2: resumed from" in result.stdout
    assert (tmp_path / "tiny" / "experts" / "ssv2.pt").is_file()
