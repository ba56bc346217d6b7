"""The statistics of tools/summarize_runs.py on run folders written by hand: a clear gap is significant,
no gap is not, and McNemar's exact p-value matches the binomial tail."""
import json

import numpy as np
import pytest

from tools.summarize_runs import MODELS, main, mcnemar_exact


def write_run(folder, seed, accuracy_of, clips=60, datasets=("kinetics400", "ucf101")):
    rng = np.random.default_rng(seed)
    metrics, predictions = {}, {}
    for dataset in datasets:
        metrics[dataset], predictions[dataset] = {}, {"single_clip": {}}
        labels = rng.integers(0, 6, clips)
        for model in MODELS:
            right = rng.random(clips) < accuracy_of(model)
            rows = {f"{dataset}_{i:04d}": [int(y if ok else (y + 1) % 6), int(y)] for i, (ok, y) in enumerate(zip(right, labels))}
            predictions[dataset]["single_clip"][model] = rows
            metrics[dataset][model] = {"single_clip": {"top1": 100.0 * right.mean(), "top5": 100.0, "clips": clips}}
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"seed": seed, "metrics": metrics}))
    (folder / "predictions.json").write_text(json.dumps(predictions))
    return folder


def test_a_clear_gap_is_significant_and_no_gap_is_not(tmp_path, capsys):
    accuracy = lambda model: 0.9 if model == "jedi_student" else 0.5  # noqa: E731
    runs = [write_run(tmp_path / f"seed{s}", s, accuracy) for s in range(3)]
    summary = main([str(r) for r in runs] + ["--bootstrap", "300", "--json", str(tmp_path / "summary.json")])
    assert json.loads((tmp_path / "summary.json").read_text())["tests"][0]["significant"] is True
    tests = {(t["a"], t["b"]): t for t in summary["tests"]}
    gap = tests[("jedi_student", "self_training_student")]
    assert gap["significant"] and gap["a_wins_every_seed"] and 30 < gap["mean_difference"] < 50
    assert all(m["p"] < 1e-3 for m in gap["mcnemar"])
    same = tests[("jedi_teacher", "self_training_teacher")]
    assert not same["significant"] and same["bootstrap_ci95"][0] < 0 < same["bootstrap_ci95"][1]
    out = capsys.readouterr().out
    assert "jedi_student - self_training_student" in out and "not significant" in out


def test_mcnemar_exact_is_the_binomial_tail():
    a = np.array([1] * 8 + [0] * 2 + [1] * 5)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5)
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (8, 2)
    assert p == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_exact(a, a)[2] == 1.0


def test_missing_predictions_name_the_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit, match="predictions.json"):
        main([str(tmp_path / "run")])
