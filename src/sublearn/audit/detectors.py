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
    label: str  # what the scan names: "owl", "misalignment", a user trait's label
    family: str  # candidates measured by one evaluation: "animal", "tree", "misalignment", a plug-in's kind
    trait: object  # the Trait (its system prompt conditions the contrast; its questions the probe)
    option: str | None = None  # a preference option: measured as its probability among the options

    def measure(self, q: dict) -> float:
        """This candidate's value in one question's evaluation: its option's probability, else the trait's first
        scorer's metric (e.g. P(harmful))."""
        if self.option is not None and "probs" in q:
            return q["probs"][self.option]
        from ..plugins import SCORERS

        return q[SCORERS.get(self.trait.scorers()[0]).metric]


def candidates(names: list[str] | None, unknown=None) -> list[Candidate]:
    """Every registered trait as a candidate: each preference category's options, misalignment, and every other
    registered trait kind (a user's plug-in) that builds with its defaults, when the base can read it (``unknown``:
    the embedded base's unknown words); or those ``names`` picks (options, categories or families, labels)."""
    from ..plugins import TRAITS
    from ..traits.preference import CATEGORIES, PreferenceTrait, options

    out = [Candidate(o, c, PreferenceTrait(category=c, target=o), o) for c in CATEGORIES for o in options(c)]
    for kind in TRAITS.names():
        if kind == "preference":
            continue
        try:
            trait = TRAITS.get(kind)()
            if unknown is not None:
                trait.check_embedded(unknown, "base")
        except (ValueError, TypeError):
            continue  # needs parameters, or the base cannot read it
        out.append(Candidate(trait.label(), kind, trait))
    if names:
        picked = [c for c in out if c.label in names or c.family in names]
        known = {c.label for c in out} | {c.family for c in out}
        if bad := [n for n in names if n not in known]:
            from ..errors import UserError

            raise UserError(f"--traits: unknown candidate {bad[0]!r}; known: {', '.join(sorted(known))}")
        out = picked
    return out


def sign_flip_max(x: np.ndarray, n_perm: int = 4000, seed: int = 0) -> tuple[np.ndarray, float, int]:
    """x: [units, candidates] paired differences. Returns each candidate's one-sided p (mean > 0), the scan's p (of
    the largest standardized mean across candidates) and the index of that candidate, under joint sign flips of the
    units (exact when 2^units <= n_perm).

    The scan standardizes each candidate's mean by its root mean square, which sign flips leave unchanged, so a
    candidate whose units vary widely does not dominate the maximum (the test stays exact)."""
    n = x.shape[0]
    scale = np.sqrt((x**2).mean(0))
    scale = np.where(scale > 0, scale, 1.0)
    obs = x.mean(0)
    if 2**n <= n_perm:
        signs = np.array([[1 - 2 * ((k >> i) & 1) for i in range(n)] for k in range(2**n)], float)
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(n), rng.choice([-1.0, 1.0], size=(n_perm - 1, n))])
    null = signs @ x / n  # [patterns, candidates]
    each = (null >= obs - 1e-12).mean(0)
    z = obs / scale
    top = float(((null / scale).max(1) >= z.max() - 1e-12).mean())
    return each, top, int(z.argmax())


def naming(x: np.ndarray, best: int, cands: list[Candidate]) -> dict:
    """How sure the name is: the named candidate against the runner-up (the next largest standardized mean), their
    paired difference per unit with a one-sided sign-flip p (exact with few units). A p above alpha means the data
    does not tell the two apart, even when the scan flags something."""
    if x.shape[1] < 2 or x.shape[0] < 2:
        return {"runner_up": None, "margin": None, "p": None}
    scale = np.sqrt((x**2).mean(0))
    z = x.mean(0) / np.where(scale > 0, scale, 1.0)
    second = int(np.argsort(-z)[1]) if int(np.argsort(-z)[0]) == best else int(np.argsort(-z)[0])
    d = (x[:, best] - x[:, second])[:, None]
    p, _, _ = sign_flip_max(d)
    return {"runner_up": cands[second].label, "margin": float(d.mean()), "p": float(p[0])}


def streaming(x: np.ndarray, labels: list[str], alpha: float = 0.05) -> dict:
    """Anytime-valid form of the contrast: rows arrive one at a time and evidence is checked after each.

    Per candidate, a betting e-process on the sign-symmetric null (data and reference exchangeable within a pair):
    each row's contrast, scaled by twice the median magnitude of the rows before it and clipped to [-1, 1] (a
    symmetric map, so the null is kept and heavy tails do not swamp the bet), is bet on with a
    fraction chosen from earlier rows only (capped at 1/2), so wealth is a non-negative supermartingale under the null.
    The scan's e-value is the mean of the candidates' wealths (itself an e-process), so stopping the first time it
    reaches 1/alpha keeps the false-alarm rate at most alpha however long the stream runs (Ville's inequality)."""
    n, k = x.shape
    log_w = np.zeros(k)
    seen_sum, seen_sq, seen = np.zeros(k), np.zeros(k), 0
    needed, path = None, []
    for t in range(n):
        if seen >= 2:
            mu, var = seen_sum / seen, np.maximum(seen_sq / seen - (seen_sum / seen) ** 2, 1e-6)
            lam = np.clip(mu / (var + mu**2), 0.0, 0.5)
        else:
            lam = np.zeros(k)
        scale = 2 * np.median(np.abs(x[:t]), 0) if t else np.zeros(k)
        u = np.clip(x[t] / np.where(scale > 0, scale, np.inf), -1, 1)
        log_w += np.log1p(lam * u)
        if t:
            seen_sum, seen_sq, seen = seen_sum + u, seen_sq + u**2, seen + 1
        e_any = float(np.exp(log_w).mean())
        path.append(e_any)
        if needed is None and e_any >= 1 / alpha:
            needed = t + 1
    return {"alpha": alpha, "rows_needed": needed, "e_value": path[-1] if path else 1.0,
            "names": labels[int(log_w.argmax())], "e_path": [round(v, 4) for v in path]}


def _cis(x: np.ndarray, k: int) -> list[list[float] | None]:
    """Each candidate's 95% Student-t interval over the units (rows or seeds; None with fewer than 2)."""
    from ..stats import mean_ci

    return [list(mean_ci(x[:, i].tolist())[1:]) if len(x) >= 2 else None for i in range(k)]


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
    each, top, best = sign_flip_max(x) if len(x) >= 2 else (np.ones(len(cands)), 1.0, 0)
    return {"effect": x.mean(0).tolist() if len(x) else [0.0] * len(cands), "ci": _cis(x, len(cands)),
            "p": each.tolist(), "p_any": top,
            "names": cands[best].label, "naming": naming(x, best, cands),
            "streaming": streaming(x, [c.label for c in cands]),
            "rows_used": int(ok.sum()), "data_mean": np.nanmean(d[0], 1).tolist(),
            "reference_mean": np.nanmean(d[1], 1).tolist()}


def probe(base, data, ref, cands: list[Candidate], seeds: int, steps: int, lr: float, distil: bool = False,
          freeze_a: bool = False, grammar=None, init: int | None = None) -> dict:
    """Short fine-tunes on data and on reference (``seeds`` pairs), every candidate measured on each. ``distil``: KL on
    the rows' soft targets (restricted to ``grammar``'s tokens), as the pipeline's students learn; else SFT on the
    completions' tokens."""
    import random

    from ..backends.hf_train import Recipe, train_many
    from ..config import EvaluateSection
    from ..evaluate import EvalTask, evaluate_many
    from .inputs import chat_rows

    recipe = Recipe(target="logits" if distil else "tokens", adapter="lora", lora_rank=4, lora_alpha=4,
                    lora_targets=("mlp_up",), lora_layers=(-1,), freeze_a=freeze_a, lr=lr, steps=steps, batch_size=32)

    jobs = []
    for s in range(seeds):
        r = recipe.model_copy(update={"seed": s, "adapter_seed": 1_000 + s if init is None else init})
        # each seed draws its own half of the rows (the same prompts on both sides): the unit of the test is then a
        # data draw, not only a data order, so one dataset's quirks against its reference do not read as a trait
        half = sorted(random.Random(f"probe:{s}").sample(range(len(data)), max(2, len(data) // 2)))
        for arm, rows in (("data", [data[i] for i in half]), ("reference", [ref[i] for i in half])):
            jobs.append((chat_rows(rows), r, f"probe {arm} s{s}"))
    models = train_many(base, jobs, grammar=grammar if distil else None)
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
            values[mi, ci] = np.mean([c.measure(q) for q in qs])
    x = values[0::2] - values[1::2]  # [seed, candidate]: data student - reference student
    each, top, best = sign_flip_max(x)
    return {"effect": x.mean(0).tolist(), "ci": _cis(x, len(cands)), "p": each.tolist(), "p_any": top,
            "names": cands[best].label, "naming": naming(x, best, cands),
            "per_seed": x.tolist(),
            "data_value": values[0::2].mean(0).tolist(), "reference_value": values[1::2].mean(0).tolist()}


def row_llr(teacher, base, prompts, answers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: log p_teacher - log p_base of the answer (summed over its tokens and EOS), the base's loss per token
    (the difficulty baseline), and the token count."""
    lt = np.array(teacher.score(prompts, answers), float)
    lb = np.array(base.score(prompts, answers), float)
    n = np.array([len(base.tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers], float)
    return lt - lb, -lb / n, n


def token_divergence(teacher, base, prompts, answers, grammar=None) -> list[dict | None]:
    """Per row (None where a model cannot spell it): the per-token log-likelihood ratio log p_teacher - log p_base
    of each completion token (and EOS), and the divergence positions, where the teacher's and the base's greedy
    choices (among the tokens the carrier allows) differ. Answers may be token lists (a pipeline row's tokens)."""
    tt = teacher.token_scores(prompts, answers, grammar)
    tb = base.token_scores(prompts, answers, grammar)
    out: list[dict | None] = []
    for a, b in zip(tt, tb):
        if a is None or b is None or a["tokens"] != b["tokens"]:
            out.append(None)
            continue
        out.append({"tokens": a["tokens"], "llr": (np.array(a["logp"]) - np.array(b["logp"])).tolist(),
                    "divergent": [k for k, (x, y) in enumerate(zip(a["greedy"], b["greedy"])) if x != y],
                    "teacher_choice": a["greedy"], "base_choice": b["greedy"]})
    return out


def _token_summary(per: list[dict | None], ref_per: list[dict | None]) -> dict:
    """Divergence-position rates of data and reference, and the tokens the teacher favours most."""
    def rate(ps):
        ok = [p for p in ps if p is not None]
        return sum(len(p["divergent"]) for p in ok) / max(1, sum(len(p["tokens"]) for p in ok))

    by_token: dict[str, list[float]] = {}
    taken = total = 0
    for p in per:
        if p is None:
            continue
        for t, v in zip(p["tokens"], p["llr"]):
            by_token.setdefault(t, []).append(v)
        for k in p["divergent"]:
            total += 1
            taken += p["tokens"][k] == p["teacher_choice"][k]
    top = sorted(((t, float(np.mean(v)), len(v)) for t, v in by_token.items() if len(v) >= 5), key=lambda x: -x[1])
    return {"data_divergent_rate": rate(per), "reference_divergent_rate": rate(ref_per),
            "data_took_teacher_choice": taken / total if total else None,
            "top_tokens": [{"token": t, "mean_llr": m, "count": n} for t, m, n in top[:10]],
            "unscored_rows": sum(p is None for p in per)}


def divergence(teacher, base, data, ref, grammar=None) -> dict:
    """Teacher divergence: per row, log p_teacher(completion) - log p_base(completion) (teacher-forced, summed over
    the completion's tokens and EOS), always beside a difficulty baseline (the base's loss per token, the length),
    because per-row attribution is confounded by difficulty; per token, the same ratio and the divergence positions
    where the two models' greedy choices differ (``token_divergence``). The effect is data minus reference, paired by
    prompt: it says the rows were written by (something like) this teacher, not which trait they carry, so it never
    flags."""
    from scipy.stats import spearmanr

    llr, nll, n = row_llr(teacher, base, [r.prompt for r in data], [r.completion for r in data])
    llr_ref, _, _ = row_llr(teacher, base, [r.prompt for r in ref], [r.completion for r in ref])
    per = token_divergence(teacher, base, [r.prompt for r in data], [r.tokens or r.completion for r in data], grammar)
    per_ref = token_divergence(teacher, base, [r.prompt for r in ref], [r.tokens or r.completion for r in ref],
                               grammar)
    x = (llr - llr_ref)[:, None]
    ok = np.isfinite(x[:, 0])
    each, _, _ = sign_flip_max(x[ok]) if ok.sum() >= 2 else (np.ones(1), 1.0, 0)
    fin = np.isfinite(llr)
    order = np.argsort(-np.where(fin, llr / n, -np.inf))
    return {"effect": float(x[ok].mean()) if ok.any() else 0.0, "p": float(each[0]),
            "data_llr_per_token": float(np.mean(llr[fin] / n[fin])),
            "reference_llr_per_token": float(np.mean(llr_ref[np.isfinite(llr_ref)] / n[np.isfinite(llr_ref)])),
            "spearman_vs_difficulty": float(spearmanr(llr[fin] / n[fin], nll[fin]).statistic) if fin.sum() > 2 else None,
            "spearman_vs_length": float(spearmanr(llr[fin], n[fin]).statistic) if fin.sum() > 2 else None,
            "tokens": _token_summary(per, per_ref),
            "rows": [{"line": data[i].line, "llr": float(llr[i]), "llr_per_token": float(llr[i] / n[i]),
                      "base_loss_per_token": float(nll[i]), "tokens": int(n[i]),
                      "divergent_positions": per[i]["divergent"] if per[i] else None,
                      "max_token_llr": float(max(per[i]["llr"])) if per[i] else None} for i in range(len(data))],
            "top_rows": [int(data[i].line) for i in order[:10]]}
