"""Typed run configuration: dataclass defaults <- one YAML file <- `key=value` command-line overrides.

Unknown keys, wrong types and values outside a `Literal` fail at once with the dotted key, what was
given and what is allowed. `Literal[...]` fields are the options of ../shared/METHOD.md.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from jedi_train.methods import (ca_mkd, fixmatch, graph_distillation, hinton_kd, joint_supervised, mean_teacher,
                                mlfd, staged_kd)
from jedi_train.methods import jedi as jedi_method
from jedi_train.methods import parse_methods


class ConfigError(ValueError):
    pass


@dataclass
class DatasetConfig:
    shards: str = ""  # shard directory with manifest.json (tools/make_shards.py output)
    backbone: Literal["cnn3d_small", "x3d_tiny", "x3d_xs", "x3d_s", "x3d_m", "slow_r50"] = "cnn3d_small"
    weights: str = ""  # optional local checkpoint for the backbone (pytorchvideo state dict)
    hflip: Literal["auto", "on", "off"] = "auto"  # auto: on unless the manifest says flip changes labels
    time_reversal: Literal["auto", "on", "off"] = "auto"  # auto: off (no manifest can say it is safe); on: refused
    # where the manifest says reversal changes labels
    loss_weight: float = 1.0  # per-dataset weight on all of its loss terms


@dataclass
class ClipConfig:
    frames: int = 8
    stride: int = 2
    crop_size: int = 32
    test_clips: int = 3  # temporal views of the multi-view test
    test_crops: int = 1  # spatial views of the multi-view test (1 or 3)
    min_scale: float = 0.6  # weak view (experts, labelled clips, teacher): smallest area fraction of the crop
    strong_min_scale: float = 0.35  # strong (student) view: smallest area fraction of its tighter crop


@dataclass
class DataConfig:
    loader: Literal["auto", "dali", "torch"] = "auto"  # auto: torch (faster than DALI as measured, see data.py)
    labelled_batch_size: int = 16
    unlabelled_batch_size: int = 16
    eval_batch_size: int = 16
    num_workers: int = 1  # per stream (torch loader)
    strong_view: bool = True  # weak view for the teacher, strong view for the student (FixMatch); false: one view


@dataclass
class ModelConfig:
    norm: Literal["groupnorm", "batchnorm"] = "groupnorm"  # batchnorm for pytorchvideo weights trained with it
    # BatchNorm trap (METHOD 1b): foreign clips pass a backbone with BN in eval mode, so they never
    # update its running statistics.
    foreign_bn: Literal["frozen_stats", "train"] = "frozen_stats"


@dataclass
class ExpertsConfig:
    epochs: int = 40
    steps_per_epoch: int = 0  # 0: one pass over the labelled split
    batch_size: int = 0  # clips per step; 0: data.labelled_batch_size
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 10  # epochs without a better val top-1 before stopping


@dataclass
class ScheduleConfig:
    """The joint stage's budget, the same for every method (stage=methods): steps, learning rate, selection."""
    epochs: int = 15
    steps_per_epoch: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6  # epochs without any dataset's model improving on val before stopping


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    stage: Literal["experts", "probe", "methods", "jedi", "eval", "all"] = "all"  # probe: the premise check;
    # methods: train every method of `methods` from the experts (jedi: the same, its older name)
    methods: str = "jedi,self_training,supervised,jedi_no_foreign_grad"  # comma-separated, jedi_train/methods/
    method: str = ""  # one method: trains this one instead of the list in `methods`
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = 10
    checkpoint_every: int = 50  # optimiser steps between checkpoints (and one at every epoch end)
    keep_checkpoints: int = 3  # newest checkpoints kept per stage
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    clip: ClipConfig = field(default_factory=ClipConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    jedi: jedi_method.Config = field(default_factory=jedi_method.Config)
    joint_supervised: joint_supervised.Config = field(default_factory=joint_supervised.Config)
    fixmatch: fixmatch.Config = field(default_factory=fixmatch.Config)
    mean_teacher: mean_teacher.Config = field(default_factory=mean_teacher.Config)
    hinton_kd: hinton_kd.Config = field(default_factory=hinton_kd.Config)
    ca_mkd: ca_mkd.Config = field(default_factory=ca_mkd.Config)
    mlfd: mlfd.Config = field(default_factory=mlfd.Config)
    staged_kd: staged_kd.Config = field(default_factory=staged_kd.Config)
    graph_distillation: graph_distillation.Config = field(default_factory=graph_distillation.Config)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def method_names(self) -> list[str]:
        """The methods the joint stage trains, in order: `method` when set, else the list in `methods`."""
        return parse_methods(self.method or self.methods)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if isinstance(value, bool) and {"on", "off"} <= set(allowed):  # YAML reads a bare on / off as a boolean
            value = "on" if value else "off"
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")
        return value
    if origin is dict:
        _, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {name: _coerce(item, value_type, f"{key}.{name}") for name, item in value.items()}
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {annotation.__name__} fields, got {value!r}")
        return build(annotation, value, prefix=f"{key}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={value!r} must be a boolean (true/false)")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{key}={value!r} must be an integer")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r} must be an integer") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} must be a number") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}={value!r} must be a string")
        return "" if value is None else str(value)
    raise ConfigError(f"{key}: unsupported config type {annotation}")


def build(cls: type, values: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) mapping, rejecting unknown keys with the valid list."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    moved = {("jedi.", name): f"schedule.{name}" for name in ("epochs", "steps_per_epoch", "lr", "weight_decay",
                                                               "patience")} | {("jedi.", "arms"): "methods"}
    if unknown and (prefix, unknown[0]) in moved:
        raise ConfigError(f"config key {prefix}{unknown[0]} moved to {moved[(prefix, unknown[0])]}")
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; valid keys under "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(names)}")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, raw_value: str) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw_value) if raw_value != "" else ""


def read_tree(path: str | Path | None, overrides: list[str], example: str) -> dict:
    """The YAML file's mapping (optional) with the `a.b=value` overrides applied, not yet validated.
    `example` is the override the error for a malformed one shows."""
    tree: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. {example})")
        key, raw_value = item.split("=", 1)
        _set_dotted(tree, key.strip(), raw_value)
    return tree


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """YAML file (optional) then `a.b=value` overrides, validated into a RunConfig."""
    config = build(RunConfig, read_tree(path, overrides, "schedule.epochs=5"))
    if not config.datasets:
        raise ConfigError("datasets is empty: name at least one dataset with its shards directory")
    for name, dataset in config.datasets.items():
        if not dataset.shards:
            raise ConfigError(f"datasets.{name}.shards is not set: give the shard directory of {name}")
    try:
        config.method_names
    except ValueError as error:
        raise ConfigError(str(error).replace("methods=", "method=" if config.method else "methods=", 1)) from None
    if config.jedi.teacher_cache_labelled and not (config.jedi.teacher_cache and config.jedi.foreign_grad_scale == 0):
        raise ConfigError("jedi.teacher_cache_labelled=true needs jedi.teacher_cache=true and jedi.foreign_grad_scale=0 "
                          f"(got teacher_cache={config.jedi.teacher_cache}, foreign_grad_scale="
                          f"{config.jedi.foreign_grad_scale}): a cached feature passes no gradient to its backbone")
    return config


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def describe_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """One line per settable key with its type and default, for --help."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            lines += describe_keys(annotation, prefix + f.name + ".")
        elif typing.get_origin(annotation) is dict:
            lines.append(f"  {prefix}{f.name}.<dataset>.<key>  (per dataset: "
                         + ", ".join(x.name for x in dataclasses.fields(DatasetConfig)) + ")")
        else:
            default = f.default if f.default is not dataclasses.MISSING else ""
            kind = ("|".join(map(str, typing.get_args(annotation))) if typing.get_origin(annotation) is Literal
                    else getattr(annotation, "__name__", str(annotation)))
            lines.append(f"  {prefix}{f.name}={default!s}  ({kind})")
    return lines

