"""PKD + WISE pieces (jedi_train/compressed): the teacher schedule, frozen backbones, the WISE walk and
its MAC count against torch's FlopCounterMode, and the typed config."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from jedi_train.compressed.config import ConfigError, load_config
from jedi_train.compressed.data import ModalitySplit, normalise
from jedi_train.compressed.exits import ExitHeads, all_exit_logits, exit_costs, exit_names
from jedi_train.compressed.nets import ORDER, build_net
from jedi_train.compressed import pkd
from jedi_train.compressed.pkd import soft_cross_entropy, teacher_for_epoch, train_exits
from jedi_train.compressed.wise import early_exit_predict, fit_wise, walk

CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread (two threads spin against each other on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_nets() -> dict:
    torch.manual_seed(0)
    return {"mv": build_net("mv", CLASSES, "4,4,6,8,8", "1,1,2,2,2", 0.0),
            "residual": build_net("residual", CLASSES, "4,4,6,8,8", "2,2,2,2,2", 0.0),
            "iframe": build_net("iframe", CLASSES, "4,8,8,12,16", "2,2,2,2,2", 0.0)}


def tiny_split(clips: int = 12, segments: int = 2) -> ModalitySplit:
    generator = torch.Generator().manual_seed(0)
    return ModalitySplit(
        {"mv": (torch.randn(clips, segments, 2, 8, 10, generator=generator) * 4).half(),
         "residual": (torch.randn(clips, segments, 3, 32, 40, generator=generator) * 20).half(),
         "iframe": torch.randint(0, 256, (clips, segments, 3, 32, 40), generator=generator, dtype=torch.uint8)},
        torch.arange(clips) % CLASSES, [f"k{i}" for i in range(clips)])


def test_the_pkd_teacher_switches_mv_residual_iframe_by_epoch():
    assert [teacher_for_epoch(e, 6) for e in range(6)] == ["mv", "mv", "residual", "residual", "iframe", "iframe"]
    assert [teacher_for_epoch(e, 4) for e in range(4)] == ["mv", "mv", "residual", "iframe"]  # floor(3 e / E)
    with pytest.raises(ValueError):
        teacher_for_epoch(6, 6)


def test_pkd_training_uses_the_scheduled_teacher_and_only_soft_targets(monkeypatch):
    nets, split = tiny_nets(), tiny_split()
    targets = []
    real = pkd.soft_cross_entropy
    monkeypatch.setattr(pkd, "soft_cross_entropy", lambda s, t, T: (targets.append(t), real(s, t, T))[1])
    monkeypatch.setattr(pkd.F, "cross_entropy", lambda *a, **k: pytest.fail("PKD used the hard labels"))
    history = train_exits("pkd", nets, ExitHeads(nets, CLASSES), split, epochs=3, batch_size=6, lr=1e-3,
                          weight_decay=0.0, temperature=1.0, seed=0, flip=True, log=lambda line: None)
    assert [record["teacher"] for record in history] == ["mv", "residual", "iframe"]
    outputs = pkd.frozen_outputs(nets, split, 12, flip=True)  # every net's logits, plain and mirrored
    rows = {m: torch.cat([outputs[False][m][3], outputs[True][m][3]]) for m in ORDER}

    def teacher_of(logits: torch.Tensor) -> set[str]:
        return {m for m in ORDER if all(torch.isclose(rows[m], row).all(1).any() for row in logits)}

    assert len(targets) == 3 * 2 * 9  # epochs x batches x exits
    assert [teacher_of(targets[9 * 2 * e]) for e in range(3)] == [{"mv"}, {"residual"}, {"iframe"}]
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.isclose(soft_cross_entropy(logits, logits), -(logits.softmax(1) * logits.log_softmax(1)).sum())


def test_exit_training_moves_only_the_exits():
    nets, split = tiny_nets(), tiny_split()
    heads = ExitHeads(nets, CLASSES)
    before = {m: {k: v.clone() for k, v in net.state_dict().items()} for m, net in nets.items()}
    heads_before = {k: v.clone() for k, v in heads.state_dict().items()}
    train_exits("ce", nets, heads, split, epochs=3, batch_size=6, lr=1e-2, weight_decay=0.0, temperature=1.0,
                seed=0, flip=False, log=lambda line: None)
    for modality, net in nets.items():
        assert all(torch.equal(value, before[modality][key]) for key, value in net.state_dict().items())  # BN stats too
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert all(p.grad is not None for p in heads.parameters())
    assert any(not torch.equal(value, heads_before[key]) for key, value in heads.state_dict().items())


def test_the_wise_walk_stops_at_the_first_confident_combined_exit():
    # 3 exits, 4 clips; w_n = one-hot on exit n, so the combination at n is exit n's own logits
    weights = [torch.eye(n)[n - 1] for n in (1, 2, 3)]
    confident, unsure = [5.0, 0.0, 0.0], [0.1, 0.0, 0.0]
    logits = torch.tensor([[confident, unsure, unsure, unsure],   # exit 1
                           [unsure, [0.0, 6.0, 0.0], unsure, unsure],   # exit 2
                           [unsure, unsure, [0.0, 0.0, 7.0], [0.0, 0.3, 0.0]]])  # exit 3
    taken, prediction = walk(logits, weights, threshold=0.9)
    assert taken.tolist() == [0, 1, 2, 2] and prediction.tolist() == [0, 1, 2, 1]
    assert walk(logits, weights, threshold=0.0)[0].tolist() == [0, 0, 0, 0]
    # a combination can be confident where no single exit is
    summed = [torch.ones(n) for n in (1, 2, 3)]
    two_halves = torch.tensor([[[1.5, 0.0, 0.0]], [[1.5, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])
    assert walk(two_halves, summed, threshold=0.9)[0].tolist() == [1]


def test_fit_wise_learns_to_trust_the_informative_exit():
    labels = torch.arange(60) % CLASSES
    informative = torch.nn.functional.one_hot(labels, CLASSES).float() * 3
    noise = torch.randn(60, CLASSES, generator=torch.Generator().manual_seed(0)) * 3
    weights = fit_wise(torch.stack([noise, informative]), labels, l1=1e-3, steps=100, lr=0.05)
    assert weights[1][1] > 3 * weights[1][0].abs()


@pytest.mark.parametrize("threshold", [0.0, 0.34, 0.5, 1.01])
def test_the_macs_of_a_walk_equal_the_flop_counters_for_the_exits_taken(threshold):
    nets, split = tiny_nets(), tiny_split(clips=1)
    heads = ExitHeads(nets, CLASSES)
    for net in nets.values():
        net.eval()
    heads.eval()
    clip = normalise(split.inputs)
    costs = exit_costs(nets, heads, clip)
    assert costs["names"] == exit_names() and len(costs["walk"]) == 12
    assert all(a < b for a, b in zip(costs["walk"], costs["walk"][1:]))
    weights = [torch.full((n,), 1.0 / n) for n in range(1, 13)]
    with FlopCounterMode(display=False) as counter:
        prediction, taken = early_exit_predict(nets, heads, weights, clip, threshold)
    assert costs["walk"][taken] == counter.get_total_flops() // 2
    simulated, predicted = walk(all_exit_logits(nets, heads, clip), weights, threshold)
    assert (simulated.item(), predicted.item()) == (taken, prediction)
    if threshold == 0.0:
        assert taken == 0
    if threshold > 1:
        assert taken == 11 and costs["walk"][11] > sum(costs["alone"][i] for i in (3, 7, 11))  # heads cost too


def test_modality_nets_are_ordered_by_cost_and_mv_residual_are_smaller_than_iframe():
    config = load_config(None, ["shards=x"])
    nets = {m: build_net(m, 6, getattr(config, m).widths, getattr(config, m).strides, 0.0).eval() for m in ORDER}
    heads = ExitHeads(nets, 6, config.exits.width).eval()
    clip = {"mv": torch.zeros(1, 4, 2, 16, 16), "residual": torch.zeros(1, 4, 3, 64, 64),
            "iframe": torch.zeros(1, 4, 3, 64, 64)}
    alone = exit_costs(nets, heads, clip)["alone"]
    finals = {m: alone[4 * i + 3] for i, m in enumerate(ORDER)}
    assert finals["mv"] < finals["iframe"] and finals["residual"] < finals["iframe"]
    size = {m: sum(p.numel() for p in net.parameters()) for m, net in nets.items()}
    assert size["mv"] < size["iframe"] and size["residual"] < size["iframe"]


def test_config_overrides_are_typed_and_unknown_keys_listed(tmp_path):
    config = load_config(None, ["shards=s", "exits.epochs=6", "mv.lr=0.01"])
    assert config.exits.epochs == 6 and config.mv.lr == 0.01 and config.mv.widths == "8,16,24,32,48"
    with pytest.raises(ConfigError, match="valid keys under exits"):
        load_config(None, ["shards=s", "exits.epoch=6"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, ["shards=s", "exits.epochs=many"])
    with pytest.raises(ConfigError, match="shards is not set"):
        load_config(None, [])
