"""Cached-teacher mode on tiny real shards: the cache holds what the teacher computes, refreshes follow
the weights, the cached step matches the full step, logistic-regression teacher heads and linear probes,
and tools/cache_features.py under two accelerate processes."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr
from accelerate import Accelerator

from conftest import ROOT
from jedi_train.cached_teacher import (cached_foreign_features, cached_teacher_targets, fit_linear_head, fit_teacher_heads, linear_probe,
                                       lookup_teacher_logits, refresh_teacher_cache, teacher_fingerprint, top1)
from jedi_train.config import load_config
from jedi_train.data import Streams, dataset_infos
from jedi_train.jedi import JediModel
from jedi_train.models import build_backbone
from jedi_train.train_experts import Expert, expert_path, save_expert
from pipeline.contract import to_model_input
from pipeline.feature_cache import StaleCacheError
from tools.cache_features import main as cache_features_main

NAMES = ("ucf101", "ssv2")


@pytest.fixture(scope="module")
def setup(tiny_shards, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cached_teacher")
    overrides = [f"output_dir={out}", "name=tiny", "data.num_workers=0", "data.eval_batch_size=8"]
    overrides += [f"datasets.{n}.shards={tiny_shards[n]}" for n in NAMES]
    config = load_config(None, overrides)
    infos = dataset_infos(config)
    torch.manual_seed(0)
    model = JediModel({n: build_backbone("x3d_tiny", "batchnorm") for n in NAMES},
                      {n: len(infos[n].classes) for n in NAMES})
    model.init_teachers_from_students()
    yield config, infos, model, Streams(config, infos, 0, 1, torch.device("cpu")), Accelerator(cpu=True), overrides
    torch.set_num_threads(threads)  # the other test modules keep their own thread count


def eval_clips(streams, name, split="unlabelled"):
    batches = list(streams.eval(name, split, multi_view=False))
    return (to_model_input(torch.cat([b["video"][:, 0] for b in batches])), [k for b in batches for k in b["key"]],
            torch.cat([b["label"] for b in batches]))


def test_cache_holds_the_teachers_logits_and_follows_the_weights(setup, tmp_path):
    _, _, model, streams, accelerator, _ = setup
    caches = refresh_teacher_cache(model, streams, accelerator, tmp_path, chunk_rows=4)
    assert model.training  # restored after the fill
    model.eval()
    for name in NAMES:
        clips, keys, _ = eval_clips(streams, name)
        with torch.no_grad():
            expected = model.teacher_logits(name, clips)
        cached = lookup_teacher_logits(caches[name], keys[::-1], "cpu")
        torch.testing.assert_close(cached, expected.flip(0), rtol=1e-4, atol=1e-4)
    model.train()

    status_files = sorted((tmp_path / "ucf101" / "unlabelled.zarr" / "status" / "c").iterdir())
    stamps = [f.stat().st_mtime_ns for f in status_files]
    refresh_teacher_cache(model, streams, accelerator, tmp_path, chunk_rows=4)  # same weights: nothing refilled
    assert [f.stat().st_mtime_ns for f in status_files] == stamps

    _, keys, _ = eval_clips(streams, "ucf101")
    old_logits = lookup_teacher_logits(caches["ucf101"], keys, "cpu")
    before = teacher_fingerprint(model)
    with torch.no_grad():
        model.teacher_heads["ucf101"].bias += 1.0
    assert teacher_fingerprint(model) != before
    refreshed = refresh_teacher_cache(model, streams, accelerator, tmp_path, chunk_rows=4)
    new_logits = lookup_teacher_logits(refreshed["ucf101"], keys, "cpu")
    torch.testing.assert_close(new_logits, old_logits + 1.0, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        model.teacher_heads["ucf101"].bias -= 1.0
    with pytest.raises(StaleCacheError, match="other weights"):  # tools refuse by default; the trainer rebuilds
        refresh_teacher_cache(model, streams, accelerator, tmp_path, chunk_rows=4, rebuild=False)


def test_cached_step_equals_full_step_on_the_cached_view(setup, tmp_path):
    _, _, model, streams, accelerator, _ = setup
    caches = refresh_teacher_cache(model, streams, accelerator, tmp_path)
    model.eval()  # BatchNorm as in the fill, so both modes see the same teacher features
    labelled, labels, unlabelled, batches = {}, {}, {}, {}
    for name in NAMES:
        clips, keys, truth = eval_clips(streams, name)
        lab_clips, _, lab_labels = eval_clips(streams, name, "labelled")
        labelled[name], labels[name] = lab_clips[:4], lab_labels[:4]
        unlabelled[name], batches[name] = clips[:6], {"key": keys[:6]}
    with torch.no_grad():
        full = model(labelled, labels, unlabelled)
        cached = model(labelled, labels, unlabelled,
                       cached_teacher_logits=cached_teacher_targets(caches, batches, "cpu"))
    model.train()
    for name in NAMES:
        for term in ("sup_student", "sup_teacher", "dist"):
            torch.testing.assert_close(cached[f"{name}/{term}"], full[f"{name}/{term}"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached["loss"], full["loss"], rtol=1e-4, atol=1e-5)


def test_labelled_features_from_the_cache_equal_the_full_step_and_skip_foreign_passes(setup, tmp_path):
    """teacher_cache_labelled: with foreign_grad_scale=0 the foreign backbones' labelled features come from a
    labelled-split cache; on the cached view the losses equal the full step's (float16 storage aside), and
    backbone j then receives gradient from dataset j's clips only."""
    _, _, model, streams, accelerator, _ = setup
    caches = refresh_teacher_cache(model, streams, accelerator, tmp_path)
    labelled_caches = refresh_teacher_cache(model, streams, accelerator, tmp_path, split="labelled",
                                            resident_features=True)
    model.eval()
    labelled, labels, unlabelled, lab_batches, unl_batches = {}, {}, {}, {}, {}
    for name in NAMES:
        clips, keys, _ = eval_clips(streams, name)
        lab_clips, lab_keys, lab_labels = eval_clips(streams, name, "labelled")
        labelled[name], labels[name], lab_batches[name] = lab_clips[:4], lab_labels[:4], {"key": lab_keys[:4]}
        unlabelled[name], unl_batches[name] = clips[:6], {"key": keys[:6]}
    foreign = cached_foreign_features(model, labelled_caches, lab_batches, "cpu")
    assert {d: sorted(f) for d, f in foreign.items()} == {"ucf101": ["ssv2"], "ssv2": ["ucf101"]}
    full = model(labelled, labels, unlabelled, foreign_grad_scale=0.0)
    targets = cached_teacher_targets(caches, unl_batches, "cpu")
    cached = model(labelled, labels, unlabelled, foreign_grad_scale=0.0, cached_teacher_logits=targets,
                   cached_foreign_features=foreign)
    for name in NAMES:
        for term in ("sup_student", "sup_teacher", "dist"):
            torch.testing.assert_close(cached[f"{name}/{term}"], full[f"{name}/{term}"], rtol=2e-3, atol=2e-3)
    # only dataset j's clips pass backbone j: its gradient does not change when the other dataset's clips do
    def backbone_grad(clips):
        model.zero_grad()
        model(clips, labels, unlabelled, foreign_grad_scale=0.0, cached_teacher_logits=targets,
              cached_foreign_features=foreign)["loss"].backward()
        return [p.grad.clone() for p in model.backbones["ucf101"].parameters() if p.grad is not None]
    before = backbone_grad(labelled)
    after = backbone_grad({**labelled, "ssv2": torch.randn_like(labelled["ssv2"])})
    model.zero_grad()
    model.train()
    assert before and all(torch.equal(a, b) for a, b in zip(before, after))
    with pytest.raises(ValueError, match="foreign_grad_scale=0"):
        model(labelled, labels, unlabelled, foreign_grad_scale=1.0, cached_teacher_logits=targets,
              cached_foreign_features=foreign)


def test_logistic_regression_separates_and_folds_standardisation():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 3
    labels = torch.arange(4).repeat_interleave(50)
    features = centres[labels] + torch.randn(200, 16, generator=generator) + 100.0  # far from zero: needs scaling
    weight, bias = fit_linear_head(features, labels, 4, steps=200, weight_decay=1e-3)
    assert top1(weight, bias, features, labels) > 95.0
    shuffled = torch.randperm(200, generator=generator)
    assert top1(weight, bias, features, labels[shuffled]) < 50.0  # the score depends on the labels


def test_fit_teacher_heads_and_linear_probe(setup, tmp_path):
    _, infos, model, streams, accelerator, _ = setup
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    report = fit_teacher_heads(model, streams, accelerator, tmp_path, steps=100, weight_decay=1e-4)
    assert set(report) == set(NAMES)
    for name, scores in report.items():
        assert scores["labelled_top1"] == 100.0  # a handful of labelled clips in 2 x 128 dims: separable
        assert 0.0 <= scores["val_top1"] <= 100.0
        assert not torch.equal(model.teacher_heads[name].weight, saved[f"teacher_heads.{name}.weight"])
    train = refresh_teacher_cache(model, streams, accelerator, tmp_path, split="labelled")
    test = refresh_teacher_cache(model, streams, accelerator, tmp_path, split="test")
    probe = linear_probe(train["ucf101"], test["ucf101"], ["ucf101"], steps=50)
    assert probe["test_clips"] == infos["ucf101"].samples("test")
    assert 0.0 <= probe["test_top1"] <= 100.0
    model.load_state_dict(saved)


def test_cache_features_tool_two_processes_then_refuses_other_weights(setup, tmp_path, cpu_env, capsys):
    config, infos, _, _, _, overrides = setup
    torch.manual_seed(1)
    for name in NAMES:
        backbone = config.datasets[name].backbone
        save_expert(expert_path(config, name), Expert(build_backbone(backbone, config.model.norm),
                                                      len(infos[name].classes)), infos[name], backbone, 0.0)
    out = tmp_path / "cache"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "tools/cache_features.py",
              *overrides, "--out", str(out), "--chunk-rows", "4"]
    result = subprocess.run(launch, cwd=ROOT, env=cpu_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 process(es)" in result.stdout
    for name in NAMES:  # rank r wrote chunks r, r + 2, ... of every cache: disjoint, and together all of them
        chunks = -(-infos[name].samples("unlabelled") // 4)
        for rank in range(2):
            assert f"rank {rank}: {name}/unlabelled wrote chunks {list(range(rank, chunks, 2))}" in result.stdout
        status = zarr.open_group(str(out / name / "unlabelled.zarr"), mode="r")["status"][:]
        assert (status == 1).all() and len(status) == infos[name].samples("unlabelled")

    fingerprint = lambda: json.loads((out / "ssv2" / "unlabelled.zarr" / "zarr.json").read_text())[  # noqa: E731
        "attributes"]["weights_fingerprint"]
    before = fingerprint()
    torch.manual_seed(2)  # the experts change: the cache on disk no longer fits them
    backbone = config.datasets["ssv2"].backbone
    save_expert(expert_path(config, "ssv2"), Expert(build_backbone(backbone, config.model.norm),
                                                    len(infos["ssv2"].classes)), infos["ssv2"], backbone, 0.0)
    single = [*overrides, "--out", str(out), "--chunk-rows", "4"]
    assert cache_features_main(single) == 1
    assert "stale feature cache" in capsys.readouterr().err
    assert fingerprint() == before
    assert cache_features_main(single + ["--rebuild"]) == 0
    assert fingerprint() != before
    assert np.all(zarr.open_group(str(out / "ssv2" / "unlabelled.zarr"), mode="r")["status"][:] == 1)
