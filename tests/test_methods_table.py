"""tools/methods_table.py: the table's numbers come from the runs' files, the paired difference has the right
sign and size, and the results page keeps what other tools wrote."""
import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import methods_table  # noqa: E402

DATASETS = {"broad": 8, "narrow": 4}  # test clips per dataset


def fake_run(path, seed: int, right: dict[str, int]) -> None:
    """A run whose model m gets the first right[m] clips of every dataset right (the others wrong)."""
    metrics, predictions = {}, {}
    for dataset, clips in DATASETS.items():
        metrics[dataset], predictions[dataset] = {}, {"single_clip": {}}
        for model, hits in right.items():
            rows = {f"{dataset}_{i:03d}": [0 if i < hits else 1, 0] for i in range(clips)}
            predictions[dataset]["single_clip"][model] = rows
            metrics[dataset][model] = {"chance": 25.0, "single_clip": {"top1": 100.0 * min(hits, clips) / clips,
                                                                       "top5": 100.0, "clips": clips}}
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed, "config": {
        "schedule": {"epochs": 1, "steps_per_epoch": 2, "lr": 0.1}, "data": {}}}))
    (path / "predictions.json").write_text(json.dumps(predictions))
    (path / "jedi").mkdir()
    (path / "jedi" / "best_val.json").write_text(json.dumps({"train_seconds": 12.0}))


def test_table_reads_the_runs_and_keeps_other_blocks(tmp_path):
    for seed in (0, 1):  # fixmatch gets 2 more clips right per dataset than jedi at the end of the schedule
        fake_run(tmp_path / f"methods_seed{seed}", seed, {"expert": 4, "jedi_student": 2, "fixmatch_student": 4,
                                                          "jedi_student_final": 2, "fixmatch_student_final": 4})
    out = tmp_path / "results.md"
    out.write_text("# Results\n\n<!-- compressed-domain:begin -->\nkept\n<!-- compressed-domain:end -->\n")
    summary = methods_table.main(["--seeds", "0", "1", "--fractions", "--runs-dir", str(tmp_path), "--out", str(out),
                                  "--bootstrap", "200"])
    rows = {row["model"]: row for row in summary["rows"]}
    assert rows["jedi_student"]["mean"] == [37.5, 37.5]  # (2/8 + 2/4) / 2
    assert rows["fixmatch_student"]["mean"] == [75.0, 75.0]
    assert rows["fixmatch_student"]["vs_jedi"]["mean"] == pytest.approx(37.5)
    assert rows["fixmatch_student"]["vs_jedi"]["p"] < 0.05
    assert rows["jedi_student"]["seconds"] == [12.0, 12.0]
    text = out.read_text()
    assert "kept" in text and text.count(methods_table.BEGIN) == 1
    assert "| `fixmatch_student` |" in text and (tmp_path / "results_methods.png").stat().st_size > 1000
    methods_table.main(["--seeds", "0", "1", "--fractions", "--runs-dir", str(tmp_path), "--out", str(out),
                        "--bootstrap", "200"])  # a second write replaces the block, never appends another
    assert out.read_text().count(methods_table.BEGIN) == 1 and "kept" in out.read_text()
