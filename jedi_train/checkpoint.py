"""Checkpoints that resume exactly and survive kills.

A checkpoint is a folder written by `Accelerator.save_state` (models, optimisers, schedulers, AMP
scaler, every process's RNG states) plus `progress.json` (epoch, step, position inside the epoch,
early-stopping record, skip counts) and `best_state.pt` (the best weights so far). It is written under
a temporary name and renamed when complete, so a kill during the write leaves the previous checkpoint
intact; the newest `keep` checkpoints are kept. The loaders' position is (epoch, step inside the
epoch): the torch loader re-creates batch k of an epoch from seeds alone (`start_step`), so no stream
state needs saving for it.
"""
from __future__ import annotations

import json
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator


@dataclass
class Progress:
    epoch: int = 0  # the epoch in progress (== epochs when finished)
    step_in_epoch: int = 0  # batches of that epoch already trained on
    step: int = 0  # optimiser steps so far
    best: dict = field(default_factory=dict)  # early-stopping record: epoch and validation scores
    finished: bool = False
    skipped_samples: dict = field(default_factory=dict)  # epoch -> keys of corrupt samples skipped
    bad_steps_in_row: int = 0  # consecutive steps with a non-finite loss
    train_seconds: float = 0.0  # wall time of the stage so far, across resumes (validation included)


class Checkpointer:
    def __init__(self, accelerator: Accelerator, directory: Path, keep: int = 3):
        self.accelerator = accelerator
        self.directory = Path(directory)
        self.keep = keep

    def save(self, progress: Progress, best_state: dict) -> Path:
        final = self.directory / f"step-{progress.step:08d}"
        tmp = self.directory / f".tmp-step-{progress.step:08d}"
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        if self.accelerator.is_main_process:
            torch.save(best_state, tmp / "best_state.pt")
            (tmp / "progress.json").write_text(json.dumps(asdict(progress), indent=2))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)  # the checkpoint exists only once it is complete
            for old in self.complete()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def complete(self) -> list[Path]:
        return complete_checkpoints(self.directory)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.directory)

    def load(self, path: Path) -> tuple[Progress, dict]:
        path = Path(path)
        if not (path / "progress.json").is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no progress.json)")
        self.accelerator.load_state(str(path))
        progress = Progress(**json.loads((path / "progress.json").read_text()))
        best_state = torch.load(path / "best_state.pt", map_location="cpu", weights_only=True)
        return progress, best_state


def complete_checkpoints(directory: Path) -> list[Path]:
    """Finished checkpoints, oldest first (half-written `.tmp-*` folders are not among them)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("step-*") if (p / "progress.json").is_file())


def latest_checkpoint(directory: Path) -> Path | None:
    found = complete_checkpoints(directory)
    return found[-1] if found else None


class StopRequest:
    """SIGTERM / SIGINT set a flag; the training loop checkpoints at the end of the step and exits."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners)
                pass

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Interrupted(Exception):
    """Raised after the checkpoint that a stop request asked for has been written."""


class NonFiniteLoss(RuntimeError):
    pass
