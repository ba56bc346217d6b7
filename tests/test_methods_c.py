"""MLFD and staged KD: the backbone's level features, each loss on hand-made inputs, where each loss's
gradient goes, and one end-to-end run of each method on the tiny shards."""
import json
import math

import pytest
import torch

from conftest import tiny_run_args
from jedi_train.config import load_config
from jedi_train.data import dataset_infos
from jedi_train.methods.base import StepBatch
from jedi_train.methods.mlfd import MLFD, STUDENT_PHASE, TEACHER_PHASE
from jedi_train.methods.mlfd import Config as MLFDConfig
from jedi_train.methods.staged_kd import Config as StagedConfig
from jedi_train.methods.staged_kd import (StagedKD, confident_soft_labels, correlation_loss, gaussian_kl,
                                          level_correlation, optimised_labels)
from jedi_train.models import VideoBackbone
from jedi_train.train_experts import Expert
from jedi_train.train_methods import load_selected
from test_train_e2e import main_one_thread

NUM_CLASSES = {"a": 3, "b": 2}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_experts(seed: int = 0) -> dict[str, Expert]:
    torch.manual_seed(seed)
    return {d: Expert(VideoBackbone("cnn3d_small", "groupnorm"), k) for d, k in NUM_CLASSES.items()}


def small_batch(unlabelled: bool = False) -> StepBatch:
    torch.manual_seed(1)
    clips = lambda: {d: torch.randn(4, 3, 4, 16, 16) for d in NUM_CLASSES}  # noqa: E731
    return StepBatch(labelled_clips=clips(), labels={d: torch.arange(4) % k for d, k in NUM_CLASSES.items()},
                     unlabelled_clips=clips() if unlabelled else None,
                     unlabelled_student_clips=clips() if unlabelled else None)


def grads(module: torch.nn.Module) -> list:
    return [p.grad for p in module.parameters()]


# ----- the backbone's levels ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cnn3d_small", "x3d_tiny"])
def test_stage_features_end_with_the_forward_feature_exactly(name):
    torch.manual_seed(0)
    backbone = VideoBackbone(name, "groupnorm")
    clips = torch.randn(2, 3, 8, 32, 32)
    levels = backbone.stage_features(clips)
    assert [level.shape for level in levels] == [torch.Size([2, width]) for width in backbone.stage_dims]
    assert torch.equal(levels[-1], backbone(clips))
    assert backbone.stage_dims[-1] == backbone.feature_dim


# ----- staged KD's losses on hand-made inputs ------------------------------------------------------------------
def test_gaussian_kl_is_the_closed_form_per_channel_and_zero_for_equal_statistics():
    # channel 0: student values 0, 2 (mean 1, variance 1); target 2, 6 (mean 4, variance 4)
    #   KL(N(4, 4) || N(1, 1)) = 0.5 * (log(1 / 4) + (4 + 3^2) / 1 - 1) = 0.5 * (12 - log 4)
    # channel 1: the same values in another order: the same statistics, KL 0
    student = torch.tensor([[0.0, 5.0], [2.0, 7.0]])
    target = torch.tensor([[2.0, 7.0], [6.0, 5.0]])
    expected = (0.5 * (12 - math.log(4)) + 0.0) / 2
    assert gaussian_kl(student, target, floor=0.0).item() == pytest.approx(expected, rel=1e-6)
    assert gaussian_kl(target[:, 1:], student[:, 1:], floor=0.0).item() == 0.0
    # the floor adds 0.5 x the target's mean variance (4) to both: KL(N(4, 6) || N(1, 3))
    #   = 0.5 * (log(3 / 6) + (6 + 9) / 3 - 1) = 0.5 * (4 - log 2)
    assert gaussian_kl(student[:, :1], target[:, :1], floor=0.5).item() == pytest.approx(0.5 * (4 - math.log(2)), rel=1e-6)
    assert gaussian_kl(student, student.flip(0)).item() == pytest.approx(0.0, abs=1e-7)


def test_consecutive_level_correlation_is_zero_for_equal_features_and_positive_otherwise():
    # one channel per level over two clips: the student's levels move together (correlation 1), the
    # target's in opposite directions (-1): squared difference (1 - (-1))^2 = 4
    lower = torch.tensor([[1.0], [-1.0]])
    assert level_correlation(lower, lower, eps=0.0).item() == pytest.approx(1.0)
    assert correlation_loss([lower, lower], [lower, -lower], eps=0.0).item() == pytest.approx(4.0)
    torch.manual_seed(0)
    levels = [torch.randn(8, 5), torch.randn(8, 6), torch.randn(8, 4)]
    assert correlation_loss(levels, [level.clone() for level in levels]).item() == 0.0
    assert correlation_loss(levels, [torch.randn(8, 5), torch.randn(8, 6), torch.randn(8, 4)]).item() > 0.01


def test_pseudo_label_optimisation_gives_the_exact_targets_and_masks():
    probs = torch.tensor([[0.9, 0.1, 0.0],   # confident, agrees with label 0: softened
                          [0.9, 0.1, 0.0],   # confident, disagrees with label 1: the one-hot label
                          [0.5, 0.3, 0.2],   # not confident: the one-hot label
                          [0.05, 0.05, 0.9]])  # confident, agrees with label 2: softened
    logits = probs.clamp(min=1e-12).log()
    teacher_probs = logits.softmax(1)
    targets, softened = optimised_labels(teacher_probs, torch.tensor([0, 1, 0, 2]), beta=0.5, threshold=0.8)
    expected = torch.tensor([[0.95, 0.05, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.025, 0.025, 0.95]])
    assert torch.allclose(targets, expected, atol=1e-6)
    assert softened.tolist() == [True, False, False, True]
    soft_labels, confident = confident_soft_labels(teacher_probs, threshold=0.8)
    assert torch.allclose(soft_labels, probs, atol=1e-6)
    assert confident.tolist() == [True, True, False, True]


# ----- where the gradients go ---------------------------------------------------------------------------------
def test_mlfd_teacher_phase_trains_only_the_teacher_student_phase_only_the_students():
    method = MLFD(MLFDConfig(), small_experts(), NUM_CLASSES, {d: 1.0 for d in NUM_CLASSES})
    with torch.no_grad():  # heads start at zero: give the backbones a gradient path to check
        for head in method.teacher.heads.values():
            head.weight.normal_(0, 0.1)
    batch = small_batch()
    assert int(method.phase) == TEACHER_PHASE
    losses = method(batch)
    assert {f"{d}/teacher_ce" for d in NUM_CLASSES} <= set(losses)
    losses["loss"].backward()
    assert all(g is not None and g.abs().sum() > 0 for g in grads(method.teacher))
    assert all(g is None for part in (method.backbones, method.heads, method.adapters) for g in grads(part))

    method.zero_grad(set_to_none=True)
    method.phase.fill_(STUDENT_PHASE)
    losses = method(batch)
    assert {f"{d}/{term}" for d in NUM_CLASSES for term in ("ce", "kd", "fd")} <= set(losses)
    losses["loss"].backward()
    assert all(g is None for g in grads(method.teacher))
    assert all(g is not None and g.abs().sum() > 0
               for part in (method.backbones, method.heads, method.adapters) for g in grads(part))

    # the phase is state: a resume or load_selected restores it
    restored = MLFD(MLFDConfig(), small_experts(), NUM_CLASSES, {d: 1.0 for d in NUM_CLASSES})
    restored.load_state_dict(method.state_dict())
    assert int(restored.phase) == STUDENT_PHASE


def test_staged_kd_student_terms_reach_neither_assistant_nor_teacher():
    method = StagedKD(StagedConfig(threshold=0.0), small_experts(), NUM_CLASSES, {d: 1.0 for d in NUM_CLASSES})
    terms = method.terms(small_batch(unlabelled=True))
    student_parts = (method.backbones, method.heads, method.student_adapters)
    assistant_parts = (method.assistant_backbones, method.assistant_heads, method.assistant_adapters)
    sum(terms[f"{d}/student"] for d in NUM_CLASSES).backward(retain_graph=True)
    assert all(g is not None and g.abs().sum() > 0 for part in student_parts for g in grads(part))
    assert all(g is None for part in (*assistant_parts, method.teacher) for g in grads(part))

    method.zero_grad(set_to_none=True)
    sum(terms[f"{d}/assistant"] for d in NUM_CLASSES).backward()
    assert all(g is not None and g.abs().sum() > 0 for part in assistant_parts for g in grads(part))
    assert all(g is None for part in (*student_parts, method.teacher) for g in grads(part))
    assert all(terms[f"{d}/kept_unlabelled"] == 1.0 for d in NUM_CLASSES)  # threshold 0 keeps every clip


# ----- end to end on the tiny shards ----------------------------------------------------------------------------
NAMES = ["kinetics400", "ucf101"]
METHOD_ROLES = {"mlfd": ("student", "teacher"), "staged_kd": ("student", "assistant")}


@pytest.fixture(scope="module")
def methods_run(tiny_shards, tmp_path_factory):
    """Experts once, then both methods for 2 epochs of 2 steps (MLFD: one teacher epoch, one student epoch),
    then the eval stage."""
    out = tmp_path_factory.mktemp("runs_c")
    args = [*tiny_run_args(tiny_shards, out, NAMES), "experts.epochs=1"]
    assert main_one_thread([*args, "stage=experts"]) == 0
    assert main_one_thread([*args, "stage=methods", "methods=mlfd,staged_kd", "schedule.epochs=2",
                            "schedule.steps_per_epoch=2", "mlfd.teacher_epochs=1", "mlfd.teacher_fit_steps=20",
                            "staged_kd.teacher_fit_steps=20"]) == 0
    assert main_one_thread([*args, "stage=eval"]) == 0
    return out / "tiny", args


@pytest.mark.parametrize("method", ["mlfd", "staged_kd"])
def test_method_trains_selects_and_is_evaluated(methods_run, method):
    run_dir, args = methods_run
    steps = [json.loads(line) for line in (run_dir / method / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 4 and all(math.isfinite(s["loss"]) for s in steps)
    saved = torch.load(run_dir / method / "best.pt", weights_only=True)
    assert set(saved["selection"]) == {f"{d}/{role}" for d in NAMES for role in METHOD_ROLES[method]}
    if method == "mlfd":
        assert int(saved["final"]["phase"]) == STUDENT_PHASE  # the second epoch trained the students
    config = load_config(None, args)
    infos = dataset_infos(config)
    selected = load_selected(config, infos, method)
    clips = torch.randn(2, 3, config.clip.frames, config.clip.crop_size, config.clip.crop_size)
    with torch.no_grad():
        for d in NAMES:
            for role in METHOD_ROLES[method]:
                model = selected[f"{d}/{role}"].eval()
                assert model.logits(d, role)(clips).shape == (2, len(infos[d].classes))
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    for d in NAMES:
        assert {f"{method}_{role}" for role in METHOD_ROLES[method]} <= set(metrics[d])
