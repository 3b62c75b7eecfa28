"""The one ``Model`` protocol every backend implements, and the value types it speaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pydantic import Field

from ..configbase import ANY, SEED_MAX, Frozen

Chat = list[dict]  # OpenAI-style messages: [{"role": "user", "content": "..."}]
MAX_TOP_LOGPROBS = 50  # the most soft-target entries per step a config may ask for (the vLLM engine is sized for it)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts (a config's rank <= last)


class Sampling(Frozen):
    """How to sample completions."""

    KEY_OMIT = {"batch_size": ANY}  # a row's sample does not depend on its batch

    temperature: float = Field(1.0, ge=0, description="softmax temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_new_tokens: int = Field(64, ge=1, description="maximum generated tokens per completion")
    top_logprobs: int = Field(0, ge=0, le=MAX_TOP_LOGPROBS, description="store this many top next-token log-probs (T=1) per step")
    batch_size: int = Field(256, ge=1, description="rows per decoding batch (speed and memory only: a row's sample "
                                                   "does not depend on its batch on the transformers backend)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description=f"sampling seed, 0..{SEED_MAX}")


@dataclass
class Completion:
    text: str
    tokens: list[str]  # decoded text of each generated token (EOS excluded)
    finished: bool  # ended with EOS (not cut by max_new_tokens)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)  # per step incl. the EOS step


class Model(Protocol):
    name: str

    def generate(self, prompts: list[Chat], sampling: Sampling, desc: str = "", grammar=None) -> list[Completion]:
        """``grammar``: a carrier's (``carriers/base.py``), to constrain decoding to; None: free."""
        ...

    def score(self, prompts: list[Chat], answers: list[str]) -> list[float]: ...

    def train(self, rows: list[dict], recipe: object, desc: str = "", grammar=None) -> Model:
        """``grammar``: a carrier's, whose tokens alone are distillation targets; None: every token."""
        ...
