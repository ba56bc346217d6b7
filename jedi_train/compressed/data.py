"""Shards with compressed-domain members -> in-memory tensors of one split, and batches of them.

The splits are small (hundreds of clips; a clip's three modalities take ~0.4 MB as stored dtypes), so
each split is read once through the torch loader (pipeline/cpu_loader.py, evaluation order: the
middle P-frame of each segment) and kept in memory; an epoch is then a seeded permutation of it, with
a random horizontal flip where the manifest says flipping keeps the label (motion vectors' dx negated).
Normalisation happens here, on the training device, through pipeline.contract.to_modality_input.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from pipeline.contract import LABEL, MODALITY_KEYS, MV, ClipSpec, to_modality_input
from pipeline.cpu_loader import eval_loader, read_manifest


@dataclass
class ModalitySplit:
    inputs: dict[str, torch.Tensor]  # contract dtypes: mv / residual float16, iframe uint8, [N, K, C, H, W]
    labels: torch.Tensor  # int64 [N]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: tensor[index] for name, tensor in self.inputs.items()}


def load_split(shard_dir: str | Path, split: str, batch_size: int = 64, num_workers: int = 0) -> ModalitySplit:
    loader = eval_loader(shard_dir, split, ClipSpec(), batch_size=batch_size, num_workers=num_workers,
                         modalities=MODALITY_KEYS, video=False)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in MODALITY_KEYS}
    labels, keys = [], []
    for batch in tqdm(loader, desc=f"reading {Path(shard_dir).name}/{split}", unit="batch", leave=False):
        for name in MODALITY_KEYS:
            parts[name].append(batch[name])
        labels.append(batch[LABEL])
        keys += batch["key"]
    if loader.skipped:
        raise RuntimeError(f"{shard_dir}/{split}: {loader.skipped} corrupt samples ({loader.skipped_keys[:3]})")
    return ModalitySplit({name: torch.cat(chunks) for name, chunks in parts.items()}, torch.cat(labels), keys)


def flip_allowed(shard_dir: str | Path) -> bool:
    return not read_manifest(shard_dir).get("hflip_changes_label", False)


def normalise(inputs: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return {name: to_modality_input(tensor.to(device), name) for name, tensor in inputs.items()}


def hflip(inputs: dict[str, torch.Tensor], flip: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mirror the clips where `flip` [N] is true: every modality along W, and the motion vectors' dx."""
    out = {}
    for name, tensor in inputs.items():
        mirrored = tensor.flip(-1)
        if name == MV:
            mirrored = mirrored.clone()
            mirrored[:, :, 0] = -mirrored[:, :, 0]
        out[name] = torch.where(flip.view(-1, *[1] * (tensor.dim() - 1)), mirrored, tensor)
    return out


def train_batches(split: ModalitySplit, batch_size: int, generator: torch.Generator, flip: bool,
                  device: torch.device | str = "cpu") -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """One epoch: a seeded permutation in batches (the last one may be smaller), normalised inputs."""
    order = torch.randperm(len(split), generator=generator)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        inputs = split.subset(index)
        if flip:
            inputs = hflip(inputs, torch.rand(len(index), generator=generator) < 0.5)
        yield normalise(inputs, device), split.labels[index].to(device)


def eval_batches(split: ModalitySplit, batch_size: int, device: torch.device | str = "cpu"):
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        yield normalise(split.subset(index), device), split.labels[index].to(device)
