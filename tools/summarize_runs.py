"""Mean and spread over seeds of the per-dataset test top-1 that each run wrote to metrics.json.

    python tools/summarize_runs.py runs/synthetic_demo runs/synthetic_demo_seed1 runs/synthetic_demo_seed2
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

MODELS = ["expert", "self_training_student", "self_training_teacher", "jedi_student", "jedi_teacher"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, each holding metrics.json")
    parser.add_argument("--view", default="single_clip", choices=["single_clip", "multi_view"])
    args = parser.parse_args(argv)
    reports = [json.loads((run / "metrics.json").read_text()) for run in args.runs]
    datasets = list(reports[0]["metrics"])
    print(f"test top-1 ({args.view}), mean ± population std over {len(reports)} seeds "
          f"({', '.join(str(r['seed']) for r in reports)})")
    print(f"{'dataset':<14}" + "".join(f"{m:>24}" for m in MODELS))
    rows = datasets + ["mean"]
    for row in rows:
        cells = []
        for model in MODELS:
            if row == "mean":
                values = [statistics.mean(r["metrics"][d][model][args.view]["top1"] for d in datasets) for r in reports]
            else:
                values = [r["metrics"][row][model][args.view]["top1"] for r in reports]
            cells.append(f"{statistics.mean(values):>17.1f} ± {statistics.pstdev(values):4.1f}")
        print(f"{row:<14}" + "".join(cells))
    gains = {m: [statistics.mean(r["metrics"][d][m][args.view]["top1"] - r["metrics"][d]["expert"][args.view]["top1"]
                                 for d in datasets) for r in reports] for m in ("jedi_student", "self_training_student")}
    gap = [a - b for a, b in zip(gains["jedi_student"], gains["self_training_student"])]
    print(f"\nmean student gain over the experts: JEDI {statistics.mean(gains['jedi_student']):+.1f} "
          f"(per seed {', '.join(f'{g:+.1f}' for g in gains['jedi_student'])}), self-training control "
          f"{statistics.mean(gains['self_training_student']):+.1f} "
          f"(per seed {', '.join(f'{g:+.1f}' for g in gains['self_training_student'])})")
    print(f"JEDI minus control: {statistics.mean(gap):+.1f} (per seed {', '.join(f'{g:+.1f}' for g in gap)})")


if __name__ == "__main__":
    main()
