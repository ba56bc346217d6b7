"""Internal classifiers (early exits) on stages 1-3 of each frozen modality net, the order the WISE walk
visits them in, and what each costs in MACs, counted by torch's FlopCounterMode (MACs = FLOPs / 2; it
counts convolutions and matrix products, not norms, activations or pooling, which are a few % here).

Exit order (12 exits): for each net in nets.ORDER (mv, residual, iframe) its stage-1, stage-2, stage-3
internal classifiers, then the net's own final classifier. Walking exit n costs every backbone stage
and head that exits 1..n need, each computed once.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from jedi_train.compressed.nets import ORDER, ModalityNet

EXIT_STAGES = (1, 2, 3)


class InternalClassifier(nn.Module):
    """conv 3x3 + BN + ReLU + global average pool + linear, on one stage's features (per segment).
    The conv has stride 2: an exit costs about a quarter of a same-width stage conv, so walking
    through early exits stays cheap next to the backbones (exits.exit_costs measures it)."""

    def __init__(self, in_channels: int, width: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(width, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class ExitHeads(nn.Module):
    """The 9 internal classifiers: heads[modality][i] reads stage EXIT_STAGES[i] of that modality's net."""

    def __init__(self, nets: dict[str, ModalityNet], num_classes: int, width: int = 0):
        super().__init__()
        self.heads = nn.ModuleDict({
            modality: nn.ModuleList(InternalClassifier(nets[modality].widths[stage], width or
                                                       nets[modality].widths[stage], num_classes)
                                    for stage in EXIT_STAGES)
            for modality in ORDER})

    def forward(self, stage_features: dict[str, list[torch.Tensor]], segments: int) -> dict[str, list[torch.Tensor]]:
        """{modality: [features after stages 1..4]} -> {modality: [logits [B, classes] of its 3 exits]}."""
        return {modality: [ModalityNet.segment_mean(head(stage_features[modality][stage - 1]), segments)
                           for head, stage in zip(self.heads[modality], EXIT_STAGES)]
                for modality in ORDER}


def exit_names() -> list[str]:
    return [f"{modality}.{part}" for modality in ORDER for part in ("stage1", "stage2", "stage3", "final")]


def exit_stream(nets: dict[str, ModalityNet], heads: ExitHeads, inputs: dict[str, torch.Tensor]) -> Iterator[torch.Tensor]:
    """Logits [B, classes] of exits 1, 2, ... in walk order, each computed only when asked for."""
    for modality in ORDER:
        net, segments = nets[modality], inputs[modality].shape[1]
        hidden = net.stem(net.per_segment(inputs[modality]))
        for index, stage in enumerate(net.stages):
            hidden = stage(hidden)
            if index + 1 in EXIT_STAGES:
                head = heads.heads[modality][EXIT_STAGES.index(index + 1)]
                yield ModalityNet.segment_mean(head(hidden), segments)
        yield net.segment_mean(net.classifier(hidden), segments)


@torch.no_grad()
def all_exit_logits(nets: dict[str, ModalityNet], heads: ExitHeads, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """[exits, B, classes] in walk order."""
    return torch.stack(list(exit_stream(nets, heads, inputs)))


def count_flops(function, *args) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        result = function(*args)
    return counter.get_total_flops(), result


@torch.no_grad()
def exit_costs(nets: dict[str, ModalityNet], heads: ExitHeads, one_clip: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """MACs per clip, measured on `one_clip` (batch of 1) with FlopCounterMode:
    `walk`: cumulative MACs to reach exit n along the walk (index n-1);
    `alone`: MACs of exit n used on its own (its net up to that stage plus its head)."""
    stream = exit_stream(nets, heads, one_clip)
    walk, alone, total, net_so_far = [], [], 0, 0
    names = exit_names()
    for name in names:
        flops, _ = count_flops(next, stream)
        total += flops // 2
        walk.append(total)
    # alone: replay each net's pieces; a net's exits share its backbone prefix
    for modality in ORDER:
        net, x = nets[modality], one_clip[modality]
        segments = x.shape[1]
        flops, hidden = count_flops(lambda t: net.stem(net.per_segment(t)), x)
        net_so_far = flops // 2
        for index, stage in enumerate(net.stages):
            flops, hidden = count_flops(stage, hidden)
            net_so_far += flops // 2
            if index + 1 in EXIT_STAGES:
                head = heads.heads[modality][EXIT_STAGES.index(index + 1)]
                flops, _ = count_flops(head, hidden)
                alone.append(net_so_far + flops // 2)
        flops, _ = count_flops(lambda h: net.segment_mean(net.classifier(h), segments), hidden)
        alone.append(net_so_far + flops // 2)
    return {"names": names, "walk": walk, "alone": alone}
