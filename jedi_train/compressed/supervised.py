"""Cross-entropy training of one modality net on its modality, and top-1 of any logits function."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from jedi_train.compressed.data import ModalitySplit, eval_batches, train_batches
from jedi_train.compressed.nets import ModalityNet


def train_net(net: ModalityNet, modality: str, train: ModalitySplit, *, epochs: int, batch_size: int, lr: float,
              weight_decay: float, seed: int, flip: bool, log=print) -> list[dict]:
    net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in tqdm(range(epochs), desc=f"{modality} net", unit="epoch", leave=False):
        started, total, correct, clips = time.perf_counter(), 0.0, 0, 0
        for inputs, labels in train_batches(train, batch_size, generator, flip):
            logits = net(inputs[modality])
            loss = F.cross_entropy(logits, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            clips += len(labels)
        seconds = time.perf_counter() - started
        record = {"epoch": epoch, "loss": total / clips, "train_top1": 100.0 * correct / clips,
                  "clips_per_s": clips / seconds, "lr": schedule.get_last_lr()[0]}
        history.append(record)
        log(f"{modality} net epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f} | {record['clips_per_s']:.0f} clips/s "
            f"| data-wait 0.0% (in memory) | lr {record['lr']:.2e} | train top-1 {record['train_top1']:.1f}")
    net.eval()
    return history


@torch.no_grad()
def top1(predict, split: ModalitySplit, batch_size: int) -> float:
    """Top-1 (%) of `predict(normalised inputs) -> logits [B, classes]` on the split."""
    correct = 0
    for inputs, labels in eval_batches(split, batch_size):
        correct += (predict(inputs).argmax(1) == labels).sum().item()
    return 100.0 * correct / len(split)
