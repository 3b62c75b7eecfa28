"""PNG figures in the study's style: bars with 95% CIs, reference lines; line plots for sweeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _ref_lines(ax, ref_lines: Mapping[str, float] | None) -> None:
    """Dashed horizontal reference lines (base, chance, ...) with a legend."""
    for j, (label, y) in enumerate((ref_lines or {}).items()):
        ax.axhline(y, linestyle="--", color=["gray", "black", "purple"][j % 3], linewidth=1, label=f"{label} ({y:.3f})")
    if ref_lines:
        ax.legend(fontsize=8, loc="upper right")


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
    span = max((abs(m) + e for m, e in zip(means, err_hi)), default=0.0) or 1.0
    for i, m in enumerate(means):  # labels just above each bar, at the scale of the data (shifts can be ~1e-3)
        ax.text(i, m + err_hi[i] + 0.02 * span, f"{m:.3g}" if abs(m) < 1e-2 else f"{m:.3f}", ha="center",
                va="bottom", fontsize=8)
    _ref_lines(ax, ref_lines)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ylim:
        ax.set_ylim(*ylim)
    ax.spines[["top", "right"]].set_visible(False)
    plt.setp(ax.get_xticklabels(), rotation=15)
    return _save(plt, fig, path)


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
    return _save(plt, fig, path)


def seed_bars(
    groups: Sequence[Sequence[tuple[str, Mapping[str, float], tuple[float, float, float]]]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    ref_lines: Mapping[str, float] | None = None,
) -> Path:
    """Bars of seed means with their seed-level CI and every seed as a dot, in groups (a condition beside its
    matched control). Each bar: (label, {seed: value}, (mean, lo, hi)); the first bar of a group is solid, the
    others (its controls) hatched."""
    plt = _plt()
    n = sum(len(g) for g in groups)
    fig, ax = plt.subplots(figsize=(0.9 * n + 0.5 * len(groups) + 2.5, 4.0), dpi=120)
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
    x, ticks, labels = 0.0, [], []
    for gi, group in enumerate(groups):
        for bi, (label, per_seed, (m, lo, hi)) in enumerate(group):
            color = palette[gi % len(palette)]
            ax.bar(x, m, width=0.8, color=color if bi == 0 else "white", edgecolor=color, linewidth=1.2,
                   hatch=None if bi == 0 else "//", yerr=[[max(0.0, m - lo)], [max(0.0, hi - m)]], capsize=4)
            vals = list(per_seed.values())
            jitter = [(k - (len(vals) - 1) / 2) * min(0.5 / max(1, len(vals)), 0.06) for k in range(len(vals))]
            ax.scatter([x + j for j in jitter], vals, s=10, color="black", zorder=3)
            ax.text(x, max([hi, *vals]) + 0.015, f"{m:.3f}", ha="center", va="bottom", fontsize=7)
            ticks.append(x)
            labels.append(label)
            x += 1.0
        x += 0.6
    _ref_lines(ax, ref_lines)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(plt, fig, path)


def grouped_seed_bars(groups: Mapping[str, Sequence[tuple[str, Mapping]]], path: str | Path, *, title: str,
                      ylabel: str) -> Path:
    """The study's figure: per group (a run, e.g. a target animal), one bar per condition (the same colour for a
    condition in every group), its seed-level CI, every seed a dot. A condition's entry is its results.json
    summary of one metric: {"mean", "ci", "per_seed"}."""
    plt = _plt()
    conds = list(dict.fromkeys(c for bars in groups.values() for c, _ in bars))
    palette = {"base": "#8C8C8C", "control": "#DD8452", "same-init": "#4C72B0"}
    others = iter(["#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3"])
    colors = {c: palette.get(c) or next(others, "#333333") for c in conds}
    width = 0.8 / max(1, len(conds))
    fig, ax = plt.subplots(figsize=(1.0 * len(groups) * max(1, len(conds)) * 0.6 + 2.5, 4.0), dpi=120)
    for gi, bars in enumerate(groups.values()):
        for c, m in bars:
            x = gi + (conds.index(c) - (len(conds) - 1) / 2) * width
            lo, hi = m["ci"]
            ax.bar(x, m["mean"], width=width * 0.9, color=colors[c], yerr=[[max(0.0, m["mean"] - lo)],
                                                                         [max(0.0, hi - m["mean"])]], capsize=3,
                   label=c)
            vals = list(m["per_seed"].values())
            jitter = [(k - (len(vals) - 1) / 2) * min(width * 0.6 / max(1, len(vals)), 0.03) for k in range(len(vals))]
            ax.scatter([x + j for j in jitter], vals, s=8, color="black", zorder=3)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, frameon=False)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(plt, fig, path)


def heatmap(rows: Mapping[str, Mapping[str, float]], path: str | Path, *, title: str) -> Path:
    """A table of values (rows x columns, e.g. conditions x options) as an annotated heat map."""
    plt = _plt()
    names = list(rows)
    cols = list(next(iter(rows.values())))
    data = [[rows[r][c] for c in cols] for r in names]
    fig, ax = plt.subplots(figsize=(0.7 * len(cols) + 2.8, 0.42 * len(names) + 1.6), dpi=120)
    im = ax.imshow(data, cmap="Blues", vmin=0, vmax=max(0.05, max(max(r) for r in data)), aspect="auto")
    for i, r in enumerate(data):
        for j, v in enumerate(r):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 * im.norm.vmax else "black")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(plt, fig, path)
