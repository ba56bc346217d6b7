"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) per dataset: student d starts as expert d; its
teacher is an exponential moving average of the student's weights, updated after every optimiser step,

    theta_teacher <- alpha * theta_teacher + (1 - alpha) * theta_student     (buffers copied),

and the student matches the teacher's prediction:

    loss_d = CE(student(labelled), y)
             + w(t) * mean over clips of sum over classes (softmax(student(x')) - softmax(teacher(x)))^2

on every clip of the step: a labelled clip's one view for both, an unlabelled clip's strong view x' for the
student and weak view x for the teacher. w(t) = consistency_weight * exp(-5 (1 - t)^2), t = step /
rampup_steps capped at 1 (the paper's sigmoid ramp-up). The teacher starts equal to the expert, so the
paper's warm-up of alpha (for a randomly initialised teacher) is left out. The EMA weights are parameters
of this module (frozen, no gradient), so checkpoints, resume and model selection carry them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jedi_train.methods.base import FeatureMemo, LogitsFn, StepBatch, frozen_copy
from jedi_train.methods.students import ExpertStudents


@dataclass
class Config:
    ema_decay: float = 0.99  # alpha
    consistency_weight: float = 10.0  # the paper's CIFAR-10 setting (100 on an MSE averaged over 10 classes)
    rampup_steps: int = 100  # steps of the sigmoid ramp-up of the consistency weight


def sigmoid_rampup(step: int, rampup_steps: int) -> float:
    """exp(-5 (1 - t)^2) with t = step / rampup_steps in [0, 1]; 1 from the end of the ramp-up on."""
    if rampup_steps <= 0:
        return 1.0
    t = min(step, rampup_steps) / rampup_steps
    return math.exp(-5.0 * (1.0 - t) ** 2)


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Squared distance between the two predictions, summed over classes, averaged over clips."""
    difference = F.softmax(student_logits, dim=1) - F.softmax(teacher_logits.detach(), dim=1)
    return difference.pow(2).sum(dim=1).mean()


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, parameter by parameter; buffers (e.g. BatchNorm
    statistics) are copied."""
    for kept, current in zip(average.parameters(), model.parameters(), strict=True):
        kept.mul_(decay).add_(current.detach(), alpha=1.0 - decay)
    for kept, current in zip(average.buffers(), model.buffers(), strict=True):
        kept.copy_(current)


class MeanTeacher(ExpertStudents):
    roles = ("student", "teacher")

    def __init__(self, cfg: Config, experts: dict, loss_weights: dict[str, float]):
        super().__init__(experts, loss_weights)
        self.cfg = cfg
        # `.inner` of each is the EMA expert; frozen_copy keeps it out of the optimiser and in eval mode
        self.teachers = nn.ModuleDict({d: frozen_copy(expert) for d, expert in experts.items()})

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        weight = self.cfg.consistency_weight * sigmoid_rampup(batch.step, self.cfg.rampup_steps)
        for d in self.names:
            labelled_logits, strong_logits = self.student_passes(d, batch.labelled_clips[d], batch.student_view[d])
            teacher_logits = self.teachers[d](torch.cat([batch.labelled_clips[d], batch.unlabelled_clips[d]]))
            ce = F.cross_entropy(labelled_logits, batch.labels[d])
            consistency = softmax_mse(torch.cat([labelled_logits, strong_logits]), teacher_logits)
            total = total + self.loss_weights[d] * (ce + weight * consistency)
            out[f"{d}/ce"] = ce.detach()
            out[f"{d}/consistency"] = consistency.detach()
        out["loss"] = total
        out["consistency_weight"] = torch.tensor(weight)
        return out

    def after_step(self, step: int) -> None:
        for d in self.names:
            ema_update(self.teachers[d].inner, self.students[d], self.cfg.ema_decay)

    def logits(self, dataset: str, role: str, memo: FeatureMemo | None = None) -> LogitsFn:
        if role == "student":
            return super().logits(dataset, role, memo)
        memo = memo or FeatureMemo()
        teacher = self.teachers[dataset].inner
        return lambda clips: teacher.head(memo(teacher.backbone, clips))

    def bundle_parts(self, dataset: str, role: str):
        if role == "student":
            return super().bundle_parts(dataset, role)
        teacher = self.teachers[dataset].inner
        return [dataset], [teacher.backbone], teacher.head


def build(config, infos, experts) -> MeanTeacher:
    return MeanTeacher(config.mean_teacher, experts, {d: config.datasets[d].loss_weight for d in infos})
