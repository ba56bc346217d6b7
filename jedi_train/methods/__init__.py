"""The methods the joint stage can train, by name (`methods=jedi,fixmatch,...` or `method=<name>`).

Each entry builds a `Method` (jedi_train/methods/base.py) from the run config, the datasets and freshly
loaded experts. Method modules import nothing from jedi_train.config or jedi_train.data at module level
(config.py imports their `Config` dataclasses).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from jedi_train.methods import (ca_mkd, fixmatch, graph_distillation, hinton_kd, jedi, joint_supervised, mean_teacher,
                                mlfd, staged_kd)
from jedi_train.methods.base import Method


@dataclass(frozen=True)
class MethodEntry:
    build: Callable  # (config, infos, experts) -> Method
    about: str  # one line for --help and docs/results.md


METHODS: dict[str, MethodEntry] = {
    "jedi": MethodEntry(partial(jedi.build, "jedi"), "JEDI: teachers on all students' features, semi-supervised"),
    "self_training": MethodEntry(partial(jedi.build, "self_training"),
                                 "the control: each teacher reads its own student only (FixMatch-style views)"),
    "supervised": MethodEntry(partial(jedi.build, "supervised"), "supervised continuation of the experts"),
    "jedi_no_foreign_grad": MethodEntry(partial(jedi.build, "jedi_no_foreign_grad"),
                                        "JEDI with no gradient into foreign backbones"),
    "jedi_soft": MethodEntry(partial(jedi.build, "jedi_soft"), "JEDI with soft (KL) targets"),
    "jedi_hard": MethodEntry(partial(jedi.build, "jedi_hard"), "JEDI with hard pseudo-labels above jedi.threshold"),
    "jedi_fit": MethodEntry(partial(jedi.build, "jedi_fit"), "JEDI with teacher heads fitted on the labelled "
                            "features they read (logistic regression) instead of starting as the experts' heads"),
    "self_training_fit": MethodEntry(partial(jedi.build, "self_training_fit"), "the control with its teacher "
                                     "heads fitted the same way (on its own student's features)"),
    "joint_supervised": MethodEntry(joint_supervised.build, "one backbone shared by all datasets, a head each, "
                                    "labelled clips only"),
    "fixmatch": MethodEntry(fixmatch.build, "FixMatch per dataset: the student's confident weak-view "
                            "pseudo-labels, learned on the strong view"),
    "mean_teacher": MethodEntry(mean_teacher.build, "Mean Teacher per dataset: consistency with an EMA of the student"),
    "hinton_kd": MethodEntry(hinton_kd.build, "Hinton KD from the average of all experts mapped to each dataset"),
    "ca_mkd": MethodEntry(ca_mkd.build, "confidence-aware multi-teacher KD (CA-MKD) from all experts"),
    "mlfd": MethodEntry(mlfd.build, "MLFD: a joint teacher on the experts' multi-level features, fine-tuned on all "
                                    "datasets, distilled into each student (features at every level + KD)"),
    "staged_kd": MethodEntry(staged_kd.build, "staged KD: experts -> assistant -> student, per-level feature "
                                              "distributions and correlations, optimised pseudo-labels"),
    "graph_distillation": MethodEntry(graph_distillation.build, "graph distillation (Zhang & Peng 2018): Sinkhorn EMD "
                                      "to the experts' logits graph, compact bilinear representation graph"),
}


def parse_methods(text: str) -> list[str]:
    """`jedi,self_training` -> ['jedi', 'self_training']; unknown names raise ValueError naming the allowed ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise ValueError(f"methods={text!r}: {'unknown method ' + unknown[0] if unknown else 'empty'}; "
                         f"allowed values (comma-separated): {', '.join(METHODS)}")
    return names


def build_method(name: str, config, infos, experts) -> Method:
    return METHODS[name].build(config, infos, experts)
