"""Stage `experts`: each dataset's expert E_d = backbone f_d + linear head h_d, cross-entropy on the
labelled split only, early stopping on `val` (METHOD.md section 1, step 1)."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from jedi_train.checkpoint import Checkpointer, Interrupted, Progress, StopRequest
from jedi_train.config import RunConfig
from jedi_train.data import DatasetInfo, Streams
from jedi_train.evaluate import accuracy
from jedi_train.meter import StepMeter
from jedi_train.models import build_backbone
from pipeline.contract import to_model_input


class Expert(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(clips))


def expert_path(config: RunConfig, name: str) -> Path:
    return config.run_dir / "experts" / f"{name}.pt"


def save_expert(path: Path, expert: Expert, info: DatasetInfo, backbone_name: str, val_top1: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"backbone": backbone_name, "classes": info.classes, "val_top1": val_top1,
                "state_dict": expert.state_dict()}, tmp)
    tmp.replace(path)


def load_expert(config: RunConfig, info: DatasetInfo) -> Expert:
    path = expert_path(config, info.name)
    if not path.is_file():
        raise FileNotFoundError(f"expert checkpoint {path} is missing: run stage=experts first")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved["classes"] != info.classes:
        raise ValueError(f"expert checkpoint {path} was trained on classes {saved['classes'][:4]}... but "
                         f"{info.shard_dir / 'manifest.json'} lists {info.classes[:4]}... ({len(info.classes)} "
                         f"classes): the shards changed since the expert was trained; retrain the experts")
    dataset = config.datasets[info.name]
    if saved["backbone"] != dataset.backbone:
        raise ValueError(f"expert checkpoint {path} holds backbone {saved['backbone']} but "
                         f"datasets.{info.name}.backbone={dataset.backbone}")
    expert = Expert(build_backbone(dataset.backbone, config.model.norm), len(info.classes))
    expert.load_state_dict(saved["state_dict"])
    return expert


def train_expert(config: RunConfig, accelerator: Accelerator, streams: Streams, info: DatasetInfo,
                 resume: bool = False) -> dict:
    dataset = config.datasets[info.name]
    cfg = config.experts
    batch_size = cfg.batch_size or config.data.labelled_batch_size
    steps = cfg.steps_per_epoch or max(1, math.ceil(info.samples("labelled") / (batch_size * accelerator.num_processes)))
    expert = Expert(build_backbone(dataset.backbone, config.model.norm, dataset.weights), len(info.classes))
    optimizer = torch.optim.AdamW(expert.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps,
                                                    pct_start=0.1)
    accelerator.free_memory()  # forget earlier stages' models: a checkpoint holds this expert only, as a resume expects
    expert, optimizer, scheduler = accelerator.prepare(expert, optimizer, scheduler)
    core = accelerator.unwrap_model(expert)
    checkpointer = Checkpointer(accelerator, config.run_dir / "experts" / "checkpoints" / info.name,
                                config.keep_checkpoints)
    latest = checkpointer.latest() if resume else None
    if latest:
        progress, best_state = checkpointer.load(latest)
        accelerator.print(f"expert {info.name}: resumed from {latest} at epoch {progress.epoch + 1}")
    else:
        progress, best_state = Progress(best={"val_top1": -1.0, "epoch": -1}), None
    stop = StopRequest()
    meter = StepMeter()
    bar = tqdm(total=cfg.epochs * steps, initial=progress.epoch * steps, desc=f"expert {info.name}",
               disable=not accelerator.is_main_process)
    while progress.epoch < cfg.epochs and not progress.finished:
        epoch = progress.epoch
        expert.train()
        loader = streams.train(info.name, "labelled", batch_size, steps, epoch)
        for batch in meter.timed(loader):
            logits = expert(to_model_input(batch["video"].to(accelerator.device, non_blocking=True)))
            loss = F.cross_entropy(logits, batch["label"].to(accelerator.device))
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            progress.step += 1
            meter.step_done(batch["video"].shape[0] * accelerator.num_processes)
            bar.update(1)
            accelerator.log({f"experts/{info.name}/loss": loss.item()}, step=progress.step)
        expert.eval()
        val = accuracy(core, streams.eval(info.name, "val", multi_view=False), accelerator)
        progress.skipped_samples[str(epoch)] = sorted(set(loader.skipped_keys))
        accelerator.log({f"experts/{info.name}/val_top1": val["top1"]}, step=progress.step)
        bar.set_postfix_str(f"{meter.line(loss.item(), scheduler.get_last_lr()[0], streams.kind)} | "
                            f"val top1 {val['top1']:.1f}")
        meter.reset()
        progress.epoch += 1
        if val["top1"] > progress.best["val_top1"]:
            progress.best = {"val_top1": val["top1"], "epoch": epoch}
            best_state = copy.deepcopy(core.state_dict())
        elif epoch - progress.best["epoch"] >= cfg.patience:
            progress.finished = True
        checkpointer.save(progress, best_state)
        if accelerator.reduce(torch.tensor([float(stop.requested)], device=accelerator.device), "sum")[0] > 0:
            raise Interrupted(f"expert {info.name}: stopped by signal after epoch {epoch + 1}; continue with --resume")
    bar.close()
    stop.restore()
    core.load_state_dict(best_state)
    if accelerator.is_main_process:
        save_expert(expert_path(config, info.name), core, info, dataset.backbone, progress.best["val_top1"])
    accelerator.wait_for_everyone()
    accelerator.print(f"expert {info.name}: best val top-1 {progress.best['val_top1']:.1f} "
                      f"at epoch {progress.best['epoch'] + 1}")
    return progress.best | {"skipped_samples": progress.skipped_samples}


def train_experts(config: RunConfig, accelerator: Accelerator, streams: Streams,
                  infos: dict[str, DatasetInfo], resume: bool = False) -> dict:
    """Train every expert; on resume, experts already saved are kept and the one in progress continues."""
    results = {}
    for name, info in infos.items():
        if resume and expert_path(config, name).is_file():
            accelerator.print(f"expert {name}: already trained ({expert_path(config, name)}), kept")
            continue
        results[name] = train_expert(config, accelerator, streams, info, resume)
    return results
