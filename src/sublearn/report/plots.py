"""PNG figures in the study's style: bars with 95% CIs, reference lines; line plots for sweeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    bars: Mapping[str, tuple[float, float, float]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    ref_lines: Mapping[str, float] | None = None,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One bar per condition (mean with [lo, hi] error bar); dashed horizontal reference lines."""
    plt = _plt()
    names = list(bars)
    means = [bars[n][0] for n in names]
    err_lo = [max(0.0, bars[n][0] - bars[n][1]) for n in names]
    err_hi = [max(0.0, bars[n][2] - bars[n][0]) for n in names]
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.5, 3.8), dpi=120)
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
    ax.bar(names, means, yerr=[err_lo, err_hi], capsize=5, color=[palette[i % len(palette)] for i in range(len(names))],
           edgecolor="black", linewidth=0.6)
    for i, m in enumerate(means):
        ax.text(i, m + err_hi[i] + 0.01, f"{m:.3f}", ha="center", va="bottom", fontsize=8)
    for j, (label, y) in enumerate((ref_lines or {}).items()):
        ax.axhline(y, linestyle="--", color=["gray", "black", "purple"][j % 3], linewidth=1, label=f"{label} ({y:.3f})")
    if ref_lines:
        ax.legend(fontsize=8, loc="upper right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ylim:
        ax.set_ylim(*ylim)
    ax.spines[["top", "right"]].set_visible(False)
    plt.setp(ax.get_xticklabels(), rotation=15)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def line_plot(
    x: Sequence[float],
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ref_lines: Mapping[str, float] | None = None,
    logx: bool = False,
) -> Path:
    """Lines of mean with a shaded [lo, hi] band, one per series, against a swept knob."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for name, (m, lo, hi) in series.items():
        ax.plot(x, m, marker="o", label=name)
        ax.fill_between(x, lo, hi, alpha=0.2)
    for label, y in (ref_lines or {}).items():
        ax.axhline(y, linestyle="--", color="gray", linewidth=1, label=f"{label} ({y:.2f})")
    if logx:
        ax.set_xscale("symlog", linthresh=min([v for v in x if v > 0], default=1e-3))
        if min(x) >= 0:
            ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
