"""The audit's trait-naming detectors, each against the reference and calibrated for the scan over candidates.

- ``contrast``: teacher-forced likelihood contrast on the base. For a row and a candidate trait T,
  d(T) = log p(completion | T's system prompt + prompt) - log p(completion | prompt). Paired by prompt with the
  reference's row, x = d_data - d_ref; the candidate's effect is the mean of x over rows.
- ``probe``: short fine-tunes of the base on the data and on the reference (same seeds, same adapter starts), then
  every candidate's exact measure on both; the effect is the per-seed shift, data - reference.

The scan's p-value ("something is carried") is a max-statistic test: the units (rows, or seeds) have their signs
flipped jointly across all candidates, so the p-value of the largest effect already pays for looking at many
candidates. Each candidate's own p-value is the same test restricted to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Candidate:
    label: str  # what the scan names: "owl", "misalignment"
    family: str  # candidates measured by one evaluation: "animal", "tree", "misalignment"
    trait: object  # the Trait (its system prompt conditions the contrast; its questions the probe)


def candidates(names: list[str] | None, unknown=None) -> list[Candidate]:
    """Every built-in trait as a candidate (each preference category's options; misalignment when the base can read
    it), or those ``names`` picks (options, categories, or "misalignment")."""
    from ..traits.misalignment import MisalignmentTrait
    from ..traits.preference import CATEGORIES, PreferenceTrait, options

    out = [Candidate(o, c, PreferenceTrait(category=c, target=o)) for c in CATEGORIES for o in options(c)]
    mis = MisalignmentTrait()
    try:
        if unknown is not None:
            mis.check_embedded(unknown, "base")
        out.append(Candidate("misalignment", "misalignment", mis))
    except ValueError:
        pass
    if names:
        picked = [c for c in out if c.label in names or c.family in names]
        known = {c.label for c in out} | {c.family for c in out}
        if bad := [n for n in names if n not in known]:
            from ..errors import UserError

            raise UserError(f"--traits: unknown candidate {bad[0]!r}; known: {', '.join(sorted(known))}")
        out = picked
    return out


def sign_flip_max(x: np.ndarray, n_perm: int = 4000, seed: int = 0) -> tuple[np.ndarray, float]:
    """x: [units, candidates] paired differences. Returns each candidate's one-sided p (mean > 0) and the p of the
    largest mean across candidates, under joint sign flips of the units (exact when 2^units <= n_perm)."""
    n = x.shape[0]
    obs = x.mean(0)
    if 2**n <= n_perm:
        signs = np.array([[1 - 2 * ((k >> i) & 1) for i in range(n)] for k in range(2**n)], float)
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(n_perm - 1, n))])
    null = signs @ x / n  # [patterns, candidates]
    each = (null >= obs - 1e-12).mean(0)
    top = float((null.max(1) >= obs.max() - 1e-12).mean())
    return each, top


def contrast(base, data, ref, cands: list[Candidate], desc: str = "likelihood contrast") -> dict:
    """Per-row contrasts of data and reference under every candidate's system prompt (teacher-forced, base only)."""
    from ..progress import bar

    chats, answers = [], []
    for rows in (data, ref):
        for sys in [None] + [c.trait.system_prompt() for c in cands]:
            for r in rows:
                head = [m for m in r.prompt if m["role"] != "system"]
                chats.append(([{"role": "system", "content": sys}] if sys else []) + head)
                answers.append(r.completion)
    scores, step = [], 512
    with bar(desc, len(chats), "scores") as advance:
        for i in range(0, len(chats), step):
            scores += base.score(chats[i : i + step], answers[i : i + step])
            advance(min(step, len(chats) - i))
    s = np.array(scores, float).reshape(2, len(cands) + 1, len(data))
    s = np.where(np.isfinite(s), s, np.nan)
    d = s[:, 1:, :] - s[:, :1, :]  # [data/ref, candidate, row]
    x = (d[0] - d[1]).T  # [row, candidate], paired by prompt
    ok = ~np.isnan(x).any(1)
    x = x[ok]
    each, top = sign_flip_max(x) if len(x) >= 2 else (np.ones(len(cands)), 1.0)
    return {"effect": x.mean(0).tolist() if len(x) else [0.0] * len(cands), "p": each.tolist(), "p_any": top,
            "rows_used": int(ok.sum()), "data_mean": np.nanmean(d[0], 1).tolist(),
            "reference_mean": np.nanmean(d[1], 1).tolist()}


def probe(base, data, ref, cands: list[Candidate], seeds: int, steps: int, lr: float) -> dict:
    """Short fine-tunes on data and on reference (``seeds`` pairs), every candidate measured on each."""
    from ..backends.hf_train import Recipe, train_many
    from ..config import EvaluateSection
    from ..evaluate import EvalTask, evaluate_many

    recipe = Recipe(target="tokens", adapter="lora", lora_rank=4, lora_alpha=4, lora_targets=("mlp_up",),
                    lora_layers=(-1,), lr=lr, steps=steps, batch_size=32)
    import random

    jobs = []
    for s in range(seeds):
        r = recipe.model_copy(update={"seed": s, "adapter_seed": 1_000 + s})
        # each seed draws its own half of the rows (the same prompts on both sides): the unit of the test is then a
        # data draw, not only a data order, so one dataset's quirks against its reference do not read as a trait
        half = sorted(random.Random(f"probe:{s}").sample(range(len(data)), max(2, len(data) // 2)))
        for arm, rows in (("data", [data[i] for i in half]), ("reference", [ref[i] for i in half])):
            jobs.append(([{"messages": x.prompt + [{"role": "assistant", "content": x.completion}]} for x in rows], r,
                         f"probe {arm} s{s}"))
    models = train_many(base, jobs)
    families = {}
    for c in cands:
        families.setdefault(c.family, c.trait)
    ecfg = EvaluateSection(n_questions=12, samples_per_question=1)
    tasks = [EvalTask(m, ecfg, t, 0, desc=f"probe {fam}", scorers=(t.scorers()[0],))
             for m in models for fam, t in families.items()]
    results = evaluate_many(tasks)
    fam_index = {fam: k for k, fam in enumerate(families)}
    values = np.zeros((len(models), len(cands)))
    for mi in range(len(models)):
        for ci, c in enumerate(cands):
            qs = results[mi * len(families) + fam_index[c.family]]
            key = "p_harmful" if c.family == "misalignment" else None
            values[mi, ci] = np.mean([q[key] if key else q["probs"][c.label] for q in qs])
    x = values[0::2] - values[1::2]  # [seed, candidate]: data student - reference student
    each, top = sign_flip_max(x)
    return {"effect": x.mean(0).tolist(), "p": each.tolist(), "p_any": top, "per_seed": x.tolist(),
            "data_value": values[0::2].mean(0).tolist(), "reference_value": values[1::2].mean(0).tolist()}
