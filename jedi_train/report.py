"""Stage `eval`: top-1 / top-5 on each dataset's test split for the expert and every arm's student and
teacher; single-clip and multi-view. Writes metrics.json, predictions.json (per-clip top-1, for paired
tests across arms and seeds), prints the table and saves a bar chart."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from jedi_train.config import RunConfig  # noqa: E402
from jedi_train.data import DatasetInfo, Streams  # noqa: E402
from jedi_train.arms import ARMS  # noqa: E402
from jedi_train.evaluate import evaluate_models  # noqa: E402
from jedi_train.jedi import JediModel  # noqa: E402
from jedi_train.train_experts import load_expert  # noqa: E402
from jedi_train.train_jedi import load_selected, variant_path  # noqa: E402


def evaluate_all(config: RunConfig, accelerator: Accelerator, streams: Streams,
                 infos: dict[str, DatasetInfo]) -> tuple[dict, dict]:
    """Every model on every test split, each batch decoded once for all models. Returns (metrics,
    predictions): metrics[dataset][model][view] = {top1, top5, clips}; predictions[dataset][view][model]
    = {sample key: [top-1 class, label]}. Models: expert, then `<arm>_student` and `<arm>_teacher` for each
    arm whose checkpoint exists, each at its own dataset's best validation epoch."""
    device = accelerator.device
    arms = {arm: {key: model.to(device).eval() for key, model in load_selected(config, infos, arm).items()}
            for arm in ARMS if variant_path(config, arm).is_file()}
    final = {arm: {key: model.to(device).eval() for key, model in load_selected(config, infos, arm, "final").items()}
             for arm in arms}
    metrics: dict = {}
    predictions: dict = {}
    for name, info in infos.items():
        models = {"expert": load_expert(config, info).to(device).eval()}
        memo = FeatureMemo()
        for arm, selected in arms.items():
            models[f"{arm}_student"] = memo.student(selected[f"{name}/student"], name)
            models[f"{arm}_teacher"] = memo.teacher(selected[f"{name}/teacher"], name)
        for arm, at_end in final.items():  # the same arms at the end of the fixed schedule, no selection
            models[f"{arm}_student_final"] = memo.student(at_end[f"{name}/student"], name)
            models[f"{arm}_teacher_final"] = memo.teacher(at_end[f"{name}/teacher"], name)
        metrics[name] = {model: {"chance": 100.0 / len(info.classes)} for model in models}
        predictions[name] = {}
        for view, multi_view in (("single_clip", False), ("multi_view", True)):
            if multi_view and streams.clip.views == 1:  # one view: the multi-view test is the single-clip test
                predictions[name][view] = predictions[name]["single_clip"]
                for model in models:
                    metrics[name][model][view] = dict(metrics[name][model]["single_clip"])
                continue
            scores = evaluate_models(models, streams.eval(name, "test", multi_view=multi_view), accelerator,
                                     predictions=True)
            predictions[name][view] = {model: score.pop("predictions") for model, score in scores.items()}
            for model, score in scores.items():
                metrics[name][model][view] = score
    return metrics, predictions


class FeatureMemo:
    """Logits functions that share backbone passes: within one batch, each (model, backbone) runs once, so
    a student and a teacher selected at the same epoch, or two teachers reading the same backbones, cost
    one pass per backbone instead of one per model."""

    def __init__(self):
        self.clips, self.features = None, {}

    def _features(self, model: JediModel, j: str, clips):
        if clips is not self.clips:
            self.clips, self.features = clips, {}
        key = (id(model), j)
        if key not in self.features:
            self.features[key] = model.backbones[j](clips)
        return self.features[key]

    def student(self, model: JediModel, d: str):
        return lambda clips: model.student_heads[d](self._features(model, d, clips))

    def teacher(self, model: JediModel, d: str):
        return lambda clips: model.teacher_heads[d](
            torch.cat([self._features(model, j, clips) for j in model.teacher_sources(d)], dim=1))


# expert first, then each arm's student and teacher (the supervised arm's teacher is not a method: no column)
MODEL_ORDER = ["expert", "supervised_student", "self_training_student", "self_training_teacher", "jedi_student",
               "jedi_teacher", "jedi_no_foreign_grad_student", "jedi_no_foreign_grad_teacher"]


def format_table(metrics: dict, view: str, order: list[str] = MODEL_ORDER, title: str = "") -> str:
    present = [m for m in order if all(m in metrics[d] for d in metrics)]
    width = max(len(m) for m in present) + 2
    header = f"{'dataset':<14}" + "".join(f"{m:>{width}}" for m in present)
    lines = [f"test top-1 / top-5 ({view.replace('_', '-')}){title}", header]
    for dataset, per_model in metrics.items():
        cells = "".join(f"{per_model[m][view]['top1']:>{width - 8}.1f} / {per_model[m][view]['top5']:5.1f}"
                        for m in present)
        lines.append(f"{dataset:<14}{cells}")
    means = "".join(f"{sum(metrics[d][m][view]['top1'] for d in metrics) / len(metrics):>{width - 8}.1f}{'':8}"
                    for m in present)
    lines.append(f"{'mean top-1':<14}{means}")
    return "\n".join(lines)


def save_chart(metrics: dict, view: str, path: Path) -> None:
    datasets = list(metrics)
    present = [m for m in MODEL_ORDER if all(m in metrics[d] for d in datasets)]
    width = 0.8 / max(len(present), 1)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(datasets), 4))
    for i, model_name in enumerate(present):
        values = [metrics[d][model_name][view]["top1"] for d in datasets]
        ax.bar([x + i * width for x in range(len(datasets))], values, width, label=model_name.replace("_", " "))
    ax.set_xticks([x + width * (len(present) - 1) / 2 for x in range(len(datasets))], datasets)
    for x, d in enumerate(datasets):  # chance level: 100 / number of classes
        chance = metrics[d][present[0]].get("chance") if present else None
        if chance:
            ax.hlines(chance, x - width / 2, x + width * (len(present) - 0.5), colors="black", linestyles="dashed",
                      label="chance" if x == 0 else None)
    ax.set_ylabel(f"test top-1 % ({view.replace('_', '-')})")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(config: RunConfig, metrics: dict, predictions: dict, extra: dict) -> str:
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, **extra}, indent=2))
    (run_dir / "predictions.json").write_text(json.dumps(predictions))
    save_chart(metrics, "single_clip", run_dir / "results.png")
    final = ["expert"] + [f"{m}_final" for m in MODEL_ORDER[1:]]
    return "\n\n".join([format_table(metrics, "single_clip", title=": each dataset's model at its best val epoch"),
                        format_table(metrics, "single_clip", final, ": at the end of the schedule"),
                        format_table(metrics, "multi_view", title=": best val epoch")])
