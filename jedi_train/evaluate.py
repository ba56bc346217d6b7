"""Top-1 / top-5 over an evaluation stream: views of a clip are averaged in probability space, and
sums are reduced across processes so every rank reports the same numbers. Several models can be scored
on one pass over the stream (each batch is decoded once), with their per-clip predictions for paired tests."""
from __future__ import annotations

from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from pipeline.contract import to_model_input

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_models(logits_fns: dict[str, LogitsFn], batches, accelerator: Accelerator,
                    predictions: bool = False) -> dict[str, dict]:
    """`batches` yield `video` [B, V, 3, T, H, W] uint8, `label` [B] and `key`. Returns, per model name,
    top1, top5 (percent) and clips; with `predictions`, also `predictions`: {sample key: [top-1 class,
    label]} over all ranks (each clip once)."""
    device = accelerator.device
    sums = torch.zeros(len(logits_fns), 3, dtype=torch.float64, device=device)  # top1 hits, top5 hits, clips
    predicted: dict[str, dict[str, list[int]]] = {name: {} for name in logits_fns}
    for batch in batches:
        video = batch["video"].to(device, non_blocking=True)
        labels = batch["label"].to(device)
        b, v = video.shape[:2]
        clips = to_model_input(video.flatten(0, 1))
        for i, (name, logits_fn) in enumerate(logits_fns.items()):
            probs = logits_fn(clips).float().softmax(dim=1).view(b, v, -1).mean(dim=1)
            top = probs.topk(min(5, probs.shape[1]), dim=1).indices
            sums[i, 0] += (top[:, 0] == labels).sum()
            sums[i, 1] += (top == labels[:, None]).any(dim=1).sum()
            sums[i, 2] += b
            if predictions:
                for key, guess, label in zip(batch["key"], top[:, 0].tolist(), labels.tolist()):
                    predicted[name][key] = [guess, label]
    sums = accelerator.reduce(sums, reduction="sum")
    if predictions and accelerator.num_processes > 1:
        merged = {name: {} for name in logits_fns}
        for part in gather_object([predicted]):
            for name, rows in part.items():
                merged[name].update(rows)
        predicted = merged
    results = {}
    for i, name in enumerate(logits_fns):
        clips_seen = int(sums[i, 2].item())
        results[name] = {"top1": 100.0 * sums[i, 0].item() / max(clips_seen, 1),
                         "top5": 100.0 * sums[i, 1].item() / max(clips_seen, 1), "clips": clips_seen}
        if predictions:
            results[name]["predictions"] = predicted[name]
    return results


def accuracy(logits_fn: LogitsFn, batches, accelerator: Accelerator) -> dict:
    """One model's top1, top5 (percent) and clips over `batches`."""
    return evaluate_models({"model": logits_fn}, batches, accelerator)["model"]
