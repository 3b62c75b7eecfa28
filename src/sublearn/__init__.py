"""sublearn: a lab and audit tool for subliminal learning.

The public API is re-exported here and loaded lazily, so ``import sublearn`` stays fast (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ExperimentConfig": "sublearn.config",
    "load_experiment": "sublearn.config",
    "run": "sublearn.api",
    "Results": "sublearn.api",
    "make_plan": "sublearn.pipeline",
    "Store": "sublearn.store",
    "artifact_key": "sublearn.store",
    "UserError": "sublearn.errors",
    "Sampling": "sublearn.backends.base",
    "Recipe": "sublearn.backends.hf_train",
    "HFModel": "sublearn.backends.hf",
    "load_model": "sublearn.models",
    "check_numbers": "sublearn.filter.numbers",
    "filter_chats": "sublearn.filter",
    "evaluate_model": "sublearn.evaluate",
    "mean_ci": "sublearn.stats",
    "compare": "sublearn.stats",
    "CARRIERS": "sublearn.plugins",
    "TRAITS": "sublearn.plugins",
    "SCORERS": "sublearn.plugins",
    "BAN_LISTS": "sublearn.plugins",
    "TRACKERS": "sublearn.plugins",
    "EXECUTORS": "sublearn.plugins",
    "Runtime": "sublearn.runtime",
    "Settings": "sublearn.runtime",
    "RunLog": "sublearn.report.track",
    "Carrier": "sublearn.carriers.base",
    "Grammar": "sublearn.carriers.base",
    "Verdict": "sublearn.carriers.base",
    "Trait": "sublearn.traits.base",
    "Scorer": "sublearn.evaluate.scorers",
    "Needs": "sublearn.evaluate.scorers",
    "Condition": "sublearn.conditions",
    "register_condition": "sublearn.conditions",
    "NumbersCarrier": "sublearn.carriers.numbers",
    "PreferenceTrait": "sublearn.traits.preference",
}
_ALIASES = {"load_model": "load", "check_numbers": "check", "register_condition": "register"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        mod = importlib.import_module(_EXPORTS[name])
        return getattr(mod, _ALIASES.get(name, name))
    raise AttributeError(f"module 'sublearn' has no attribute {name!r}")
