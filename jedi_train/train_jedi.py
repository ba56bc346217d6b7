"""Stage `jedi`: joint semi-supervised training of students and teachers (METHOD.md section 1, step 4).

`variant="jedi"` trains teachers on all students' features; `variant="self_training"` is the plain
self-training control: same schedule, each teacher reads its own expert's features only.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from jedi_train.config import RunConfig
from jedi_train.data import DatasetInfo, Streams
from jedi_train.evaluate import accuracy
from jedi_train.jedi import DistillSettings, JediModel
from jedi_train.meter import StepMeter
from jedi_train.train_experts import load_expert
from pipeline.contract import to_model_input

VARIANTS = {"jedi": "all", "self_training": "own"}


def variant_path(config: RunConfig, variant: str) -> Path:
    return config.run_dir / variant / "best.pt"


def build_jedi_model(config: RunConfig, infos: dict[str, DatasetInfo], variant: str) -> JediModel:
    """Students start as the experts; teachers start equal to them."""
    experts = {name: load_expert(config, info) for name, info in infos.items()}
    settings = DistillSettings(distillation=config.jedi.distillation, temperature=config.jedi.temperature,
                               threshold=config.jedi.threshold, distill_weight=config.jedi.distill_weight,
                               freeze_foreign_bn_stats=config.model.foreign_bn == "frozen_stats")
    model = JediModel({name: expert.backbone for name, expert in experts.items()},
                      {name: len(info.classes) for name, info in infos.items()},
                      teacher_inputs=VARIANTS[variant], settings=settings,
                      loss_weights={name: config.datasets[name].loss_weight for name in infos})
    for name, expert in experts.items():
        model.student_heads[name].load_state_dict(expert.head.state_dict())
    model.init_teachers_from_students()
    return model


def load_variant(config: RunConfig, infos: dict[str, DatasetInfo], variant: str) -> JediModel:
    path = variant_path(config, variant)
    if not path.is_file():
        raise FileNotFoundError(f"{variant} checkpoint {path} is missing: run stage=jedi first")
    model = build_jedi_model(config, infos, variant)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def foreign_scale(config: RunConfig, step: int) -> float:
    return 0.0 if step < config.jedi.foreign_grad_warmup_steps else config.jedi.foreign_grad_scale


def validate(model: JediModel, streams: Streams, accelerator: Accelerator) -> dict:
    model.eval()
    scores = {}
    for name in model.names:
        scores[f"{name}/student"] = accuracy(lambda x, n=name: model.student_logits(n, x),
                                             streams.eval(name, "val", multi_view=False), accelerator)["top1"]
        scores[f"{name}/teacher"] = accuracy(lambda x, n=name: model.teacher_logits(n, x),
                                             streams.eval(name, "val", multi_view=False), accelerator)["top1"]
    scores["mean_student"] = sum(scores[f"{n}/student"] for n in model.names) / len(model.names)
    model.train()
    return scores


def train_jedi(config: RunConfig, accelerator: Accelerator, streams: Streams, infos: dict[str, DatasetInfo],
               variant: str = "jedi") -> dict:
    cfg = config.jedi
    names = list(infos)
    device = accelerator.device
    model = build_jedi_model(config, infos, variant)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * cfg.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.1)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    core = accelerator.unwrap_model(model)
    strong = config.data.strong_view

    best = {"epoch": -1, **validate(core, streams, accelerator)}  # epoch -1: the experts themselves
    best_state = copy.deepcopy(core.state_dict())
    accelerator.print(f"[{variant}] start: mean student val top-1 {best['mean_student']:.1f}")
    meter, step = StepMeter(), 0
    bar = tqdm(total=total_steps, desc=variant, disable=not accelerator.is_main_process)
    for epoch in range(cfg.epochs):
        labelled = {n: streams.train(n, "labelled", config.data.labelled_batch_size, cfg.steps_per_epoch, epoch)
                    for n in names}
        unlabelled = {n: streams.train(n, "unlabelled", config.data.unlabelled_batch_size, cfg.steps_per_epoch,
                                       epoch, strong_view=strong) for n in names}
        joint = zip(*labelled.values(), *unlabelled.values())
        for batches in meter.timed(joint):
            lab, unl = dict(zip(names, batches[:len(names)])), dict(zip(names, batches[len(names):]))
            clips = lambda b, key="video": to_model_input(b[key].to(device, non_blocking=True))  # noqa: E731
            losses = model(
                labelled_clips={n: clips(lab[n]) for n in names},
                labels={n: lab[n]["label"].to(device) for n in names},
                unlabelled_clips={n: clips(unl[n]) for n in names},
                unlabelled_student_clips={n: clips(unl[n], "strong_video") for n in names} if strong else None,
                unlabelled_true_labels={n: unl[n]["label"].to(device) for n in names},
                foreign_grad_scale=foreign_scale(config, step))
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(losses["loss"])
            optimizer.step()
            scheduler.step()
            step += 1
            meter.step_done(sum(b["video"].shape[0] for b in batches) * accelerator.num_processes)
            bar.update(1)
            if step % config.log_every == 0 or step == total_steps:
                logged = {f"{variant}/{k}": v.item() for k, v in losses.items()}
                accelerator.log(logged | {f"{variant}/clips_per_s": meter.clips_per_second,
                                          f"{variant}/data_wait_pct": meter.data_wait_percent}, step=step)
                bar.set_postfix_str(meter.line(losses["loss"].item(), scheduler.get_last_lr()[0], streams.kind))
                meter.reset()
        scores = validate(core, streams, accelerator)
        accelerator.log({f"{variant}/val/{k}": v for k, v in scores.items()}, step=step)
        accelerator.print(f"[{variant}] epoch {epoch + 1}/{cfg.epochs}: mean student val top-1 "
                          f"{scores['mean_student']:.1f} (best {best['mean_student']:.1f})")
        if scores["mean_student"] > best["mean_student"]:
            best = {"epoch": epoch, **scores}
            best_state = copy.deepcopy(core.state_dict())
        elif epoch - best["epoch"] >= cfg.patience:
            accelerator.print(f"[{variant}] early stop: no better val top-1 for {cfg.patience} epochs")
            break
    bar.close()
    if accelerator.is_main_process:
        path = variant_path(config, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(best_state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        (path.parent / "best_val.json").write_text(json.dumps(best, indent=2))
    accelerator.wait_for_everyone()
    return best
