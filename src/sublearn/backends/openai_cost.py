"""Cost estimates for the API backend, and the confirmation asked before anything is billed.

Token counts are estimated without the provider's tokenizer (about 3 characters per token plus 4 per
message, which over-counts number sequences a little): the estimate is meant to be on the high side.
Completion lengths use ``max_new_tokens`` (an upper bound); 'auto' epochs are assumed to be 3.
"""

from __future__ import annotations

import math
import sys

from ..errors import UserError

AUTO_EPOCHS = 3


def approx_tokens(messages: list[dict] | str) -> int:
    if isinstance(messages, str):
        return math.ceil(len(messages) / 3)
    return sum(4 + math.ceil(len(m.get("content") or "") / 3) for m in messages)


def training_cost(s, model: str, tokens: int, n_epochs) -> tuple[float | None, float]:
    """(USD or None when the price is unknown and the server is not local, epochs assumed)."""
    epochs = AUTO_EPOCHS if n_epochs == "auto" else float(n_epochs)
    p = s.price(model)
    if p is None:
        return (0.0 if s.is_local() else None), epochs
    return tokens * epochs * p.training / 1e6, epochs


def _infer(s, model: str, tin: int, tout: int) -> float | None:
    p = s.price(model)
    if p is None:
        return 0.0 if s.is_local() else None
    return (tin * p.input + tout * p.output) / 1e6


def estimate_run(cfg) -> list[tuple[str, int, float | None]]:
    """(what, tokens, USD or None) for every billable part of the experiment, before anything runs."""
    from ..conditions import students as _students
    from ..finetune import trait_rows
    from .openai_ft import hyperparameters

    s, conds, n_seeds = cfg.api, cfg.students.conditions, len(cfg.seeds)
    base, ft = cfg.model.base, f"ft:{cfg.model.base}"
    out: list[tuple[str, int, float | None]] = []
    n_targets = 1 + ("other-trait" in conds)
    if cfg.teacher.mode == "finetune":
        rows = trait_rows(cfg.trait, cfg.carrier, cfg.teacher.trait_rows, cfg.teacher.carrier_fraction, 0)
        tok = sum(approx_tokens(r["messages"]) for r in rows)
        hp = hyperparameters(s, cfg.teacher.recipe, len(rows))
        usd, ep = training_cost(s, base, tok, hp["n_epochs"])
        k = n_seeds * n_targets
        out.append((f"teacher fine-tuning: {k} jobs × ~{tok} tokens × {ep:g} epochs", k * tok * int(ep),
                    None if usd is None else usd * k))
    prompts = cfg.carrier.prompts(min(cfg.generate.n_prompts, 500), 0)
    per_prompt = sum(approx_tokens([{"role": "user", "content": p}]) for p in prompts) / len(prompts)
    arms = n_targets + any(c in conds for c in ("control", "cross-model-control", "in-context-control"))
    n_gen = arms * n_seeds * cfg.generate.n_prompts
    tin, tout = int(n_gen * per_prompt), n_gen * cfg.generate.sampling.max_new_tokens
    out.append((f"generation: {n_gen} completions (≤ {cfg.generate.sampling.max_new_tokens} tokens each)", tin + tout,
                _infer(s, ft if cfg.teacher.mode == "finetune" else base, tin, tout)))
    n_rows = min(cfg.generate.n_prompts, cfg.filter.n_keep or cfg.generate.n_prompts)
    row_tok = per_prompt + cfg.generate.sampling.max_new_tokens + 4
    STUDENTS = _students()
    students = [c for c in conds if c in STUDENTS]
    if students:
        hp = hyperparameters(s, cfg.students.recipe, n_rows)
        k = len(students) * n_seeds
        tok = int(n_rows * row_tok)
        usd = [training_cost(s, cfg.model.cross if STUDENTS[c].start == "cross" else base, tok, hp["n_epochs"])
               for c in students]
        ep = usd[0][1]
        total = None if any(u is None for u, _ in usd) else sum(u for u, _ in usd) * n_seeds
        out.append((f"student fine-tuning: {k} jobs × ≤ {tok} tokens × {ep:g} epochs", int(k * tok * ep), total))
    qs = cfg.trait.eval_questions()[: cfg.evaluate.n_questions]
    q = len(qs)
    n_models = (2 + len(conds)) * n_seeds
    q_tok = sum(approx_tokens([{"role": "user", "content": x}]) for x in qs) / q
    n_scored = len(cfg.trait.option_list()) if hasattr(cfg.trait, "option_list") else 0  # exact scores per question
    tin = int(n_models * q * (q_tok * (1 + n_scored)))
    tout = n_models * q * (cfg.evaluate.samples_per_question * 6 + 1)
    out.append((f"evaluation: {n_models} models × {q} questions × {cfg.evaluate.samples_per_question} samples",
                tin + tout, _infer(s, ft, tin, tout)))
    return out


def confirm_run_cost(cfg, yes: bool) -> bool:
    """Print the estimate; ask before anything is billed (``yes`` skips). Returns the approval, which reaches every
    job through the runtime settings (``runtime.Settings.approved``); the fine-tuning runner checks it before it
    creates a job."""
    from loguru import logger

    parts = estimate_run(cfg)
    known = [u for _, _, u in parts if u is not None]
    total = sum(known)
    unknown = any(u is None for _, _, u in parts)
    for what, tok, usd in parts:
        logger.info(f"estimated cost: {what}: ~{tok:,} tokens, " + ("price unknown" if usd is None else f"${usd:.2f}"))
    logger.info(f"estimated total: ${total:.2f}" + (" + parts with unknown prices (add them to api.prices)"
                                                     if unknown else "") + f" at {cfg.api.base_url}")
    if (total == 0 and not unknown) or yes:
        return True
    if not sys.stdin.isatty():
        raise UserError("this run would be billed by the API (estimate above); pass --yes to proceed")
    if input("Proceed and pay for this? [y/N] ").strip().lower() not in ("y", "yes"):
        raise UserError("cancelled; nothing was billed")
    return True
