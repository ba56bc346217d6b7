"""The JEDI model: per-dataset students (backbone f_d + head h_d) and teachers g_d on the concatenated
features z(x) = concat(f_1(x), ..., f_N(x)). Read it next to ../shared/METHOD.md section 1.

`JediModel.forward` computes the whole joint step, so one DDP wrapper (through Accelerate) covers it:
every clip goes through every backbone once, and each loss term keeps the name the method gives it.
With `teacher_inputs="own"` the same code is the self-training control (teacher reads f_d only): both
arms learn from unlabelled clips FixMatch-style, the teacher on the weak view, the student on the strong
view, and differ only in what the teacher reads (jedi_train/methods/jedi.py lists the arms).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jedi_train.losses import hard_distillation, scale_gradient, soft_distillation
from jedi_train.models import VideoBackbone, frozen_batchnorm_stats


@dataclass(frozen=True)
class DistillSettings:
    distillation: str = "soft"  # soft | hard
    temperature: float = 1.0
    threshold: float = 0.8
    distill_weight: float = 1.0  # lambda
    freeze_foreign_bn_stats: bool = True


class JediModel(nn.Module):
    def __init__(self, backbones: dict[str, VideoBackbone], num_classes: dict[str, int],
                 teacher_inputs: str = "all", settings: DistillSettings = DistillSettings(),
                 loss_weights: dict[str, float] | None = None):
        super().__init__()
        if teacher_inputs not in ("all", "own"):
            raise ValueError(f"teacher_inputs={teacher_inputs!r}: allowed values are all, own")
        self.names = list(backbones)
        self.teacher_inputs = teacher_inputs
        self.settings = settings
        self.loss_weights = loss_weights or {name: 1.0 for name in self.names}
        self.backbones = nn.ModuleDict(backbones)
        self.student_heads = nn.ModuleDict(
            {d: nn.Linear(backbones[d].feature_dim, num_classes[d]) for d in self.names})
        self.teacher_heads = nn.ModuleDict(
            {d: nn.Linear(sum(backbones[j].feature_dim for j in self.teacher_sources(d)), num_classes[d])
             for d in self.names})

    def teacher_sources(self, d: str) -> list[str]:
        """Backbones whose features the teacher of dataset d reads, in concatenation order."""
        return list(self.names) if self.teacher_inputs == "all" else [d]

    @torch.no_grad()
    def init_teachers_from_students(self) -> None:
        """T_d = E_d at step 0: the block of g_d that reads f_d is h_d, the other blocks are zero."""
        for d in self.names:
            teacher = self.teacher_heads[d]
            teacher.weight.zero_()
            offset = 0
            for j in self.teacher_sources(d):
                width = self.backbones[j].feature_dim
                if j == d:
                    teacher.weight[:, offset:offset + width] = self.student_heads[d].weight
                offset += width
            teacher.bias.copy_(self.student_heads[d].bias)

    # ----- inference -------------------------------------------------------------------------------
    def student_logits(self, d: str, clips: torch.Tensor) -> torch.Tensor:
        return self.student_heads[d](self.backbones[d](clips))

    def teacher_logits(self, d: str, clips: torch.Tensor) -> torch.Tensor:
        features = [self.backbones[j](clips) for j in self.teacher_sources(d)]
        return self.teacher_heads[d](torch.cat(features, dim=1))

    # ----- the joint step ---------------------------------------------------------------------------
    def forward(self, labelled_clips: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                unlabelled_clips: dict[str, torch.Tensor] | None = None,
                unlabelled_student_clips: dict[str, torch.Tensor] | None = None,
                unlabelled_true_labels: dict[str, torch.Tensor] | None = None, foreign_grad_scale: float = 1.0,
                cached_teacher_logits: dict[str, torch.Tensor] | None = None,
                cached_foreign_features: dict[str, dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """All inputs are float clips [B,3,T,H,W] keyed by dataset.

        `unlabelled_clips`: the weak view, the only view the teacher reads (None: no unlabelled term, the
        supervised continuation). `unlabelled_student_clips`: the strong view the student learns from
        (None: the student reads the weak view too). `unlabelled_true_labels` only feeds the pseudo-label
        precision diagnostic. `cached_teacher_logits` (cached-teacher mode): the teacher's logits for the
        unlabelled clips, read from the feature cache (computed on the centre clip and crop, the weakest
        view), so unlabelled clips pass only their own student's backbone. `cached_foreign_features[d][j]`
        (with the previous, and only with foreign_grad_scale=0, since no gradient flows through a cached
        feature): backbone j's features of dataset d's labelled clips from a labelled-split cache, so a
        labelled clip too passes only its own backbone and the step costs N backbone passes instead of N^2.

        BatchNorm rule, the same for JEDI and the control: a backbone's own labelled clips and the student
        view of its unlabelled clips pass in training mode (gradient, statistics updated); the teacher's
        passes over the weak view, own and foreign backbones alike, run without gradient and with
        BatchNorm in eval mode (running statistics, never updated); foreign labelled clips follow
        `freeze_foreign_bn_stats`. With GroupNorm the modes do not differ.

        Returns the total loss, each term per dataset, and diagnostics (detached)."""
        cached = cached_teacher_logits is not None
        if cached_foreign_features is not None and (not cached or foreign_grad_scale != 0.0):
            raise ValueError("cached_foreign_features needs cached_teacher_logits and foreign_grad_scale=0 "
                             f"(got foreign_grad_scale={foreign_grad_scale}): a cached feature passes no gradient")
        semi_supervised = unlabelled_clips is not None
        if cached and not semi_supervised:
            raise ValueError("cached_teacher_logits needs unlabelled_clips (the student's view of those clips)")
        student_view = unlabelled_student_clips if unlabelled_student_clips is not None else unlabelled_clips
        # features[(j, d, part)]: backbone j on dataset d's clips; part L = labelled, U = the teacher's weak view
        features: dict[tuple[str, str, str], torch.Tensor] = {}
        student_unlabelled_features: dict[str, torch.Tensor] = {}
        freeze = self.settings.freeze_foreign_bn_stats
        for j in self.names:
            backbone = self.backbones[j]
            readers = [d for d in self.names if j in self.teacher_sources(d)]  # teachers that read backbone j
            foreign = [d for d in readers if d != j]
            # the student: own labelled clips + the student's view of own unlabelled clips, training mode
            n_labelled = labelled_clips[j].shape[0]
            own = backbone(torch.cat([labelled_clips[j], student_view[j]]) if semi_supervised else labelled_clips[j])
            features[(j, j, "L")] = own[:n_labelled]
            student_unlabelled_features[j] = own[n_labelled:]
            # the teachers: the weak view of every reader's unlabelled clips, no gradient, BatchNorm in eval mode
            if semi_supervised and not cached:
                with torch.no_grad(), frozen_batchnorm_stats(backbone):
                    weak = backbone(torch.cat([unlabelled_clips[d] for d in readers]))
                for d, part in zip(readers, weak.split([unlabelled_clips[d].shape[0] for d in readers])):
                    features[(j, d, "U")] = part
            if not foreign:
                continue
            if cached_foreign_features is not None:  # every foreign feature is in the caches: no pass at all
                for d in foreign:
                    features[(j, d, "L")] = cached_foreign_features[d][j].to(own.dtype)
                continue
            # other datasets' labelled clips, for their teachers' supervised loss
            with frozen_batchnorm_stats(backbone, freeze):
                with torch.set_grad_enabled(torch.is_grad_enabled() and foreign_grad_scale != 0.0):
                    foreign_labelled = backbone(torch.cat([labelled_clips[d] for d in foreign]))
            foreign_labelled = scale_gradient(foreign_labelled, foreign_grad_scale)
            for d, part in zip(foreign, foreign_labelled.split([labelled_clips[d].shape[0] for d in foreign])):
                features[(j, d, "L")] = part

        out: dict[str, torch.Tensor] = {}
        total = 0.0
        s = self.settings
        for d in self.names:
            sources = self.teacher_sources(d)
            student_labelled_logits = self.student_heads[d](features[(d, d, "L")])
            teacher_labelled_logits = self.teacher_heads[d](torch.cat([features[(j, d, "L")] for j in sources], 1))
            sup_student = F.cross_entropy(student_labelled_logits, labels[d])
            sup_teacher = F.cross_entropy(teacher_labelled_logits, labels[d])
            total = total + self.loss_weights[d] * (sup_student + sup_teacher)
            out[f"{d}/sup_student"] = sup_student.detach()
            out[f"{d}/sup_teacher"] = sup_teacher.detach()
            if not semi_supervised:
                continue
            if cached:
                teacher_unlabelled_logits = cached_teacher_logits[d].float()
            else:
                with torch.no_grad():
                    teacher_unlabelled_logits = self.teacher_heads[d](
                        torch.cat([features[(j, d, "U")] for j in sources], 1))
            student_unlabelled_logits = self.student_heads[d](student_unlabelled_features[d])
            if s.distillation == "soft":
                dist = soft_distillation(student_unlabelled_logits, teacher_unlabelled_logits, s.temperature)
                mask = torch.ones(teacher_unlabelled_logits.shape[0], dtype=torch.bool,
                                  device=teacher_unlabelled_logits.device)
            else:
                dist, mask = hard_distillation(student_unlabelled_logits, teacher_unlabelled_logits, s.threshold)
            total = total + self.loss_weights[d] * s.distill_weight * dist
            out[f"{d}/dist"] = dist.detach()
            out[f"{d}/pseudo_label_rate"] = mask.float().mean()
            if unlabelled_true_labels is not None:
                correct = teacher_unlabelled_logits.argmax(1) == unlabelled_true_labels[d]
                out[f"{d}/pseudo_label_precision"] = (
                    (correct & mask).float().sum() / mask.float().sum().clamp(min=1.0))
        out["loss"] = total
        return out
