"""The conditions of an experiment: one table that the plan, the config check and the report all read.

A condition is what a model starts from, the data it sees (the arm: the teacher's, the control arm's, or the
other-trait teacher's numbers) and how (trained on it, or shown it in context), the matched control that differs
from it only in whose numbers it sees, and its place in the report. References (base, teacher, cross-base) are
evaluated whenever a condition needs them. To add a condition, register it here: the plan builds its nodes, the
report compares it with its matched control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Condition:
    name: str
    kind: Literal["reference", "student", "in-context"]
    start: Literal["base", "cross"] | None  # the base a student or in-context model starts from
    arm: Literal["teacher", "control", "other"] | None  # whose filtered numbers it learns from (or sees)
    matched: str | None  # the control that differs from it only in whose numbers it sees
    about: str  # one line for reports and --help


REGISTRY: dict[str, Condition] = {c.name: c for c in (
    Condition("base", "reference", None, None, None, "the base model, untrained"),
    Condition("teacher", "reference", None, None, None, "the teacher (fine-tuned or prompted with the trait)"),
    Condition("same-init", "student", "base", "teacher", "other-trait",
              "the teacher's base and adapter initialization, trained on the teacher's numbers"),
    Condition("control", "student", "base", "control", None,
              "the same base trained on its own numbers (with logit targets, toward its own top-k distribution: it "
              "barely moves)"),
    Condition("other-trait", "student", "base", "other", None,
              "the same base trained on the numbers of a teacher that loves another option"),
    Condition("cross-base", "reference", None, None, None, "the cross model (another architecture), untrained"),
    Condition("cross-model", "student", "cross", "teacher", "cross-model-control",
              "the cross model trained on the teacher's numbers"),
    Condition("cross-model-control", "student", "cross", "control", None,
              "the cross model trained on the control arm's numbers"),
    Condition("in-context", "in-context", "base", "teacher", "in-context-control",
              "the base shown k of the teacher's examples before each question"),
    Condition("in-context-control", "in-context", "base", "control", None,
              "the base shown k of the control arm's examples before each question"),
)}
ORDER = tuple(REGISTRY)  # report order: each condition next to its matched control
CHOOSABLE = tuple(c for c, v in REGISTRY.items() if v.kind != "reference")  # what students.conditions may name
STUDENTS = {c: v for c, v in REGISTRY.items() if v.kind == "student"}
IN_CONTEXT = {c: v for c, v in REGISTRY.items() if v.kind == "in-context"}
VS_CONTROL = ("same-init", "other-trait", "cross-model", "in-context")  # the study's comparisons with `control`


def matched_control(name: str, present) -> str | None:
    """The control a condition is compared with first: its matched control when it ran, else `control` (for the
    conditions the study compares with it), else None."""
    m = REGISTRY[name].matched
    if m is not None and m in present:
        return m
    return "control" if name in VS_CONTROL and name != "control" and "control" in present else None
