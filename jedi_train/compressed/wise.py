"""WISE: weighted inference with early exits (METHOD.md section 2).

One weight vector per prefix of exits: w_n in R^n combines the logits of exits 1..n as
sum_i w_n[i] * logits_i. Each w_n is learned on the training set's exit logits with cross-entropy plus
an L1 penalty on w_n. At inference the walk visits exits 1, 2, ... (exits.exit_names order) and stops at
the first n where max softmax(sum_i w_n[i] * logits_i) >= threshold (the last exit always answers);
the clip costs the MACs of everything exits 1..n needed (exits.exit_costs()["walk"][n - 1]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from jedi_train.compressed.exits import exit_stream


def combine(prefix_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[n, B, classes] logits of exits 1..n and w_n [n] -> [B, classes]. Elementwise on purpose: it adds
    n * classes multiply-adds, which the FLOP counter leaves out (it counts matrix products only)."""
    return (weights.view(-1, 1, 1) * prefix_logits).sum(0)


def fit_wise(train_logits: torch.Tensor, labels: torch.Tensor, *, l1: float, steps: int, lr: float) -> list[torch.Tensor]:
    """w_1 .. w_E from training logits [E, N, classes] (full batch, Adam), each initialised to 1/n."""
    weights = []
    for n in range(1, len(train_logits) + 1):
        w = torch.full((n,), 1.0 / n, requires_grad=True)
        optimiser = torch.optim.Adam([w], lr=lr)
        for _ in range(steps):
            loss = F.cross_entropy(combine(train_logits[:n], w), labels) + l1 * w.abs().sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        weights.append(w.detach().clone())
    return weights


@torch.no_grad()
def walk(exit_logits: torch.Tensor, weights: list[torch.Tensor], threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated walk over precomputed logits [E, B, classes]: (0-based exit taken [B], prediction [B])."""
    exits = len(exit_logits)
    taken = torch.full((exit_logits.shape[1],), exits - 1, dtype=torch.int64)
    prediction = torch.zeros(exit_logits.shape[1], dtype=torch.int64)
    open_ = torch.ones(exit_logits.shape[1], dtype=torch.bool)
    for n in range(1, exits + 1):
        probabilities = F.softmax(combine(exit_logits[:n], weights[n - 1]), dim=1)
        confidence, guess = probabilities.max(1)
        stop = open_ & ((confidence >= threshold) | torch.tensor(n == exits))
        taken[stop], prediction[stop] = n - 1, guess[stop]
        open_ &= ~stop
    return taken, prediction


@torch.no_grad()
def early_exit_predict(nets, heads, weights: list[torch.Tensor], one_clip: dict[str, torch.Tensor],
                       threshold: float) -> tuple[int, int]:
    """The real walk for one clip: computes exits lazily and stops at the first confident one.
    Returns (prediction, 0-based exit); run it under FlopCounterMode to count what it spent."""
    collected = []
    for n, logits in enumerate(exit_stream(nets, heads, one_clip), start=1):
        collected.append(logits)
        probabilities = F.softmax(combine(torch.stack(collected), weights[n - 1]), dim=1)[0]
        if probabilities.max() >= threshold or n == len(weights):
            return int(probabilities.argmax()), n - 1
    raise ValueError("exit_stream produced fewer exits than there are weight vectors")


def sweep(exit_logits: torch.Tensor, labels: torch.Tensor, weights: list[torch.Tensor], walk_macs: list[int],
          thresholds: list[float]) -> list[dict]:
    """Accuracy (%) and mean MACs per clip of the walk at each threshold, with how often each exit answered."""
    costs = torch.tensor(walk_macs, dtype=torch.float64)
    rows = []
    for threshold in thresholds:
        taken, prediction = walk(exit_logits, weights, threshold)
        rows.append({"threshold": threshold,
                     "accuracy": 100.0 * (prediction == labels).double().mean().item(),
                     "mean_macs": costs[taken].mean().item(),
                     "exit_counts": torch.bincount(taken, minlength=len(exit_logits)).tolist()})
    return rows
