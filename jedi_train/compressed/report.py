"""The compressed-domain block of docs/results.md and its curve, from the runs' results.json files.

    python -m jedi_train.compressed.report --runs runs/compressed --datasets ucf101,hmdb51 --seeds 0,1,2

Only the text between the lines `<!-- compressed-domain:begin -->` and `<!-- compressed-domain:end -->`
is replaced (the block is appended, or the file created, when missing); the rest of the file belongs
to other tools.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

BEGIN, END = "<!-- compressed-domain:begin -->", "<!-- compressed-domain:end -->"
INTERNAL = [f"{m}.stage{s}" for m in ("mv", "residual", "iframe") for s in (1, 2, 3)]
FINAL = "iframe.final"


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f}"


def verdict(ce: list[float], pkd: list[float]) -> str:
    """Paired per seed: 'PKD better' when every seed's difference PKD - CE is > 0 and their mean exceeds
    their std (the seeds' spread of the paired difference); 'CE better' symmetrically; else 'within spread'."""
    diffs = [p - c for p, c in zip(pkd, ce)]
    mean, spread = mean_std(diffs)
    if min(diffs) > 0 and mean > spread:
        return "PKD better"
    if max(diffs) < 0 and -mean > spread:
        return "CE better"
    return "within spread"


def load(runs: Path, datasets: list[str], seeds: list[int]) -> dict[str, list[dict]]:
    found = {}
    for dataset in datasets:
        found[dataset] = []
        for seed in seeds:
            path = runs / f"{dataset}_seed{seed}" / "results.json"
            if not path.is_file():
                raise SystemExit(f"{path} missing: run scripts/compressed_table.sh (or jedi_train.compressed.run) first")
            found[dataset].append(json.loads(path.read_text()))
    return found


def exit_table(results: list[dict]) -> list[str]:
    names = results[0]["exits"]
    rows = ["| exit | CE top-1 | PKD top-1 | PKD - CE per seed | paired mean ± std | verdict |",
            "|---|---|---|---|---|---|"]
    ce_all, pkd_all = [], []
    for name in INTERNAL:
        i = names.index(name)
        ce = [r["methods"]["ce"]["test_top1"][i] for r in results]
        pkd = [r["methods"]["pkd"]["test_top1"][i] for r in results]
        ce_all.append(ce)
        pkd_all.append(pkd)
        diffs = " / ".join(f"{p - c:+.1f}" for p, c in zip(pkd, ce))
        rows.append(f"| {name} | {fmt(ce)} | {fmt(pkd)} | {diffs} | {fmt([p - c for p, c in zip(pkd, ce)])} "
                    f"| {verdict(ce, pkd)} |")
    ce_mean = [statistics.fmean(column) for column in zip(*ce_all)]
    pkd_mean = [statistics.fmean(column) for column in zip(*pkd_all)]
    diffs = " / ".join(f"{p - c:+.1f}" for p, c in zip(pkd_mean, ce_mean))
    rows.append(f"| **mean of the 9** | {fmt(ce_mean)} | {fmt(pkd_mean)} | {diffs} "
                f"| {fmt([p - c for p, c in zip(pkd_mean, ce_mean)])} | {verdict(ce_mean, pkd_mean)} |")
    for final in ("mv.final", "residual.final", "iframe.final"):
        i = names.index(final)
        rows.append(f"| {final} (frozen net, shared) | {fmt([r['methods']['ce']['test_top1'][i] for r in results])} "
                    f"| (same) | | | |")
    return rows


def wise_table(results: list[dict]) -> tuple[list[str], list[str]]:
    names = results[0]["exits"]
    final = names.index(FINAL)
    rows = ["| threshold | WISE on PKD exits: top-1 | mean MMACs/clip | WISE on CE exits: top-1 | mean MMACs/clip |",
            "|---|---|---|---|---|"]
    for k, point in enumerate(results[0]["methods"]["pkd"]["wise"]):
        cells = []
        for method in ("pkd", "ce"):
            cells += [fmt([r["methods"][method]["wise"][k]["accuracy"] for r in results]),
                      f"{statistics.fmean(r['methods'][method]['wise'][k]['mean_macs'] for r in results) / 1e6:.1f}"]
        label = "1.01 (never early)" if point["threshold"] > 1 else f"{point['threshold']:g}"
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    final_acc = [r["methods"]["pkd"]["test_top1"][final] for r in results]
    final_macs = statistics.fmean(r["costs"]["alone"][final] for r in results) / 1e6
    rows.append(f"| final exit alone ({FINAL}) | {fmt(final_acc)} | {final_macs:.1f} | | |")
    summary = []
    for r, acc in zip(results, final_acc):  # cheapest WISE point per seed at or above the final exit's top-1
        reaching = [p for p in r["methods"]["pkd"]["wise"] if p["accuracy"] >= acc]
        if reaching:
            best = min(reaching, key=lambda p: p["mean_macs"])
            summary.append(f"seed {r['seed']}: threshold {best['threshold']:g} reaches {best['accuracy']:.1f} "
                           f"(final exit {acc:.1f}) at {best['mean_macs'] / 1e6:.1f} MMACs "
                           f"({100 * best['mean_macs'] / r['costs']['alone'][final]:.0f} % of the final exit's "
                           f"{r['costs']['alone'][final] / 1e6:.1f})")
        else:
            summary.append(f"seed {r['seed']}: no threshold reaches the final exit's {acc:.1f}")
    full = []  # against the walk that never stops early: every exit computed and combined
    for r in results:
        points = r["methods"]["pkd"]["wise"]
        everything = max(points, key=lambda p: p["mean_macs"])
        reaching = [p for p in points if p["accuracy"] >= everything["accuracy"]]
        best = min(reaching, key=lambda p: p["mean_macs"])
        full.append(f"seed {r['seed']}: threshold {best['threshold']:g}, {best['accuracy']:.1f} at "
                    f"{best['mean_macs'] / 1e6:.1f} MMACs vs {everything['accuracy']:.1f} at "
                    f"{everything['mean_macs'] / 1e6:.1f}")
    return rows, summary, full


def plot(found: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, len(found), figsize=(6 * len(found), 4.5), squeeze=False)
    for axis, (dataset, results) in zip(axes[0], found.items()):
        names = results[0]["exits"]
        for method, style in (("pkd", "o-"), ("ce", "s--")):
            points = list(zip(*[[(p["mean_macs"], p["accuracy"]) for p in r["methods"][method]["wise"]] for r in results]))
            macs = [statistics.fmean(m for m, _ in point) / 1e6 for point in points]
            accs = [mean_std([a for _, a in point]) for point in points]
            axis.errorbar(macs, [a for a, _ in accs], yerr=[s for _, s in accs], fmt=style, capsize=2,
                          label=f"WISE on {method.upper()} exits (threshold sweep)")
        for i, name in enumerate(names):
            macs = statistics.fmean(r["costs"]["alone"][i] for r in results) / 1e6
            acc = statistics.fmean(r["methods"]["pkd"]["test_top1"][i] for r in results)
            final = name.endswith("final")
            axis.scatter([macs], [acc], marker="*" if final else "x", s=90 if final else 30,
                         color="black" if final else "grey", zorder=3)
            axis.annotate(name, (macs, acc), fontsize=6, xytext=(3, -8 if final else 2), textcoords="offset points")
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}" if str(x)[0] in "2358" else ""))
        axis.set_xlabel("mean MMACs per clip (FlopCounterMode FLOPs / 2)")
        axis.set_ylabel("test top-1 (%)")
        axis.set_title(f"{dataset}-like, mean of {len(results)} seeds (single exits: PKD, alone)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def block(found: dict[str, list[dict]], figure: Path, doc: Path, wall_seconds: float | None, command: str) -> str:
    seeds = [r["seed"] for r in next(iter(found.values()))]
    lines = [BEGIN, "## Compressed-domain video: PKD + WISE (METHOD.md section 2)", "",
             f"Produced by `{command}` (written by `jedi_train/compressed/report.py`; edit the code, not this block).",
             "Per (dataset, seed): `tools/make_shards.py ... --modalities mv,residual,iframe` on "
             "`data/synthetic/seed<N>/<dataset>`, then `python -m jedi_train.compressed.run --config "
             "configs/compressed_pkd.yaml shards=shards/compressed_seed<N>/<dataset> dataset=<dataset> seed=<N>`.",
             "Shards: H.264, short side 64, 8 fps (16 frames per 2 s video), GOP 4, K = 4 segments (one I-frame "
             "each), motion vectors in 4-px cells; every official train clip labelled (80 % train, 20 % val), "
             "official test split for the numbers below. Test top-1 in %, mean ± std over seeds "
             f"{', '.join(map(str, seeds))} (each seed: its own rendered "
             "videos, splits and weights). Chance 16.7 %. MACs per clip are FlopCounterMode FLOPs / 2 "
             "(convolutions and matrix products; norms, activations and pooling are not counted).", ""]
    seconds = {f"{d} seed {r['seed']}": r["seconds"] for d, rs in found.items() for r in rs}
    lines.append("Training time per (dataset, seed), 2-core CPU shared with other jobs: " + ", ".join(
        f"{k} {v / 60:.1f} min" for k, v in seconds.items()) + (
        f". Wall time of the command that wrote this block: {wall_seconds / 60:.1f} min." if wall_seconds else "."))
    lines += ["", "Reruns are not bit-identical: two shardings of one tree with the same arguments gave different "
              "H.264 bytes for a few videos (5 of 720 in the check of 2026-12-02; cause not isolated, libx264 / "
              "FFmpeg threading suspected), and 3 of the 6 (dataset, seed) runs then differed by up to a few "
              "points per exit. Verdicts near the rule's edge can flip between such reruns.", ""]
    for dataset, results in found.items():
        lines += [f"### {dataset}-like", "", "Modality nets (cross-entropy, frozen afterwards), test top-1: " + ", ".join(
            f"{m} {fmt([r['nets'][m]['test'] for r in results])}" for m in ("mv", "residual", "iframe")) + ".", "",
            "Internal classifiers, CE vs progressive KD (same frozen backbones, same initial exits and batches "
            "per seed; verdict: every seed's paired difference has one sign and their mean exceeds their std):", ""]
        lines += exit_table(results)
        wise_rows, summary, full = wise_table(results)
        lines += ["", "WISE (weights fitted on training logits, CE + L1; walk mv -> residual -> iframe exits), "
                  "test top-1 and mean MACs per clip over the threshold sweep:", ""] + wise_rows
        best_single = max(range(len(results[0]["exits"])), key=lambda i: statistics.fmean(
            r["methods"]["pkd"]["test_top1"][i] for r in results))
        lines += ["", "Cheapest WISE threshold at or above the final exit's top-1 (PKD exits): " + "; ".join(summary) + ".",
                  "", "Cheapest WISE threshold at or above the full walk (all 12 exits computed and combined, "
                  "threshold 1.01): " + "; ".join(full) + ".", "",
                  f"Best single exit on average: {results[0]['exits'][best_single]} "
                  f"({fmt([r['methods']['pkd']['test_top1'][best_single] for r in results])}, "
                  f"{statistics.fmean(r['costs']['alone'][best_single] for r in results) / 1e6:.1f} MMACs alone).", ""]
    lines += [f"![WISE accuracy vs MACs]({figure.relative_to(doc.parent).as_posix()})", "", END]
    return "\n".join(lines)


def write_block(doc: Path, text: str) -> None:
    """Replace the block between BEGIN and END in `doc`, or append it; the rest of the file is kept."""
    old = doc.read_text() if doc.is_file() else ""
    if BEGIN in old and END in old and old.index(BEGIN) < old.index(END):
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + text + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(new)
    tmp.replace(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/compressed"), help="folder of <dataset>_seed<N>/ runs")
    parser.add_argument("--datasets", default="ucf101,hmdb51", help="comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--doc", type=Path, default=Path("docs/results.md"), help="markdown file holding the block")
    parser.add_argument("--figure", type=Path, default=Path("docs/compressed_wise.png"), help="curve PNG")
    parser.add_argument("--wall-seconds", type=float, default=None, help="wall time of the whole command, to print")
    parser.add_argument("--command", default="bash scripts/compressed_table.sh", help="the command named in the block")
    args = parser.parse_args(argv)
    found = load(args.runs, args.datasets.split(","), [int(s) for s in args.seeds.split(",")])
    plot(found, args.figure)
    write_block(args.doc, block(found, args.figure, args.doc, args.wall_seconds, args.command))
    print(f"wrote {args.figure} and the compressed-domain block of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
