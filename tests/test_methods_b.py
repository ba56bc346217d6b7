"""Graph distillation (jedi_train/methods/graph_distillation.py): its two losses against exact values, the
parameters each loss term reaches, and one end-to-end run on the tiny shards."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_run_args
from jedi_train.methods.base import StepBatch
from jedi_train.methods.graph_distillation import Config, GraphDistillation, ground_cost
from jedi_train.methods.graph_losses import TensorSketch, compact_bilinear, sinkhorn_distance
from test_train_e2e import main_one_thread

linprog = pytest.importorskip("scipy.optimize").linprog  # the `test` extra holds scipy

NAMES = ["ucf101", "hmdb51"]  # two datasets: one teacher pair, the smallest graph with an edge


def exact_transport_cost(p: np.ndarray, q: np.ndarray, cost: np.ndarray) -> float:
    """Optimal transport by linear program: min <P, C> over P >= 0 with rows summing to p, columns to q."""
    n, m = cost.shape
    rows = np.kron(np.eye(n), np.ones(m))
    columns = np.kron(np.ones(n), np.eye(m))
    result = linprog(cost.ravel(), A_eq=np.vstack([rows, columns]), b_eq=np.concatenate([p, q]), bounds=(0, None))
    assert result.success
    return result.fun


def test_sinkhorn_distance_approaches_the_exact_transport_cost_as_epsilon_shrinks():
    """4 bins, a symmetric cost that is no metric of a line (the cheapest plan is not the sorted one).
    Exact cost 0.21. Measured |Sinkhorn - exact| (500 iterations, float64): eps 0.3: 5.8e-2, 0.1: 5.6e-3,
    0.03: 5.5e-7, 0.01: 4e-16. Required: the error does not grow as eps shrinks, is > 1e-2 at eps 0.3 (the
    regularisation is real) and < 1e-5 from eps 0.03 on."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    cost = torch.tensor([[0, .9, .2, .6], [.9, 0, .5, .3], [.2, .5, 0, .8], [.6, .3, .8, 0]], dtype=torch.float64)
    exact = exact_transport_cost(p.numpy(), q.numpy(), cost.numpy())
    assert exact == pytest.approx(0.21, abs=1e-9)
    errors = []
    for epsilon in (0.3, 0.1, 0.03, 0.01):
        p_var = p.clone().requires_grad_()
        distance = sinkhorn_distance(p_var, q, cost, epsilon, iterations=500)
        distance.backward()
        assert torch.isfinite(p_var.grad).all() and p_var.grad.abs().sum() > 0
        errors.append(abs(distance.item() - exact))
    assert errors[0] > 1e-2
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:]))
    assert errors[2] < 1e-5 and errors[3] < 1e-5
    # batched: a stack of the same pair, and identical histograms cost (almost) nothing
    batched = sinkhorn_distance(torch.stack([p, q]), torch.stack([q, q]), cost, 0.01, iterations=500)
    assert batched[0].item() == pytest.approx(exact, abs=1e-5) and batched[1].item() < 1e-5


def test_sinkhorn_gradient_moves_the_student_toward_the_teacher():
    """One gradient step on logits through softmax lowers the distance: the term trains, in float32."""
    cost = ground_cost(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), "head_cosine")
    assert torch.all(cost.diagonal() == 0) and cost.max() == 1 and cost.min() >= 0
    teacher = torch.tensor([[0.7, 0.1, 0.05, 0.05, 0.05, 0.05]])
    logits = torch.zeros(1, 6, requires_grad=True)
    before = sinkhorn_distance(logits.softmax(-1), teacher, cost, 0.05, 30)
    before.backward()
    with torch.no_grad():
        after = sinkhorn_distance((logits - 5.0 * logits.grad).softmax(-1), teacher, cost, 0.05, 30)
    assert after < before


def test_compact_bilinear_inner_products_approximate_the_full_bilinear_ones():
    """<CBP(x, y), CBP(x', y')> estimates <x, x'> <y, y'> (x, x' unit vectors in 32 dims, y, y' in 64, each
    pair with cosine about 0.8, so the exact value is about 0.64 and never near 0). Measured mean relative
    error over 500 draws, 5 sketch seeds: D=256: 0.12-0.18, D=1024: 0.057-0.072 (error * sqrt(D) ~ 2.1).
    Bounds: D=256 < 0.25, D=1024 < 0.12, and quadrupling D at least divides it by 1.4 (1/sqrt(D): by 2)."""
    seed = 0
    generator = torch.Generator().manual_seed(seed)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=generator), dim=-1)

    x, y = unit(500, 32), unit(500, 64)
    x_near = F.normalize(x + 0.75 * unit(500, 32), dim=-1)
    y_near = F.normalize(y + 0.75 * unit(500, 64), dim=-1)
    exact = (x * x_near).sum(-1) * (y * y_near).sum(-1)
    assert exact.min() > 0.3
    errors = {}
    for out_dim in (256, 1024):
        sketch = TensorSketch(32, 64, out_dim, seed=seed)
        approx = (compact_bilinear(x, y, sketch) * compact_bilinear(x_near, y_near, sketch)).sum(-1)
        errors[out_dim] = ((approx - exact).abs() / exact).mean().item()
    assert errors[256] < 0.25 and errors[1024] < 0.12
    assert errors[1024] < errors[256] / 1.4
    # the sketch is fixed by its seed and travels in the state dict
    again = TensorSketch(32, 64, 256, seed=seed)
    assert torch.equal(compact_bilinear(x, y, again), compact_bilinear(x, y, TensorSketch(32, 64, 256, seed=seed)))
    assert set(again.state_dict()) == {"hash_x", "sign_x", "hash_y", "sign_y"}


class TinyBackbone(nn.Module):
    """A few-parameter stand-in for VideoBackbone: clip [B, 3, T, H, W] -> feature [B, 8]."""
    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)

    def forward(self, clips):
        return F.relu(self.conv(clips)).mean(dim=(2, 3, 4))


class TinyExpert(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.backbone = TinyBackbone()
        self.head = nn.Linear(8, num_classes)


def tiny_method() -> tuple[GraphDistillation, StepBatch]:
    torch.manual_seed(0)
    num_classes = {"a": 3, "b": 4, "c": 5}
    method = GraphDistillation(Config(sketch_dim=32), {d: TinyExpert(c) for d, c in num_classes.items()},
                               num_classes, {d: 1.0 for d in num_classes})
    clips = lambda n: torch.randn(n, 3, 2, 4, 4)  # noqa: E731
    batch = StepBatch(labelled_clips={d: clips(2) for d in num_classes},
                      labels={d: torch.randint(c, (2,)) for d, c in num_classes.items()},
                      unlabelled_clips={d: clips(3) for d in num_classes},
                      unlabelled_student_clips={d: clips(3) for d in num_classes})
    return method, batch


@pytest.mark.parametrize("term", ["ce", "logits_graph", "repr_graph"])
def test_each_term_reaches_exactly_its_students_parameters(term):
    """Dataset a's term: its gradient reaches a's student backbone and head (the representation term: a's
    backbone and a's adapters, not the head; CE and the logits graph: backbone and head, no adapter), and
    nothing of the other students, the frozen teachers, their maps or the sketches."""
    method, batch = tiny_method()
    assert all(not p.requires_grad for p in method.teachers.parameters())
    assert {n for n, _ in method.named_buffers()} >= {"cost_a", "sketches.0.hash_x"}
    method.terms("a", batch)[term].backward()
    reached = {name for name, p in method.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    expected = {name for name, _ in method.named_parameters() if name.startswith("backbones.a.")}
    if term == "repr_graph":
        expected |= {name for name, _ in method.named_parameters() if name.startswith("adapters.a.")}
    else:
        expected |= {"heads.a.weight", "heads.a.bias"}
    assert reached == expected
    untouched = {name for name, p in method.named_parameters() if p.grad is None}
    assert untouched == {name for name, _ in method.named_parameters()} - expected
    assert len(method.adapters["a"]) == 3  # pairs (a, b), (a, c), (b, c)


def test_forward_sums_the_weighted_terms():
    method, batch = tiny_method()
    method.cfg.lambda_logits, method.cfg.lambda_repr = 0.5, 2.0
    losses = method(batch)
    expected = sum(losses[f"{d}/ce"] + 0.5 * losses[f"{d}/logits_graph"] + 2.0 * losses[f"{d}/repr_graph"]
                   for d in "abc")
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(not v.requires_grad for k, v in losses.items() if k != "loss")


@pytest.fixture(scope="module")
def experts_run(tiny_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("graph_runs")
    assert main_one_thread([*tiny_run_args(tiny_shards, out, NAMES), "stage=experts"]) == 0
    return out


def test_graph_distillation_end_to_end(experts_run, tiny_shards):
    from jedi_train.config import load_config
    from jedi_train.data import dataset_infos
    from jedi_train.train_methods import load_selected

    args = [*tiny_run_args(tiny_shards, experts_run, NAMES), "schedule.epochs=1", "schedule.steps_per_epoch=2",
            "graph_distillation.sketch_dim=64"]
    assert main_one_thread([*args, "stage=methods", "method=graph_distillation"]) == 0
    run_dir = experts_run / "tiny"
    steps = [json.loads(line) for line in (run_dir / "graph_distillation" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(np.isfinite(step["loss"]) for step in steps)
    saved = torch.load(run_dir / "graph_distillation" / "best.pt", map_location="cpu", weights_only=True)
    assert set(saved["selection"]) == {f"{d}/student" for d in NAMES}
    config = load_config(None, args)
    infos = dataset_infos(config)
    selected = load_selected(config, infos, "graph_distillation")
    clips = torch.randn(2, 3, config.clip.frames, config.clip.crop_size, config.clip.crop_size)
    for d in NAMES:
        with torch.no_grad():
            assert selected[f"{d}/student"].eval().logits(d, "student")(clips).shape == (2, len(infos[d].classes))
    assert main_one_thread([*args, "stage=eval", "method=graph_distillation"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert all("graph_distillation_student" in metrics[d] for d in NAMES)
