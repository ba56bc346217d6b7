"""Knowledge distillation from all the experts at once, the part Hinton KD and CA-MKD share: the
teachers are the frozen experts, each mapped to dataset d's classes (methods/teachers.py, MappedExperts,
foreign maps fitted in setup()); student d starts as expert d and learns

    loss_d = CE(student(labelled), y) + alpha * T^2 * KL(target_T || softmax(student / T))

on every clip of the step: the labelled clips (the teachers and the student read the same view; Hinton's
transfer set includes the training set) and the unlabelled clips (teachers read the weak view, the
student the strong view). How the K teachers' predictions combine into `target_T` is what distinguishes
the methods (`target_probs`). The `teacher` role is that combination at T = 1 on clips without a label
(logits = log of the combined probabilities): how good a target the student is chasing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from jedi_train.losses import soft_target_distillation
from jedi_train.methods.base import FeatureMemo, LogitsFn, StepBatch, TrainContext
from jedi_train.methods.students import ExpertStudents
from jedi_train.methods.teachers import MappedExperts


class MultiTeacherKD(ExpertStudents):
    roles = ("student", "teacher")
    log_name = "multi_teacher_kd"  # the method's name in log lines

    def __init__(self, experts: dict, num_classes: dict[str, int], loss_weights: dict[str, float],
                 temperature: float, alpha: float):
        teachers = MappedExperts(experts, num_classes)  # frozen copies, made before the students train
        super().__init__(experts, loss_weights)
        self.teachers = teachers
        self.temperature, self.alpha = temperature, alpha

    def target_probs(self, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                     temperature: float) -> torch.Tensor:
        """[K, B, C] teachers' logits (and the labels, None on unlabelled clips) -> [B, C] target."""
        raise NotImplementedError

    def setup(self, context: TrainContext) -> None:
        fit = self.to(context.accelerator.device).teachers.fit(context)
        context.accelerator.print(f"[{self.log_name}] fitted maps of foreign experts, labelled top-1: " + "; ".join(
            f"{d}: " + ", ".join(f"{j} {top1:.1f}" for j, top1 in maps.items()) for d, maps in fit.items()))

    def teacher_logits(self, d: str, clips: torch.Tensor, memo: FeatureMemo | None = None) -> torch.Tensor:
        return self.teachers.logits(d, self.teachers.features(clips, memo))

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        t = self.temperature
        for d in self.names:
            labelled_logits, strong_logits = self.student_passes(d, batch.labelled_clips[d], batch.student_view[d])
            with torch.no_grad():  # one pass of each frozen expert over the labelled clips and the weak view
                n_labelled = batch.labelled_clips[d].shape[0]
                teachers = self.teacher_logits(d, torch.cat([batch.labelled_clips[d], batch.unlabelled_clips[d]]))
                labelled_target = self.target_probs(teachers[:, :n_labelled], batch.labels[d], t)
                unlabelled_target = self.target_probs(teachers[:, n_labelled:], None, t)
            ce = F.cross_entropy(labelled_logits, batch.labels[d])
            kd = soft_target_distillation(torch.cat([labelled_logits, strong_logits]),
                                          torch.cat([labelled_target, unlabelled_target]), t)
            total = total + self.loss_weights[d] * (ce + self.alpha * kd)
            out[f"{d}/ce"] = ce.detach()
            out[f"{d}/kd"] = kd.detach()
            if batch.unlabelled_true_labels is not None:  # diagnostics: how often the target's top class is right
                out[f"{d}/target_precision"] = (unlabelled_target.argmax(1) == batch.unlabelled_true_labels[d]
                                                ).float().mean()
        out["loss"] = total
        return out

    def logits(self, dataset: str, role: str, memo: FeatureMemo | None = None) -> LogitsFn:
        if role == "student":
            return super().logits(dataset, role, memo)
        memo = memo or FeatureMemo()
        return lambda clips: self.target_probs(self.teacher_logits(dataset, clips, memo), None, 1.0
                                               ).clamp(min=1e-12).log()
