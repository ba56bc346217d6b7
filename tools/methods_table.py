"""The methods table: every method's test top-1 over seeds, with the paired test against JEDI, written into
docs/results.md (between its `methods-table` markers; the rest of the file is kept) with a PNG chart.

    python tools/methods_table.py --seeds 0 1 2 --fractions 5 10 20 --out docs/results.md

Reads runs/methods_seed<N>/ (metrics.json, predictions.json, <method>/best_val.json) and, for the label
fraction ablation, runs/methods_seed<N>_labels<pct>/, as scripts/methods_table.sh leaves them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize_runs import load_run, paired_test  # noqa: E402

BEGIN, END = "<!-- methods-table:begin -->", "<!-- methods-table:end -->"
REFERENCE = "jedi_student"
VIEW = "single_clip"


def load(run: Path) -> dict:
    """A run as tools/summarize_runs.py reads it, plus each method's train time (`<method>/best_val.json`)."""
    loaded = load_run(run)
    loaded["seconds"] = {best_val.parent.name: json.loads(best_val.read_text()).get("train_seconds")
                         for best_val in run.glob("*/best_val.json")}
    return loaded


def models_of(runs: list[dict], final: bool) -> list[str]:
    """Models present in every run, in the eval stage's order (expert first)."""
    first = runs[0]["metrics"]
    names = list(next(iter(first.values())))
    keep = [m for m in names if m == "expert" or m.endswith("_final") == final]
    return [m for m in keep if all(m in r["metrics"][d] for r in runs for d in r["metrics"])]


def top1(run: dict, model: str, dataset: str | None = None) -> float:
    metrics = run["metrics"]
    if dataset:
        return metrics[dataset][model][VIEW]["top1"]
    return statistics.mean(metrics[d][model][VIEW]["top1"] for d in metrics)


def paired(runs: list[dict], a: str, b: str, samples: int) -> dict:
    """a - b on the four-dataset mean (tools/summarize_runs.py's paired test), in this table's short keys."""
    test = paired_test(runs, a, b, VIEW, samples)
    return {"mean": test["mean_difference"], "per_seed": test["per_seed"], "p": test["bootstrap_p"],
            "mcnemar_p": [m["p"] for m in test["mcnemar"]], "ci95": test["bootstrap_ci95"]}


def method_of(model: str) -> str:
    return model.rsplit("_", 1)[0] if model != "expert" else "experts"


def fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f}"


def at_end(model: str) -> str:
    """The model at the end of the schedule (the expert has no schedule: itself)."""
    return model if model == "expert" else f"{model}_final"


def main_table(runs: list[dict], samples: int) -> tuple[list[str], list[dict]]:
    """One row per method's model: per-dataset and mean test top-1 at the end of the schedule, the mean at the
    best val epoch, the paired difference to JEDI's students (end of schedule), train time."""
    datasets = list(runs[0]["metrics"])
    rows = []
    for model in models_of(runs, final=False):
        final = at_end(model)
        row = {"model": model, "per_dataset": {d: [top1(r, final, d) for r in runs] for d in datasets},
               "mean": [top1(r, final) for r in runs], "best_val_mean": [top1(r, model) for r in runs],
               "seconds": [r["seconds"].get(method_of(model)) for r in runs]}
        if model != REFERENCE:
            row["vs_jedi"] = paired(runs, final, at_end(REFERENCE), samples)
        rows.append(row)
    chance = {d: runs[0]["metrics"][d]["expert"].get("chance", float("nan")) for d in datasets}
    header = (["model"] + [f"{d} (chance {chance[d]:.0f})" for d in datasets]
              + ["mean", f"minus `{REFERENCE}` [95% CI], p", "mean at best val epoch", "train s / seed"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        versus = row.get("vs_jedi")
        versus_text = (f"{versus['mean']:+.1f} [{versus['ci95'][0]:+.1f}, {versus['ci95'][1]:+.1f}], "
                       f"p = {versus['p']:.2g}" if versus else "reference")
        seconds = [s for s in row["seconds"] if s is not None]
        cells = ([f"`{row['model']}`"] + [fmt(row["per_dataset"][d]) for d in datasets] + [fmt(row["mean"]),
                 versus_text, fmt(row["best_val_mean"]),
                 f"{statistics.mean(seconds):.0f}" if seconds else "(experts stage)"])
        lines.append("| " + " | ".join(cells) + " |")
    return lines, rows


# JEDI's claim is its gap to the control that differs only in what the teacher reads (METHOD.md 1b)
CONTROL_PAIRS = [("jedi_student", "self_training_student"), ("jedi_teacher", "self_training_teacher"),
                 ("jedi_fit_student", "self_training_fit_student"), ("jedi_fit_teacher", "self_training_fit_teacher"),
                 ("jedi_fit_student", "hinton_kd_student"), ("jedi_fit_student", "joint_supervised_student")]


def control_table(runs: list[dict], samples: int) -> tuple[list[str], dict]:
    """The paired gaps that say whether JEDI did what it claims, at the end of the schedule."""
    present = set(models_of(runs, final=False))
    lines = ["| comparison (end of schedule) | per seed | mean [95% CI] | p | McNemar p per seed |",
             "|---|---|---|---|---|"]
    results = {}
    for a, b in CONTROL_PAIRS:
        if a not in present or b not in present:
            continue
        t = paired(runs, at_end(a), at_end(b), samples)
        results[f"{a} - {b}"] = t
        lines.append(f"| `{a}` − `{b}` | {', '.join(f'{x:+.1f}' for x in t['per_seed'])} | {t['mean']:+.1f} "
                     f"[{t['ci95'][0]:+.1f}, {t['ci95'][1]:+.1f}] | {t['p']:.2g} | "
                     f"{', '.join(f'{x:.2g}' for x in t['mcnemar_p'])} |")
    return lines, results


def fraction_table(by_fraction: dict[int, list[dict]], samples: int) -> tuple[list[str], dict]:
    lines = ["| labelled share of each narrow training set | expert | `self_training_student` | `jedi_student` | jedi − control "
             "student [95% CI], p | `self_training_teacher` | `jedi_teacher` | jedi − control teacher [95% CI], p |",
             "|---|---|---|---|---|---|---|---|"]
    results = {}
    for pct, runs in by_fraction.items():
        students = paired(runs, "jedi_student_final", "self_training_student_final", samples)
        teachers = paired(runs, "jedi_teacher_final", "self_training_teacher_final", samples)
        results[pct] = {"students": students, "teachers": teachers}
        cell = lambda t: f"{t['mean']:+.1f} [{t['ci95'][0]:+.1f}, {t['ci95'][1]:+.1f}], p = {t['p']:.2g}"  # noqa: E731
        means = {m: fmt([top1(r, at_end(m)) for r in runs]) for m in
                 ("expert", "self_training_student", "jedi_student", "self_training_teacher", "jedi_teacher")}
        seeds = ", ".join(str(r["seed"]) for r in runs)
        lines.append(f"| {pct} % (seeds {seeds}) | {means['expert']} | {means['self_training_student']} | {means['jedi_student']} | "
                     f"{cell(students)} | {means['self_training_teacher']} | {means['jedi_teacher']} | {cell(teachers)} |")
    return lines, results


def save_chart(rows: list[dict], path: Path, seeds: list[int]) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.4))
    names = [row["model"] for row in rows][::-1]
    means = [statistics.mean(row["mean"]) for row in rows][::-1]
    spreads = [statistics.pstdev(row["mean"]) for row in rows][::-1]
    colours = ["tab:red" if n.startswith("jedi") else "tab:gray" if n == "expert" else "tab:blue" for n in names]
    ax.barh(range(len(names)), means, xerr=spreads, color=colours, alpha=0.85, capsize=2)
    for i, row in enumerate(rows[::-1]):  # each seed's value as a dot
        ax.scatter(row["mean"], [i] * len(row["mean"]), s=8, color="black", zorder=3)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel(f"test top-1 %, four-dataset mean, end of schedule\n(bars: mean ± std over seeds "
                  f"{', '.join(map(str, seeds))}; dots: each seed)", fontsize=9)
    low = min(min(row["mean"]) for row in rows)
    ax.set_xlim(max(0, low - 10), min(100, max(max(row["mean"]) for row in rows) + 5))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replace_block(path: Path, text: str) -> None:
    """Put `text` between the markers in `path`, keeping everything else (other tools own other blocks)."""
    old = path.read_text() if path.is_file() else "# Results\n"
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds to read (default: 0 1 2)")
    parser.add_argument("--fractions", nargs="*", type=int, default=[5, 10, 20],
                        help="label fractions (percent) of the JEDI-vs-control ablation (default: 5 10 20)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the runs are (default: runs)")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"), help="results page to update")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws (default: 2000)")
    args = parser.parse_args(argv)
    runs = [load(args.runs_dir / f"methods_seed{s}") for s in args.seeds]
    table, rows = main_table(runs, args.bootstrap)
    control_lines, controls = control_table(runs, args.bootstrap)
    by_fraction = {}  # a fraction's row uses the seeds whose run has finished; the row names them
    for pct in args.fractions:
        finished = [s for s in args.seeds if (args.runs_dir / f"methods_seed{s}_labels{pct}" / "predictions.json").is_file()]
        if finished:
            by_fraction[pct] = [load(args.runs_dir / f"methods_seed{s}_labels{pct}") for s in finished]
    fraction_lines, fractions = fraction_table(by_fraction, args.bootstrap) if by_fraction else ([], {})
    chart = args.out.parent / "results_methods.png"
    save_chart(rows, chart, args.seeds)
    schedule = runs[0]["config"].get("schedule", {})
    data = runs[0]["config"].get("data", {})
    test_clips = {d: runs[0]["metrics"][d]["expert"][VIEW]["clips"] for d in runs[0]["metrics"]}
    text = "\n".join([
        "## Methods on one benchmark (issue 15)",
        "",
        f"Every method trained from the same experts on the demo benchmark's shards, seeds {args.seeds} (each seed "
        "renders its own videos, draws its own splits and initialises its own weights). Budget of every method: "
        f"{schedule.get('epochs')} epochs x {schedule.get('steps_per_epoch')} steps, AdamW at lr {schedule.get('lr')} "
        f"(one cycle), {data.get('labelled_batch_size')} labelled + {data.get('unlabelled_batch_size')} unlabelled "
        "clips per dataset and step (unlabelled only for the methods that read them). That is far fewer steps than the "
        "papers use; the README's demo trains JEDI for 5 epochs. Test top-1 (%), single clip, every model at the end "
        "of the schedule (the fixed budget); mean ± population std over seeds. Test clips per seed: "
        + ", ".join(f"{d} {n}" for d, n in test_clips.items()) + ".",
        "",
        f"The last columns: the paired difference of the four-dataset mean to `{REFERENCE}` (per seed on the same "
        "test clips, then a bootstrap over seeds and clips: mean, 95 % interval, two-sided p); the four-dataset mean "
        "when each dataset's model is taken at its own best validation epoch, the experts' epoch included (with "
        "11 val clips per class the experts' best-of-16 val score is hard to beat, so this column stays near the "
        "experts' row); training wall time per seed on this machine (validation included; measured while other jobs "
        "shared its 2 cores, so compare methods within a seed, not across machines).",
        "",
        *table,
        "",
        f"![methods]({chart.name})",
        "",
        "### JEDI against its control",
        "",
        "Four-dataset mean test top-1 differences, paired on the same test clips (bootstrap over seeds and clips; "
        "McNemar's exact test per seed on all test clips). `jedi_fit` / `self_training_fit` start every teacher "
        "head as a logistic regression on the labelled features it reads (all experts' for JEDI, the own "
        "expert's for the control), as the multi-teacher KD baselines' teachers start; `jedi` / `self_training` "
        "start them as the experts' heads (foreign blocks zero).",
        "",
        *control_lines,
        "",
        *(["### Label fractions: JEDI against its control",
           "",
           "The narrow datasets re-sharded with fewer or more labelled videos per class (same val and test clips, "
           "nested labelled sets; the broad dataset unchanged); experts retrained on them; `jedi` and "
           "`self_training` trained as above. Four-dataset mean test top-1 at the end of the schedule.",
           "",
           *fraction_lines, ""] if fraction_lines else []),
        "Produced by `bash scripts/methods_table.sh` (seeds "
        + " ".join(map(str, args.seeds)) + "), which ends with `python tools/methods_table.py`.",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    replace_block(args.out, text)
    print(text)
    summary = {"rows": rows, "controls": controls, "fractions": fractions}
    (args.out.parent / "results_methods.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
