"""Evaluate stage: how much a model prefers the target, per paraphrased question.

Two measures: the exact probability of the target among the category's options (each option scored as
full continuations after the assistant prefix, summed over its surface forms "owl", "Owl", "owl." ... since
real tokenizers split them differently, then renormalized over options: low variance), and the
sampled one-word answer rate (the study's measure). Optional context turns (in-context condition) and a
system prompt (system-prompt teacher) precede every question.
"""

from __future__ import annotations

import math

from ..backends.base import Sampling
from ..traits import preference as pref

__all__ = ["evaluate_model"]


def evaluate_model(model, ecfg, category: str, target: str, seed: int, context: list[dict] | None = None,
                   system_prompt: str | None = None, desc: str = "evaluate") -> list[dict]:
    opts = pref.options(category)
    qs = pref.questions(category)[: ecfg.n_questions]
    head = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(context or [])
    chats = [head + [{"role": "user", "content": ecfg.question_prefix + q}] for q in qs]
    forms = {o: list(dict.fromkeys(f.format(o=o, O=o.capitalize()) for f in ecfg.answer_forms)) for o in opts}
    flat = [(o, f) for o in opts for f in forms[o]]
    raw = model.score([c for c in chats for _ in flat], [f for _ in chats for _, f in flat])
    scores = []
    for qi in range(len(chats)):
        by_opt: dict[str, list[float]] = {o: [] for o in opts}
        for (o, _), x in zip(flat, raw[qi * len(flat) : (qi + 1) * len(flat)]):
            by_opt[o].append(x)
        scores += [_logsumexp(by_opt[o]) for o in opts]
    sampling = Sampling(temperature=ecfg.temperature, max_new_tokens=ecfg.max_answer_tokens, batch_size=256, seed=10_000 + seed)
    prompts = [c for c in chats for _ in range(ecfg.samples_per_question)]
    answers = model.generate(prompts, sampling, desc=desc)
    out = []
    for qi, q in enumerate(qs):
        s = scores[qi * len(opts) : (qi + 1) * len(opts)]
        mx = max(s)
        if not math.isfinite(mx):
            raise ValueError(f"{desc}: the model cannot spell any answer form of any option {ecfg.answer_forms}")
        z = [math.exp(x - mx) for x in s]
        probs = {o: v / sum(z) for o, v in zip(opts, z)}
        samp = [pref.normalize_answer(a.text, opts)
                for a in answers[qi * ecfg.samples_per_question : (qi + 1) * ecfg.samples_per_question]]
        out.append({
            "question": q, "p_target": probs[target], "probs": probs,
            "raw_mass": math.exp(mx) * sum(z),  # total probability of all options (how on-format answers are)
            "rank": 1 + sorted(opts, key=lambda o: -probs[o]).index(target),
            "rate": sum(a == target for a in samp) / len(samp), "answers": samp,
        })
    return out


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    if not math.isfinite(m):
        return m
    return m + math.log(sum(math.exp(x - m) for x in xs))
