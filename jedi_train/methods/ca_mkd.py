"""Confidence-aware multi-teacher KD (CA-MKD; Zhang, Chen & Wang, ICASSP 2022): the
teachers are the experts mapped to dataset d's classes (methods/teachers.py); each clip weighs each
teacher by how well that teacher predicts the clip's label,

    w_k = (1 / (K - 1)) * (1 - softmax_k(CE_k)),   CE_k = CE(teacher_k's logits, label),

so a confident and correct teacher (low CE) weighs most, and the weights sum to 1 over the K teachers.
The target is sum_k w_k softmax(teacher_k / T); the student (starting as expert d) learns CE on labelled
clips + alpha * T^2 * KL(target || student at T) on labelled and unlabelled clips (loss and views:
methods/multi_teacher_kd.py). The paper's KD term is sum_k w_k CE(teacher_k at T, student at T); cross-
entropy is linear in its target, so that equals CE(sum_k w_k teacher_k, student) and differs from our KL by
the target's entropy only, a constant for the student: the same gradient.

Choices of this implementation (not in the paper, which is supervised):
- an unlabelled clip has no label, so CE_k is taken against the argmax of the teachers' average
  prediction (T = 1): a teacher weighs more where it agrees, confidently, with the ensemble. The teacher
  role (evaluation, no labels) uses the same rule.
- the paper's intermediate-feature term (teachers' weighted penultimate features regressed by the student
  through an adapter) is left out: only the logit term is trained.
- CE_k is computed at T = 1 (the teachers' own confidence), the target's probabilities at T.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jedi_train.methods.multi_teacher_kd import MultiTeacherKD


@dataclass
class Config:
    temperature: float = 4.0  # T
    alpha: float = 1.0  # weight of the distillation term


def confidence_weights(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[K, B, C] teachers' logits, [B] labels -> [K, B] weights, w_k = (1 - softmax_k(CE_k)) / (K - 1)."""
    k, b, c = teacher_logits.shape
    if k == 1:
        return torch.ones(1, b, dtype=teacher_logits.dtype, device=teacher_logits.device)
    ce = F.cross_entropy(teacher_logits.reshape(k * b, c), labels.repeat(k), reduction="none").view(k, b)
    return (1.0 - ce.softmax(dim=0)) / (k - 1)


def ensemble_labels(teacher_logits: torch.Tensor) -> torch.Tensor:
    """The label an unlabelled clip is scored against: the argmax of the teachers' average prediction."""
    return teacher_logits.softmax(dim=-1).mean(dim=0).argmax(dim=-1)


class CAMKD(MultiTeacherKD):
    log_name = "ca_mkd"

    def target_probs(self, teacher_logits, labels, temperature):
        weights = confidence_weights(teacher_logits, labels if labels is not None else ensemble_labels(teacher_logits))
        return (weights.unsqueeze(-1) * (teacher_logits / temperature).softmax(dim=-1)).sum(dim=0)


def build(config, infos, experts) -> CAMKD:
    cfg: Config = config.ca_mkd
    return CAMKD(experts, {d: len(info.classes) for d, info in infos.items()},
                 {d: config.datasets[d].loss_weight for d in infos}, cfg.temperature, cfg.alpha)
