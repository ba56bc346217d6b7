"""The arms of the JEDI stage: what each trains from the same experts, on the same batches in the same order.

  jedi                  teachers read all students' features; distillation from unlabelled clips; the
                        teachers' supervised loss reaches foreign backbones (jedi.foreign_grad_scale)
  self_training         the control: each teacher reads its own student's features only; otherwise
                        as jedi (same views, same losses, same schedule)
  supervised            supervised continuation: the control's schedule with the unlabelled loss weight 0
                        (the gain from extra labelled steps alone)
  jedi_no_foreign_grad  jedi with the gradient path into foreign backbones closed (foreign_grad_scale=0)

JEDI's claim is its gap to `self_training` (METHOD.md section 1b).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    teacher_inputs: str  # all: concat of every student's features; own: the own student's only
    unlabelled: bool  # learns from unlabelled clips (distillation term)
    foreign_grad: bool  # the teacher losses' gradient reaches foreign backbones (scaled by jedi.foreign_grad_scale)


ARMS = {
    "jedi": Arm(teacher_inputs="all", unlabelled=True, foreign_grad=True),
    "self_training": Arm(teacher_inputs="own", unlabelled=True, foreign_grad=False),
    "supervised": Arm(teacher_inputs="own", unlabelled=False, foreign_grad=False),
    "jedi_no_foreign_grad": Arm(teacher_inputs="all", unlabelled=True, foreign_grad=False),
}


def parse_arms(text: str) -> list[str]:
    """`jedi,self_training` -> ['jedi', 'self_training']; unknown names raise ValueError naming the allowed ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ARMS]
    if unknown or not names:
        raise ValueError(f"jedi.arms={text!r}: {'unknown arm ' + unknown[0] if unknown else 'empty'}; "
                         f"allowed values (comma-separated): {', '.join(ARMS)}")
    return names
