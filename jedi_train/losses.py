"""Loss terms of METHOD.md section 1, step 4, and the gradient-scaling helper for the foreign path."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def scale_gradient(features: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by `scale` (0 blocks it)."""
    if scale == 1.0:
        return features
    if scale == 0.0:
        return features.detach()
    return features * scale + features.detach() * (1.0 - scale)


def soft_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/tau) || softmax(student/tau)) * tau^2, averaged over the batch.
    The teacher side is detached: pseudo-labels carry no gradient."""
    return soft_target_distillation(student_logits, F.softmax(teacher_logits.detach() / temperature, dim=1),
                                    temperature)


def soft_target_distillation(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float
                             ) -> torch.Tensor:
    """KL(target || softmax(student/tau)) * tau^2, averaged over the batch, for targets that are already
    probabilities at temperature tau (e.g. an average of several teachers' softened predictions; Hinton et
    al. 2015 scale by tau^2 so the gradient keeps its size whatever tau). The target is detached."""
    student_log_probs = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(student_log_probs, target_probs.detach(), reduction="batchmean") * temperature**2


def hard_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, threshold: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch-style: cross-entropy to the teacher's argmax where its confidence passes `threshold`.
    Returns (loss averaged over the whole batch, boolean mask of the clips that got a pseudo-label)."""
    confidence, pseudo_labels = F.softmax(teacher_logits.detach(), dim=1).max(dim=1)
    mask = confidence >= threshold
    per_clip = F.cross_entropy(student_logits, pseudo_labels, reduction="none")
    return (per_clip * mask.float()).mean(), mask
