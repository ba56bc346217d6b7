"""From the run config to data streams: reads each dataset's manifest (the one source of truth for
classes, splits and flip safety) and builds the loader the config asks for (DALI on GPU, torch on CPU)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from jedi_train.config import ConfigError, RunConfig
from pipeline.contract import AugmentSpec, ClipSpec, StrongAugmentSpec
from pipeline.manifest import Manifest, load_manifest


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shard_dir: Path
    manifest: Manifest
    hflip: bool
    time_reversal: bool

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    def samples(self, split: str) -> int:
        return self.manifest.splits[split].samples


def _resolve_switch(setting: str, safe: bool) -> bool:
    return {"on": True, "off": False, "auto": safe}[setting]


def dataset_infos(config: RunConfig) -> dict[str, DatasetInfo]:
    infos = {}
    for name, dataset in config.datasets.items():
        shard_dir = Path(dataset.shards)
        if not (shard_dir / "manifest.json").is_file():
            raise ConfigError(f"datasets.{name}.shards={dataset.shards}: no manifest.json there; "
                              f"make the shards first with tools/make_shards.py --out {dataset.shards}")
        manifest = load_manifest(shard_dir)
        for split in ("labelled", "unlabelled", "val", "test"):
            for path in manifest.shard_paths(split):
                if not path.is_file():
                    raise ConfigError(f"datasets.{name}: shard {path} listed in {shard_dir / 'manifest.json'} "
                                      f"is missing; rerun tools/make_shards.py to complete it")
        infos[name] = DatasetInfo(
            name=name, shard_dir=shard_dir, manifest=manifest,
            hflip=_resolve_switch(dataset.hflip, not manifest.hflip_changes_label),
            # auto: off. A manifest records only that reversal changes labels, never that it is safe, and most
            # action classes have a direction in time (real SSv2, and the synthetic grow/shrink, up/down).
            time_reversal=_resolve_switch(dataset.time_reversal, False))
        if infos[name].time_reversal and manifest.time_reversal_changes_label:
            raise ConfigError(f"datasets.{name}.time_reversal=on but {shard_dir / 'manifest.json'} says time "
                              "reversal changes labels; allowed values here: auto, off")
    return infos


def clip_spec(config: RunConfig) -> ClipSpec:
    c = config.clip
    return ClipSpec(frames=c.frames, stride=c.stride, crop_size=c.crop_size,
                    test_clips=c.test_clips, test_crops=c.test_crops)


def augment_spec(config: RunConfig, info: DatasetInfo) -> AugmentSpec:
    return AugmentSpec(min_scale=config.clip.min_scale, hflip=info.hflip, time_reversal=info.time_reversal)


def strong_augment_spec(config: RunConfig) -> StrongAugmentSpec:
    return StrongAugmentSpec(min_scale=config.clip.strong_min_scale)


def loader_kind(config: RunConfig, device: torch.device) -> str:
    if config.data.loader == "auto":
        # The torch loader everywhere, for now: on one H200 (docs/benchmarks.md, 2026-11-26) DALI's in-memory
        # GPU video decoder delivered 11.6 clips/s against the torch loader's 2013 on the same shards, flat
        # over threads, batch size and concurrent pipelines, with NVDEC ~1% busy. data.loader=dali forces DALI.
        return "torch"
    if config.data.loader == "dali" and device.type != "cuda":
        return "dali_cpu"
    return config.data.loader


class Streams:
    """Builds train and eval streams for one process (rank) with the chosen backend."""

    def __init__(self, config: RunConfig, infos: dict[str, DatasetInfo], rank: int, world_size: int,
                 device: torch.device):
        self.config = config
        self.infos = infos
        self.rank = rank
        self.world_size = world_size
        self.kind = loader_kind(config, device)
        self.clip = clip_spec(config)
        self._dali_train: dict[tuple, object] = {}  # DALI pipelines are built once and reused every epoch

    def train(self, name: str, split: str, batch_size: int, steps_per_epoch: int, epoch: int,
              start_step: int = 0, strong_view: bool = False):
        info = self.infos[name]
        common = dict(batch_size=batch_size, steps_per_epoch=steps_per_epoch, rank=self.rank,
                      world_size=self.world_size, seed=self.config.seed,
                      strong_view=strong_augment_spec(self.config) if strong_view else False)
        if self.kind.startswith("dali"):
            from pipeline.dali_loader import dali_train_loader
            cache_key = (name, split, batch_size, steps_per_epoch, strong_view)
            if cache_key not in self._dali_train:
                self._dali_train[cache_key] = dali_train_loader(
                    info.shard_dir, split, self.clip, augment_spec(self.config, info),
                    device="gpu" if self.kind == "dali" else "cpu", **common)
            loader = self._dali_train[cache_key]
            # DALI's reader keeps its own position across epochs; a mid-epoch resume reads past the
            # first start_step batches (the torch loader instead rebuilds them from seeds, exactly).
            return _ResumedEpoch(loader, start_step) if start_step else loader
        from pipeline.cpu_loader import train_loader
        return train_loader(info.shard_dir, split, self.clip, augment_spec(self.config, info),
                            num_workers=self.config.data.num_workers, epoch=epoch, start_step=start_step, **common)

    def eval(self, name: str, split: str, multi_view: bool):
        info = self.infos[name]
        common = dict(batch_size=self.config.data.eval_batch_size, rank=self.rank, world_size=self.world_size,
                      multi_view=multi_view)
        if self.kind.startswith("dali"):
            from pipeline.dali_loader import dali_eval_loader
            return dali_eval_loader(info.shard_dir, split, self.clip,
                                    device="gpu" if self.kind == "dali" else "cpu", **common)
        from pipeline.cpu_loader import eval_loader
        return eval_loader(info.shard_dir, split, self.clip, num_workers=self.config.data.num_workers, **common)


class _ResumedEpoch:
    """The rest of a DALI epoch after `start_step` batches, keeping the loader's skip count visible."""

    def __init__(self, loader, start_step: int):
        self.loader, self.start_step = loader, start_step

    @property
    def skipped_keys(self) -> list[str]:
        return self.loader.skipped_keys

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.start_step, None)
