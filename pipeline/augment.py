"""Spatial and photometric augmentation of decoded uint8 clips, on the CPU with torch.

Input: frames uint8 [T, H, W, 3] as the decoder returns them. Output: uint8 [3, T, S, S] (S =
crop_size), the per-sample layout of the batch contract. Every frame of a clip gets the same crop,
flip and colour change, so motion is preserved. All randomness comes from the torch.Generator passed
in, which the loader seeds per sample: the result does not depend on worker count or process.

Crop-then-resize is one bilinear antialiased interpolation of the cropped region (uint8 in, uint8
out; torch has a fast uint8 path for channels-last input, which is the decoder's layout).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.contract import AugmentSpec, StrongAugmentSpec

Box = tuple[int, int, int, int]  # top, left, height, width in source pixels

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high_inclusive: int) -> int:
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator))


def random_resized_crop_box(height: int, width: int, min_scale: float, max_aspect: float,
                            generator: torch.Generator) -> Box:
    """torchvision's RandomResizedCrop sampling: area fraction in [min_scale, 1], log-uniform aspect
    in [1/max_aspect, max_aspect]; after 10 misses, the largest centred box within the aspect range."""
    area = height * width
    log_low, log_high = -math.log(max_aspect), math.log(max_aspect)
    for _ in range(10):
        target_area = area * _uniform(generator, min_scale, 1.0)
        aspect = math.exp(_uniform(generator, log_low, log_high))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return _randint(generator, 0, height - crop_h), _randint(generator, 0, width - crop_w), crop_h, crop_w
    aspect = width / height
    if aspect < 1 / max_aspect:
        crop_w, crop_h = width, int(round(width * max_aspect))
    elif aspect > max_aspect:
        crop_h, crop_w = height, int(round(height * max_aspect))
    else:
        crop_h, crop_w = height, width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resized_crop(frames: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> the box resized to size x size, uint8 [T, 3, size, size] (channels-last)."""
    top, left, crop_h, crop_w = box
    region = frames[:, top:top + crop_h, left:left + crop_w, :].permute(0, 3, 1, 2)
    if (crop_h, crop_w) == (size, size):
        return region
    return F.interpolate(region, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def to_channels_first(clip: torch.Tensor) -> torch.Tensor:
    """[T, 3, S, S] -> contiguous [3, T, S, S], the per-sample layout of the batch contract."""
    return clip.permute(1, 0, 2, 3).contiguous()


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")


def train_view(frames: torch.Tensor, crop_size: int, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """The weak training view: random resized crop, then a horizontal flip with p = 0.5 if allowed."""
    _check_frames(frames)
    box = random_resized_crop_box(frames.shape[1], frames.shape[2], spec.min_scale, spec.max_aspect, generator)
    clip = resized_crop(frames, box, crop_size)
    if spec.hflip and bool(torch.rand((), generator=generator) < 0.5):
        clip = clip.flip(-1)
    return to_channels_first(clip)


def _grayscale(clip: torch.Tensor) -> torch.Tensor:
    """float [3, T, H, W] -> luma [1, T, H, W]."""
    return (_LUMA[0] * clip[0] + _LUMA[1] * clip[1] + _LUMA[2] * clip[2]).unsqueeze(0)


def strong_view(frames: torch.Tensor, crop_size: int, spec: StrongAugmentSpec, hflip: bool,
                generator: torch.Generator) -> torch.Tensor:
    """The strong (student) view: tighter crop, flip if allowed, colour jitter, grayscale, cutout.

    Brightness b, contrast c (around the clip's mean luma, so frames do not flicker) and saturation s
    compose into one affine map, out = b*c*s*x + b*c*(1-s)*luma(x) + (1-c)*b*mean_luma, which is
    what applying them in that order gives; fused, it costs two passes over the clip instead of ten.
    """
    _check_frames(frames)
    box = random_resized_crop_box(frames.shape[1], frames.shape[2], spec.min_scale, spec.max_aspect, generator)
    clip = resized_crop(frames, box, crop_size)
    if hflip and bool(torch.rand((), generator=generator) < 0.5):
        clip = clip.flip(-1)
    brightness = _uniform(generator, 1 - spec.brightness, 1 + spec.brightness)
    contrast = _uniform(generator, 1 - spec.contrast, 1 + spec.contrast)
    saturation = _uniform(generator, 1 - spec.saturation, 1 + spec.saturation)
    to_gray = bool(torch.rand((), generator=generator) < spec.grayscale_p)
    pixels = to_channels_first(clip).float()  # [3, T, S, S]: contiguous planes make the maths ~3x faster
    luma = _grayscale(pixels)
    gain = brightness * contrast
    offset = (1 - contrast) * brightness * float(luma.mean())
    if to_gray:  # the luma of the jittered clip, in all three channels
        pixels = (luma * gain + offset).expand_as(pixels)
    else:
        pixels = pixels.mul_(gain * saturation).add_(luma * (gain * (1 - saturation)) + offset)
    clip = (pixels + 0.5).clamp_(0, 255).to(torch.uint8)  # + 0.5 then truncation = rounding
    if bool(torch.rand((), generator=generator) < spec.cutout_p):
        area = crop_size * crop_size * _uniform(generator, *spec.cutout_area)
        aspect = math.exp(_uniform(generator, -math.log(2), math.log(2)))
        cut_h = min(crop_size, max(1, int(round(math.sqrt(area / aspect)))))
        cut_w = min(crop_size, max(1, int(round(math.sqrt(area * aspect)))))
        top, left = _randint(generator, 0, crop_size - cut_h), _randint(generator, 0, crop_size - cut_w)
        clip[:, :, top:top + cut_h, left:left + cut_w] = 128
    return clip


def eval_crop_boxes(height: int, width: int, num_crops: int) -> list[Box]:
    """Square boxes of side min(H, W): the centre for one crop; start, centre, end of the long side for
    three. Resizing such a box to S equals short-side resize to S followed by an S x S crop."""
    side = min(height, width)
    if num_crops == 1:
        return [((height - side) // 2, (width - side) // 2, side, side)]
    if num_crops != 3:
        raise ValueError(f"num_crops={num_crops}: allowed values are 1 and 3")
    if width >= height:
        return [(0, left, side, side) for left in (0, (width - side) // 2, width - side)]
    return [(top, 0, side, side) for top in (0, (height - side) // 2, height - side)]


def eval_views(frames: torch.Tensor, crop_size: int, num_crops: int) -> list[torch.Tensor]:
    """Deterministic evaluation crops of one clip, each uint8 [3, T, S, S]."""
    _check_frames(frames)
    return [to_channels_first(resized_crop(frames, box, crop_size))
            for box in eval_crop_boxes(frames.shape[1], frames.shape[2], num_crops)]
