"""Clip sampling, augmentation and normalisation: what the loaders and the trainer rely on."""
import pytest
import torch

from pipeline.augment import (random_resized_crop_box, resized_crop, strong_view, eval_crop_boxes, eval_views,
                              train_view)
from pipeline.clips import clip_indices, eval_clip_indices, eval_clip_starts, train_clip_indices
from pipeline.contract import MEAN, STD, AugmentSpec, ClipSpec, StrongAugmentSpec, to_model_input


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_train_clip_is_strided_inside_the_video_and_start_covers_every_position():
    clip = ClipSpec(frames=8, stride=2)
    starts = set()
    for seed in range(400):
        indices = train_clip_indices(24, clip, gen(seed))
        assert len(indices) == 8
        assert all(b - a == 2 for a, b in zip(indices, indices[1:]))
        assert 0 <= indices[0] and indices[-1] <= 23
        starts.add(indices[0])
    assert starts == set(range(24 - clip.span + 1))  # uniform start: 0..9 all drawn


def test_short_video_is_clamped_to_the_last_frame_not_looped():
    clip = ClipSpec(frames=8, stride=2)
    assert clip_indices(10, 0, clip) == [0, 2, 4, 6, 8, 9, 9, 9]
    for seed in range(20):
        assert train_clip_indices(10, clip, gen(seed)) == [0, 2, 4, 6, 8, 9, 9, 9]
    assert clip_indices(1, 0, clip) == [0] * 8


def test_time_reversal_only_when_enabled():
    clip = ClipSpec(frames=4, stride=1)
    forward = [train_clip_indices(30, clip, gen(s), time_reversal=False) for s in range(50)]
    assert all(ix == sorted(ix) for ix in forward)
    reversed_draws = [train_clip_indices(30, clip, gen(s), time_reversal=True) for s in range(50)]
    assert any(ix == sorted(ix, reverse=True) for ix in reversed_draws)
    assert any(ix == sorted(ix) for ix in reversed_draws)


def test_eval_clips_centre_and_evenly_spaced():
    clip = ClipSpec(frames=8, stride=2)  # span 15
    assert eval_clip_starts(25, clip, 1) == [5]
    assert eval_clip_starts(25, clip, 3) == [0, 5, 10]
    multi = eval_clip_indices(25, clip, 3)
    assert multi[0][0] == 0 and multi[-1][-1] == 24
    assert eval_clip_indices(10, clip, 2) == [[0, 2, 4, 6, 8, 9, 9, 9]] * 2


def frames_with_gradient(t=4, h=40, w=48) -> torch.Tensor:
    """Frames whose pixels say where they are (x in red, y in green, t in blue)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    frame = torch.stack([xs * 5, ys * 6, torch.zeros_like(xs)], dim=-1)
    out = frame.unsqueeze(0).repeat(t, 1, 1, 1)
    out[..., 2] = torch.arange(t).view(t, 1, 1) * 40
    return out.to(torch.uint8)


def test_train_view_shape_and_determinism():
    frames = frames_with_gradient()
    a = train_view(frames, 32, AugmentSpec(), gen(3))
    b = train_view(frames, 32, AugmentSpec(), gen(3))
    assert a.shape == (3, 4, 32, 32) and a.dtype == torch.uint8 and a.is_contiguous()
    assert torch.equal(a, b)
    assert not all(torch.equal(a, train_view(frames, 32, AugmentSpec(), gen(s))) for s in range(4, 8))
    # every frame gets the same crop: time shows only in the blue channel
    assert torch.equal(a[0, 0], a[0, 3]) and torch.equal(a[1, 0], a[1, 3])


def test_crop_box_respects_scale_and_aspect():
    for seed in range(200):
        top, left, h, w = random_resized_crop_box(40, 48, 0.35, 4 / 3, gen(seed))
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 48
        assert h * w >= 0.35 * 40 * 48 * 0.9
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_flip_happens_only_when_allowed():
    frames = frames_with_gradient()
    outcomes = set()
    for seed in range(30):
        box = random_resized_crop_box(40, 48, 0.35, 4 / 3, gen(seed))
        reference = resized_crop(frames, box, 32).permute(1, 0, 2, 3)
        assert torch.equal(train_view(frames, 32, AugmentSpec(hflip=False), gen(seed)), reference)
        flipped = train_view(frames, 32, AugmentSpec(hflip=True), gen(seed))
        outcomes.add("flip" if torch.equal(flipped, reference.flip(-1)) else
                     "same" if torch.equal(flipped, reference) else "other")
    assert outcomes == {"flip", "same"}


def test_strong_view_is_deterministic_and_stronger():
    frames = frames_with_gradient(t=8)
    spec = StrongAugmentSpec(grayscale_p=0.0, cutout_p=1.0)
    a = strong_view(frames, 32, spec, hflip=False, generator=gen(1))
    assert a.shape == (3, 8, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, strong_view(frames, 32, spec, hflip=False, generator=gen(1)))
    assert (a == 128).all(dim=0).all(dim=0).any()  # the cutout rectangle, grey in every frame
    gray = strong_view(frames, 32, StrongAugmentSpec(grayscale_p=1.0, cutout_p=0.0), hflip=False,
                       generator=gen(2))
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_eval_views_are_short_side_resize_plus_crops():
    frames = frames_with_gradient()  # 40 x 48: short side 40
    (centre,) = eval_views(frames, 40, 1)
    assert torch.equal(centre, frames[:, :, 4:44].permute(3, 0, 1, 2))  # no resize needed: exact pixels
    three = eval_views(frames, 32, 3)
    assert len(three) == 3 and all(v.shape == (3, 4, 32, 32) for v in three)
    assert [box[1] for box in eval_crop_boxes(40, 48, 3)] == [0, 4, 8]
    assert [box[0] for box in eval_crop_boxes(48, 40, 3)] == [0, 4, 8]
    assert three[0][0].float().mean() < three[1][0].float().mean() < three[2][0].float().mean()


def test_to_model_input_normalises_on_the_tensor_device():
    video = torch.full((2, 3, 4, 8, 8), 0, dtype=torch.uint8)
    video[:, :, :, 0, 0] = round(MEAN[0] * 255)
    out = to_model_input(video)
    assert out.dtype == torch.float32 and out.device == video.device and out.shape == video.shape
    assert out[0, 0, 0, 0, 0].abs() < 0.01
    assert torch.allclose(out[0, 0, 0, 1, 1], torch.tensor(-MEAN[0] / STD[0]))
    with pytest.raises(TypeError):
        to_model_input(video.float())


def test_specs_reject_bad_values_and_label_safe_turns_off_direction_changes():
    with pytest.raises(ValueError, match="test_crops"):
        ClipSpec(test_crops=2)
    with pytest.raises(ValueError, match="min_scale"):
        AugmentSpec(min_scale=0)
    safe = AugmentSpec(hflip=True, time_reversal=True).label_safe(True, False)
    assert not safe.hflip and safe.time_reversal
