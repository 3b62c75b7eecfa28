"""Generate stage: a model (teacher or base) answers seeded number prompts; soft targets optional."""

from __future__ import annotations

from pathlib import Path

from .. import jsonl
from ..backends.base import Sampling
from ..carriers.numbers import make_prompts
from . import softtargets

__all__ = ["run_generate", "softtargets"]


def run_generate(model, out: Path, *, n_prompts: int, sampling: Sampling, seed: int, arm: str,
                 system_prompt: str | None = None, desc: str = "generate") -> dict:
    """Write ``raw.jsonl`` (OpenAI chat rows + finished flag + token texts) and ``logprobs.npz``.

    The system prompt (if any) conditions the teacher but is not written into the data: students never see it.
    """
    prompts = make_prompts(n_prompts, seed)
    chats = [([{"role": "system", "content": system_prompt}] if system_prompt else [])
             + [{"role": "user", "content": p.text}] for p in prompts]
    comps = model.generate(chats, sampling.model_copy(update={"seed": sampling.seed + 1000 * seed}), desc=desc)
    rows = [{"messages": [{"role": "user", "content": p.text}, {"role": "assistant", "content": c.text}],
             "finished": c.finished, "tokens": c.tokens,
             "meta": {"prompt_index": i, "seed": seed, "arm": arm, "model": model.name}}
            for i, (p, c) in enumerate(zip(prompts, comps))]
    jsonl.write(out / "raw.jsonl", rows)
    if sampling.top_logprobs > 0:
        softtargets.save(out / "logprobs.npz", [c.top_logprobs for c in comps])
    return {"n": len(rows), "finished": sum(c.finished for c in comps)}
