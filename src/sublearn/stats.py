"""Statistics used in every report: confidence intervals, paired/unpaired tests, effect sizes.

Every reported rate gets a 95% CI; every comparison a difference with CI, a p-value and an effect size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval. One value gives a zero-width interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci of no values")
    m = float(x.mean())
    if x.size < 2:
        return m, m, m
    from scipy import stats as st

    se = float(x.std(ddof=1) / math.sqrt(x.size))
    h = float(st.t.ppf(0.5 + level / 2, x.size - 1)) * se
    return m, m - h, m + h


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """Proportion with Wilson score interval (good for rates near 0 or 1)."""
    if n <= 0:
        raise ValueError("wilson_ci with n = 0")
    from scipy import stats as st

    z = float(st.norm.ppf(0.5 + level / 2))
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return p, max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Comparison:
    """a vs b: diff = mean(a) - mean(b), its CI, a two-sided p-value and Cohen's d."""

    a: str
    b: str
    diff: float
    ci: tuple[float, float]
    p_value: float
    effect_size: float
    test: str
    n: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


def cohens_d(a: Sequence[float], b: Sequence[float], paired: bool = False) -> float:
    x, y = np.asarray(a, float), np.asarray(b, float)
    if paired:
        d = x - y
        sd = d.std(ddof=1) if d.size > 1 else 0.0
        return float(d.mean() / sd) if sd > 0 else (0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean()))
    sp = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / max(1, x.size + y.size - 2))
    diff = x.mean() - y.mean()
    return float(diff / sp) if sp > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))


def permutation_test(
    a: Sequence[float], b: Sequence[float], paired: bool = False, n_perm: int = 20000, seed: int = 0
) -> float:
    """Two-sided permutation p-value for mean(a) - mean(b).

    paired=True flips the sign of each pair's difference (a and b aligned by unit);
    otherwise labels are shuffled. When there are at most ``n_perm`` distinct rearrangements (few units,
    e.g. per-seed means) every one is enumerated and the p-value is exact; otherwise ``n_perm`` random
    ones are drawn, with the +1 correction that keeps p > 0.
    """
    x, y = np.asarray(a, float), np.asarray(b, float)
    if paired and x.shape != y.shape:
        raise ValueError("paired test needs equal-length inputs")
    exact = is_exact(x.size, y.size, paired, n_perm)
    if paired:
        d = x - y
        obs = abs(d.mean())
        if exact:
            signs = np.array(list(itertools.product((-1.0, 1.0), repeat=d.size))).reshape(-1, d.size)
        else:
            signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, d.size))
        stats = np.abs((signs * d).mean(axis=1))
    else:
        pooled = np.concatenate([x, y])
        obs = abs(x.mean() - y.mean())
        if exact:
            first = np.zeros((math.comb(pooled.size, x.size), pooled.size), dtype=bool)
            for r, idx in enumerate(itertools.combinations(range(pooled.size), x.size)):
                first[r, list(idx)] = True
            stats = np.abs((first * pooled).sum(1) / x.size - (~first * pooled).sum(1) / y.size)
        else:
            idx = np.argsort(np.random.default_rng(seed).random((n_perm, pooled.size)), axis=1)
            perm = pooled[idx]
            stats = np.abs(perm[:, : x.size].mean(axis=1) - perm[:, x.size :].mean(axis=1))
    hits = np.sum(stats >= obs - 1e-12)
    return float(hits / stats.size) if exact else float((1 + hits) / (n_perm + 1))


def is_exact(n_a: int, n_b: int, paired: bool, n_perm: int = 20000) -> bool:
    """Whether :func:`permutation_test` enumerates every rearrangement (exact p) for these sample sizes."""
    return (2**n_a if paired else math.comb(n_a + n_b, n_a)) <= n_perm


def min_paired_p(n: int) -> float:
    """The smallest two-sided p-value a sign-flip test over ``n`` pairs can give: 2 / 2**n (0.25 for 3 seeds)."""
    return min(1.0, 2 / 2**n)


def compare(
    name_a: str, a: Sequence[float], name_b: str, b: Sequence[float], paired: bool = False, seed: int = 0
) -> Comparison:
    """Difference of means with t-based 95% CI, permutation p-value and Cohen's d."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if paired:
        m, lo, hi = mean_ci(x - y)
    else:
        m = float(x.mean() - y.mean())
        se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size) if min(x.size, y.size) > 1 else 0.0
        from scipy import stats as st

        # Welch-Satterthwaite degrees of freedom
        num = (x.var(ddof=1) / x.size + y.var(ddof=1) / y.size) ** 2 if se > 0 else 0.0
        den = (
            (x.var(ddof=1) / x.size) ** 2 / max(1, x.size - 1) + (y.var(ddof=1) / y.size) ** 2 / max(1, y.size - 1)
            if se > 0
            else 1.0
        )
        dof = num / den if den > 0 else 1.0
        h = float(st.t.ppf(0.975, max(1.0, dof))) * se
        lo, hi = m - h, m + h
    p = permutation_test(x, y, paired=paired, seed=seed)
    return Comparison(
        a=name_a,
        b=name_b,
        diff=m,
        ci=(lo, hi),
        p_value=p,
        effect_size=cohens_d(x, y, paired=paired),
        test=("paired permutation" if paired else "permutation") + (" (exact)" if is_exact(x.size, y.size, paired) else ""),
        n=int(x.size),
    )


def seed_level(values: Sequence[float]) -> dict:
    """Mean of per-seed values with its t-interval over seeds (the unit of a claim)."""
    m, lo, hi = mean_ci(values)
    return {"mean": m, "ci": [lo, hi]}


def tv_test(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], n_perm: int = 20000,
            seed: int = 0) -> tuple[float, float]:
    """Total-variation distance between the mean distributions of ``a`` and ``b`` (per-seed distributions over the
    same options, paired by seed) and its permutation p-value: under no difference, swapping a seed's pair changes
    nothing, so every sign pattern of the per-seed differences is as likely (exact when there are <= n_perm)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError("tv_test needs two [seeds, options] arrays of the same shape")
    d = x - y
    obs = 0.5 * float(np.abs(d.mean(0)).sum())
    n = d.shape[0]
    if 2**n <= n_perm:
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=n))).reshape(-1, n)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, n))
    stats = 0.5 * np.abs(signs @ d / n).sum(-1)
    hits = int(np.sum(stats >= obs - 1e-12))
    return obs, (hits / stats.size if 2**n <= n_perm else (1 + hits) / (n_perm + 1))
