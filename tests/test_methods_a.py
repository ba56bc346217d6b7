"""Methods of issue 15, group a: joint supervised training, FixMatch, Mean Teacher, Hinton KD from the
average of the experts, CA-MKD. Loss terms on hand-made inputs with values worked out by hand, where each
loss's gradient goes, and one short end-to-end run of every method on the tiny shards."""
import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import tiny_run_args
from test_train_e2e import main_one_thread
from jedi_train.config import DatasetConfig, RunConfig, load_config
from jedi_train.data import dataset_infos
from jedi_train.losses import hard_distillation, soft_target_distillation
from jedi_train.methods import build_method
from jedi_train.methods.base import FeatureMemo, StepBatch
from jedi_train.methods.ca_mkd import confidence_weights, ensemble_labels
from jedi_train.methods.hinton_kd import average_target
from jedi_train.methods.mean_teacher import ema_update, sigmoid_rampup, softmax_mse
from jedi_train.train_experts import Expert
from jedi_train.train_methods import load_selected

ROLES = {"joint_supervised": ("student",), "fixmatch": ("student",), "mean_teacher": ("student", "teacher"),
         "hinton_kd": ("student", "teacher"), "ca_mkd": ("student", "teacher")}
METHODS = tuple(ROLES)
LN3 = math.log(3.0)


# ----- loss terms on hand-made inputs ----------------------------------------------------------------------
def test_ca_mkd_weights_by_hand():
    """Three teachers, one clip of label 0. Teacher probabilities of the label 1/2, 3/4, 1/4, so CE = ln 2,
    ln 4/3, ln 4; softmax over teachers of CE = (2, 4/3, 4) / (22/3) = (3/11, 2/11, 6/11); w = (1 - s) / 2
    = (4/11, 9/22, 5/22), summing to 1, the most (9/22) for the lowest CE."""
    logits = torch.tensor([[[0.0, 0.0]], [[LN3, 0.0]], [[0.0, LN3]]])
    weights = confidence_weights(logits, torch.tensor([0]))
    assert weights[:, 0].tolist() == pytest.approx([4 / 11, 9 / 22, 5 / 22], abs=1e-6)
    assert weights.sum(0).item() == pytest.approx(1.0, abs=1e-6)
    assert weights[:, 0].argmax().item() == 1  # teacher 1 has the lowest CE
    # an unlabelled clip is scored against the ensemble's argmax: mean probabilities (1/2, 1/2), argmax 0
    assert ensemble_labels(logits).tolist() == [0]
    assert confidence_weights(logits, ensemble_labels(logits)).tolist() == weights.tolist()


def test_ca_mkd_weights_sum_to_one_per_clip_and_favour_the_right_teacher():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 5)
    labels = torch.randint(0, 5, (6,))
    logits[2, torch.arange(6), labels] = 20.0  # teacher 2 is confidently right on every clip
    weights = confidence_weights(logits, labels)
    assert torch.allclose(weights.sum(0), torch.ones(6), atol=1e-6)
    assert (weights.argmax(0) == 2).all()


def test_hinton_average_target_by_hand():
    """T = 2: logits (0, 0) -> (1/2, 1/2); (2 ln 3, 0) / 2 = (ln 3, 0) -> (3/4, 1/4); mean (5/8, 3/8)."""
    logits = torch.tensor([[[0.0, 0.0]], [[2 * LN3, 0.0]]])
    assert average_target(logits, 2.0)[0].tolist() == pytest.approx([0.625, 0.375], abs=1e-6)


def test_soft_target_distillation_by_hand():
    """Target (3/4, 1/4), student uniform: KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120; x T^2 at T = 2."""
    target = torch.tensor([[0.75, 0.25]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert soft_target_distillation(torch.zeros(1, 2), target, 1.0).item() == pytest.approx(expected, rel=1e-6)
    assert soft_target_distillation(torch.zeros(1, 2), target, 2.0).item() == pytest.approx(4 * expected, rel=1e-6)


def test_fixmatch_masked_ce_is_averaged_over_the_whole_unlabelled_batch():
    """Confidences 0.9 and 0.5 at threshold 0.8: only clip 0 gets a pseudo-label (class 0); the student is
    uniform, so its CE is ln 2 and the mean over both clips ln 2 / 2."""
    weak = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0]])
    loss, kept = hard_distillation(torch.zeros(2, 2), weak, 0.8)
    assert kept.tolist() == [True, False]
    assert loss.item() == pytest.approx(math.log(2.0) / 2, rel=1e-6)


def test_mean_teacher_terms_by_hand():
    # softmax (1/2, 1/2) vs (3/4, 1/4): (1/4)^2 + (1/4)^2 = 1/8
    assert softmax_mse(torch.zeros(1, 2), torch.tensor([[LN3, 0.0]])).item() == pytest.approx(0.125, rel=1e-6)
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(500, 100) == 1.0


def test_ema_update_is_the_exact_formula():
    average, model = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        average.weight.copy_(torch.tensor([[1.0, -2.0]]))
        average.bias.fill_(0.5)
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
        model.bias.fill_(-1.5)
    ema_update(average, model, 0.9)  # 0.9 * average + 0.1 * model
    assert average.weight[0].tolist() == pytest.approx([1.2, -1.4], abs=1e-6)
    assert average.bias.item() == pytest.approx(0.3, abs=1e-6)
    norm, source = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    source.running_mean.fill_(7.0)
    ema_update(norm, source, 0.9)
    assert norm.running_mean.tolist() == [7.0, 7.0]  # buffers are copied, not averaged


# ----- where each loss's gradient goes ----------------------------------------------------------------------
class TinyBackbone(nn.Module):
    """Clip [B, 3, T, H, W] -> mean colour -> 4 features: enough to carry a gradient."""
    feature_dim = 4

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 4)

    def forward(self, clips):
        return torch.tanh(self.layer(clips.mean(dim=(2, 3, 4))))


@dataclass
class FakeInfo:
    classes: list
    labelled: int

    def samples(self, split):
        return self.labelled


def hand_made_method(name: str, **settings):
    torch.manual_seed(0)
    infos = {"broad": FakeInfo(["a", "b", "c"], 40), "small": FakeInfo(["x", "y"], 10)}
    config = RunConfig(datasets={d: DatasetConfig(shards="unused") for d in infos})
    for key, value in settings.items():
        setattr(getattr(config, name), key, value)
    experts = {d: Expert(TinyBackbone(), len(info.classes)) for d, info in infos.items()}
    return build_method(name, config, infos, experts)


def hand_made_batch(step: int = 0) -> StepBatch:
    torch.manual_seed(1)
    clips = lambda: torch.randn(3, 3, 2, 4, 4)  # noqa: E731
    return StepBatch(labelled_clips={"broad": clips(), "small": clips()},
                     labels={"broad": torch.tensor([0, 1, 2]), "small": torch.tensor([0, 1, 1])},
                     unlabelled_clips={"broad": clips(), "small": clips()},
                     unlabelled_student_clips={"broad": clips(), "small": clips()},
                     unlabelled_true_labels={"broad": torch.tensor([0, 0, 1]), "small": torch.tensor([1, 1, 0])},
                     step=step)


def gradients(method, batch) -> dict[str, bool]:
    """Parameter name -> whether the step's loss gave it a nonzero gradient."""
    method.zero_grad(set_to_none=True)
    losses = method(batch)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    return {name: p.grad is not None and p.grad.abs().sum().item() > 0 for name, p in method.named_parameters()}


def test_joint_supervised_trains_one_shared_backbone_and_every_head():
    method = hand_made_method("joint_supervised")
    assert method.broad == "broad" and not method.reads_unlabelled
    reached = gradients(method, hand_made_batch())
    assert set(reached) == {"backbone.layer.weight", "backbone.layer.bias", *(f"heads.{d}.{p}" for d in
                                                                                ("broad", "small")
                                                                                for p in ("weight", "bias"))}
    assert all(reached.values())
    assert method.bundle_parts("small", "student") == (["broad"], [method.backbone], method.heads["small"])


UNLABELLED_WEIGHT = {"fixmatch": "lambda_u", "hinton_kd": "alpha", "ca_mkd": "alpha"}


@pytest.mark.parametrize("name", ["fixmatch", "hinton_kd", "ca_mkd"])
def test_unlabelled_terms_train_the_students_only(name):
    """Every student gets a gradient and the frozen teachers none; the unlabelled term on its own moves every
    student backbone (the gradient with its weight at 0 differs)."""
    settings = {"threshold": 0.0} if name == "fixmatch" else {}  # every clip gets a pseudo-label
    method = hand_made_method(name, **settings)
    batch = hand_made_batch()
    reached = gradients(method, batch)
    students = [k for k in reached if k.startswith("students.")]
    assert students and all(reached[k] for k in students)
    assert all(p.grad is None for k, p in method.named_parameters() if not k.startswith("students."))
    assert {id(p) for p in method.trainable_parameters()} == {id(p) for p in method.students.parameters()}
    full = {d: method.students[d].backbone.layer.weight.grad.clone() for d in method.names}
    without = hand_made_method(name, **settings, **{UNLABELLED_WEIGHT[name]: 0.0})
    gradients(without, batch)
    for d in method.names:
        assert not torch.allclose(full[d], without.students[d].backbone.layer.weight.grad)


def test_kd_teacher_role_is_the_combined_target_at_t1():
    method = hand_made_method("hinton_kd")
    clips = torch.randn(5, 3, 2, 4, 4)
    with torch.no_grad():
        teacher = method.logits("small", "teacher", FeatureMemo())(clips)
        expected = average_target(method.teacher_logits("small", clips), 1.0).log()
    assert teacher.shape == (5, 2) and torch.allclose(teacher, expected, atol=1e-6)
    assert method.bundle_parts("small", "teacher") is None


def test_mean_teacher_gradient_never_reaches_the_ema_and_after_step_averages():
    method = hand_made_method("mean_teacher", ema_decay=0.5, rampup_steps=0)
    reached = gradients(method, hand_made_batch())
    assert all(reached[k] for k in reached if k.startswith("students."))
    ema = {k: p for k, p in method.named_parameters() if k.startswith("teachers.")}
    assert ema and all(p.grad is None and not p.requires_grad for p in ema.values())
    assert {id(p) for p in method.trainable_parameters()} == {id(p) for k, p in method.named_parameters()
                                                              if k.startswith("students.")}
    before = {k: p.detach().clone() for k, p in ema.items()}
    with torch.no_grad():
        for p in method.students.parameters():
            p.add_(1.0)
    method.after_step(1)
    for k, p in ema.items():
        student = dict(method.named_parameters())[k.replace("teachers.", "students.").replace(".inner", "")]
        assert torch.allclose(p, 0.5 * before[k] + 0.5 * student.detach(), atol=1e-6)
    # the EMA weights are in the state dict, so a resume or a selected epoch restores them
    assert any(k.startswith("teachers.broad.inner.") for k in method.state_dict())


# ----- end to end on the tiny shards --------------------------------------------------------------------------
NAMES = ["ucf101", "ssv2"]


def run_args(tiny_shards, root) -> list[str]:
    return [*tiny_run_args(tiny_shards, root, NAMES), "clip.test_clips=1"]  # one test view: the eval runs once


@pytest.fixture(scope="module")
def experts_run(tiny_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("methods_a")
    assert main_one_thread([*run_args(tiny_shards, out), "stage=experts", "experts.epochs=1"]) == 0
    return out


@pytest.fixture(scope="module")
def methods_run(experts_run, tiny_shards):
    # --resume as scripts/methods_table.sh runs it: with no checkpoint yet, every method starts fresh
    assert main_one_thread([*run_args(tiny_shards, experts_run), "stage=methods", "--resume",
                            f"methods={','.join(METHODS)}", "schedule.epochs=1", "schedule.steps_per_epoch=2",
                            "mean_teacher.rampup_steps=2"]) == 0
    return experts_run


def test_a_fresh_start_under_resume_prepares_the_method(methods_run, tiny_shards):
    """setup() (here: fitting the foreign experts' maps) runs whenever there is no checkpoint to resume, so the
    weights the method started from (epoch -1) hold fitted maps, not the maps `build` initialised."""
    from accelerate.utils import set_seed

    from jedi_train.train_methods import build_from_experts
    config = load_config(None, run_args(tiny_shards, methods_run))
    set_seed(config.seed)  # as run.py does before building each method
    built = build_from_experts(config, dataset_infos(config), "hinton_kd").state_dict()
    started = torch.load(methods_run / "tiny" / "hinton_kd" / "best.pt", weights_only=True)["states"]["-1"]
    foreign = f"teachers.maps.{NAMES[0]}.{NAMES[1]}.weight"
    own = f"teachers.maps.{NAMES[0]}.{NAMES[0]}.weight"
    assert torch.equal(built[own], started[own])  # the own expert's head is its map from the start
    assert not torch.allclose(built[foreign], started[foreign])


@pytest.mark.parametrize("name", METHODS)
def test_method_trains_selects_and_reloads(methods_run, tiny_shards, name):
    run = methods_run / "tiny"
    steps = [json.loads(line) for line in (run / name / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(math.isfinite(s["loss"]) for s in steps)
    saved = torch.load(run / name / "best.pt", weights_only=True)
    assert set(saved["selection"]) == {f"{d}/{role}" for d in NAMES for role in ROLES[name]}
    config = load_config(None, run_args(tiny_shards, methods_run))
    infos = dataset_infos(config)
    selected = load_selected(config, infos, name)
    clips = torch.randn(2, 3, config.clip.frames, config.clip.crop_size, config.clip.crop_size)
    for d in NAMES:
        for role in ROLES[name]:
            model = selected[f"{d}/{role}"].eval()
            with torch.no_grad():
                assert model.logits(d, role, FeatureMemo())(clips).shape == (2, len(infos[d].classes))


def test_eval_table_shows_every_method(methods_run, tiny_shards):
    assert main_one_thread([*run_args(tiny_shards, methods_run), "stage=eval"]) == 0
    metrics = json.loads((methods_run / "tiny" / "metrics.json").read_text())["metrics"]
    for d in NAMES:
        for name in METHODS:
            assert f"{name}_student" in metrics[d]
        for name in ("mean_teacher", "hinton_kd", "ca_mkd"):
            assert f"{name}_teacher" in metrics[d]
