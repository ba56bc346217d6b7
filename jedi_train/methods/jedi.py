"""JEDI and its arms (METHOD.md section 1): per-dataset students, a teacher per dataset on the
concatenated features of the students, trained jointly from unlabelled clips. The arms start from the same
experts and read the same batches in the same order:

  jedi                  teachers read all students' features; distillation from unlabelled clips; the
                        teachers' supervised loss reaches foreign backbones (jedi.foreign_grad_scale)
  self_training         the control: each teacher reads its own student's features only; otherwise as jedi
                        (same views, same losses, same schedule). JEDI's claim is its gap to this arm.
  supervised            supervised continuation: the control's schedule with the unlabelled loss weight 0
  jedi_no_foreign_grad  jedi with the gradient path into foreign backbones closed
  jedi_soft, jedi_hard  jedi with soft (KL) or hard (thresholded pseudo-label) targets, whatever
                        jedi.distillation says: the targets ablation
  jedi_fit, self_training_fit  jedi and the control with teacher_init=fit whatever jedi.teacher_init says:
                        each teacher head starts as a logistic regression on the features it reads (for
                        JEDI all experts' features), as the multi-teacher KD baselines' maps do

The step itself is `JediModel.forward` (jedi_train/jedi.py); this module adapts it to the loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from jedi_train.jedi import DistillSettings, JediModel
from jedi_train.methods.base import FeatureMemo, LogitsFn, Method, StepBatch, TrainContext


@dataclass
class Config:
    teacher_init: Literal["expert", "fit"] = "expert"  # fit: logistic regression on labelled features
    distillation: Literal["soft", "hard"] = "soft"
    temperature: float = 1.0
    threshold: float = 0.8  # hard pseudo-labels: minimum teacher confidence
    distill_weight: float = 1.0  # lambda
    foreign_grad_scale: float = 1.0  # gradient of teacher losses into backbones j != d; 0 freezes
    foreign_grad_warmup_steps: int = 0  # foreign path ramps linearly from 0 to foreign_grad_scale over these steps
    teacher_cache: bool = False  # cached-teacher mode: unlabelled targets from a zarr feature cache
    teacher_cache_refresh_epochs: int = 1  # K: refill the cache with the current weights every K epochs
    teacher_cache_labelled: bool = False  # also serve foreign backbones' labelled features from a cache (fgs=0)
    teacher_cache_dir: str = ""  # default <run_dir>/feature_cache/<method> (where tools/cache_features.py writes)
    teacher_fit_steps: int = 300  # teacher_init=fit: L-BFGS iterations
    teacher_fit_weight_decay: float = 1e-3


@dataclass(frozen=True)
class Arm:
    teacher_inputs: str  # all: concat of every student's features; own: the own student's only
    unlabelled: bool  # learns from unlabelled clips (distillation term)
    foreign_grad: bool  # the teacher losses' gradient reaches foreign backbones (scaled by jedi.foreign_grad_scale)
    distillation: str | None = None  # soft | hard; None: jedi.distillation
    teacher_init: str | None = None  # expert | fit; None: jedi.teacher_init


ARMS = {
    "jedi": Arm(teacher_inputs="all", unlabelled=True, foreign_grad=True),
    "self_training": Arm(teacher_inputs="own", unlabelled=True, foreign_grad=False),
    "supervised": Arm(teacher_inputs="own", unlabelled=False, foreign_grad=False),
    "jedi_no_foreign_grad": Arm(teacher_inputs="all", unlabelled=True, foreign_grad=False),
    "jedi_soft": Arm(teacher_inputs="all", unlabelled=True, foreign_grad=True, distillation="soft"),
    "jedi_hard": Arm(teacher_inputs="all", unlabelled=True, foreign_grad=True, distillation="hard"),
    "jedi_fit": Arm(teacher_inputs="all", unlabelled=True, foreign_grad=True, teacher_init="fit"),
    "self_training_fit": Arm(teacher_inputs="own", unlabelled=True, foreign_grad=False, teacher_init="fit"),
}


class JediMethod(JediModel, Method):
    """A JEDI arm as a method: the JediModel (same parameters, same state-dict keys) plus the loop's hooks."""

    roles = ("student", "teacher")

    def __init__(self, arm_name: str, cfg: Config, backbones, num_classes, settings: DistillSettings,
                 loss_weights: dict[str, float]):
        arm = ARMS[arm_name]
        super().__init__(backbones, num_classes, teacher_inputs=arm.teacher_inputs, settings=settings,
                         loss_weights=loss_weights)
        self.arm_name, self.arm, self.cfg = arm_name, arm, cfg
        self.reads_unlabelled = arm.unlabelled
        # the supervised arm's teacher is no method of its own: it keeps a selection, not a column
        self.table_roles = ("student",) if not arm.unlabelled else None
        self.teacher_caches, self.labelled_caches = None, None

    def foreign_scale(self, step: int) -> float:
        """Scale of the teacher losses' gradient into foreign backbones: 0 for arms without that path, else a
        linear ramp from 0 to jedi.foreign_grad_scale over jedi.foreign_grad_warmup_steps."""
        if not self.arm.foreign_grad:
            return 0.0
        warmup = self.cfg.foreign_grad_warmup_steps
        return self.cfg.foreign_grad_scale * (min(1.0, step / warmup) if warmup > 0 else 1.0)

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        from jedi_train.cached_teacher import cached_foreign_features, cached_teacher_targets
        device = next(iter(batch.labels.values())).device
        return super().forward(
            labelled_clips=batch.labelled_clips, labels=batch.labels,
            unlabelled_clips=batch.unlabelled_clips, unlabelled_student_clips=batch.unlabelled_student_clips,
            unlabelled_true_labels=batch.unlabelled_true_labels, foreign_grad_scale=self.foreign_scale(batch.step),
            cached_teacher_logits=cached_teacher_targets(self.teacher_caches, batch.unlabelled_batches, device)
            if self.teacher_caches else None,
            cached_foreign_features=cached_foreign_features(self, self.labelled_caches, batch.labelled_batches, device)
            if self.labelled_caches else None)

    def logits(self, dataset: str, role: str, memo: FeatureMemo | None = None) -> LogitsFn:
        memo = memo or FeatureMemo()
        if role == "student":
            return lambda clips: self.student_heads[dataset](memo(self.backbones[dataset], clips))
        return lambda clips: self.teacher_heads[dataset](
            torch.cat([memo(self.backbones[j], clips) for j in self.teacher_sources(dataset)], dim=1))

    def bundle_parts(self, dataset: str, role: str):
        sources = [dataset] if role == "student" else self.teacher_sources(dataset)
        head = self.student_heads[dataset] if role == "student" else self.teacher_heads[dataset]
        return sources, [self.backbones[j] for j in sources], head

    def setup(self, context: TrainContext) -> None:
        if (self.arm.teacher_init or self.cfg.teacher_init) != "fit":
            return
        from jedi_train.cached_teacher import fit_teacher_heads
        fit = fit_teacher_heads(self.to(context.accelerator.device), context.streams, context.accelerator,
                                teacher_cache_dir(context.config, self.arm_name), self.cfg.teacher_fit_steps,
                                self.cfg.teacher_fit_weight_decay)
        context.accelerator.print(f"[{self.arm_name}] teacher_init=fit: " + ", ".join(
            f"{n} val {s['val_top1']:.1f} (was {s['val_top1_before']:.1f})" for n, s in fit.items()))

    def start_epoch(self, epoch: int, context: TrainContext) -> None:
        """Cached-teacher mode: refill the caches with the current weights every K epochs."""
        if not (self.cfg.teacher_cache and self.arm.unlabelled):
            return
        if epoch % self.cfg.teacher_cache_refresh_epochs != 0 and self.teacher_caches is not None:
            return
        from jedi_train.cached_teacher import refresh_teacher_cache
        cache_dir = teacher_cache_dir(context.config, self.arm_name)
        self.teacher_caches = refresh_teacher_cache(self, context.streams, context.accelerator, cache_dir)
        if self.cfg.teacher_cache_labelled and any(len(self.teacher_sources(n)) > 1 for n in self.names):
            self.labelled_caches = refresh_teacher_cache(self, context.streams, context.accelerator, cache_dir,
                                                         split="labelled", resident_features=True)


def teacher_cache_dir(config, arm_name: str) -> Path:
    """Where an arm's cached-teacher mode (and tools/cache_features.py) keeps its zarr caches."""
    root = Path(config.jedi.teacher_cache_dir) if config.jedi.teacher_cache_dir else config.run_dir / "feature_cache"
    return root / arm_name


def build(arm_name: str, config, infos, experts) -> JediMethod:
    """Students start as the experts; teachers start equal to them (T_d = E_d, METHOD.md step 3)."""
    cfg: Config = config.jedi
    settings = DistillSettings(distillation=ARMS[arm_name].distillation or cfg.distillation,
                               temperature=cfg.temperature, threshold=cfg.threshold,
                               distill_weight=cfg.distill_weight,
                               freeze_foreign_bn_stats=config.model.foreign_bn == "frozen_stats")
    method = JediMethod(arm_name, cfg, {name: expert.backbone for name, expert in experts.items()},
                        {name: len(info.classes) for name, info in infos.items()}, settings,
                        {name: config.datasets[name].loss_weight for name in infos})
    for name, expert in experts.items():
        method.student_heads[name].load_state_dict(expert.head.state_dict())
    method.init_teachers_from_students()
    return method
