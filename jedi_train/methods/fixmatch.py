"""FixMatch (Sohn et al., NeurIPS 2020) per dataset: student d, which starts as expert d, pseudo-labels
the weak view of its own unlabelled clips (no gradient) and learns, from the strong view of the same
clips, the pseudo-labels it is confident of:

    loss_d = CE(student(labelled), y) + lambda_u * mean over the unlabelled batch of
             1[max softmax(student(weak)) >= threshold] * CE(student(strong), argmax softmax(student(weak)))

The mean runs over the whole unlabelled batch, clips below the threshold count as zero (as in the paper).
The weak pass runs with BatchNorm statistics frozen, like every teacher pass of this trainer (METHOD.md
1b); the paper passes weak and strong views together in training mode. With GroupNorm (the synthetic
benchmark) the two are the same. FixMatch's paper uses threshold 0.95; the default here is 0.8, the
benchmark's JEDI setting (jedi.threshold), so both methods' hard pseudo-labels pass the same bar.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jedi_train.losses import hard_distillation
from jedi_train.methods.base import StepBatch
from jedi_train.methods.students import ExpertStudents, pseudo_label_diagnostics
from jedi_train.models import frozen_batchnorm_stats


@dataclass
class Config:
    threshold: float = 0.8  # minimum confidence of a pseudo-label (the paper: 0.95)
    lambda_u: float = 1.0  # weight of the unlabelled term


class FixMatch(ExpertStudents):
    roles = ("student",)

    def __init__(self, cfg: Config, experts: dict, loss_weights: dict[str, float]):
        super().__init__(experts, loss_weights)
        self.cfg = cfg

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        for d in self.names:
            student = self.students[d]
            labelled_logits, strong_logits = self.student_passes(d, batch.labelled_clips[d], batch.student_view[d])
            with torch.no_grad(), frozen_batchnorm_stats(student.backbone):
                weak_logits = student(batch.unlabelled_clips[d])
            ce = F.cross_entropy(labelled_logits, batch.labels[d])
            unsupervised, kept = hard_distillation(strong_logits, weak_logits, self.cfg.threshold)
            total = total + self.loss_weights[d] * (ce + self.cfg.lambda_u * unsupervised)
            out[f"{d}/ce"] = ce.detach()
            out[f"{d}/unsupervised"] = unsupervised.detach()
            out |= pseudo_label_diagnostics(d, weak_logits, kept, batch.unlabelled_true_labels)
        out["loss"] = total
        return out


def build(config, infos, experts) -> FixMatch:
    return FixMatch(config.fixmatch, experts, {d: config.datasets[d].loss_weight for d in infos})
