"""Training you can watch, after the fact: every training job's loss curve (kept in its artifact), drawn per
condition as the mean over seeds with each seed faint (``losses.png``)."""

from __future__ import annotations

import json
from pathlib import Path


def curves(store, plan) -> dict[str, dict[int, list[float]]]:
    """Condition (or "teacher") -> seed -> loss per step, for the plan's trained artifacts that kept one."""
    out: dict[str, dict[int, list[float]]] = {}
    for stage, info, field in (("teacher", "teacher.json", "train"), ("finetune", "student.json", None)):
        for n in plan[stage]:
            p = store.path(stage, n.key) / info
            if not p.exists():
                continue
            d = json.loads(p.read_text())
            d = d.get(field) or {} if field else d
            if d.get("train_losses"):
                name = "teacher" if stage == "teacher" else n.name[len("student-"): n.name.rfind("-s")]
                if stage == "teacher" and n.args.get("arm") != "teacher":
                    name = "other-trait teacher"
                out.setdefault(name, {})[n.seed] = d["train_losses"]
    return out


def plot(c: dict[str, dict[int, list[float]]], path: Path, most: int = 10) -> bool:
    """Mean loss per step of each condition (the first ``most``), seeds faint; False when nothing kept a curve."""
    if not c:
        return False
    import numpy as np

    from .plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for k, (name, seeds) in enumerate(list(c.items())[:most]):
        color = f"C{k % 10}"
        n = min(len(v) for v in seeds.values())
        for v in seeds.values():
            ax.plot(v[:n], color=color, alpha=0.15, lw=0.6)
        ax.plot(np.mean([v[:n] for v in seeds.values()], 0), color=color, lw=1.5, label=f"{name} ({len(seeds)} seeds)")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (log scale)")
    ax.set_title("training loss per step: mean over seeds, each seed faint", fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    _save(plt, fig, path)
    return True
