"""Multi-dataset joint supervised training: ONE backbone shared by every dataset, one linear head per
dataset, labelled clips only,

    loss = sum_d w_d * CE(head_d(backbone(labelled clips of d)), y_d).

The shared backbone starts as the expert of the dataset with the most labelled clips (the broad one,
e.g. Kinetics), and that dataset's head as its expert's head; every other head starts from logistic
regression on the shared backbone's frozen features of its dataset's labelled split (setup(), the same
fit as the JEDI teachers' `teacher_init=fit`), so step 0 already predicts every dataset's classes.
One backbone pass per step carries all datasets' labelled clips in training mode (the shared backbone's
normalisation statistics are those of the mix, as in any joint training).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jedi_train.methods.base import FeatureMemo, LogitsFn, Method, StepBatch, TrainContext
from jedi_train.methods.teachers import labelled_features


@dataclass
class Config:
    head_fit_steps: int = 300  # L-BFGS iterations of each starting head's logistic regression
    head_fit_weight_decay: float = 1e-3


class JointSupervised(Method):
    roles = ("student",)
    reads_unlabelled = False

    def __init__(self, cfg: Config, experts: dict, num_classes: dict[str, int], broad: str,
                 loss_weights: dict[str, float]):
        super().__init__()
        self.cfg = cfg
        self.names = list(experts)
        self.broad = broad
        self.backbone = experts[broad].backbone
        self.heads = nn.ModuleDict({
            d: experts[broad].head if d == broad else nn.Linear(self.backbone.feature_dim, num_classes[d])
            for d in self.names})
        self.loss_weights = loss_weights

    @torch.no_grad()
    def setup(self, context: TrainContext) -> None:
        from jedi_train.cached_teacher import fit_linear_head
        self.to(context.accelerator.device)
        was_training = self.training
        self.backbone.eval()
        fitted = {}
        for d in self.names:
            if d == self.broad:
                continue
            rows, y = labelled_features(context, d, lambda clips: {"shared": self.backbone(clips)})
            head = self.heads[d]
            with torch.enable_grad():
                weight, bias = fit_linear_head(rows["shared"], y, head.out_features, self.cfg.head_fit_steps,
                                               self.cfg.head_fit_weight_decay)
            head.weight.copy_(weight.to(head.weight))
            head.bias.copy_(bias.to(head.bias))
            fitted[d] = 100.0 * ((rows["shared"] @ weight.T + bias).argmax(1) == y).float().mean().item()
        self.train(was_training)
        context.accelerator.print(f"[joint_supervised] shared backbone from the {self.broad} expert; heads fitted "
                                  "on it, labelled top-1: " + ", ".join(f"{d} {v:.1f}" for d, v in fitted.items()))

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        clips = [batch.labelled_clips[d] for d in self.names]
        features = self.backbone(torch.cat(clips)).split([c.shape[0] for c in clips])
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        for d, part in zip(self.names, features):
            ce = F.cross_entropy(self.heads[d](part), batch.labels[d])
            total = total + self.loss_weights[d] * ce
            out[f"{d}/ce"] = ce.detach()
        out["loss"] = total
        return out

    def logits(self, dataset: str, role: str, memo: FeatureMemo | None = None) -> LogitsFn:
        memo = memo or FeatureMemo()
        return lambda clips: self.heads[dataset](memo(self.backbone, clips))

    def bundle_parts(self, dataset: str, role: str):
        return [self.broad], [self.backbone], self.heads[dataset]


def build(config, infos, experts) -> JointSupervised:
    broad = max(infos, key=lambda d: infos[d].samples("labelled"))  # ties: the first dataset listed
    return JointSupervised(config.joint_supervised, experts, {d: len(info.classes) for d, info in infos.items()},
                           broad, {d: config.datasets[d].loss_weight for d in infos})
