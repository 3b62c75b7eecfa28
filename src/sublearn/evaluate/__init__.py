"""Evaluate stage: how strongly a model shows the trait, per evaluation question.

The trait gives the questions and names its scorers (``evaluate/scorers.py``); each scorer says what it needs from
the model (exact scores of answers, sampled answers) and turns the numbers into per-question values. For the
preference trait: the exact probability of the target among the options, and the sampled one-word rate (the study's
measure). Optional context turns (in-context condition) and a system prompt (system-prompt teacher) precede every
question.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..plugins import SCORERS

__all__ = ["EvalTask", "evaluate_many", "evaluate_model"]


@dataclass
class EvalTask:
    """One model's evaluation: the model, the evaluate config section, the trait, and what precedes each question."""

    model: object
    ecfg: object
    trait: object
    seed: int
    context: list[dict] | None = None
    system_prompt: str | None = None
    desc: str = "evaluate"
    scorers: tuple[str, ...] | None = None  # None: the trait's own

    def chats(self) -> list[list[dict]]:
        head = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + list(self.context or [])
        qs = self.trait.eval_questions()[: self.ecfg.n_questions]
        return [head + [{"role": "user", "content": self.ecfg.question_prefix + q}] for q in qs]


def evaluate_model(model, ecfg, trait, seed: int, context: list[dict] | None = None, system_prompt: str | None = None,
                   desc: str = "evaluate") -> list[dict]:
    return evaluate_many([EvalTask(model, ecfg, trait, seed, context, system_prompt, desc)])[0]


def _check_context(t: EvalTask, chats: list) -> None:
    """A question (with its prefix and in-context examples) that does not fit the model's context is the config's
    error, said in one line, not a crash inside the model."""
    from ..backends.hf import context_length

    limit = context_length(t.model.model)
    if not limit:
        return
    distinct = {json.dumps(c): c for c in chats}.values()
    longest = max(len(t.model.prompt_ids(c)) for c in distinct)
    _fits(t.desc, longest, limit, t.ecfg)


def _fits(desc: str, longest: int, limit: int, ecfg) -> None:
    from ..errors import UserError

    if longest + ecfg.max_answer_tokens + 8 > limit:  # + the answer and its surface forms
        raise UserError(f"{desc}: a question takes {longest} tokens, and with its answer more than the model's "
                        f"{limit}-token context (evaluate.question_prefix, students.in_context_k, "
                        "evaluate.max_answer_tokens): shorten them")


def check_fits(model_dir, cfg, name: str = "") -> None:
    """Before any work is done: the longest evaluation question (after ``evaluate.question_prefix``, with a
    system-prompt teacher's prompt) and its answer fit the context of the checkpoint in ``model_dir``, by its
    tokenizer and config alone; else a one-line error. In-context examples are checked when they exist."""
    from pathlib import Path

    conf = Path(model_dir) / "config.json"
    if not conf.is_file():
        return
    c = json.loads(conf.read_text())
    limit = c.get("max_position_embeddings") or c.get("n_positions")
    if not limit:
        return
    from transformers import AutoTokenizer

    from ..backends.hf import _ids, quiet_transformers

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    head = [{"role": "system", "content": cfg.teacher.system_prompt or cfg.trait.system_prompt()}] \
        if cfg.teacher.mode == "system_prompt" else []
    longest = max(len(_ids(tok.apply_chat_template(head + [{"role": "user", "content": cfg.evaluate.question_prefix
                                                                                         + q}],
                                                     add_generation_prompt=True, tokenize=True)))
                  for q in cfg.trait.eval_questions()[: cfg.evaluate.n_questions])
    _fits(f"evaluating on {name or Path(model_dir).name}", longest, limit, cfg.evaluate)


def evaluate_many(tasks: list[EvalTask]) -> list[list[dict]]:
    """Evaluate several models; transformers models that share a base run in shared batches (each task's result is
    the same as when it runs alone). Scorers run in order, each over every task."""
    from ..backends.hf import HFModel, generate_many, score_many

    chats = [t.chats() for t in tasks]
    for t, c in zip(tasks, chats):
        if isinstance(t.model, HFModel):
            _check_context(t, c)
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(tasks):
        groups.setdefault(id(t.model.model) if isinstance(t.model, HFModel) else -1 - i, []).append(i)
    merged: list[list[dict]] = [[{"question": q} for q in t.trait.eval_questions()[: t.ecfg.n_questions]]
                                for t in tasks]
    names = [t.scorers or t.trait.scorers() for t in tasks]
    for k in range(max(len(n) for n in names)):
        todo = [i for i in range(len(tasks)) if k < len(names[i])]
        scorers = {i: SCORERS.get(names[i][k])() for i in todo}
        needs = {i: scorers[i].needs(tasks[i].trait, chats[i], tasks[i].ecfg, tasks[i].seed) for i in todo}
        scores, answers = _run(tasks, groups, todo, needs, score_many, generate_many)
        for i in todo:
            for row, extra in zip(merged[i], scorers[i].results(tasks[i].trait, needs[i], scores[i], answers[i],
                                                                 tasks[i].desc)):
                row.update(extra)
    return merged


def _run(tasks, groups, todo, needs, score_many, generate_many):
    """Every task's exact scores and sampled answers (shared batches per base)."""
    scores: dict[int, list] = {i: [] for i in todo}
    answers: dict[int, list] = {i: [] for i in todo}
    for key, idx in groups.items():
        idx = [i for i in idx if i in todo]
        if not idx:
            continue
        if key >= 0:
            sc = [i for i in idx if needs[i].score[0]]
            if sc:
                for i, v in zip(sc, score_many([(tasks[i].model, *needs[i].score) for i in sc])):
                    scores[i] = v
            sa = [i for i in idx if needs[i].sample]
            if sa:
                desc = tasks[sa[0]].desc if len(sa) == 1 else f"evaluate {len(sa)}"
                for i, v in zip(sa, generate_many([(tasks[i].model, needs[i].sample, needs[i].sampling) for i in sa],
                                                  desc=desc)):
                    answers[i] = v
        else:
            (i,) = idx
            if needs[i].score[0]:
                scores[i] = tasks[i].model.score(*needs[i].score)
            if needs[i].sample:
                answers[i] = tasks[i].model.generate(needs[i].sample, needs[i].sampling, desc=tasks[i].desc)
    return scores, answers
