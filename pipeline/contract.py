"""The batch contract between the data pipeline (CPU torch loader or GPU DALI loader) and the trainer.

Training batch (a dict; keys are the constants below):
  VIDEO         uint8 [B, 3, T, H, W]  RGB, H = W = ClipSpec.crop_size, T = ClipSpec.frames.
                                       With a strong view requested this is the *weak* view (teacher).
  STRONG_VIDEO  uint8 [B, 3, T, H, W]  only when a strong view is requested: the same decoded frames
                                       (same temporal window) with an independent, stronger spatial and
                                       photometric augmentation (student).
  LABEL         int64 [B]              index into manifest["classes"]. For unlabelled streams the true
                                       label travels only for diagnostics (pseudo-label precision);
                                       the trainer never trains on it.
  KEY           list[str] (len B)      sample keys `<dataset>_<sha1[:16]>`.
  SKIPPED_KEYS  list[str]              keys of corrupt samples skipped while this batch was assembled
                                       (usually empty); the loaders also keep a running count.

Compressed-domain keys (only when a loader is asked for `modalities`; shards written with
`tools/make_shards.py --modalities`, see pipeline/compressed.py). K = the manifest's compressed.segments,
one entry per segment, the same layout in training and evaluation batches, cropped to the centred square
of side S = the video's short side (videos of one data set may differ in aspect ratio; b = mv_block):
  MV            float16 [B, K, 2, S/b, S/b]  motion vectors (dx, dy) in pixels per b x b cell
  RESIDUAL      float16 [B, K, 3, S, S]      P-frame minus its motion-compensated reference, -255..255
  IFRAME        uint8   [B, K, 3, S, S]      the segment's I-frame, RGB
Training picks a random P-frame per segment (seeded like the clip), evaluation the middle one. No
spatial augmentation is applied to them. `to_modality_input` normalises them on the device.

Evaluation batch: VIDEO uint8 [B, V, 3, T, H, W] with V = test_clips * test_crops (V = 1 for
single-clip evaluation; view v = clip_index * test_crops + crop_index), plus LABEL, KEY, SKIPPED_KEYS.
The last evaluation batch may be smaller than the batch size.

Everything in a batch is on the CPU and uint8: decoding and augmentation never produce floats in
workers, because returning float32 costs ~3 ms per clip (see shared/reference/throughput-notes.md).
The trainer moves VIDEO to its device and calls `to_model_input`, which is the only place where
normalisation happens.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# Batch keys: the trainer reads batches only through these names.
VIDEO = "video"
STRONG_VIDEO = "strong_video"
LABEL = "label"
KEY = "key"
SKIPPED_KEYS = "skipped_keys"
MV = "mv"
RESIDUAL = "residual"
IFRAME = "iframe"
MODALITY_KEYS = (MV, RESIDUAL, IFRAME)  # also the modality names of pipeline/compressed.py

# Kinetics-400 statistics (the usual choice for video backbones), in 0..1 units per RGB channel.
MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class ClipSpec:
    """Which frames a clip holds and its spatial size.

    frames: T frames per clip; stride: distance between consecutive sampled frames (in source frames);
    crop_size: output height and width; test_clips: clips evenly spaced in time for multi-view
    evaluation; test_crops: spatial crops per clip at evaluation (1 = centre, 3 = both ends + centre
    of the long side).
    """

    frames: int = 8
    stride: int = 2
    crop_size: int = 32
    test_clips: int = 1
    test_crops: int = 1

    def __post_init__(self):
        for name in ("frames", "stride", "crop_size", "test_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClipSpec.{name}={getattr(self, name)}: must be >= 1")
        if self.test_crops not in (1, 3):
            raise ValueError(f"ClipSpec.test_crops={self.test_crops}: allowed values are 1 and 3")

    @property
    def span(self) -> int:
        """Source frames covered by one clip, first to last sampled frame inclusive."""
        return (self.frames - 1) * self.stride + 1

    @property
    def views(self) -> int:
        return self.test_clips * self.test_crops


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentation of the weak (or only) view.

    Random resized crop keeping scale in [min_scale, 1] of the frame area and aspect ratio in
    [1/max_aspect, max_aspect]; horizontal flip with p = 0.5; time reversal with p = 0.5.
    Flip and reversal change the label of direction-sensitive classes: the loaders refuse them when
    the manifest says so (see `label_safe`).
    """

    min_scale: float = 0.35
    max_aspect: float = 4 / 3
    hflip: bool = True
    time_reversal: bool = False

    def __post_init__(self):
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"AugmentSpec.min_scale={self.min_scale}: must be in (0, 1]")
        if self.max_aspect < 1:
            raise ValueError(f"AugmentSpec.max_aspect={self.max_aspect}: must be >= 1")

    def label_safe(self, hflip_changes_label: bool, time_reversal_changes_label: bool) -> "AugmentSpec":
        """This spec with flip / reversal turned off where the manifest says they change the label."""
        return replace(self, hflip=self.hflip and not hflip_changes_label,
                       time_reversal=self.time_reversal and not time_reversal_changes_label)


@dataclass(frozen=True)
class StrongAugmentSpec:
    """The strong (student) view: a tighter random resized crop, colour jitter (brightness, contrast,
    saturation factors drawn from [1 - x, 1 + x]), random grayscale, and cutout of one rectangle
    (area fraction in cutout_area, filled with grey 128) applied to all frames alike.
    Flip follows the weak view's AugmentSpec.hflip (so it is refused for direction-sensitive data).
    """

    min_scale: float = 0.2
    max_aspect: float = 4 / 3
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    grayscale_p: float = 0.2
    cutout_p: float = 0.5
    cutout_area: tuple[float, float] = (0.02, 0.2)

    def __post_init__(self):
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"StrongAugmentSpec.min_scale={self.min_scale}: must be in (0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"StrongAugmentSpec.{name}={getattr(self, name)}: must be in [0, 1)")
        for name in ("grayscale_p", "cutout_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"StrongAugmentSpec.{name}={getattr(self, name)}: must be in [0, 1]")


def to_model_input(video_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 clips [..., 3, T, H, W] -> normalised float tensor on the same device.

    Call it after moving the batch to the training device, so the float copy never crosses PCIe.
    """
    if video_uint8.dtype != torch.uint8:
        raise TypeError(f"to_model_input expects uint8 video, got {video_uint8.dtype}")
    if video_uint8.dim() < 4 or video_uint8.shape[-4] != 3:
        raise ValueError(f"to_model_input expects [..., 3, T, H, W], got shape {tuple(video_uint8.shape)}")
    shape = (3, 1, 1, 1)
    mean = torch.tensor(MEAN, device=video_uint8.device, dtype=dtype).view(shape) * 255
    inv_std = 1.0 / (torch.tensor(STD, device=video_uint8.device, dtype=dtype).view(shape) * 255)
    return (video_uint8.to(dtype) - mean) * inv_std


MV_SCALE = 4.0  # pixels: typical motion of the synthetic actions per frame at short side 64
RESIDUAL_SCALE = 64.0


def to_modality_input(tensor: torch.Tensor, modality: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A compressed-domain batch entry [..., C, H, W] -> normalised float on the same device: I-frames
    like video (Kinetics mean / std), motion vectors / MV_SCALE, residuals / RESIDUAL_SCALE."""
    if modality == IFRAME:
        if tensor.dtype != torch.uint8:
            raise TypeError(f"to_modality_input({IFRAME!r}) expects uint8, got {tensor.dtype}")
        mean = torch.tensor(MEAN, device=tensor.device, dtype=dtype).view(3, 1, 1) * 255
        inv_std = 1.0 / (torch.tensor(STD, device=tensor.device, dtype=dtype).view(3, 1, 1) * 255)
        return (tensor.to(dtype) - mean) * inv_std
    if modality == MV:
        return tensor.to(dtype) / MV_SCALE
    if modality == RESIDUAL:
        return tensor.to(dtype) / RESIDUAL_SCALE
    raise ValueError(f"modality {modality!r}: allowed values are {MODALITY_KEYS}")
