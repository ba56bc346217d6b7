"""Video backbones that map a clip to its penultimate feature: pytorchvideo's X3D and Slow R50 for real
clips, and a small non-separable 3D CNN for the small clips of the synthetic benchmark.

A backbone returns `[B, feature_dim]`; the class head is a separate `nn.Linear`, so students and
teachers can share backbones (METHOD.md section 1).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from pytorchvideo.models.resnet import create_resnet
from pytorchvideo.models.x3d import create_x3d


class GroupNorm3d(nn.GroupNorm):
    """GroupNorm with BatchNorm3d's constructor signature, so pytorchvideo builders accept it."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        del momentum
        groups = next(g for g in (8, 4, 2, 1) if num_features % g == 0)
        super().__init__(groups, num_features, eps=eps)


# name -> X3D builder arguments. XS, S and M share one network and differ in the clip they read
# (4x160, 13x160, 16x224). `x3d_tiny` is a CPU-sized member of the family: 32k parameters, no
# squeeze-excitation, about 0.1 s for a forward+backward of 32 clips of 8x32x32 on 2 cores.
X3D_SIZES = {
    "x3d_tiny": dict(width_factor=1.0, depth_factor=0.3, stem_dim_in=8, head_dim_out=128, bottleneck_factor=1.0,
                     se_ratio=0.0),
    "x3d_xs": dict(width_factor=2.0, depth_factor=2.2, head_dim_out=2048),
    "x3d_s": dict(width_factor=2.0, depth_factor=2.2, head_dim_out=2048),
    "x3d_m": dict(width_factor=2.0, depth_factor=2.2, head_dim_out=2048),
}


# name -> output channels of the five 3x3x3 convolutions of `SmallConv3d`.
SMALL_CNN_WIDTHS = {"cnn3d_small": (16, 32, 32, 64, 64)}


class SmallConv3d(nn.Module):
    """Five full (non-separable) 3x3x3 convolutions, each followed by a norm layer and ReLU; layers 2, 3
    and 5 halve H and W (total spatial stride 8) and layers 3 and 5 halve T. Made for 8x32x32 clips,
    where X3D's stride 32 leaves 1x1 maps and its channel-wise stem cannot tell left from right early
    (docs/benchmarks.md, "Backbones for small clips", has the measurement). 16-32-32-64-64 channels:
    0.21 M parameters."""

    STRIDES = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (1, 1, 1), (2, 2, 2))

    def __init__(self, widths: tuple[int, ...], norm_layer):
        super().__init__()
        layers, channels = [], 3
        for width, stride in zip(widths, self.STRIDES):
            layers += [nn.Conv3d(channels, width, 3, stride=stride, padding=1, bias=False), norm_layer(width),
                       nn.ReLU(inplace=True)]
            channels = width
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.layers(clips)


BACKBONES = (*X3D_SIZES, "slow_r50", *SMALL_CNN_WIDTHS)


class VideoBackbone(nn.Module):
    """A network without its final projection: clip [B,3,T,H,W] -> feature [B, dim]."""

    def __init__(self, name: str, norm: str = "batchnorm"):
        super().__init__()
        norm_layer = GroupNorm3d if norm == "groupnorm" else nn.BatchNorm3d
        self.name = name
        if name in SMALL_CNN_WIDTHS:
            self.stages = SmallConv3d(SMALL_CNN_WIDTHS[name], norm_layer)
            self.pool = nn.AdaptiveAvgPool3d(1)
            self.feature_dim = self.stages.out_channels
        elif name in X3D_SIZES:
            net = create_x3d(norm=norm_layer, model_num_class=1, dropout_rate=0.0, **X3D_SIZES[name])
            head = net.blocks[-1]
            # Pool over whatever T, H, W arrive instead of the fixed kernel of the default input size.
            head.pool.pool = nn.AdaptiveAvgPool3d(1)
            self.stages = nn.Sequential(*net.blocks[:-1])
            self.pool = head.pool  # ProjectedPool: conv -> norm -> act -> pool -> conv -> act
            self.feature_dim = head.pool.post_conv.out_channels
        elif name == "slow_r50":
            net = create_resnet(norm=norm_layer, model_depth=50, model_num_class=1, dropout_rate=0.0)
            self.stages = nn.Sequential(*net.blocks[:-1])
            self.pool = nn.AdaptiveAvgPool3d(1)
            self.feature_dim = 2048
        else:
            raise ValueError(f"backbone={name!r}: allowed values are {', '.join(BACKBONES)}")
        # where `stage_features` taps the network: indices into `_stage_modules()`. The small CNN: after
        # convolutions 2 and 3 (each module is conv, norm, ReLU); X3D: after res stages 2, 3 and 4 (its final
        # feature is a projection of stage 4); Slow R50: after res stages 2 and 3 (its final feature is the
        # pooled stage 4 already)
        if name in SMALL_CNN_WIDTHS:
            self.stage_taps = (5, 8)
            tapped_widths = SMALL_CNN_WIDTHS[name][1:3]
        else:
            self.stage_taps = (2, 3, 4) if name in X3D_SIZES else (2, 3)
            tapped_widths = tuple([m for m in self.stages[i].modules() if isinstance(m, nn.Conv3d)][-1].out_channels
                                  for i in self.stage_taps)
        self.stage_dims = (*tapped_widths, self.feature_dim)  # widths of `stage_features`' levels

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(clips)).flatten(1)

    def _stage_modules(self) -> nn.Sequential:
        return self.stages.layers if isinstance(self.stages, SmallConv3d) else self.stages

    def stage_features(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """Features at several depths, for methods that distil between levels (MLFD, staged KD): the
        globally average-pooled outputs [B, C_l] of the tapped stages, then the final feature, the same
        modules in the same order as `forward`, so the last element is `forward(clips)` exactly."""
        levels, x = [], clips
        for index, module in enumerate(self._stage_modules()):
            x = module(x)
            if index in self.stage_taps:
                levels.append(x.mean(dim=(2, 3, 4)))
        levels.append(self.pool(x).flatten(1))
        return levels


def load_backbone_weights(backbone: VideoBackbone, path: str | Path) -> None:
    """Load a local pytorchvideo checkpoint (`blocks.N...` keys, as published for X3D / Slow R50).

    The final projection (`blocks.5.proj`) is dropped: heads are per dataset. Every other weight must
    match, or the error names the keys that did not.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} do not exist (weights are read only from local files)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model_state", state.get("state_dict", state))
    if backbone.name in SMALL_CNN_WIDTHS:  # our own network: its state dict as saved, nothing to rename
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights {path} do not fit backbone {backbone.name}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        return
    last_block = len(backbone.stages)
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if not key.startswith("blocks."):
            continue
        index = int(key.split(".")[1])
        rest = key.split(".", 2)[2]
        if index < last_block:
            renamed[f"stages.{index}.{rest}"] = value
        elif rest.startswith("pool.") and backbone.name in X3D_SIZES:
            renamed[rest] = value
    missing, unexpected = backbone.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights {path} do not fit backbone {backbone.name}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")


def build_backbone(name: str, norm: str, weights: str = "") -> VideoBackbone:
    backbone = VideoBackbone(name, norm)
    if weights:
        load_backbone_weights(backbone, weights)
    return backbone


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module, enabled: bool = True):
    """Run `module` with BatchNorm layers in eval mode (running statistics used, not updated).

    Gradients still flow. This keeps clips of other datasets from polluting a backbone's statistics.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if enabled:
        for m in norms:
            m.eval()
    try:
        yield
    finally:
        if enabled:
            for m in norms:
                m.train()
