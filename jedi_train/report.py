"""Stage `eval`: top-1 / top-5 on each dataset's test split for the expert, the JEDI student and teacher,
and the self-training control's student and teacher; single-clip and multi-view. Writes metrics.json,
prints the table and saves a bar chart."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from jedi_train.config import RunConfig  # noqa: E402
from jedi_train.data import DatasetInfo, Streams  # noqa: E402
from jedi_train.evaluate import accuracy  # noqa: E402
from jedi_train.train_experts import load_expert  # noqa: E402
from jedi_train.train_jedi import load_variant, variant_path  # noqa: E402


def evaluate_all(config: RunConfig, accelerator: Accelerator, streams: Streams,
                 infos: dict[str, DatasetInfo]) -> dict:
    """metrics[dataset][model][view] = {top1, top5, clips}; model in expert, jedi_student, jedi_teacher,
    self_training_student, self_training_teacher (those whose checkpoints exist)."""
    device = accelerator.device
    models = {}
    for name, info in infos.items():
        expert = load_expert(config, info).to(device).eval()
        models[(name, "expert")] = expert
    for variant in ("jedi", "self_training"):
        if variant_path(config, variant).is_file():
            model = load_variant(config, infos, variant).to(device).eval()
            for name in infos:
                models[(name, f"{variant}_student")] = lambda x, m=model, n=name: m.student_logits(n, x)
                models[(name, f"{variant}_teacher")] = lambda x, m=model, n=name: m.teacher_logits(n, x)
    metrics: dict = {name: {} for name in infos}
    for (name, model_name), logits_fn in models.items():
        metrics[name][model_name] = {
            "chance": 100.0 / len(infos[name].classes),
            "single_clip": accuracy(logits_fn, streams.eval(name, "test", multi_view=False), accelerator),
            "multi_view": accuracy(logits_fn, streams.eval(name, "test", multi_view=True), accelerator)}
    return metrics


MODEL_ORDER = ["expert", "self_training_student", "self_training_teacher", "jedi_student", "jedi_teacher"]


def format_table(metrics: dict, view: str) -> str:
    present = [m for m in MODEL_ORDER if all(m in metrics[d] for d in metrics)]
    header = f"{'dataset':<14}" + "".join(f"{m:>24}" for m in present)
    lines = [f"test top-1 / top-5 ({view.replace('_', '-')})", header]
    for dataset, per_model in metrics.items():
        cells = "".join(f"{per_model[m][view]['top1']:>15.1f} / {per_model[m][view]['top5']:5.1f}"
                        for m in present)
        lines.append(f"{dataset:<14}{cells}")
    means = "".join(f"{sum(metrics[d][m][view]['top1'] for d in metrics) / len(metrics):>15.1f}{'':9}"
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


def write_report(config: RunConfig, metrics: dict, extra: dict) -> str:
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({"metrics": metrics, **extra}, indent=2))
    save_chart(metrics, "single_clip", run_dir / "results.png")
    return format_table(metrics, "single_clip") + "\n\n" + format_table(metrics, "multi_view")
