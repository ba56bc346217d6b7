"""Stage `methods`: every method of jedi_train/methods/ trained from the same experts on the same batches
in the same order, with the same budget (`schedule`). The loop knows no method by name: it builds one,
steps it, validates it and keeps its best weights (METHOD.md section 1, steps 4-5, for JEDI).

Model selection is per dataset: after every epoch each dataset's models (`<dataset>/<role>`: its student,
and its teacher where the method has one) are scored on that dataset's `val` split, and each keeps the
weights of its own best epoch.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from jedi_train.checkpoint import Checkpointer, Interrupted, NonFiniteLoss, Progress, StopRequest
from jedi_train.config import RunConfig
from jedi_train.data import DatasetInfo, Streams
from jedi_train.evaluate import evaluate_models
from jedi_train.meter import StepMeter
from jedi_train.methods import build_method
from jedi_train.methods.base import FeatureMemo, Method, StepBatch, TrainContext
from jedi_train.train_experts import load_expert
from pipeline.contract import to_model_input


def method_path(config: RunConfig, method: str) -> Path:
    return config.run_dir / method / "best.pt"


def build_from_experts(config: RunConfig, infos: dict[str, DatasetInfo], method: str) -> Method:
    """The method `method` built from freshly loaded experts (every method starts from the same ones)."""
    experts = {name: load_expert(config, info) for name, info in infos.items()}
    return build_method(method, config, infos, experts)


def selection_keys(method: Method) -> list[str]:
    """The models that keep their own best epoch: `<dataset>/<role>` for each of the method's roles."""
    return [f"{name}/{role}" for name in method.names for role in method.roles]


def load_selected(config: RunConfig, infos: dict[str, DatasetInfo], method: str,
                  at: str = "best") -> dict[str, Method]:
    """`<dataset>/<role>` -> the method at that dataset's and role's best validation epoch (models of the
    same epoch are one object); `at="final"`: every model at the end of the schedule (no selection)."""
    path = method_path(config, method)
    if not path.is_file():
        raise FileNotFoundError(f"{method} checkpoint {path} is missing: run stage=methods first")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if at == "final":
        if "final" not in saved:
            raise FileNotFoundError(f"{path} holds no final weights (written before they were saved): retrain "
                                    f"the method (delete {path.parent} and run stage=methods)")
        model = build_from_experts(config, infos, method)
        model.load_state_dict(saved["final"])
        return {key: model for key in saved["selection"]}
    models = {}
    for epoch, state in saved["states"].items():
        models[epoch] = build_from_experts(config, infos, method)
        models[epoch].load_state_dict(state)
    return {key: models[str(epoch)] for key, epoch in saved["selection"].items()}


def validate(method: Method, streams: Streams, accelerator: Accelerator) -> dict:
    """Val top-1 of every dataset's models (`<dataset>/<role>`), plus the mean per role; each val batch is
    decoded once for all of a dataset's models, which share their backbone passes."""
    method.eval()
    scores = {}
    for name in method.names:
        memo = FeatureMemo()
        models = {role: method.logits(name, role, memo) for role in method.roles}
        for role, result in evaluate_models(models, streams.eval(name, "val", multi_view=False), accelerator).items():
            scores[f"{name}/{role}"] = result["top1"]
    for role in method.roles:
        scores[f"mean_{role}"] = sum(scores[f"{n}/{role}"] for n in method.names) / len(method.names)
    method.train()
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


def train_method(config: RunConfig, accelerator: Accelerator, streams: Streams, infos: dict[str, DatasetInfo],
                 method_name: str = "jedi", resume: bool = False) -> dict:
    cfg = config.schedule
    names = list(infos)
    device = accelerator.device
    method = build_from_experts(config, infos, method_name)
    context = TrainContext(config, infos, streams, accelerator, config.run_dir / method_name)
    checkpointer = Checkpointer(accelerator, context.method_dir / "checkpoints", config.keep_checkpoints)
    clock = WallClock()  # the method's train time, its preparation included
    latest = checkpointer.latest() if resume else None
    if not latest:  # a fresh start (--resume without a checkpoint included): the method's one-off preparation
        method.setup(context)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * cfg.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.1)
    accelerator.free_memory()  # forget earlier stages' models: a checkpoint holds this method only, as a resume expects
    model, optimizer, scheduler = accelerator.prepare(method, optimizer, scheduler)
    core: Method = accelerator.unwrap_model(model)
    strong = config.data.strong_view and core.reads_unlabelled

    if latest:
        progress, best_states = checkpointer.load(latest)
        accelerator.print(f"[{method_name}] resumed from {latest}: epoch {progress.epoch + 1}, "
                          f"step {progress.step_in_epoch} of {cfg.steps_per_epoch}")
    else:  # epoch -1: the experts, the start of every method
        scores = validate(core, streams, accelerator)
        progress = Progress(best={"selection": {key: {"epoch": -1, "top1": scores[key]} for key in selection_keys(core)}})
        best_states = {"-1": copy.deepcopy(core.state_dict())}
        accelerator.print(f"[{method_name}] start: mean val top-1 " + describe_means(core, scores))
    step_log = StepLog(context.method_dir / "steps.jsonl", accelerator, progress.step)
    stop = StopRequest()
    meter = StepMeter()
    bar = tqdm(total=total_steps, initial=progress.step, desc=method_name, disable=not accelerator.is_main_process)
    while progress.epoch < cfg.epochs and not progress.finished:
        epoch = progress.epoch
        core.start_epoch(epoch, context)
        labelled = {n: streams.train(n, "labelled", config.data.labelled_batch_size, cfg.steps_per_epoch, epoch,
                                     start_step=progress.step_in_epoch) for n in names}
        # methods that read no unlabelled clips get none; the others read the same unlabelled batches
        unlabelled = {n: streams.train(n, "unlabelled", config.data.unlabelled_batch_size, cfg.steps_per_epoch,
                                       epoch, start_step=progress.step_in_epoch, strong_view=strong)
                      for n in names} if core.reads_unlabelled else {}
        joint = zip(*labelled.values(), *unlabelled.values())
        for batches in meter.timed(joint):
            lab, unl = dict(zip(names, batches[:len(names)])), dict(zip(names, batches[len(names):]))
            clips = lambda b, key="video": to_model_input(b[key].to(device, non_blocking=True))  # noqa: E731
            losses = model(StepBatch(
                labelled_clips={n: clips(lab[n]) for n in names},
                labels={n: lab[n]["label"].to(device) for n in names},
                unlabelled_clips={n: clips(unl[n]) for n in names} if unl else None,
                unlabelled_student_clips={n: clips(unl[n], "strong_video") for n in names} if strong else None,
                unlabelled_true_labels={n: unl[n]["label"].to(device) for n in names} if unl else None,
                labelled_batches=lab, unlabelled_batches=unl, step=progress.step))
            # every rank must take the same decision: skip on a non-finite loss anywhere, stop on a signal anywhere
            flags = accelerator.reduce(torch.tensor([float(not torch.isfinite(losses["loss"])), float(stop.requested)],
                                                    device=device), reduction="sum")
            if flags[0] > 0:
                keys = [k for b in batches for k in b["key"]]
                accelerator.print(f"[{method_name}] non-finite loss at step {progress.step}: skipped; batch keys {keys}")
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
            core.after_step(progress.step)
            meter.step_done(sum(b["video"].shape[0] for b in batches) * accelerator.num_processes)
            bar.update(1)
            step_log.write(progress.step, epoch, losses["loss"].item(), lab, unl)
            if progress.step % config.log_every == 0:
                logged = {f"{method_name}/{k}": v.item() for k, v in losses.items()}
                accelerator.log(logged | {f"{method_name}/clips_per_s": meter.clips_per_second,
                                          f"{method_name}/data_wait_pct": meter.data_wait_percent}, step=progress.step)
                bar.set_postfix_str(meter.line(losses["loss"].item(), scheduler.get_last_lr()[0], streams.kind))
                meter.reset()
            if flags[1] > 0:
                path = checkpointer.save(clock.update(progress), best_states)
                raise Interrupted(f"[{method_name}] stopped by signal; checkpoint {path}; continue with --resume")
            if config.checkpoint_every and progress.step % config.checkpoint_every == 0:
                checkpointer.save(clock.update(progress), best_states)
        skipped_keys = sorted({k for loader in [*labelled.values(), *unlabelled.values()] for k in loader.skipped_keys})
        skipped = len(skipped_keys)
        progress.skipped_samples[str(epoch)] = skipped_keys
        scores = validate(core, streams, accelerator)
        accelerator.log({f"{method_name}/val/{k}": v for k, v in scores.items()} | {f"{method_name}/skipped": skipped},
                        step=progress.step)
        improved = select_best(progress, best_states, scores, epoch, core.state_dict())
        accelerator.print(f"[{method_name}] epoch {epoch + 1}/{cfg.epochs}: mean val top-1 {describe_means(core, scores)}"
                          f"; improved: {', '.join(improved) or 'none'}; {skipped} corrupt samples skipped"
                          + (f" {skipped_keys[:5]}" if skipped else ""))
        progress.epoch, progress.step_in_epoch = epoch + 1, 0
        last_improved = max(entry["epoch"] for entry in progress.best["selection"].values())
        if epoch - last_improved >= cfg.patience:
            accelerator.print(f"[{method_name}] early stop: no dataset's model improved for {cfg.patience} epochs")
            progress.finished = True
        checkpointer.save(clock.update(progress), best_states)
    bar.close()
    stop.restore()
    if accelerator.is_main_process:
        path = method_path(config, method_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        selection = {key: entry["epoch"] for key, entry in progress.best["selection"].items()}
        torch.save({"selection": selection, "states": best_states, "final": core.state_dict()},
                   path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        (path.parent / "best_val.json").write_text(json.dumps(progress.best | {
            "skipped_samples": progress.skipped_samples, "train_seconds": round(progress.train_seconds, 1),
            "steps": progress.step}, indent=2))
    accelerator.wait_for_everyone()
    return progress.best | {"skipped_samples": progress.skipped_samples}


class WallClock:
    """Adds the wall time since the last update to `progress.train_seconds`, so a resumed stage reports the
    time of all its parts (the time between a stop and its resume is not counted)."""

    def __init__(self):
        self.last = time.perf_counter()

    def update(self, progress: Progress) -> Progress:
        now = time.perf_counter()
        progress.train_seconds += now - self.last
        self.last = now
        return progress


def describe_means(method: Method, scores: dict) -> str:
    return ", ".join(f"{role} {scores[f'mean_{role}']:.1f}" for role in method.roles)


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
