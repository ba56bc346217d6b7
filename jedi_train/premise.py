"""The premise check (METHOD.md section 1b): can the other experts teach a dataset something its own
expert does not know? Frozen-feature linear probes on each dataset's labelled split, scored on its test
split: one on the own expert's features, one on all experts' features concatenated. JEDI can only help
where the second is clearly above the first; the main command prints this table before the JEDI rows.
"""
from __future__ import annotations

from accelerate import Accelerator

from jedi_train.cached_teacher import linear_probe, refresh_teacher_cache
from jedi_train.config import RunConfig
from jedi_train.data import DatasetInfo, Streams
from jedi_train.jedi import JediModel
from jedi_train.train_methods import build_from_experts
from pipeline.feature_cache import FeatureCache


def linear_probes(model: JediModel, train: dict[str, FeatureCache], test: dict[str, FeatureCache],
                  steps: int = 300, weight_decay: float = 1e-3) -> dict[str, dict]:
    """dataset -> {"own": probe scores, "all": probe scores (when its teacher reads several backbones)}."""
    results = {}
    for name in model.names:
        sources = model.teacher_sources(name)
        results[name] = {"own": linear_probe(train[name], test[name], [name], steps, weight_decay)}
        if len(sources) > 1:
            results[name]["all"] = linear_probe(train[name], test[name], sources, steps, weight_decay)
    return results


def format_probe_table(results: dict[str, dict], weights: str) -> str:
    lines = [f"linear probe on frozen {weights} features, test top-1 (single clip):",
             f"{'dataset':<14}{'own backbone':>14}{'all backbones':>15}{'gain':>8}"]
    for name, scores in results.items():
        own = scores["own"]["test_top1"]
        if "all" in scores:
            lines.append(f"{name:<14}{own:>14.1f}{scores['all']['test_top1']:>15.1f}"
                         f"{scores['all']['test_top1'] - own:>+8.1f}")
        else:
            lines.append(f"{name:<14}{own:>14.1f}{'-':>15}{'-':>8}")
    return "\n".join(lines)


def premise_check(config: RunConfig, accelerator: Accelerator, streams: Streams,
                  infos: dict[str, DatasetInfo]) -> dict[str, dict]:
    """The experts as a JEDI model whose teachers read all backbones: cache their features of the labelled and test splits (<run_dir>/feature_cache/premise), fit
    the probes on rank 0 and print the table. Returns the probe scores (on every rank)."""
    model = build_from_experts(config, infos, "jedi").to(accelerator.device)
    cache_dir = config.run_dir / "feature_cache" / "premise"
    train = refresh_teacher_cache(model, streams, accelerator, cache_dir, split="labelled", resident=False)
    test = refresh_teacher_cache(model, streams, accelerator, cache_dir, split="test", resident=False)
    results = linear_probes(model, train, test)
    accelerator.print(format_probe_table(results, "experts"))
    return results
