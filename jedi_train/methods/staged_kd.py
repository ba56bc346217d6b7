"""Staged KD (Wang & Tang, TCSVT 2023, arXiv 2307.05201; METHOD.md section 2), per dataset d:

  teacher    every expert, frozen (MappedExperts): its level-l feature is the concatenation of the experts'
             level-l features (`VideoBackbone.stage_features`); its prediction of d's classes is the average
             of the experts' mapped predictions (foreign maps fitted by logistic regression in setup)
  assistant  a trainable copy of expert d, distilled from the teacher
  student    expert d, distilled from the assistant (detached: the student's terms never reach it)

The progressive cascade teacher -> assistant -> student bridges the capacity gap; both hops train in the
same step. Each hop distils every level through adapters (a linear map of the pooled level feature to the
target's width) with
  distribution   per-channel Gaussian KL over the batch, KL(N(mu_t, var_t) || N(mu_s, var_s)), in place
                 of point-wise L2: the target's statistics are matched, not each clip's vector
  correlation    the channel correlation between consecutive levels (Pearson over the batch, level l's
                 channels against level l+1's), matched by MSE: how a level's features flow into the next
(the assistant's adapters start as a least-squares map fitted in setup, the student's as the identity: see
`fit_adapters`) and the pseudo-label optimisation of the labels both models learn from:
  labelled       (1 - beta) onehot + beta teacher probs where the teacher is confident (>= threshold) and
                 agrees with the label; the one-hot label elsewhere
  unlabelled     the teacher's soft label on the weak view where its confidence >= threshold, learned on
                 the strong view; uncertain clips are dropped
Roles: the student and the assistant. The assistant is a full model of d's classes that this method trains
anyway; its row shows what the second hop of the cascade keeps or loses.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jedi_train.methods.base import FeatureMemo, LogitsFn, Method, StepBatch, TrainContext
from jedi_train.methods.teachers import MappedExperts


@dataclass
class Config:
    beta: float = 0.5  # weight of the teacher's probabilities in an optimised labelled target
    threshold: float = 0.8  # teacher confidence that softens a label / keeps an unlabelled clip
    distribution_weight: float = 1.0  # per-channel Gaussian KL of each level
    correlation_weight: float = 1.0  # consecutive-level correlation
    unlabelled_weight: float = 1.0  # soft cross-entropy to the teacher's confident soft labels
    teacher_fit_steps: int = 300  # L-BFGS iterations of the foreign experts' maps
    teacher_fit_weight_decay: float = 1e-3
    variance_floor: float = 0.1  # distribution term: variances floored at this fraction of the target's mean one


# ----- the loss terms -----------------------------------------------------------------------------------------
def gaussian_kl(student: torch.Tensor, target: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """Mean over channels of KL(N(mu_t, var_t) || N(mu_s, var_s)), the statistics of each channel over the
    batch [B, C]: 0.5 * (log(var_s / var_t) + (var_t + (mu_t - mu_s)^2) / var_s - 1). Both (biased)
    variances get `floor` times the target's mean channel variance added: a batch of a few clips estimates
    a channel's variance poorly, and a student variance near 0 makes the KL explode (with an absolute floor
    of 1e-5 it went from 6 to 524 in one step on the tiny shards)."""
    var_t = target.var(0, unbiased=False)
    floor = floor * var_t.mean().detach()
    mu_s, var_s = student.mean(0), student.var(0, unbiased=False) + floor
    mu_t, var_t = target.mean(0), var_t + floor
    return (0.5 * (torch.log(var_s / var_t) + (var_t + (mu_t - mu_s) ** 2) / var_s - 1)).mean()


def level_correlation(lower: torch.Tensor, upper: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """[C_l, C_l+1]: Pearson correlation over the batch of each channel of `lower` with each of `upper`."""
    def standardise(x):
        centred = x - x.mean(0)
        return centred / (centred.pow(2).mean(0) + eps).sqrt()
    return standardise(lower).T @ standardise(upper) / lower.shape[0]


def correlation_loss(student_levels: list[torch.Tensor], target_levels: list[torch.Tensor],
                     eps: float = 1e-5) -> torch.Tensor:
    """MSE between the student's and the target's consecutive-level correlations, averaged over the pairs."""
    return torch.stack([F.mse_loss(level_correlation(s_low, s_up, eps), level_correlation(t_low, t_up, eps))
                        for s_low, s_up, t_low, t_up in zip(student_levels, student_levels[1:],
                                                            target_levels, target_levels[1:])]).mean()


def optimised_labels(teacher_probs: torch.Tensor, labels: torch.Tensor, beta: float, threshold: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled targets: the one-hot label, softened to (1 - beta) onehot + beta teacher where the teacher is
    confident and predicts the label. Returns (targets [B, C], the softened clips' mask)."""
    onehot = F.one_hot(labels, teacher_probs.shape[1]).to(teacher_probs.dtype)
    confidence, predicted = teacher_probs.max(dim=1)
    softened = (confidence >= threshold) & (predicted == labels)
    targets = torch.where(softened[:, None], (1 - beta) * onehot + beta * teacher_probs, onehot)
    return targets, softened


def confident_soft_labels(teacher_probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unlabelled targets: the teacher's probabilities and the mask of clips it is confident on."""
    return teacher_probs, teacher_probs.max(dim=1).values >= threshold


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """-sum(target * log_softmax(logits)) per clip, averaged over the batch (masked clips count as 0)."""
    per_clip = -(targets.detach() * F.log_softmax(logits, dim=1)).sum(dim=1)
    return (per_clip * mask.to(per_clip.dtype)).mean() if mask is not None else per_clip.mean()


# ----- the method ---------------------------------------------------------------------------------------------
class StagedKD(Method):
    roles = ("student", "assistant")

    def __init__(self, cfg: Config, experts: dict, num_classes: dict[str, int], loss_weights: dict[str, float]):
        super().__init__()
        self.cfg, self.names, self.loss_weights = cfg, list(experts), loss_weights
        self.teacher = MappedExperts(experts, num_classes)
        teacher_dims = [sum(self.teacher.backbones[j].inner.stage_dims[level] for j in self.names)
                        for level in range(len(experts[self.names[0]].backbone.stage_dims))]
        self.assistant_backbones = nn.ModuleDict({d: copy.deepcopy(e.backbone) for d, e in experts.items()})
        self.assistant_heads = nn.ModuleDict({d: copy.deepcopy(e.head) for d, e in experts.items()})
        self.backbones = nn.ModuleDict({d: e.backbone for d, e in experts.items()})
        self.heads = nn.ModuleDict({d: e.head for d, e in experts.items()})
        self.assistant_adapters = nn.ModuleDict({  # assistant level -> teacher (all experts concatenated) level
            d: nn.ModuleList([nn.Linear(width, teacher_width) for width, teacher_width
                              in zip(self.backbones[d].stage_dims, teacher_dims)]) for d in self.names})
        self.student_adapters = nn.ModuleDict({  # student level -> assistant level (the same widths)
            d: nn.ModuleList([nn.Linear(width, width) for width in self.backbones[d].stage_dims]) for d in self.names})

    @torch.no_grad()
    def teacher_view(self, dataset: str, clips: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The teacher's concatenated level features and its averaged probabilities of `dataset`'s classes."""
        per_expert = {j: self.teacher.backbones[j].inner.stage_features(clips) for j in self.names}
        levels = [torch.cat([per_expert[j][level] for j in self.names], dim=1)
                  for level in range(len(per_expert[self.names[0]]))]
        probs = self.teacher.average_probs(dataset, {j: per_expert[j][-1] for j in self.names})
        return levels, probs

    def hop_terms(self, levels: list[torch.Tensor], adapters: nn.ModuleList, target_levels: list[torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """One hop of the cascade: (distribution, correlation) of the adapted levels against the target's."""
        adapted = [adapter(level) for adapter, level in zip(adapters, levels)]
        target_levels = [level.detach() for level in target_levels]
        distribution = torch.stack([gaussian_kl(s, t, self.cfg.variance_floor) for s, t in zip(adapted, target_levels)]).mean()
        return distribution, correlation_loss(adapted, target_levels)

    def terms(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """Every named term per dataset, not detached; `{d}/assistant` and `{d}/student` are each model's loss."""
        cfg, terms = self.cfg, {}
        for d in self.names:
            clips = batch.labelled_clips[d]
            teacher_levels, teacher_probs = self.teacher_view(d, clips)
            targets, softened = optimised_labels(teacher_probs, batch.labels[d], cfg.beta, cfg.threshold)
            assistant_levels = self.assistant_backbones[d].stage_features(clips)
            student_levels = self.backbones[d].stage_features(clips)
            for model, levels, head, adapters, target_levels in (
                    ("assistant", assistant_levels, self.assistant_heads[d], self.assistant_adapters[d], teacher_levels),
                    ("student", student_levels, self.heads[d], self.student_adapters[d], assistant_levels)):
                distribution, correlation = self.hop_terms(levels, adapters, target_levels)
                terms[f"{d}/{model}_ce"] = soft_cross_entropy(head(levels[-1]), targets)
                terms[f"{d}/{model}_distribution"] = distribution
                terms[f"{d}/{model}_correlation"] = correlation
            terms[f"{d}/softened_labels"] = softened.float().mean()
            if batch.unlabelled_clips is not None:
                _, weak_probs = self.teacher_view(d, batch.unlabelled_clips[d])
                soft_labels, confident = confident_soft_labels(weak_probs, cfg.threshold)
                strong = batch.student_view[d]
                terms[f"{d}/assistant_unlabelled"] = soft_cross_entropy(
                    self.assistant_heads[d](self.assistant_backbones[d](strong)), soft_labels, confident)
                terms[f"{d}/student_unlabelled"] = soft_cross_entropy(
                    self.heads[d](self.backbones[d](strong)), soft_labels, confident)
                terms[f"{d}/kept_unlabelled"] = confident.float().mean()
            for model in ("assistant", "student"):
                terms[f"{d}/{model}"] = (terms[f"{d}/{model}_ce"]
                                         + cfg.distribution_weight * terms[f"{d}/{model}_distribution"]
                                         + cfg.correlation_weight * terms[f"{d}/{model}_correlation"]
                                         + cfg.unlabelled_weight * terms.get(f"{d}/{model}_unlabelled", 0.0))
        return terms

    def forward(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        terms = self.terms(batch)
        total = sum(self.loss_weights[d] * (terms[f"{d}/assistant"] + terms[f"{d}/student"]) for d in self.names)
        return {"loss": total} | {name: value.detach() for name, value in terms.items()}

    def logits(self, dataset: str, role: str, memo: FeatureMemo | None = None) -> LogitsFn:
        memo = memo or FeatureMemo()
        backbone, head = self.model(dataset, role)
        return lambda clips: head(memo(backbone, clips))

    def model(self, dataset: str, role: str) -> tuple[nn.Module, nn.Linear]:
        if role == "student":
            return self.backbones[dataset], self.heads[dataset]
        return self.assistant_backbones[dataset], self.assistant_heads[dataset]

    def bundle_parts(self, dataset: str, role: str):
        backbone, head = self.model(dataset, role)
        return [dataset], [backbone], head

    def setup(self, context: TrainContext) -> None:
        self.to(context.accelerator.device)
        report = self.teacher.fit(context, self.cfg.teacher_fit_steps, self.cfg.teacher_fit_weight_decay)
        context.accelerator.print("[staged_kd] foreign experts' maps, labelled top-1: " + "; ".join(
            f"{d}: " + ", ".join(f"{j} {top1:.1f}" for j, top1 in maps.items()) for d, maps in report.items()))
        fit = self.fit_adapters(context)
        context.accelerator.print("[staged_kd] assistant adapters fitted, distribution loss on the labelled split "
                                  + ", ".join(f"{d} {before:.3g} -> {after:.3g}" for d, (before, after) in fit.items()))

    @torch.no_grad()
    def fit_adapters(self, context: TrainContext) -> dict[str, tuple[float, float]]:
        """Start the adapters where the distribution loss is small: a level's pooled features vary little
        over clips next to their mean, and the Gaussian KL counts a mean mismatch in units of the target's
        spread, so random adapters start it in the thousands (measured on the tiny shards: ~1600 against a
        CE of 1.8). The student's adapters start as the identity (its target, the assistant, starts equal to
        it); the assistant's as the ridge least-squares map from expert d's levels to the teacher's, on d's
        labelled split. Returns each dataset's mean distribution loss on that split before and after."""
        from accelerate.utils import gather_object

        from pipeline.contract import to_model_input
        device = context.accelerator.device
        report = {}
        for d in self.names:
            for adapter in self.student_adapters[d]:
                adapter.weight.copy_(torch.eye(adapter.in_features))
                adapter.bias.zero_()
            rows = []
            was_training = self.backbones[d].training
            self.backbones[d].eval()
            for batch in context.streams.eval(d, "labelled", multi_view=False):
                clips = to_model_input(batch["video"].to(device).flatten(0, 1))
                rows.append(([x.cpu() for x in self.backbones[d].stage_features(clips)],
                             [y.cpu() for y in self.teacher_view(d, clips)[0]]))
            self.backbones[d].train(was_training)
            if context.accelerator.num_processes > 1:
                rows = [row for part in gather_object([rows]) for row in part]
            own = [torch.cat([levels[level] for levels, _ in rows]) for level in range(len(rows[0][0]))]
            target = [torch.cat([levels[level] for _, levels in rows]) for level in range(len(rows[0][1]))]
            adapters = self.assistant_adapters[d]
            before = torch.stack([gaussian_kl(a(x.to(device)), y.to(device), self.cfg.variance_floor)
                                  for a, x, y in zip(adapters, own, target)]).mean().item()
            for adapter, x, y in zip(adapters, own, target):
                weight, bias = ridge_regression(x, y)
                adapter.weight.copy_(weight.to(adapter.weight))
                adapter.bias.copy_(bias.to(adapter.bias))
            after = torch.stack([gaussian_kl(a(x.to(device)), y.to(device), self.cfg.variance_floor)
                                 for a, x, y in zip(adapters, own, target)]).mean().item()
            report[d] = (before, after)
        return report


def ridge_regression(x: torch.Tensor, y: torch.Tensor, strength: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """y ~ x @ weight.T + bias by least squares with an L2 penalty of `strength` times the mean variance of
    x's channels (a scale-free penalty); returns (weight [C_y, C_x], bias [C_y])."""
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    penalty = strength * gram.diagonal().mean().clamp(min=1e-12)
    weight = torch.linalg.solve(gram + penalty * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc).T
    return weight.float(), (y_mean - weight @ x_mean).float()


def build(config, infos, experts) -> StagedKD:
    """Students start as the experts; assistants as copies of them; the teacher is all experts, frozen."""
    return StagedKD(config.staged_kd, experts, {d: len(info.classes) for d, info in infos.items()},
                    {d: config.datasets[d].loss_weight for d in infos})
