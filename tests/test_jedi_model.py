"""The JEDI step's gradient paths and loss terms (METHOD.md section 1, step 4)."""
import pytest
import torch

from jedi_train.jedi import DistillSettings, JediModel
from jedi_train.losses import hard_distillation, scale_gradient, soft_distillation
from jedi_train.models import build_backbone

NAMES = ["a", "b", "c"]
CLASSES = {"a": 4, "b": 3, "c": 5}


def make_model(teacher_inputs="all", norm="batchnorm", **settings):
    torch.manual_seed(0)
    backbones = {n: build_backbone("x3d_tiny", norm) for n in NAMES}
    model = JediModel(backbones, CLASSES, teacher_inputs=teacher_inputs, settings=DistillSettings(**settings))
    model.init_teachers_from_students()
    return model


def stepped_model(**kwargs):
    """After one optimiser step: at step 0 the teacher's foreign weight blocks are zero, so no gradient
    can reach a foreign backbone yet (that is the step-0 = expert initialisation)."""
    model = make_model(**kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(**make_inputs(seed=7))["loss"].backward()
    optimizer.step()
    model.zero_grad()
    return model


def make_inputs(batch=4, seed=1, strong=False):
    g = torch.Generator().manual_seed(seed)
    clips = lambda: {n: torch.randn(batch, 3, 8, 32, 32, generator=g) for n in NAMES}  # noqa: E731
    labels = {n: torch.randint(0, CLASSES[n], (batch,), generator=g) for n in NAMES}
    inputs = dict(labelled_clips=clips(), labels=labels, unlabelled_clips=clips())
    if strong:  # another view of the same clips: the weak view plus noise
        inputs["unlabelled_student_clips"] = {n: v + 0.5 * torch.randn(v.shape, generator=g)
                                              for n, v in inputs["unlabelled_clips"].items()}
    return inputs


def test_teacher_equals_expert_at_step_zero():
    model = make_model().eval()
    x = torch.randn(3, 3, 8, 32, 32)
    for n in NAMES:
        torch.testing.assert_close(model.teacher_logits(n, x), model.student_logits(n, x))


def test_every_loss_term_is_nonzero_and_finite():
    out = make_model()(**make_inputs())
    for n in NAMES:
        for term in ("sup_student", "sup_teacher"):
            assert out[f"{n}/{term}"].item() > 0
    assert torch.isfinite(out["loss"])
    # at step 0 teacher == student; on one view (and GroupNorm, so both passes normalise alike) the soft KL is
    # exactly zero: the degenerate control of METHOD.md 1b. After a step, or with a strong view, it is not.
    one_view = make_model(norm="groupnorm")(**make_inputs())
    assert all(one_view[f"{n}/dist"].item() == pytest.approx(0.0, abs=1e-6) for n in NAMES)
    out = stepped_model()(**make_inputs(seed=2))
    assert all(out[f"{n}/dist"].item() > 0 for n in NAMES)


def _grad_norms(model, loss):
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {n: sum(p.grad.abs().sum().item() for p in model.backbones[n].parameters() if p.grad is not None)
            for n in NAMES}


def test_teacher_loss_of_one_dataset_reaches_every_backbone():
    model = stepped_model()
    out = model(**make_inputs())
    # rebuild the graph of a's teacher loss alone: it must reach all three backbones
    inputs = make_inputs()
    feats = [model.backbones[j](inputs["labelled_clips"]["a"]) for j in model.teacher_sources("a")]
    loss = torch.nn.functional.cross_entropy(model.teacher_heads["a"](torch.cat(feats, 1)), inputs["labels"]["a"])
    norms = _grad_norms(model, loss)
    assert all(norms[n] > 0 for n in NAMES), norms
    assert out["loss"].requires_grad


def test_foreign_gradient_path_can_be_closed():
    model = stepped_model()
    inputs = make_inputs()
    with_path = _grad_norms(model, model(**inputs, foreign_grad_scale=1.0)["loss"])
    model.zero_grad()
    # only dataset a has labels that matter: weight the others to zero and close the foreign path;
    model.loss_weights = {"a": 1.0, "b": 0.0, "c": 0.0}
    closed = _grad_norms(model, model(**inputs, foreign_grad_scale=0.0)["loss"])
    opened = _grad_norms(model, model(**inputs, foreign_grad_scale=1.0)["loss"])
    assert closed["b"] == 0 and closed["c"] == 0
    assert opened["b"] > 0 and opened["c"] > 0
    assert all(v > 0 for v in with_path.values())


def test_pseudo_labels_carry_no_gradient():
    teacher = torch.randn(6, 4, requires_grad=True)
    student = torch.randn(6, 4, requires_grad=True)
    soft_distillation(student, teacher, 1.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    teacher2 = torch.tensor([[5.0, 0, 0, 0]] * 3 + [[0.1, 0, 0, 0]] * 3, requires_grad=True)
    loss, mask = hard_distillation(student, teacher2, threshold=0.8)
    loss.backward()
    assert teacher2.grad is None
    assert mask.tolist() == [True] * 3 + [False] * 3


def test_self_training_control_never_mixes_datasets():
    model = stepped_model(teacher_inputs="own")
    assert all(model.teacher_sources(n) == [n] for n in NAMES)
    model.loss_weights = {"a": 1.0, "b": 0.0, "c": 0.0}
    norms = _grad_norms(model, model(**make_inputs())["loss"])
    assert norms["a"] > 0 and norms["b"] == 0 and norms["c"] == 0


def test_foreign_clips_do_not_touch_batchnorm_statistics():
    model = make_model()
    inputs = make_inputs()
    bn = [m for m in model.backbones["a"].modules() if isinstance(m, torch.nn.BatchNorm3d)][0]
    # reference: running stats after a pass over a's own clips only
    own_only = make_model()
    own_only.backbones["a"](torch.cat([inputs["labelled_clips"]["a"], inputs["unlabelled_clips"]["a"]]))
    model(**inputs)
    ref = [m for m in own_only.backbones["a"].modules() if isinstance(m, torch.nn.BatchNorm3d)][0]
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    # and with foreign_bn=train they do change
    polluted = make_model(freeze_foreign_bn_stats=False)
    polluted(**inputs)
    bn_polluted = [m for m in polluted.backbones["a"].modules() if isinstance(m, torch.nn.BatchNorm3d)][0]
    assert not torch.allclose(bn_polluted.running_mean, ref.running_mean)


def test_scale_gradient_is_identity_forward():
    x = torch.randn(5, requires_grad=True)
    y = scale_gradient(x, 0.25)
    torch.testing.assert_close(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((5,), 0.25))


@pytest.mark.parametrize("norm", ["batchnorm", "groupnorm"])
def test_backbones_of_both_norms_run(norm):
    out = make_model(norm=norm)(**make_inputs(batch=2))
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("distillation", ["soft", "hard"])
def test_control_learns_from_unlabelled_clips_with_two_views(distillation):
    """The control (teacher reads the own student only) starts equal to its student, yet with the weak view
    for the teacher and the strong view for the student its distillation term is non-zero at step 0 and its
    gradient reaches the control's backbones: the unlabelled clips teach it something."""
    settings = dict(norm="groupnorm", distillation=distillation, threshold=0.0)
    inputs = make_inputs(strong=True)
    control = make_model(teacher_inputs="own", **settings)
    out = control(**inputs)
    assert all(out[f"{n}/dist"].item() > 0 for n in NAMES)
    with_unlabelled = _grad_norms(control, out["loss"])
    grads = {n: [p.grad.clone() for p in control.backbones[n].parameters()] for n in NAMES}
    # the same model without the distillation term: with GroupNorm the supervised gradients are the same,
    # so any difference is the unlabelled clips' gradient
    supervised = make_model(teacher_inputs="own", distill_weight=0.0, **settings)
    _grad_norms(supervised, supervised(**inputs)["loss"])
    for n in NAMES:
        change = sum((a - p.grad).abs().sum().item() for a, p in zip(grads[n], supervised.backbones[n].parameters()))
        assert change > 1e-6 * with_unlabelled[n], n


@pytest.mark.parametrize("teacher_inputs", ["all", "own"])
def test_teacher_never_sees_the_strong_view(teacher_inputs):
    """Every pass without gradient (the teachers' passes) reads weak-view clips only; the strong view goes
    through the own backbone, with gradient, for the student."""
    model = stepped_model(teacher_inputs=teacher_inputs)
    inputs = make_inputs(strong=True)
    strong_rows = torch.cat(list(inputs["unlabelled_student_clips"].values())).flatten(1)
    weak_rows = torch.cat(list(inputs["unlabelled_clips"].values())).flatten(1)
    seen = {"teacher_weak": 0, "student_strong": 0}

    def check(module, args):
        rows = args[0].flatten(1)
        has_strong = (torch.cdist(rows, strong_rows) < 1e-6).any(dim=1)
        if not torch.is_grad_enabled():
            assert not has_strong.any(), "a teacher pass read the strong view"
            seen["teacher_weak"] += int((torch.cdist(rows, weak_rows) < 1e-6).any(dim=1).sum())
        else:
            seen["student_strong"] += int(has_strong.sum())

    hooks = [b.register_forward_pre_hook(check) for b in model.backbones.values()]
    try:
        model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    sources = sum(len(model.teacher_sources(n)) for n in NAMES)
    assert seen["teacher_weak"] == 4 * sources  # every source backbone reads each dataset's weak view once
    assert seen["student_strong"] == 4 * len(NAMES)


def test_supervised_continuation_reads_no_unlabelled_clips():
    inputs = make_inputs()
    del inputs["unlabelled_clips"]
    out = make_model(teacher_inputs="own")(**inputs)
    assert torch.isfinite(out["loss"]) and not any(k.endswith("/dist") for k in out)
