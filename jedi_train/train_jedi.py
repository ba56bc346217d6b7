"""Stage `jedi`: joint semi-supervised training of students and teachers (METHOD.md section 1, steps 4-5).

Each arm of jedi_train/arms.py (JEDI, the self-training control, supervised continuation, JEDI without the
foreign gradient path) starts from the same experts and reads the same batches in the same order.
Model selection is per dataset (METHOD.md step 5): after every epoch each dataset's student and teacher
are scored on that dataset's `val` split, and each keeps the weights of its own best epoch.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from jedi_train.arms import ARMS
from jedi_train.cached_teacher import (cached_foreign_features, cached_teacher_targets, fit_teacher_heads,
                                      refresh_teacher_cache)
from jedi_train.checkpoint import Checkpointer, Interrupted, NonFiniteLoss, Progress, StopRequest
from jedi_train.config import RunConfig
from jedi_train.data import DatasetInfo, Streams
from jedi_train.evaluate import evaluate_models
from jedi_train.jedi import DistillSettings, JediModel
from jedi_train.meter import StepMeter
from jedi_train.train_experts import load_expert
from pipeline.contract import to_model_input


def teacher_cache_dir(config: RunConfig, variant: str) -> Path:
    root = Path(config.jedi.teacher_cache_dir) if config.jedi.teacher_cache_dir else config.run_dir / "feature_cache"
    return root / variant


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
                      teacher_inputs=ARMS[variant].teacher_inputs, settings=settings,
                      loss_weights={name: config.datasets[name].loss_weight for name in infos})
    for name, expert in experts.items():
        model.student_heads[name].load_state_dict(expert.head.state_dict())
    model.init_teachers_from_students()
    return model


ROLES = ("student", "teacher")


def selection_keys(names: list[str]) -> list[str]:
    """The models that keep their own best epoch: `<dataset>/student` and `<dataset>/teacher`."""
    return [f"{name}/{role}" for name in names for role in ROLES]


def load_selected(config: RunConfig, infos: dict[str, DatasetInfo], variant: str,
                  at: str = "best") -> dict[str, JediModel]:
    """`<dataset>/<role>` -> the arm's model at that dataset's and role's best validation epoch (models of
    the same epoch are one object); `at="final"`: every model at the end of the schedule (no selection)."""
    path = variant_path(config, variant)
    if not path.is_file():
        raise FileNotFoundError(f"{variant} checkpoint {path} is missing: run stage=jedi first")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if at == "final":
        if "final" not in saved:
            raise FileNotFoundError(f"{path} holds no final weights (written before they were saved): retrain "
                                    f"the arm (delete {path.parent} and run stage=jedi)")
        model = build_jedi_model(config, infos, variant)
        model.load_state_dict(saved["final"])
        return {key: model for key in saved["selection"]}
    models = {}
    for epoch, state in saved["states"].items():
        models[epoch] = build_jedi_model(config, infos, variant)
        models[epoch].load_state_dict(state)
    return {key: models[str(epoch)] for key, epoch in saved["selection"].items()}


def foreign_scale(config: RunConfig, variant: str, step: int) -> float:
    """Scale of the teacher losses' gradient into foreign backbones: 0 for arms without that path, else
    a linear ramp from 0 to jedi.foreign_grad_scale over jedi.foreign_grad_warmup_steps."""
    if not ARMS[variant].foreign_grad:
        return 0.0
    warmup = config.jedi.foreign_grad_warmup_steps
    return config.jedi.foreign_grad_scale * (min(1.0, step / warmup) if warmup > 0 else 1.0)


def validate(model: JediModel, streams: Streams, accelerator: Accelerator) -> dict:
    """Val top-1 of every dataset's student and teacher (`<dataset>/<role>`), plus their means; each val
    batch is decoded once for both."""
    model.eval()
    scores = {}
    for name in model.names:
        models = {"student": lambda x, n=name: model.student_logits(n, x),
                  "teacher": lambda x, n=name: model.teacher_logits(n, x)}
        for role, result in evaluate_models(models, streams.eval(name, "val", multi_view=False), accelerator).items():
            scores[f"{name}/{role}"] = result["top1"]
    for role in ROLES:
        scores[f"mean_{role}"] = sum(scores[f"{n}/{role}"] for n in model.names) / len(model.names)
    model.train()
    return scores


def select_best(progress: Progress, best_states: dict[str, dict], scores: dict, epoch: int, state: dict) -> list[str]:
    """Per-dataset model selection: every `<dataset>/<role>` whose val top-1 beat its best keeps this epoch.
    `best_states` holds one state per epoch still selected by some model. Returns the improved keys."""
    improved = [key for key in progress.best["selection"] if scores[key] > progress.best["selection"][key]["top1"]]
    for key in improved:
        progress.best["selection"][key] = {"epoch": epoch, "top1": scores[key]}
    if improved:
        best_states[str(epoch)] = copy.deepcopy(state)
    in_use = {str(entry["epoch"]) for entry in progress.best["selection"].values()}
    for stale in [e for e in best_states if e not in in_use]:
        del best_states[stale]
    return improved


def train_jedi(config: RunConfig, accelerator: Accelerator, streams: Streams, infos: dict[str, DatasetInfo],
               variant: str = "jedi", resume: bool = False) -> dict:
    cfg = config.jedi
    names = list(infos)
    device = accelerator.device
    model = build_jedi_model(config, infos, variant)
    if cfg.teacher_init == "fit" and not resume:
        fit = fit_teacher_heads(model.to(device), streams, accelerator, teacher_cache_dir(config, variant),
                                cfg.teacher_fit_steps, cfg.teacher_fit_weight_decay)
        accelerator.print(f"[{variant}] teacher_init=fit: " + ", ".join(
            f"{n} val {s['val_top1']:.1f} (was {s['val_top1_before']:.1f})" for n, s in fit.items()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * cfg.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.1)
    accelerator.free_memory()  # forget earlier stages' models: a checkpoint holds this arm only, as a resume expects
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    core = accelerator.unwrap_model(model)
    arm = ARMS[variant]
    strong = config.data.strong_view and arm.unlabelled
    checkpointer = Checkpointer(accelerator, config.run_dir / variant / "checkpoints", config.keep_checkpoints)

    latest = checkpointer.latest() if resume else None
    if latest:
        progress, best_states = checkpointer.load(latest)
        accelerator.print(f"[{variant}] resumed from {latest}: epoch {progress.epoch + 1}, "
                          f"step {progress.step_in_epoch} of {cfg.steps_per_epoch}")
    else:  # epoch -1: the experts, the start of every arm
        scores = validate(core, streams, accelerator)
        progress = Progress(best={"selection": {key: {"epoch": -1, "top1": scores[key]} for key in selection_keys(names)}})
        best_states = {"-1": copy.deepcopy(core.state_dict())}
        accelerator.print(f"[{variant}] start: mean val top-1 student {scores['mean_student']:.1f}, "
                          f"teacher {scores['mean_teacher']:.1f}")
    step_log = StepLog(config.run_dir / variant / "steps.jsonl", accelerator, progress.step)
    stop = StopRequest()
    meter = StepMeter()
    bar = tqdm(total=total_steps, initial=progress.step, desc=variant, disable=not accelerator.is_main_process)
    caches, labelled_caches = None, None
    has_foreign = any(len(core.teacher_sources(n)) > 1 for n in names)  # false for the control
    while progress.epoch < cfg.epochs and not progress.finished:
        epoch = progress.epoch
        if cfg.teacher_cache and arm.unlabelled and (epoch % cfg.teacher_cache_refresh_epochs == 0 or caches is None):
            caches = refresh_teacher_cache(core, streams, accelerator, teacher_cache_dir(config, variant))
            if cfg.teacher_cache_labelled and has_foreign:
                labelled_caches = refresh_teacher_cache(core, streams, accelerator, teacher_cache_dir(config, variant),
                                                        split="labelled", resident_features=True)
        labelled = {n: streams.train(n, "labelled", config.data.labelled_batch_size, cfg.steps_per_epoch, epoch,
                                     start_step=progress.step_in_epoch) for n in names}
        # the supervised arm reads no unlabelled clips; the others read the same unlabelled batches
        unlabelled = {n: streams.train(n, "unlabelled", config.data.unlabelled_batch_size, cfg.steps_per_epoch,
                                       epoch, start_step=progress.step_in_epoch, strong_view=strong)
                      for n in names} if arm.unlabelled else {}
        joint = zip(*labelled.values(), *unlabelled.values())
        for batches in meter.timed(joint):
            lab, unl = dict(zip(names, batches[:len(names)])), dict(zip(names, batches[len(names):]))
            clips = lambda b, key="video": to_model_input(b[key].to(device, non_blocking=True))  # noqa: E731
            losses = model(
                labelled_clips={n: clips(lab[n]) for n in names},
                labels={n: lab[n]["label"].to(device) for n in names},
                unlabelled_clips={n: clips(unl[n]) for n in names} if unl else None,
                unlabelled_student_clips={n: clips(unl[n], "strong_video") for n in names} if strong else None,
                unlabelled_true_labels={n: unl[n]["label"].to(device) for n in names} if unl else None,
                foreign_grad_scale=foreign_scale(config, variant, progress.step),
                cached_teacher_logits=cached_teacher_targets(caches, unl, device) if caches else None,
                cached_foreign_features=cached_foreign_features(core, labelled_caches, lab, device)
                if labelled_caches else None)
            # every rank must take the same decision: skip on a non-finite loss anywhere, stop on a signal anywhere
            flags = accelerator.reduce(torch.tensor([float(not torch.isfinite(losses["loss"])), float(stop.requested)],
                                                    device=device), reduction="sum")
            if flags[0] > 0:
                keys = [k for b in batches for k in b["key"]]
                accelerator.print(f"[{variant}] non-finite loss at step {progress.step}: skipped; batch keys {keys}")
                progress.bad_steps_in_row += 1
                if progress.bad_steps_in_row >= config.max_bad_steps:
                    raise NonFiniteLoss(f"{progress.bad_steps_in_row} non-finite losses in a row at step "
                                        f"{progress.step}; the last good checkpoint is {checkpointer.latest()}")
            else:
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(losses["loss"])
                optimizer.step()
                scheduler.step()
                progress.bad_steps_in_row = 0
            progress.step += 1
            progress.step_in_epoch += 1
            meter.step_done(sum(b["video"].shape[0] for b in batches) * accelerator.num_processes)
            bar.update(1)
            step_log.write(progress.step, epoch, losses["loss"].item(), lab, unl)
            if progress.step % config.log_every == 0:
                logged = {f"{variant}/{k}": v.item() for k, v in losses.items()}
                accelerator.log(logged | {f"{variant}/clips_per_s": meter.clips_per_second,
                                          f"{variant}/data_wait_pct": meter.data_wait_percent}, step=progress.step)
                bar.set_postfix_str(meter.line(losses["loss"].item(), scheduler.get_last_lr()[0], streams.kind))
                meter.reset()
            if flags[1] > 0:
                path = checkpointer.save(progress, best_states)
                raise Interrupted(f"[{variant}] stopped by signal; checkpoint {path}; continue with --resume")
            if config.checkpoint_every and progress.step % config.checkpoint_every == 0:
                checkpointer.save(progress, best_states)
        skipped_keys = sorted({k for loader in [*labelled.values(), *unlabelled.values()] for k in loader.skipped_keys})
        skipped = len(skipped_keys)
        progress.skipped_samples[str(epoch)] = skipped_keys
        scores = validate(core, streams, accelerator)
        accelerator.log({f"{variant}/val/{k}": v for k, v in scores.items()} | {f"{variant}/skipped": skipped},
                        step=progress.step)
        improved = select_best(progress, best_states, scores, epoch, core.state_dict())
        accelerator.print(f"[{variant}] epoch {epoch + 1}/{cfg.epochs}: mean val top-1 student "
                          f"{scores['mean_student']:.1f}, teacher {scores['mean_teacher']:.1f}; improved: "
                          f"{', '.join(improved) or 'none'}; {skipped} corrupt samples skipped"
                          + (f" {skipped_keys[:5]}" if skipped else ""))
        progress.epoch, progress.step_in_epoch = epoch + 1, 0
        last_improved = max(entry["epoch"] for entry in progress.best["selection"].values())
        if epoch - last_improved >= cfg.patience:
            accelerator.print(f"[{variant}] early stop: no dataset's student or teacher improved for {cfg.patience} epochs")
            progress.finished = True
        checkpointer.save(progress, best_states)
    bar.close()
    stop.restore()
    if accelerator.is_main_process:
        path = variant_path(config, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        selection = {key: entry["epoch"] for key, entry in progress.best["selection"].items()}
        torch.save({"selection": selection, "states": best_states, "final": core.state_dict()},
                   path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        (path.parent / "best_val.json").write_text(json.dumps(progress.best | {
            "skipped_samples": progress.skipped_samples}, indent=2))
    accelerator.wait_for_everyone()
    return progress.best | {"skipped_samples": progress.skipped_samples}


def keys_digest(batches: dict[str, dict]) -> str:
    """A short fingerprint of the sample keys of one step's batches, in dataset order."""
    return hashlib.sha1("|".join(k for name in batches for k in batches[name]["key"]).encode()).hexdigest()[:12]


class StepLog:
    """One JSON line per optimiser step (main process): the loss and a fingerprint of the batches' sample
    keys, the record that the first-loss, resume and same-batches tests read."""

    def __init__(self, path: Path, accelerator: Accelerator, resume_step: int):
        self.path = path if accelerator.is_main_process else None
        if self.path:
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = [line for line in (path.read_text().splitlines() if path.is_file() else [])
                    if json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, epoch: int, loss: float, labelled: dict, unlabelled: dict) -> None:
        if self.path:
            record = {"step": step, "epoch": epoch, "loss": loss, "labelled_keys": keys_digest(labelled),
                      "unlabelled_keys": keys_digest(unlabelled) if unlabelled else None}
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
