"""Model bundles: one trained model (expert, student or teacher) with everything needed to run it on new
videos, and nothing of the run that made it.

A bundle is a folder:
  model.safetensors  the weights of `BundleModel` (safetensors: no pickle, so loading runs no code)
  bundle.json        format version, backbones (name, norm, feature width, whose student each was), the
                     head, class names, clip spec, the shards' fps / short side / codec, the normalisation,
                     and where it came from (run, arm, role, selected epoch)

Every model here is "backbones -> concatenated features -> linear head": an expert or a student reads
one backbone, a teacher reads those of `teacher_sources` (all of them for JEDI). `write_run_bundles`
writes `<run_dir>/bundles/<dataset>/<model>/` for the expert and every trained arm's student and teacher,
with the model names of metrics.json (`expert`, `jedi_student`, `self_training_teacher`, ...).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from jedi_train.config import RunConfig
from jedi_train.data import DatasetInfo, clip_spec
from jedi_train.models import build_backbone
from jedi_train.train_experts import load_expert
from jedi_train.methods import METHODS
from jedi_train.train_methods import load_selected, method_path
from pipeline.contract import MEAN, STD, ClipSpec

FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
WEIGHTS = "model.safetensors"


class BundleError(ValueError):
    """A bundle that cannot be used: missing files, another format version, weights that do not fit."""


class BundleModel(nn.Module):
    """Normalised clips [B, 3, T, H, W] -> logits [B, classes]: the head over the concatenated features of
    the backbones, in order."""

    def __init__(self, backbones: list[nn.Module], head: nn.Linear):
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        self.head = head

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([backbone(clips) for backbone in self.backbones], dim=1))


@dataclass(frozen=True)
class Bundle:
    model: BundleModel
    meta: dict  # bundle.json
    path: Path

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def clip(self) -> ClipSpec:
        return ClipSpec(**self.meta["clip"])

    @property
    def name(self) -> str:
        return f"{self.meta['dataset']}/{self.meta['model']}"


def write_bundle(out_dir: Path, model: BundleModel, meta: dict) -> Path:
    """Weights then bundle.json (written last, through a temporary name: its presence marks a complete bundle)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS), metadata={"format_version": str(FORMAT_VERSION)})
    tmp = out_dir / (BUNDLE_JSON + ".tmp")
    tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2))
    tmp.replace(out_dir / BUNDLE_JSON)
    return out_dir


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """The bundle in folder `path` (or the folder of its bundle.json), in eval mode on `device`."""
    path = Path(path)
    if path.name == BUNDLE_JSON:
        path = path.parent
    meta_path = path / BUNDLE_JSON
    if not meta_path.is_file():
        raise BundleError(f"{path}: no {BUNDLE_JSON} there; a bundle is a folder written at the end of training "
                          f"(<run_dir>/bundles/<dataset>/<model>/) or by tools/make_bundles.py")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{meta_path}: not valid JSON ({error})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(f"{meta_path}: bundle format version {version!r}, but this code reads version "
                          f"{FORMAT_VERSION} only; write the bundle again with this version "
                          f"(python tools/make_bundles.py --run <run_dir>) or use the code that wrote it")
    backbones = [build_backbone(b["name"], b["norm"]) for b in meta["backbones"]]
    head = nn.Linear(meta["head"]["in_features"], meta["head"]["num_classes"])
    model = BundleModel(backbones, head)
    weights_path = path / WEIGHTS
    if not weights_path.is_file():
        raise BundleError(f"{path}: {WEIGHTS} is missing")
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except RuntimeError as error:
        raise BundleError(f"{weights_path} does not fit the model {meta_path} describes: "
                          f"{str(error).splitlines()[0]}") from None
    return Bundle(model.to(device).eval(), meta, path)


def bundle_meta(config: RunConfig, info: DatasetInfo, model_name: str, sources: list[str], head: nn.Linear,
                backbones: list[nn.Module], selected_epoch: int | None) -> dict:
    """Everything bundle.json holds except the format version."""
    encode = info.manifest.encode
    return {
        "model": model_name, "dataset": info.name,
        "shard_dataset": info.manifest.dataset,  # the name in the shards' sample keys (<name>_<sha1[:16]>)
        "backbones": [{"name": config.datasets[source].backbone, "norm": config.model.norm,
                       "feature_dim": backbone.feature_dim, "student_of": source}
                      for source, backbone in zip(sources, backbones)],
        "head": {"in_features": head.in_features, "num_classes": head.out_features},
        "classes": info.classes,
        "clip": asdict(clip_spec(config)),
        # how the shards were made from raw videos (tools/make_shards.py): predict resamples the same way
        "video": {"fps": encode.fps, "short_side": encode.short_side, "codec": encode.codec, "gop": encode.gop,
                  "resize": "swscale bilinear to the short side, both sides even"},
        "normalisation": {"input": "RGB uint8 / 255, then (x - mean) / std per channel", "mean": list(MEAN),
                          "std": list(STD), "layout": "[B, 3, T, H, W] float32"},
        "hflip_changes_label": info.manifest.hflip_changes_label,
        "source": {"run_dir": str(config.run_dir), "run": config.name, "seed": config.seed,
                   "selected_epoch": selected_epoch},
    }


def write_run_bundles(config: RunConfig, infos: dict[str, DatasetInfo], out_dir: Path | None = None) -> list[Path]:
    """Bundles of the expert and of every trained method's models of each dataset, each at its own best
    validation epoch; returns their folders. Methods without a checkpoint are left out, and so are models
    that are not `head(concat(backbones(clips)))` (their method's `bundle_parts` says None)."""
    out_dir = out_dir or config.run_dir / "bundles"
    written = []
    methods = {}
    for method in METHODS:
        path = method_path(config, method)
        if path.is_file():
            selection = torch.load(path, map_location="cpu", weights_only=True)["selection"]
            methods[method] = (load_selected(config, infos, method), selection)
    for name, info in infos.items():
        expert = load_expert(config, info)
        model = BundleModel([expert.backbone], expert.head)
        written.append(write_bundle(out_dir / name / "expert", model,
                                    bundle_meta(config, info, "expert", [name], expert.head, [expert.backbone], None)))
        for method, (selected, selection) in methods.items():
            for role in selected[f"{name}/student"].shown_roles:
                parts = selected[f"{name}/{role}"].bundle_parts(name, role)
                if parts is None:
                    continue
                sources, backbones, head = parts
                meta = bundle_meta(config, info, f"{method}_{role}", sources, head, backbones,
                                   int(selection[f"{name}/{role}"]))
                meta["source"]["method"] = method
                written.append(write_bundle(out_dir / name / f"{method}_{role}", BundleModel(backbones, head), meta))
    return written
