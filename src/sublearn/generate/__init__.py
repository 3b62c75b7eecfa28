"""Generate stage: a model (teacher or base) answers the carrier's seeded prompts; soft targets optional."""

from __future__ import annotations

from pathlib import Path

from .. import jsonl
from ..backends.base import Sampling
from ..store import hash_obj
from . import softtargets

__all__ = ["GenerateRequest", "arm_sampling", "run_generate", "softtargets", "write_generated"]


def arm_sampling(sampling: Sampling, seed: int, arm: str) -> Sampling:
    """The sampling of one arm and seed: its own seed, so arms and seeds draw independent random numbers."""
    return sampling.model_copy(update={"seed": int(hash_obj({"sampling": sampling.seed, "seed": seed, "arm": arm}), 16)})


class GenerateRequest:
    """The prompts of one arm and seed, as chats the model answers (the system prompt conditions the teacher but
    is not written into the data: students never see it)."""

    def __init__(self, carrier, n_prompts: int, sampling: Sampling, seed: int, arm: str,
                 system_prompt: str | None = None, constrained: bool = False):
        self.prompts = carrier.prompts(n_prompts, seed)
        self.chats = [([{"role": "system", "content": system_prompt}] if system_prompt else [])
                      + [{"role": "user", "content": p}] for p in self.prompts]
        self.grammar = carrier.grammar() if constrained else None
        self.sampling = arm_sampling(sampling, seed, arm)
        self.seed, self.arm = seed, arm


def write_generated(out: Path, req: GenerateRequest, comps, model_name: str) -> dict:
    """Write ``raw.jsonl`` (OpenAI chat rows + finished flag + token texts) and ``logprobs.npz``."""
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c.text}],
             "finished": c.finished, "tokens": c.tokens,
             "meta": {"prompt_index": i, "seed": req.seed, "arm": req.arm, "model": model_name}}
            for i, (p, c) in enumerate(zip(req.prompts, comps))]
    jsonl.write(out / "raw.jsonl", rows)
    if req.sampling.top_logprobs > 0:
        softtargets.save(out / "logprobs.npz", [c.top_logprobs for c in comps])
    return {"n": len(rows), "finished": sum(c.finished for c in comps)}


def run_generate(model, out: Path, *, carrier, n_prompts: int, sampling: Sampling, seed: int, arm: str,
                 system_prompt: str | None = None, constrained: bool = False, desc: str = "generate") -> dict:
    """One arm: the model answers, the rows are written."""
    req = GenerateRequest(carrier, n_prompts, sampling, seed, arm, system_prompt, constrained)
    return write_generated(out, req, model.generate(req.chats, req.sampling, desc=desc, grammar=req.grammar),
                           model.name)
