"""Per-dataset students that start as the experts: what FixMatch, Mean Teacher and the multi-teacher KD
methods have in common. Student d is expert d (backbone + head), trained on d's labelled clips and the
strong view of d's unlabelled clips; each method adds its own target for the unlabelled half.
"""
from __future__ import annotations

import torch
from torch import nn

from jedi_train.methods.base import FeatureMemo, LogitsFn, Method


class ExpertStudents(Method):
    """`students[d]` is expert d (`.backbone`, `.head`), trained from its weights."""

    def __init__(self, experts: dict, loss_weights: dict[str, float]):
        super().__init__()
        self.names = list(experts)
        self.students = nn.ModuleDict(experts)
        self.loss_weights = loss_weights

    def student_passes(self, d: str, labelled_clips: torch.Tensor, student_view: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Student d's logits of its labelled clips and of the student (strong) view of its unlabelled clips,
        in one backbone pass in training mode (the pass a step's gradient flows through)."""
        if student_view is None:
            return self.students[d](labelled_clips), None
        logits = self.students[d](torch.cat([labelled_clips, student_view]))
        return logits[:labelled_clips.shape[0]], logits[labelled_clips.shape[0]:]

    def logits(self, dataset: str, role: str, memo: FeatureMemo | None = None) -> LogitsFn:
        if role != "student":
            raise ValueError(f"role {role!r}: {type(self).__name__} has roles {', '.join(self.roles)}")
        memo = memo or FeatureMemo()
        student = self.students[dataset]
        return lambda clips: student.head(memo(student.backbone, clips))

    def bundle_parts(self, dataset: str, role: str):
        if role != "student":
            return None
        return [dataset], [self.students[dataset].backbone], self.students[dataset].head


def pseudo_label_diagnostics(d: str, target_logits: torch.Tensor, kept: torch.Tensor,
                             true_labels: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """How many unlabelled clips got a pseudo-label (`kept`) and, when the loader passes the hidden labels,
    how many of those were right: the numbers jedi_train/jedi.py logs, under the same names."""
    out = {f"{d}/pseudo_label_rate": kept.float().mean().detach()}
    if true_labels is not None:
        correct = target_logits.argmax(1) == true_labels[d]
        out[f"{d}/pseudo_label_precision"] = ((correct & kept).float().sum() / kept.float().sum().clamp(min=1.0)
                                              ).detach()
    return out
