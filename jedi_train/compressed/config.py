"""Typed settings of the compressed-domain stage: dataclass defaults <- one YAML file <- `key=value`
overrides. Same rules as jedi_train/config.py (whose `build` checks types and rejects unknown keys
with the list of valid ones); nested sections may be given in part, the rest keeps its defaults."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from jedi_train.config import ConfigError, build, read_tree


@dataclass
class NetConfig:
    widths: str = "16,32,48,64,96"  # channels of the stem and the 4 stages
    strides: str = "2,2,2,2,2"  # strides of the stem and the 4 stages
    epochs: int = 20
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2


@dataclass
class ExitsConfig:
    epochs: int = 18  # PKD: a third with each teacher (mv, residual, iframe)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 0  # conv channels of an internal classifier; 0: those of the stage it reads
    temperature: float = 1.0  # PKD soft cross-entropy temperature (the method: 1)


@dataclass
class WiseConfig:
    l1: float = 1e-3  # L1 weight on each prefix's weight vector
    steps: int = 300  # full-batch Adam steps per prefix
    lr: float = 0.05
    thresholds: str = "0.3,0.4,0.5,0.6,0.7,0.8,0.85,0.9,0.95,0.98,0.99,0.995,0.999,1.01"  # 1.01: never stop early


@dataclass
class CompressedConfig:
    name: str = ""  # run folder under output_dir; default <dataset>_seed<seed>
    output_dir: str = "runs/compressed"
    dataset: str = "ucf101"
    shards: str = ""  # shard folder written with make_shards --modalities mv,residual,iframe
    seed: int = 0
    batch_size: int = 32
    eval_batch_size: int = 128
    threads: int = 1  # torch intra-op threads (2 small-op threads on a shared 2-core machine ran 10x slower)
    force: bool = False  # rerun even if the run folder already holds results.json
    mv: NetConfig = field(default_factory=lambda: NetConfig(widths="8,16,24,32,48", strides="1,1,2,2,2"))
    residual: NetConfig = field(default_factory=lambda: NetConfig(widths="8,16,24,32,48"))
    iframe: NetConfig = field(default_factory=NetConfig)
    exits: ExitsConfig = field(default_factory=ExitsConfig)
    wise: WiseConfig = field(default_factory=WiseConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / (self.name or f"{self.dataset}_seed{self.seed}")


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value, f"{prefix}{key}.")
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None, overrides: list[str] = ()) -> CompressedConfig:
    """Defaults <- YAML file (optional) <- `a.b=value` overrides, validated into a CompressedConfig."""
    tree = read_tree(path, overrides, "exits.epochs=6")
    config = build(CompressedConfig, _merge(dataclasses.asdict(CompressedConfig()), tree))
    if not config.shards:
        raise ConfigError("shards is not set: give the shard folder (make_shards --modalities mv,residual,iframe)")
    if config.exits.epochs < 3:
        raise ConfigError(f"exits.epochs={config.exits.epochs}: PKD needs at least 3 (one per teacher)")
    return config


def help_keys(config: object | None = None, prefix: str = "") -> str:
    """One line per settable key with its default (the instance's value, so per-modality defaults show)."""
    config = CompressedConfig() if config is None else config
    lines = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            lines.append(help_keys(value, f"{prefix}{item.name}."))
        else:
            lines.append(f"  {prefix}{item.name}={value}  ({type(value).__name__})")
    return "\n".join(lines)
