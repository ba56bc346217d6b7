"""MLFD: multi-level feature distillation of a joint teacher (Iordache, Alexe, Ionescu, arXiv 2410.22184;
METHOD.md section 2), JEDI's closest successor. Supervised only: it reads no unlabelled clips.

Two phases share the schedule's epochs:
  teacher phase (the first `mlfd.teacher_epochs`)  the joint teacher reads copies of every expert's backbone,
      concatenates their pooled features at each level of `VideoBackbone.stage_features` and has one head
      per dataset on all levels together; backbone copies and heads are fine-tuned by cross-entropy on the
      labelled clips of every dataset. The students are not stepped: their selection stays at the experts.
  student phase (the rest)  the teacher is frozen; student d (starting as expert d) learns on d's labelled
      clips from (1 - kd_weight) CE + kd_weight KD (Hinton, T = 5: an even mix, as the public code) plus
      the multi-level feature distillation: at each level an adapter maps the student's feature to the
      width of the teacher's concatenated feature, regressed by MSE.
The phase lives in a buffer (a resume and `load_selected` see it) and is switched in `start_epoch`.

The teacher's heads start fitted (`teacher_init=fit`: logistic regression on the frozen multi-level
features of each dataset's labelled split, in `setup`) or at zero (`zeros`). The public code fuses levels
through learned layers before its heads; here a level is a pooled feature and the fusion is the
concatenation the head reads.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from jedi_train.losses import soft_distillation
from jedi_train.methods.base import FeatureMemo, LogitsFn, Method, StepBatch, TrainContext
from jedi_train.models import frozen_batchnorm_stats

TEACHER_PHASE, STUDENT_PHASE = 0, 1


@dataclass
class Config:
    teacher_epochs: int = 2  # schedule epochs that fine-tune the joint teacher; the remaining ones train students
    teacher_init: Literal["fit", "zeros"] = "fit"  # the teacher heads' start (fit: logistic regression in setup)
    teacher_fit_steps: int = 300  # teacher_init=fit: L-BFGS iterations
    teacher_fit_weight_decay: float = 1e-3
    temperature: float = 5.0  # Hinton KD temperature (the public code's T)
    kd_weight: float = 0.5  # student loss: (1 - kd_weight) CE + kd_weight KD + feature_weight FD
    feature_weight: float = 1.0  # multi-level feature distillation (MSE through the adapters)


class LevelReader:
    """A backbone's `stage_features` as a callable `FeatureMemo` can key (not a module: no parameters)."""

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone

    def __call__(self, clips: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.stage_features(clips)


class JointTeacher(nn.Module):
    """Copies of every expert's backbone; level l of the teacher is concat_j(level l of backbone j); one
    head per dataset on all levels concatenated."""

    def __init__(self, experts: dict, num_classes: dict[str, int]):
        super().__init__()
        self.names = list(experts)
        self.backbones = nn.ModuleDict({j: copy.deepcopy(expert.backbone) for j, expert in experts.items()})
        depth = {len(b.stage_dims) for b in self.backbones.values()}
        if len(depth) != 1:
            raise ValueError(f"mlfd: the experts' backbones have different numbers of levels {depth}")
        self.level_dims = [sum(b.stage_dims[level] for b in self.backbones.values()) for level in range(depth.pop())]
        self.heads = nn.ModuleDict({d: nn.Linear(sum(self.level_dims), num_classes[d]) for d in self.names})
        with torch.no_grad():
            for head in self.heads.values():
                head.weight.zero_()
                head.bias.zero_()
        self.readers = {j: LevelReader(b) for j, b in self.backbones.items()}

    def levels(self, clips: torch.Tensor, own: str | None = None, freeze_foreign_bn: bool = True,
               memo: FeatureMemo | None = None) -> list[torch.Tensor]:
        """The teacher's level features of `clips` (of dataset `own`): [B, level_dims[l]] per level. Backbone
        j != own keeps its BatchNorm statistics (the clips are foreign to it)."""
        per_backbone = []
        for j in self.names:
            if memo is not None:
                per_backbone.append(memo(self.readers[j], clips))
                continue
            with frozen_batchnorm_stats(self.backbones[j], freeze_foreign_bn and j != own):
                per_backbone.append(self.readers[j](clips))
        return [torch.cat([levels[level] for levels in per_backbone], dim=1) for level in range(len(self.level_dims))]

    def logits(self, dataset: str, levels: list[torch.Tensor]) -> torch.Tensor:
        return self.heads[dataset](torch.cat(levels, dim=1))


class MLFD(Method):
    roles = ("student", "teacher")
    reads_unlabelled = False

    def __init__(self, cfg: Config, experts: dict, num_classes: dict[str, int], loss_weights: dict[str, float],
                 freeze_foreign_bn: bool = True):
        super().__init__()
        self.cfg, self.names, self.loss_weights = cfg, list(experts), loss_weights
        self.freeze_foreign_bn = freeze_foreign_bn
        self.teacher = JointTeacher(experts, num_classes)  # copies, made before the students take the experts
        self.backbones = nn.ModuleDict({d: expert.backbone for d, expert in experts.items()})
        self.heads = nn.ModuleDict({d: expert.head for d, expert in experts.items()})
        self.adapters = nn.ModuleDict({
            d: nn.ModuleList([nn.Linear(width, teacher_width) for width, teacher_width
                              in zip(self.backbones[d].stage_dims, self.teacher.level_dims)])
            for d in self.names})
        self.register_buffer("phase", torch.tensor(TEACHER_PHASE))

    @property
    def in_teacher_phase(self) -> bool:
        return int(self.phase) == TEACHER_PHASE

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        terms = self.teacher_terms(batch) if self.in_teacher_phase else self.student_terms(batch)
        total = sum(self.loss_weights[d] * terms[f"{d}/loss"] for d in self.names)
        return {"loss": total} | {name: value.detach() for name, value in terms.items()}

    def teacher_terms(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Teacher phase: the joint teacher's cross-entropy on each dataset's labelled clips."""
        terms = {}
        for d in self.names:
            levels = self.teacher.levels(batch.labelled_clips[d], own=d, freeze_foreign_bn=self.freeze_foreign_bn)
            terms[f"{d}/teacher_ce"] = F.cross_entropy(self.teacher.logits(d, levels), batch.labels[d])
            terms[f"{d}/loss"] = terms[f"{d}/teacher_ce"]
        return terms

    def student_terms(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Student phase: CE, KD from the frozen joint teacher's head d, multi-level feature distillation."""
        cfg, terms = self.cfg, {}
        for d in self.names:
            clips = batch.labelled_clips[d]
            with torch.no_grad(), frozen_batchnorm_stats(self.teacher):
                teacher_levels = self.teacher.levels(clips, own=d)
                teacher_logits = self.teacher.logits(d, teacher_levels)
            student_levels = self.backbones[d].stage_features(clips)
            student_logits = self.heads[d](student_levels[-1])
            ce = F.cross_entropy(student_logits, batch.labels[d])
            kd = soft_distillation(student_logits, teacher_logits, cfg.temperature)
            fd = torch.stack([F.mse_loss(adapter(student), teacher) for adapter, student, teacher
                              in zip(self.adapters[d], student_levels, teacher_levels)]).mean()
            terms |= {f"{d}/ce": ce, f"{d}/kd": kd, f"{d}/fd": fd,
                      f"{d}/loss": (1 - cfg.kd_weight) * ce + cfg.kd_weight * kd + cfg.feature_weight * fd}
        return terms

    def logits(self, dataset: str, role: str, memo: FeatureMemo | None = None) -> LogitsFn:
        memo = memo or FeatureMemo()
        if role == "student":
            return lambda clips: self.heads[dataset](memo(self.backbones[dataset], clips))
        return lambda clips: self.teacher.logits(dataset, self.teacher.levels(clips, memo=memo))

    def bundle_parts(self, dataset: str, role: str):
        if role == "student":
            return [dataset], [self.backbones[dataset]], self.heads[dataset]
        return None  # the teacher's head reads every level, not only the backbones' final features

    def start_epoch(self, epoch: int, context: TrainContext) -> None:
        phase = TEACHER_PHASE if epoch < self.cfg.teacher_epochs else STUDENT_PHASE
        if phase != int(self.phase):
            context.accelerator.print(f"[mlfd] epoch {epoch + 1}: the joint teacher is frozen; the students learn from it")
        self.phase.fill_(phase)

    def setup(self, context: TrainContext) -> None:
        if self.cfg.teacher_init != "fit":
            return
        report = self.fit_teacher_heads(context)
        context.accelerator.print("[mlfd] teacher heads fitted on labelled multi-level features: labelled top-1 "
                                  + ", ".join(f"{d} {top1:.1f}" for d, top1 in report.items()))

    @torch.no_grad()
    def fit_teacher_heads(self, context: TrainContext) -> dict[str, float]:
        """Head d <- logistic regression on the teacher's multi-level features of d's labelled split (centre
        crop, eval mode; every rank fits on the same rows). Returns each head's labelled top-1."""
        from accelerate.utils import gather_object

        from jedi_train.cached_teacher import fit_linear_head
        from pipeline.contract import to_model_input
        device = context.accelerator.device
        self.to(device)
        was_training = self.teacher.training
        self.teacher.eval()
        report = {}
        for d in self.names:
            rows, labels = [], []
            for batch in context.streams.eval(d, "labelled", multi_view=False):
                levels = self.teacher.levels(to_model_input(batch["video"].to(device).flatten(0, 1)))
                rows.append(torch.cat(levels, dim=1).float().cpu())
                labels.append(batch["label"].cpu())
            parts = gather_object([(rows, labels)]) if context.accelerator.num_processes > 1 else [(rows, labels)]
            x = torch.cat([row for part_rows, _ in parts for row in part_rows])
            y = torch.cat([label for _, part_labels in parts for label in part_labels])
            head = self.teacher.heads[d]
            with torch.enable_grad():
                weight, bias = fit_linear_head(x, y, head.out_features, self.cfg.teacher_fit_steps,
                                               self.cfg.teacher_fit_weight_decay)
            head.weight.copy_(weight.to(device))
            head.bias.copy_(bias.to(device))
            report[d] = 100.0 * ((x @ weight.T + bias).argmax(1) == y).float().mean().item()
        self.teacher.train(was_training)
        return report


def build(config, infos, experts) -> MLFD:
    """Students start as the experts; the joint teacher starts from copies of them."""
    return MLFD(config.mlfd, experts, {d: len(info.classes) for d, info in infos.items()},
                {d: config.datasets[d].loss_weight for d in infos},
                freeze_foreign_bn=config.model.foreign_bn == "frozen_stats")
