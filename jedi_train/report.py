"""Stage `eval`: top-1 / top-5 on each dataset's test split for the expert and every trained method's
models (`<method>_<role>`); single-clip and multi-view. Writes metrics.json, predictions.json (per-clip top-1, for paired
tests across arms and seeds), prints the table and saves a bar chart."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from jedi_train.config import RunConfig  # noqa: E402
from jedi_train.data import DatasetInfo, Streams  # noqa: E402
from jedi_train.evaluate import evaluate_models  # noqa: E402
from jedi_train.methods import METHODS  # noqa: E402
from jedi_train.methods.base import FeatureMemo  # noqa: E402
from jedi_train.train_experts import load_expert  # noqa: E402
from jedi_train.train_methods import load_selected, method_path  # noqa: E402


def trained_methods(config: RunConfig) -> list[str]:
    """Methods with a finished checkpoint in this run, in the registry's order."""
    return [name for name in METHODS if method_path(config, name).is_file()]


def evaluate_all(config: RunConfig, accelerator: Accelerator, streams: Streams,
                 infos: dict[str, DatasetInfo]) -> tuple[dict, dict]:
    """Every model on every test split, each batch decoded once for all models. Returns (metrics,
    predictions): metrics[dataset][model][view] = {top1, top5, clips}; predictions[dataset][view][model]
    = {sample key: [top-1 class, label]}. Models: expert, then `<method>_<role>` for each trained method
    (each at its own dataset's best validation epoch) and `<method>_<role>_final` (at the end of the
    schedule, no selection)."""
    device = accelerator.device
    methods = trained_methods(config)
    selected = {m: {key: model.to(device).eval() for key, model in load_selected(config, infos, m).items()}
                for m in methods}
    final = {m: {key: model.to(device).eval() for key, model in load_selected(config, infos, m, "final").items()}
             for m in methods}
    metrics: dict = {}
    predictions: dict = {}
    for name, info in infos.items():
        models = {"expert": load_expert(config, info).to(device).eval()}
        memo = FeatureMemo()
        for method, at_best in selected.items():
            for role in at_best[f"{name}/student"].shown_roles:
                models[f"{method}_{role}"] = at_best[f"{name}/{role}"].logits(name, role, memo)
        for method, at_end in final.items():
            for role in at_end[f"{name}/student"].shown_roles:
                models[f"{method}_{role}_final"] = at_end[f"{name}/{role}"].logits(name, role, memo)
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


def model_order(metrics: dict, final: bool = False) -> list[str]:
    """Table columns: the expert, then each method's models in training order (`_final` ones with `final`)."""
    names = list(next(iter(metrics.values())))
    return ["expert"] + [m for m in names[1:] if m.endswith("_final") == final]


def format_table(metrics: dict, view: str, order: list[str] | None = None, title: str = "") -> str:
    order = order or model_order(metrics)
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
    present = [m for m in model_order(metrics) if all(m in metrics[d] for d in datasets)]
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
    final = model_order(metrics, final=True)
    return "\n\n".join([format_table(metrics, "single_clip", title=": each dataset's model at its best val epoch"),
                        format_table(metrics, "single_clip", final, ": at the end of the schedule"),
                        format_table(metrics, "multi_view", title=": best val epoch")])
