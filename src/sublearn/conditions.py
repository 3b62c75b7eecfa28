"""The conditions of an experiment: one table that the plan, the config check and the report all read.

A condition is what a model starts from, the data it sees (the arm: the teacher's, the control arm's, or the
other-trait teacher's data) and how (trained on it, or shown it in context), the matched control that differs
from it only in whose data it sees, and its place in the report. References (base, teacher, cross-base) are
evaluated whenever a condition needs them. To add a condition, ``register`` it (here, or from a plug-in module): the
plan builds its nodes from its start, arm and kind, and the report compares it with its matched control. Reports list
conditions in registration order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Condition:
    name: str
    kind: Literal["reference", "student", "in-context"]
    start: Literal["base", "cross"] | None  # the base a student or in-context model starts from
    arm: Literal["teacher", "control", "other"] | None  # whose filtered data it learns from (or sees)
    matched: str | None  # the control that differs from it only in whose data it sees
    about: str  # one line for reports and --help
    vs_control: bool = False  # also compared with `control` (the study's comparisons)


REGISTRY: dict[str, Condition] = {c.name: c for c in (
    Condition("base", "reference", None, None, None, "the base model, untrained"),
    Condition("teacher", "reference", None, None, None, "the teacher (fine-tuned or prompted with the trait)"),
    Condition("same-init", "student", "base", "teacher", "other-trait",
              "the teacher's base and adapter initialization, trained on the teacher's data", True),
    Condition("control", "student", "base", "control", None,
              "the same base trained on its own data (with logit targets, toward its own top-k distribution: it "
              "barely moves)"),
    Condition("other-trait", "student", "base", "other", None,
              "the same base trained on the data of a teacher with another trait (loves another option)", True),
    Condition("cross-base", "reference", None, None, None, "the cross model (another architecture), untrained"),
    Condition("cross-model", "student", "cross", "teacher", "cross-model-control",
              "the cross model trained on the teacher's data", True),
    Condition("cross-model-control", "student", "cross", "control", None,
              "the cross model trained on the control arm's data"),
    Condition("in-context", "in-context", "base", "teacher", "in-context-control",
              "the base shown k of the teacher's examples before each question", True),
    Condition("in-context-control", "in-context", "base", "control", None,
              "the base shown k of the control arm's examples before each question"),
)}


def register(cond: Condition) -> Condition:
    """Add a condition (a plug-in module may call this); its matched control must be registered first."""
    old = REGISTRY.get(cond.name)
    if old is not None and old != cond:
        raise ValueError(f"condition {cond.name!r} is registered twice, differently")
    if cond.matched is not None and cond.matched not in REGISTRY:
        raise ValueError(f"condition {cond.name!r}: register its matched control {cond.matched!r} first")
    if cond.kind != "reference" and (cond.start not in ("base", "cross") or cond.arm not in ("teacher", "control",
                                                                                              "other")):
        raise ValueError(f"condition {cond.name!r}: start must be base or cross, arm teacher, control or other")
    REGISTRY[cond.name] = cond
    return cond


def order() -> tuple[str, ...]:
    """Report order: registration order (each built-in condition next to its matched control)."""
    return tuple(REGISTRY)


def choosable() -> tuple[str, ...]:
    """What students.conditions may name."""
    return tuple(c for c, v in REGISTRY.items() if v.kind != "reference")


def students() -> dict[str, Condition]:
    return {c: v for c, v in REGISTRY.items() if v.kind == "student"}


def in_context() -> dict[str, Condition]:
    return {c: v for c, v in REGISTRY.items() if v.kind == "in-context"}


def matched_control(name: str, present) -> str | None:
    """The control a condition is compared with first: its matched control when it ran, else `control` (for the
    conditions the study compares with it), else None."""
    m = REGISTRY[name].matched
    if m is not None and m in present:
        return m
    return "control" if REGISTRY[name].vs_control and name != "control" and "control" in present else None
