"""Top-1 / top-5 over an evaluation stream: views of a clip are averaged in probability space, and
sums are reduced across processes so every rank reports the same numbers."""
from __future__ import annotations

from typing import Callable

import torch
from accelerate import Accelerator

from pipeline.contract import to_model_input


@torch.no_grad()
def accuracy(logits_fn: Callable[[torch.Tensor], torch.Tensor], batches, accelerator: Accelerator) -> dict:
    """`batches` yield `video` [B, V, 3, T, H, W] uint8 and `label` [B]. Returns top1, top5 (percent), clips."""
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # top1 hits, top5 hits, clips
    for batch in batches:
        video = batch["video"].to(accelerator.device, non_blocking=True)
        labels = batch["label"].to(accelerator.device)
        b, v = video.shape[:2]
        logits = logits_fn(to_model_input(video.flatten(0, 1)))
        probs = logits.float().softmax(dim=1).view(b, v, -1).mean(dim=1)
        top = probs.topk(min(5, probs.shape[1]), dim=1).indices
        sums[0] += (top[:, 0] == labels).sum()
        sums[1] += (top == labels[:, None]).any(dim=1).sum()
        sums[2] += b
    sums = accelerator.reduce(sums, reduction="sum")
    clips = int(sums[2].item())
    return {"top1": 100.0 * sums[0].item() / max(clips, 1), "top5": 100.0 * sums[1].item() / max(clips, 1),
            "clips": clips}
