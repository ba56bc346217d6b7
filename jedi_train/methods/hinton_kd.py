"""Hinton KD (Hinton, Vinyals & Dean 2015) from the average of the experts: the target of dataset d is
the mean over the K experts (each mapped to d's classes, methods/teachers.py) of softmax(logits / T);
student d, which starts as expert d, learns CE on labelled clips + alpha * T^2 * KL(target || student at T)
on labelled clips (one view) and unlabelled clips (teachers weak view, student strong view). The loss and
the views are methods/multi_teacher_kd.py's; this module says only how the teachers combine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from jedi_train.methods.multi_teacher_kd import MultiTeacherKD


@dataclass
class Config:
    temperature: float = 4.0  # T
    alpha: float = 1.0  # weight of the distillation term


def average_target(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """[K, B, C] -> [B, C]: the mean over teachers of softmax(logits / T)."""
    return (teacher_logits / temperature).softmax(dim=-1).mean(dim=0)


class HintonKD(MultiTeacherKD):
    log_name = "hinton_kd"

    def target_probs(self, teacher_logits, labels, temperature):
        return average_target(teacher_logits, temperature)  # the label plays no part in the average


def build(config, infos, experts) -> HintonKD:
    cfg: Config = config.hinton_kd
    return HintonKD(experts, {d: len(info.classes) for d, info in infos.items()},
                    {d: config.datasets[d].loss_weight for d in infos}, cfg.temperature, cfg.alpha)
