"""Shared fixtures: tiny synthetic datasets in the official layouts, sharded by the real tools.

Built once per test session through the same command-line programs a user runs.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {  # name -> (layout, extra make_shards flags)
    "kinetics400": ("kinetics", ["--label-fraction", "0.5", "--hflip-changes-label"]),
    "ucf101": ("ucf101", ["--label-fraction", "0.5"]),
    "hmdb51": ("hmdb51", ["--label-fraction", "0.5"]),
    "ssv2": ("ssv2", ["--label-fraction", "0.5"]),
}


def run_tool(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    run_tool("tools/make_synthetic.py", "--out", str(out), "--size", "tiny", "--seed", "0", "--workers", "2")
    return out


@pytest.fixture(scope="session")
def tiny_shards(tiny_raw, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("shards")
    shards = {}
    for name, (layout, flags) in DATASETS.items():
        run_tool("tools/make_shards.py", "--layout", layout, "--root", str(tiny_raw / name),
                 "--out", str(out / name), "--short-side", "40", "--fps", "25", "--gop", "4",
                 "--val-fraction", "0.25", "--workers", "2", "--samples-per-shard", "8", *flags)
        shards[name] = out / name
    return shards


def tiny_run_args(shards: dict[str, Path], output_dir: Path, names=None) -> list[str]:
    """Overrides for a seconds-long run of every stage on the tiny shards."""
    args = [f"output_dir={output_dir}", "name=tiny", "seed=0",
            "experts.epochs=2", "schedule.epochs=2", "schedule.steps_per_epoch=3", "schedule.patience=5",
            "data.labelled_batch_size=4", "data.unlabelled_batch_size=4", "data.eval_batch_size=8",
            "data.num_workers=0", "clip.test_clips=2", "log_every=1"]
    for name in names or shards:
        args.append(f"datasets.{name}.shards={shards[name]}")
    return args


def subprocess_env() -> dict:
    """Environment for the trainer in a subprocess: CPU only, one thread (deterministic, no oversubscription)."""
    return dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


@pytest.fixture
def cpu_env() -> dict:
    return subprocess_env()
