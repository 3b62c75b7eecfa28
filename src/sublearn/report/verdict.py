"""The one line a reader can quote: does the trait transmit, to whom, by how much, at the seed level."""

from __future__ import annotations

from ..stats import min_paired_p

ALPHA = 0.05
WHO = {"same-init": "same-init students", "cross-model": "cross-model students", "in-context": "the base in context"}


def _num(x: float) -> str:
    return f"{x:.2g}" if x < 0.01 else f"{x:.3f}".rstrip("0").rstrip(".") if x < 1 else f"{x:.2f}"


def _claim(c: dict) -> str:
    lo, hi = c["ci"]
    return (f"{c['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] vs {c['b']}, {c['wins']}/{c['n_seeds']} seeds, "
            f"exact p = {_num(c['p_value'])}")


def _status(c: dict) -> str:
    if c["p_value"] is None or min_paired_p(c["n_seeds"]) > ALPHA:
        return "untestable"
    return "yes" if c["p_value"] <= ALPHA and c["diff"] > 0 else "no"


def verdict(res: dict) -> str:
    """E.g. "owl transmits to same-init students: +0.47 [+0.39, +0.55] vs control, 8/8 seeds, exact p = 0.0078
    (+0.50 vs other-trait); not to cross-model students (+0.00 ... vs cross-model-control); not to the base in
    context (...)"."""
    target = res["trait"]["label"]
    primary = next(iter(res["metrics"]))
    prob = {(c["a"], c["b"]): c for c in res["comparisons"] if c["metric"] == primary}
    parts = []
    for cond in ("same-init", "cross-model", "in-context"):
        # same-init: first against `control` (the study's comparison); the others against their matched control
        order = ("control", "other-trait") if cond == "same-init" else (f"{cond}-control", "control")
        found = [prob[(cond, b)] for b in order if (cond, b) in prob]
        if not found:
            continue
        c = found[0]
        status = _status(c)
        extra = "".join(f"; {x['diff']:+.2f} vs {x['b']}, {x['wins']}/{x['n_seeds']} seeds, exact p = "
                        f"{_num(x['p_value'])}" for x in found[1:2] if x["p_value"] is not None and cond == "same-init")
        if status == "untestable":
            said = _claim(c) if c["ci"] else f"{c['diff']:+.2f} vs {c['b']}"
            parts.append(f"{WHO[cond]}: {said} (with {c['n_seeds']} seed(s) an exact test cannot go below p = "
                         f"{_num(min_paired_p(c['n_seeds']))}: run 6 or more)")
        elif status == "yes":
            parts.append(f"{target} transmits to {WHO[cond]}: {_claim(c)}{extra}")
        else:
            parts.append(f"not to {WHO[cond]} ({_claim(c)}{extra})" if parts else
                         f"{target} does not transmit detectably to {WHO[cond]} ({_claim(c)}{extra})")
    return "; ".join(parts) + "." if parts else "no condition to compare was evaluated."
