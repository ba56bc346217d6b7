"""The experts as teachers of every dataset: frozen copies of all experts' backbones, and for each dataset d
a linear head per expert j that maps f_j to d's classes (METHOD.md section 2, "Hinton KD from the average of
experts ... mapped through a head trained on labelled data"). Expert d's own map is its trained head; a
foreign expert never saw d's classes, so its map is fitted once before training (`fit`: logistic regression
on its frozen features of d's labelled clips, centre crop). Everything here is frozen during the run.

Shared by the multi-teacher methods (Hinton KD, CA-MKD, graph distillation).
"""
from __future__ import annotations

import torch
from torch import nn

from jedi_train.methods.base import FeatureMemo, frozen_copy


class MappedExperts(nn.Module):
    def __init__(self, experts: dict, num_classes: dict[str, int]):
        super().__init__()
        self.names = list(experts)
        self.backbones = nn.ModuleDict({j: frozen_copy(expert.backbone) for j, expert in experts.items()})
        self.maps = nn.ModuleDict({
            d: nn.ModuleDict({j: nn.Linear(experts[j].backbone.feature_dim, num_classes[d]) for j in self.names})
            for d in self.names})
        with torch.no_grad():
            for d in self.names:
                self.maps[d][d].load_state_dict(experts[d].head.state_dict())
        self.maps.requires_grad_(False)

    @torch.no_grad()
    def fit(self, context, steps: int = 300, weight_decay: float = 1e-3) -> dict[str, dict[str, float]]:
        """Fit every foreign map on d's labelled split (all ranks fit on the same rows); returns each map's
        labelled top-1, so a map that learned nothing shows up in the log."""
        from jedi_train.cached_teacher import fit_linear_head
        report = {}
        for d in self.names:
            rows, y = labelled_features(context, d, self.features)
            report[d] = {}
            for j in self.names:
                if j == d:
                    continue
                with torch.enable_grad():
                    weight, bias = fit_linear_head(rows[j], y, self.maps[d][j].out_features, steps, weight_decay)
                self.maps[d][j].weight.copy_(weight.to(self.maps[d][j].weight))
                self.maps[d][j].bias.copy_(bias.to(self.maps[d][j].bias))
                report[d][j] = 100.0 * ((rows[j] @ weight.T + bias).argmax(1) == y).float().mean().item()
        return report

    def features(self, clips: torch.Tensor, memo: FeatureMemo | None = None) -> dict[str, torch.Tensor]:
        """Every frozen expert's features of `clips` (no gradient, eval mode)."""
        return {j: (memo(self.backbones[j], clips) if memo else self.backbones[j](clips)) for j in self.names}

    def logits(self, d: str, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """[K, B, C_d]: each expert's prediction of d's classes, through its map."""
        return torch.stack([self.maps[d][j](features[j]) for j in self.names])

    def average_probs(self, d: str, features: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
        """The experts' average prediction of d's classes: mean over experts of softmax(logits / T)."""
        return (self.logits(d, features) / temperature).softmax(dim=-1).mean(dim=0)


@torch.no_grad()
def labelled_features(context, d: str, features) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`features(clips) -> {name: [B, k]}` on every clip of d's labelled split (single centre clip), gathered
    from all ranks in the same order, so every rank fits the same head on the same rows; returns ({name:
    float rows on the CPU}, labels)."""
    from accelerate.utils import gather_object

    from pipeline.contract import to_model_input
    device = context.accelerator.device
    rows: dict[str, list] = {}
    labels = []
    for batch in context.streams.eval(d, "labelled", multi_view=False):
        for name, part in features(to_model_input(batch["video"].to(device).flatten(0, 1))).items():
            rows.setdefault(name, []).append(part.float().cpu())
        labels.append(batch["label"].cpu())
    parts = gather_object([(rows, labels)]) if context.accelerator.num_processes > 1 else [(rows, labels)]
    names = dict.fromkeys(name for part_rows, _ in parts for name in part_rows)  # a rank may have had no batch
    return ({name: torch.cat([row for part_rows, _ in parts for row in part_rows.get(name, [])]) for name in names},
            torch.cat([label for _, part_labels in parts for label in part_labels]))
