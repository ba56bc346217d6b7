"""The three modality networks: a small 2D CNN applied to each of the K segments, logits averaged over
segments (TSN-style, as in CoViAR and PKD). The motion-vector and residual nets are narrower than the
I-frame net (configs/compressed_pkd.yaml says how much; `exits.exit_costs` measures it)."""
from __future__ import annotations

import torch
from torch import nn

MODALITY_CHANNELS = {"mv": 2, "residual": 3, "iframe": 3}
ORDER = ("mv", "residual", "iframe")  # cheapest first: the PKD teacher schedule and the WISE walk


def conv_bn(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ModalityNet(nn.Module):
    """stem -> stages 1..4 (two 3x3 conv + BN + ReLU each) -> global pool -> linear, per segment.

    widths: channels of the stem and the four stages; strides: of the stem and the four stages.
    Input [B, K, C, H, W] (normalised, pipeline.contract.to_modality_input); output logits [B, classes].
    """

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...], strides: tuple[int, ...],
                 dropout: float = 0.2):
        super().__init__()
        if len(widths) != 5 or len(strides) != 5:
            raise ValueError(f"widths {widths} and strides {strides}: need 5 each (stem + 4 stages)")
        self.widths = widths
        self.stem = conv_bn(in_channels, widths[0], strides[0])
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn(widths[i], widths[i + 1], strides[i + 1]), conv_bn(widths[i + 1], widths[i + 1], 1))
            for i in range(4))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(widths[-1], num_classes))

    @staticmethod
    def per_segment(segments: torch.Tensor) -> torch.Tensor:
        """[B, K, C, H, W] -> [B*K, C, H, W]."""
        return segments.flatten(0, 1)

    @staticmethod
    def segment_mean(logits: torch.Tensor, segments: int) -> torch.Tensor:
        """[B*K, classes] -> [B, classes]."""
        return logits.unflatten(0, (-1, segments)).mean(1)

    def stage_features(self, segments: torch.Tensor) -> list[torch.Tensor]:
        """Features after stages 1..4, each [B*K, C_i, H_i, W_i]."""
        hidden = self.stem(self.per_segment(segments))
        features = []
        for stage in self.stages:
            hidden = stage(hidden)
            features.append(hidden)
        return features

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        return self.segment_mean(self.classifier(self.stage_features(segments)[-1]), segments.shape[1])


def build_net(modality: str, num_classes: int, widths: str, strides: str, dropout: float) -> ModalityNet:
    parse = lambda text: tuple(int(part) for part in text.split(","))  # noqa: E731
    return ModalityNet(MODALITY_CHANNELS[modality], num_classes, parse(widths), parse(strides), dropout)
