"""What the shared loop (jedi_train/train_methods.py) knows of a method, and nothing more.

A method is an `nn.Module` built from the experts. It owns its heads, extra models and loss terms; the
loop owns the data, the optimiser and schedule, checkpoints and resume, signals, logging, validation and
model selection, and never asks which method it steps:

    method = build(config, infos, experts)     # every method starts from the same experts
    losses = method(batch)                      # one training step's losses; losses["loss"] is minimised
    method.after_step(step)                     # e.g. the EMA update of Mean Teacher
    method.logits(dataset, role, memo)(clips)   # the models to evaluate, `<method>_<role>` in the table

Roles name the models a method hands to evaluation (`student`, and `teacher` where the method has one).
Each `<dataset>/<role>` keeps its own best validation epoch. Adding a method is one module in this folder
with a `Config` dataclass, a `build` function, and one line each in `methods/__init__.py` and
`config.RunConfig` (docs/architecture.md, "Adding a method").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

    from jedi_train.config import RunConfig
    from jedi_train.data import DatasetInfo, Streams

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepBatch:
    """One step's clips, keyed by dataset; float clips [B, 3, T, H, W] already on the device."""
    labelled_clips: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    unlabelled_clips: dict[str, torch.Tensor] | None = None  # the weak view (None: the method reads none)
    unlabelled_student_clips: dict[str, torch.Tensor] | None = None  # the strong view (None: data.strong_view=false)
    unlabelled_true_labels: dict[str, torch.Tensor] | None = None  # diagnostics only (pseudo-label precision)
    labelled_batches: dict[str, dict] = field(default_factory=dict)  # the loader's batches (sample keys)
    unlabelled_batches: dict[str, dict] = field(default_factory=dict)
    step: int = 0  # optimiser steps taken before this one

    @property
    def student_view(self) -> dict[str, torch.Tensor] | None:
        """The clips a student learns from on unlabelled data: the strong view when there is one."""
        return self.unlabelled_student_clips if self.unlabelled_student_clips is not None else self.unlabelled_clips


@dataclass
class TrainContext:
    """What a method's setup and epoch hooks may read: the run, its data and where to keep files."""
    config: RunConfig
    infos: dict[str, DatasetInfo]
    streams: Streams
    accelerator: Accelerator
    method_dir: Path  # <run_dir>/<method>


class FeatureMemo:
    """Within one evaluation batch each (module, clips) pair runs once: a student and a teacher selected
    at the same epoch, or two teachers reading the same backbones, share their backbone passes."""

    def __init__(self):
        self.clips, self.outputs = None, {}

    def __call__(self, module: nn.Module, clips: torch.Tensor) -> torch.Tensor:
        if clips is not self.clips:
            self.clips, self.outputs = clips, {}
        if id(module) not in self.outputs:
            self.outputs[id(module)] = module(clips)
        return self.outputs[id(module)]


class Method(nn.Module):
    """Base of every method. Subclasses set `names` (dataset order) and override `forward` and `logits`."""

    roles: tuple[str, ...] = ("student",)  # models handed to evaluation; each keeps its own best val epoch
    table_roles: tuple[str, ...] | None = None  # roles shown in the table (None: all of `roles`)
    reads_unlabelled: bool = True  # the loop feeds unlabelled batches (weak view, and strong view if enabled)
    names: list[str]

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Losses of one step: `loss` (minimised) plus named terms and diagnostics (detached)."""
        raise NotImplementedError

    def logits(self, dataset: str, role: str, memo: FeatureMemo | None = None) -> LogitsFn:
        """Normalised clips -> logits of `dataset`'s classes for the model `role`."""
        raise NotImplementedError

    def setup(self, context: TrainContext) -> None:
        """Once before training (not on resume): e.g. fit a head on labelled features."""

    def start_epoch(self, epoch: int, context: TrainContext) -> None:
        """Before each epoch's first step (also after a resume): e.g. refresh a cache, switch a stage."""

    def after_step(self, step: int) -> None:
        """After each optimiser step (`step` = steps taken): e.g. an EMA update."""

    def bundle_parts(self, dataset: str, role: str) -> tuple[list[str], list[nn.Module], nn.Linear] | None:
        """For tools/predict.py: a model that is `head(concat(backbones(clips)))`, as (the dataset each backbone
        was the student of, the backbones, the head); None when the model has another shape."""
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def shown_roles(self) -> tuple[str, ...]:
        return self.table_roles if self.table_roles is not None else self.roles


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` that trains nothing and runs in eval mode whatever its owner's mode."""
    import copy
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return _AlwaysEval(twin)


class _AlwaysEval(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.inner.eval()
        return self

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.inner(*args, **kwargs)
