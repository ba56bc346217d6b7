"""Which source frames a clip holds: T indices at stride s.

Training draws a uniformly random start; single-clip evaluation takes the centre; multi-clip
evaluation spreads `test_clips` starts evenly from the first to the last possible start (SlowFast's
protocol).

Videos shorter than a clip's span ((T - 1) * s + 1 frames) are CLAMPED, not looped: the clip starts
at frame 0 and indices past the end repeat the last frame. Looping would jump back in time mid-clip,
which reverses apparent motion and corrupts direction-sensitive classes; a frozen tail does not.
"""
from __future__ import annotations

import torch

from pipeline.contract import ClipSpec


def clip_indices(num_frames: int, start: int, clip: ClipSpec) -> list[int]:
    """T frame indices from `start` at `clip.stride`, clamped to the last frame."""
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: a video needs at least one frame")
    return [min(start + t * clip.stride, num_frames - 1) for t in range(clip.frames)]


def last_start(num_frames: int, clip: ClipSpec) -> int:
    """The latest start whose clip fits in the video (0 when the video is shorter than the span)."""
    return max(0, num_frames - clip.span)


def train_clip_indices(num_frames: int, clip: ClipSpec, generator: torch.Generator,
                       time_reversal: bool = False) -> list[int]:
    """A random clip; with `time_reversal`, reversed with p = 0.5 (the reversal draw comes second)."""
    start = int(torch.randint(0, last_start(num_frames, clip) + 1, (1,), generator=generator))
    indices = clip_indices(num_frames, start, clip)
    if time_reversal and bool(torch.rand((), generator=generator) < 0.5):
        indices.reverse()
    return indices


def eval_clip_starts(num_frames: int, clip: ClipSpec, num_clips: int) -> list[int]:
    """Starts of `num_clips` evaluation clips: the centre for one, evenly spaced ends-inclusive for more."""
    latest = last_start(num_frames, clip)
    if num_clips == 1:
        return [latest // 2]
    return [int(round(latest * i / (num_clips - 1))) for i in range(num_clips)]


def eval_clip_indices(num_frames: int, clip: ClipSpec, num_clips: int) -> list[list[int]]:
    """Frame indices of each evaluation clip, in time order."""
    return [clip_indices(num_frames, start, clip) for start in eval_clip_starts(num_frames, clip, num_clips)]
