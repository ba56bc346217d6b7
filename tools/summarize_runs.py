"""The results table over seeds, with the statistics that say whether a gap is real.

    python tools/summarize_runs.py runs/synthetic_demo_seed0 runs/synthetic_demo_seed1 runs/synthetic_demo_seed2

Each run folder holds metrics.json and predictions.json (written by the eval stage). Prints:
  - test top-1 per dataset and model: mean and population std over the runs (seeds);
  - per seed, the four-dataset mean of each comparison's difference (JEDI student minus control student first);
  - two paired tests on the shared test clips: McNemar's exact test per seed (clips of all datasets pooled),
    and a paired bootstrap over seeds and clips of the four-dataset mean difference (seeds resampled, then
    clips within each seed and dataset), with its 95 % interval and two-sided p-value;
  - one sentence per comparison saying whether the gap is significant at --alpha.
--json writes all of it.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np

ARM_MODELS = ["supervised_student", "self_training_student", "self_training_teacher", "jedi_student",
              "jedi_teacher", "jedi_no_foreign_grad_student", "jedi_no_foreign_grad_teacher"]
# each arm's models at their best val epoch, then at the end of the schedule (`_final`)
MODELS = ["expert", *ARM_MODELS, *(f"{m}_final" for m in ARM_MODELS)]
# (a, b): is a better than b? The first is JEDI's claim.
_PAIRS = [("jedi_student", "self_training_student"), ("jedi_teacher", "self_training_teacher"),
          ("jedi_student", "supervised_student"), ("jedi_student", "expert"),
          ("self_training_student", "expert"), ("jedi_no_foreign_grad_student", "jedi_student")]
COMPARISONS = _PAIRS + [(f"{a}_final", b if b == "expert" else f"{b}_final") for a, b in _PAIRS]


def load_run(run: Path) -> dict:
    for name in ("metrics.json", "predictions.json"):
        if not (run / name).is_file():
            raise SystemExit(f"{run / name} is missing: run the eval stage of that run first")
    metrics = json.loads((run / "metrics.json").read_text())
    return {"seed": metrics["seed"], "metrics": metrics["metrics"], "config": metrics.get("config", {}),
            "predictions": json.loads((run / "predictions.json").read_text())}


def correct_vectors(run: dict, model: str, view: str) -> dict[str, np.ndarray]:
    """dataset -> 0/1 per test clip (sorted by sample key, so two models' vectors are paired)."""
    out = {}
    for dataset, per_view in run["predictions"].items():
        rows = per_view[view][model]
        out[dataset] = np.array([rows[key][0] == rows[key][1] for key in sorted(rows)], dtype=np.int8)
    return out


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Clips only a got right, clips only b got right, two-sided exact binomial p-value."""
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return only_a, only_b, 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return only_a, only_b, min(1.0, 2 * tail)


def paired_bootstrap(diffs: list[dict[str, np.ndarray]], samples: int, seed: int) -> np.ndarray:
    """`diffs[s][dataset]`: per-clip a - b (in -1, 0, 1) of seed s. Returns `samples` bootstrap draws of the
    mean over seeds of the four-dataset mean top-1 difference, in points."""
    rng = np.random.default_rng(seed)
    draws = np.zeros(samples)
    for i in range(samples):
        seeds = rng.integers(0, len(diffs), len(diffs))
        per_seed = []
        for s in seeds:
            per_seed.append(np.mean([d[rng.integers(0, len(d), len(d))].mean() for d in diffs[s].values()]))
        draws[i] = 100.0 * np.mean(per_seed)
    return draws


def paired_test(runs: list[dict], a: str, b: str, view: str, samples: int, alpha: float = 0.05) -> dict:
    """Model a minus model b on the four-dataset mean top-1, paired on the same test clips: per seed, McNemar's
    exact test per seed, and the paired bootstrap over seeds and clips (95 % interval, two-sided p)."""
    datasets = list(runs[0]["metrics"])
    per_seed, mcnemar, diffs = [], [], []
    for run in runs:
        va, vb = correct_vectors(run, a, view), correct_vectors(run, b, view)
        diffs.append({d: va[d].astype(np.int16) - vb[d] for d in datasets})
        per_seed.append(100.0 * float(np.mean([diffs[-1][d].mean() for d in datasets])))
        only_a, only_b, p = mcnemar_exact(np.concatenate(list(va.values())), np.concatenate(list(vb.values())))
        mcnemar.append({"seed": run["seed"], "only_a": only_a, "only_b": only_b, "p": p})
    draws = paired_bootstrap(diffs, samples, seed=0)
    # two-sided, with the +1 correction: never 0 from a finite number of draws
    p_boot = float(min(1.0, 2 * (min((draws <= 0).sum(), (draws >= 0).sum()) + 1) / (samples + 1)))
    return {"a": a, "b": b, "mean_difference": statistics.mean(per_seed), "per_seed": per_seed,
            "a_wins_every_seed": all(x > 0 for x in per_seed), "mcnemar": mcnemar,
            "bootstrap_ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))],
            "bootstrap_p": p_boot, "significant": bool(p_boot < alpha)}


def summarize(runs: list[dict], view: str, samples: int, alpha: float) -> dict:
    datasets = list(runs[0]["metrics"])
    models = [m for m in MODELS if all(m in r["metrics"][d] for r in runs for d in datasets)]
    table = {}
    for row in [*datasets, "mean"]:
        table[row] = {}
        for model in models:
            if row == "mean":
                values = [statistics.mean(r["metrics"][d][model][view]["top1"] for d in datasets) for r in runs]
            else:
                values = [r["metrics"][row][model][view]["top1"] for r in runs]
            table[row][model] = {"mean": statistics.mean(values), "std": statistics.pstdev(values), "per_seed": values}
    tests = [paired_test(runs, a, b, view, samples, alpha) for a, b in COMPARISONS if a in models and b in models]
    return {"view": view, "seeds": [r["seed"] for r in runs], "models": models, "table": table, "tests": tests,
            "alpha": alpha, "bootstrap_samples": samples}


def format_summary(summary: dict) -> str:
    seeds = summary["seeds"]
    lines = []
    for title, models in (("each dataset's model at its best val epoch",
                           [m for m in summary["models"] if not m.endswith("_final")]),
                          ("at the end of the schedule", ["expert"] + [m for m in summary["models"] if m.endswith("_final")])):
        if len(models) < 2:
            continue
        width = max(len(m) for m in models) + 2
        lines += [f"test top-1 ({summary['view']}), {title}: mean ± population std over {len(seeds)} seeds "
                  f"({', '.join(map(str, seeds))})", f"{'dataset':<12}" + "".join(f"{m:>{width}}" for m in models)]
        for row, cells in summary["table"].items():
            lines.append(f"{row:<12}" + "".join(f"{cells[m]['mean']:>{width - 7}.1f} ± {cells[m]['std']:4.1f}"
                                                 for m in models))
        lines.append("")
    lines.append(f"paired comparisons (four-dataset mean, points; McNemar per seed on all test clips; paired "
                 f"bootstrap over seeds and clips, {summary['bootstrap_samples']} draws):")
    for t in summary["tests"]:
        seeds_text = ", ".join(f"{x:+.1f}" for x in t["per_seed"])
        mcnemar = ", ".join(f"{m['only_a']}/{m['only_b']} p={m['p']:.3g}" for m in t["mcnemar"])
        low, high = t["bootstrap_ci95"]
        verdict = "significant" if t["significant"] else "not significant"
        lines.append(f"  {t['a']} - {t['b']}: {t['mean_difference']:+.1f} (per seed {seeds_text}); "
                     f"95% CI [{low:+.1f}, {high:+.1f}], p = {t['bootstrap_p']:.3g}: {verdict} at {summary['alpha']}; "
                     f"McNemar wins/losses {mcnemar}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, each holding metrics.json and predictions.json")
    parser.add_argument("--view", default="single_clip", choices=["single_clip", "multi_view"],
                        help="which test protocol's numbers (default: single_clip)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws (default: 2000)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdicts (default: 0.05)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    runs = [load_run(run) for run in args.runs]
    summary = summarize(runs, args.view, args.bootstrap, args.alpha)
    print(format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
