"""Cached-teacher mode: the teacher's targets for unlabelled clips come from a zarr feature cache
(pipeline/feature_cache.py) refreshed every few epochs, so in the step an unlabelled clip passes only its
own student's backbone instead of all N (METHOD.md section 1, step 4; the unlabelled half stops costing
N^2 backbone passes). The same caches give two cheap extras: teacher heads fitted by logistic regression
on cached features of the labelled split (`teacher_init=fit`, METHOD.md step 3), and a frozen-backbone
linear-probe baseline.

What the cache holds is the teacher's view of the clip at refresh time (centre clip, centre crop, BatchNorm
in eval mode), not this step's weak augmentation: targets lag the weights by up to K epochs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from jedi_train.data import Streams
from jedi_train.jedi import JediModel
from pipeline.contract import to_model_input
from pipeline.feature_cache import (LABELS, TEACHER_LOGITS, CacheLayout, FeatureCache, IncompleteCacheError,
                                    cache_identity, cache_path, fill_cache, open_cache, prepare_cache,
                                    state_dict_fingerprint)


def teacher_fingerprint(model: JediModel) -> str:
    """The weights that decide cached rows: every backbone (BatchNorm statistics included) and the teacher heads."""
    return state_dict_fingerprint(model.state_dict(), prefixes=("backbones.", "teacher_heads."))


def _cache_outputs(model: JediModel, name: str, device: torch.device):
    sources = model.teacher_sources(name)

    @torch.no_grad()
    def compute(clips_uint8: torch.Tensor) -> dict:
        clips = to_model_input(clips_uint8.to(device, non_blocking=True))
        features = {j: model.backbones[j](clips) for j in sources}
        logits = model.teacher_heads[name](torch.cat([features[j] for j in sources], dim=1))
        return {"features": features, "teacher_logits": logits}

    return compute


def refresh_teacher_cache(model: JediModel, streams: Streams, accelerator: Accelerator, cache_dir: str | Path,
                          split: str = "unlabelled", chunk_rows: int = 64, rebuild: bool = True,
                          batch_size: int | None = None, resident: bool = True,
                          resident_features: bool = False) -> dict[str, FeatureCache]:
    """Bring every dataset's cache of `split` up to date with the model's current weights, all ranks
    filling disjoint chunks; returns the opened caches (complete on every rank). A cache already built for
    these weights is reused as it is (e.g. one filled by tools/cache_features.py before training).
    `resident`: hold each cache's teacher logits in host memory (rows x classes x 4 bytes), so a step's
    lookup is an index, not a zarr read (which costs milliseconds, more than the passes it saves on a GPU);
    `resident_features`: hold the students' feature arrays too (rows x sum of feature widths x 2 bytes),
    for `cached_foreign_features`.
    `model` is the unwrapped JediModel; it is put in eval mode for the fill and restored after."""
    was_training = model.training
    model.eval()
    fingerprint = teacher_fingerprint(model)
    caches = {}
    try:
        for name in model.names:
            info = streams.infos[name]
            sources = model.teacher_sources(name)
            layout = CacheLayout(tuple(sources), tuple(model.backbones[j].feature_dim for j in sources),
                                 model.teacher_heads[name].out_features, chunk_rows)
            identity = cache_identity(fingerprint, streams.clip, info.shard_dir)
            path = cache_path(cache_dir, name, split)
            if accelerator.is_main_process:  # creation and reset touch the group's metadata: one writer
                prepare_cache(path, shard_dir=info.shard_dir, split=split, dataset=name, identity=identity,
                              layout=layout, rebuild=rebuild)
            accelerator.wait_for_everyone()
            cache = open_cache(path, identity, layout, mode="r+")
            fill_cache(cache, info.shard_dir, streams.clip, _cache_outputs(model, name, accelerator.device),
                       rank=accelerator.process_index, world_size=accelerator.num_processes,
                       batch_size=batch_size or streams.config.data.eval_batch_size,
                       num_workers=streams.config.data.num_workers, progress=accelerator.is_main_process)
            accelerator.wait_for_everyone()
            cache.reload_status()
            if not cache.is_complete:
                raise IncompleteCacheError(f"{path}: {int((cache.status == 0).sum())} rows still missing after "
                                           f"every rank's fill")
            if resident:
                cache.load_resident([TEACHER_LOGITS] + ([f"features/{j}" for j in sources] if resident_features else []))
            caches[name] = cache
    finally:
        model.train(was_training)
    return caches


def lookup_teacher_logits(cache: FeatureCache, keys: Sequence[str], device: torch.device | str) -> torch.Tensor:
    """Cached teacher logits [B, classes] (float32) for a batch's sample keys: one zarr read."""
    rows = cache.read_rows(list(keys), arrays=[TEACHER_LOGITS])[TEACHER_LOGITS]
    return torch.from_numpy(rows).to(device, non_blocking=True)


def cached_teacher_targets(caches: dict[str, FeatureCache], unlabelled_batches: dict[str, dict],
                           device: torch.device | str) -> dict[str, torch.Tensor]:
    """The `cached_teacher_logits` argument of JediModel.forward for one step's unlabelled batches."""
    return {name: lookup_teacher_logits(caches[name], batch["key"], device) for name, batch in unlabelled_batches.items()}


def cached_foreign_features(model: JediModel, caches: dict[str, FeatureCache], labelled_batches: dict[str, dict],
                            device: torch.device | str) -> dict[str, dict[str, torch.Tensor]]:
    """The `cached_foreign_features` argument of JediModel.forward: for each dataset d, the features of
    every foreign backbone j (j != d, j read by d's teacher) on d's labelled batch, from d's labelled-split
    cache (one read per dataset, all sources together)."""
    out = {}
    for d, batch in labelled_batches.items():
        foreign = [j for j in model.teacher_sources(d) if j != d]
        rows = caches[d].read_rows(list(batch["key"]), arrays=[f"features/{j}" for j in foreign])
        out[d] = {j: torch.from_numpy(rows[f"features/{j}"]).to(device, non_blocking=True) for j in foreign}
    return out


# ----- logistic regression on cached features ------------------------------------------------------------------
def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 300,
                    weight_decay: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (L-BFGS, L2 on the weights) on float features [n, k]; returns
    (weight [C, k], bias [C]) acting on the raw features. Features are standardised for conditioning and
    the standardisation is folded back into the returned weights."""
    x = features.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)
    z = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, labels) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        raw_weight = weight / std
        raw_bias = bias - raw_weight @ mean
    return raw_weight.float(), raw_bias.float()


def _concat(cache: FeatureCache, sources: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    names = [f"features/{j}" for j in sources]
    data, rows = cache.read_all([*names, LABELS])
    if not rows.size:
        raise IncompleteCacheError(f"{cache.path}: no rows written")
    return (torch.from_numpy(np.concatenate([data[n].astype(np.float32) for n in names], axis=1)),
            torch.from_numpy(data[LABELS]))


def top1(weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * ((features @ weight.T + bias).argmax(1) == labels).float().mean().item()


@torch.no_grad()
def fit_teacher_heads(model: JediModel, streams: Streams, accelerator: Accelerator, cache_dir: str | Path,
                      steps: int = 300, weight_decay: float = 1e-3) -> dict[str, dict[str, float]]:
    """`teacher_init=fit`: g_d <- logistic regression on cached concat(f_j) of the labelled split. Every
    rank fits on the same rows (DDP then starts from rank 0's copy anyway). Returns labelled (train) and
    val top-1 of the fitted head and of the head it replaced, per dataset, so a bad fit shows up."""
    labelled = refresh_teacher_cache(model, streams, accelerator, cache_dir, split="labelled")
    val = refresh_teacher_cache(model, streams, accelerator, cache_dir, split="val")
    report = {}
    for name in model.names:
        sources = model.teacher_sources(name)
        x, y = _concat(labelled[name], sources)
        xv, yv = _concat(val[name], sources)
        head = model.teacher_heads[name]
        old_weight, old_bias = head.weight.detach().cpu().float(), head.bias.detach().cpu().float()
        with torch.enable_grad():
            weight, bias = fit_linear_head(x, y, head.out_features, steps, weight_decay)
        report[name] = {"labelled_top1": top1(weight, bias, x, y), "val_top1": top1(weight, bias, xv, yv),
                        "val_top1_before": top1(old_weight, old_bias, xv, yv)}
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))
    return report


def linear_probe(train: FeatureCache, test: FeatureCache, sources: Sequence[str], steps: int = 300,
                 weight_decay: float = 1e-3) -> dict[str, float]:
    """Frozen-backbone baseline: a linear head fitted on cached features of `sources` (train split) and
    scored on the test split's cached features (single clip, centre crop). Top-1 in percent."""
    x, y = _concat(train, sources)
    xt, yt = _concat(test, sources)
    weight, bias = fit_linear_head(x, y, train.layout.num_classes, steps, weight_decay)
    return {"train_top1": top1(weight, bias, x, y), "test_top1": top1(weight, bias, xt, yt), "test_clips": len(yt)}
