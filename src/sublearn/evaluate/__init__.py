"""Evaluate stage: how much a model prefers the target, per paraphrased question.

Two measures: the exact probability of the target among the category's options (each option scored as
full continuations after the assistant prefix, summed over its surface forms "owl", "Owl", "owl." ... since
real tokenizers split them differently, then renormalized over options: low variance), and the
sampled one-word answer rate (the study's measure). Optional context turns (in-context condition) and a
system prompt (system-prompt teacher) precede every question.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..backends.base import Sampling
from ..traits import preference as pref

__all__ = ["EvalTask", "evaluate_many", "evaluate_model"]


@dataclass
class EvalTask:
    """One model's evaluation: the model, the evaluate config section, the trait, and what precedes each question."""

    model: object
    ecfg: object
    category: str
    target: str
    seed: int
    context: list[dict] | None = None
    system_prompt: str | None = None
    desc: str = "evaluate"


def evaluate_model(model, ecfg, category: str, target: str, seed: int, context: list[dict] | None = None,
                   system_prompt: str | None = None, desc: str = "evaluate") -> list[dict]:
    return evaluate_many([EvalTask(model, ecfg, category, target, seed, context, system_prompt, desc)])[0]


def _requests(t: EvalTask):
    opts = pref.options(t.category)
    qs = pref.questions(t.category)[: t.ecfg.n_questions]
    head = ([{"role": "system", "content": t.system_prompt}] if t.system_prompt else []) + list(t.context or [])
    chats = [head + [{"role": "user", "content": t.ecfg.question_prefix + q}] for q in qs]
    forms = {o: list(dict.fromkeys(f.format(o=o, O=o.capitalize()) for f in t.ecfg.answer_forms)) for o in opts}
    flat = [(o, f) for o in opts for f in forms[o]]
    score = ([c for c in chats for _ in flat], [f for _ in chats for _, f in flat])
    sampling = Sampling(temperature=t.ecfg.temperature, max_new_tokens=t.ecfg.max_answer_tokens, batch_size=256,
                        seed=10_000 + t.seed)
    return qs, opts, flat, score, ([c for c in chats for _ in range(t.ecfg.samples_per_question)], sampling)


def _check_context(t: EvalTask, chats: list) -> None:
    """A question (with its prefix and in-context examples) that does not fit the model's context is the config's
    error, said in one line, not a crash inside the model."""
    from ..backends.hf import context_length
    from ..errors import UserError

    limit = context_length(t.model.model)
    if not limit:
        return
    distinct = {json.dumps(c): c for c in chats}.values()  # each question repeats once per answer scored
    longest = max(len(t.model.prompt_ids(c)) for c in distinct)
    need = longest + t.ecfg.max_answer_tokens + 8  # + the answer and its surface forms
    if need > limit:
        raise UserError(f"{t.desc}: a question takes {longest} tokens, and with its answer more than the model's "
                        f"{limit}-token context (evaluate.question_prefix, students.in_context_k, "
                        "evaluate.max_answer_tokens): shorten them")


def evaluate_many(tasks: list[EvalTask]) -> list[list[dict]]:
    """Evaluate several models; transformers models that share a base run in shared batches (each task's result is
    the same as when it runs alone)."""
    from ..backends.hf import HFModel, generate_many, score_many

    reqs = [_requests(t) for t in tasks]
    for t, r in zip(tasks, reqs):
        if isinstance(t.model, HFModel):
            _check_context(t, r[3][0])
    raw: list = [None] * len(tasks)
    answers: list = [None] * len(tasks)
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(tasks):
        groups.setdefault(id(t.model.model) if isinstance(t.model, HFModel) else -1 - i, []).append(i)
    for key, idx in groups.items():
        if key >= 0:
            for i, v in zip(idx, score_many([(tasks[i].model, *reqs[i][3]) for i in idx])):
                raw[i] = v
            for i, v in zip(idx, generate_many([(tasks[i].model, *reqs[i][4]) for i in idx],
                                               desc=tasks[idx[0]].desc if len(idx) == 1 else f"evaluate {len(idx)}")):
                answers[i] = v
        else:
            (i,) = idx
            raw[i] = tasks[i].model.score(*reqs[i][3])
            answers[i] = tasks[i].model.generate(*reqs[i][4], desc=tasks[i].desc)
    return [_results(t, r, s, a) for t, r, s, a in zip(tasks, reqs, raw, answers)]


def _results(t: EvalTask, req, raw: list[float], answers) -> list[dict]:
    qs, opts, flat, _, _ = req
    n = t.ecfg.samples_per_question
    out = []
    for qi, q in enumerate(qs):
        by_opt: dict[str, list[float]] = {o: [] for o in opts}
        for (o, _), x in zip(flat, raw[qi * len(flat) : (qi + 1) * len(flat)]):
            by_opt[o].append(x)
        s = [_logsumexp(by_opt[o]) for o in opts]
        mx = max(s)
        if not math.isfinite(mx):
            raise ValueError(f"{t.desc}: the model cannot spell any answer form of any option {t.ecfg.answer_forms}")
        z = [math.exp(x - mx) for x in s]
        probs = {o: v / sum(z) for o, v in zip(opts, z)}
        samp = [pref.normalize_answer(a.text, opts) for a in answers[qi * n : (qi + 1) * n]]
        out.append({
            "question": q, "p_target": probs[t.target], "probs": probs,
            "raw_mass": math.exp(mx) * sum(z),  # total probability of all options (how on-format answers are)
            "rank": 1 + sorted(opts, key=lambda o: -probs[o]).index(t.target),
            "rate": sum(a == t.target for a in samp) / len(samp), "answers": samp,
        })
    return out


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    if not math.isfinite(m):
        return m
    return m + math.log(sum(math.exp(x - m) for x in xs))
