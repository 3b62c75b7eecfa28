"""The vLLM backend (optional, GPU; ``pip install 'sublearn[vllm]'``): fast generation and exact scoring.

Same chat templates and token ids as the transformers backend (the HF tokenizer builds every prompt), so
the two agree on what a prompt is. Students' LoRA adapters are served per request (``LoRARequest``) on one
engine per base model and process. Training is not vLLM's job: ``train`` hands over to the transformers
backend and returns its model, whose saved adapter the next stage loads here again.

Status: written against vLLM's offline ``LLM`` API (``generate`` with ``TokensPrompt``, per-request seeds,
``logprobs``, ``prompt_logprobs``); CI has no GPU, so it is exercised only where one is present
(``pytest -m gpu``). Format-constrained decoding is a transformers-backend feature.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

from ..errors import UserError
from ..progress import bar
from .base import Chat, Completion, Sampling
from .hf import META, encode_many, spells

_ENGINES: dict[str, object] = {}


def _engine(base_path: str, gpu_memory_utilization: float, max_lora_rank: int):
    if base_path not in _ENGINES:
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("backend 'vllm' needs vLLM and a GPU: pip install 'sublearn[vllm]'") from None
        _ENGINES[base_path] = LLM(model=base_path, dtype="auto", enable_lora=True, max_lora_rank=max_lora_rank,
                                  gpu_memory_utilization=gpu_memory_utilization, seed=0)
    return _ENGINES[base_path]


class VLLMModel:
    """A base checkpoint (+ optional LoRA adapter directory) served by vLLM behind the ``Model`` protocol."""

    def __init__(self, base_path: str, adapter: str | None = None, name: str | None = None,
                 meta: dict | None = None, gpu_memory_utilization: float = 0.45, max_lora_rank: int = 64):
        from transformers import AutoTokenizer

        self.base_path, self.adapter = str(base_path), adapter
        self.name = name or Path(adapter or base_path).name
        self.meta = dict(meta or {}) | {"base_path": self.base_path}
        self.tok = AutoTokenizer.from_pretrained(self.base_path)
        self._mem, self._rank = gpu_memory_utilization, max_lora_rank

    @property
    def llm(self):
        return _engine(self.base_path, self._mem, self._rank)

    def _lora(self):
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(self.name, zlib.crc32(self.adapter.encode()) % (2**31 - 1) + 1, self.adapter)

    def default_system_prompt(self) -> str | None:
        from .hf import default_system_prompt

        return default_system_prompt(self.tok)

    def generate(self, prompts: list[Chat], sampling: Sampling, desc: str = "generate") -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if sampling.format != "free":
            raise UserError("format-constrained decoding ('numbers') runs on the transformers backend only")
        eos = self.tok.eos_token_id
        ids = [list(self.tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True)) for c in prompts]
        greedy = sampling.temperature == 0
        params = [SamplingParams(temperature=sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
                                 max_tokens=sampling.max_new_tokens, seed=sampling.seed * 1_000_003 + i,
                                 logprobs=sampling.top_logprobs or None, stop_token_ids=[eos])
                  for i in range(len(ids))]
        with bar(desc, len(prompts), "prompts") as advance:
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params,
                                     lora_request=self._lora(), use_tqdm=False)
            advance(len(prompts))
        res = []
        for o in outs:
            c = o.outputs[0]
            toks = [i for i in c.token_ids if i != eos]
            tl = []
            for step in c.logprobs or []:
                tl.append({self.tok.decode([tid]): lp.logprob for tid, lp in step.items()})
            res.append(Completion(self.tok.decode(toks), [self.tok.decode([i]) for i in toks],
                                  c.finish_reason == "stop", tl))
        return res

    def score(self, prompts: list[Chat], answers: list[str]) -> list[float]:
        """log P(answer + end-of-turn | prompt) from vLLM's prompt log-probs (exact, like the HF backend)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ok = {a: spells(self.tok, a) for a in set(answers)}
        rows = encode_many(self.tok, [p + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)])
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in rows], params,
                                 lora_request=self._lora(), use_tqdm=False)
        res = []
        for (ids, n), o, a in zip(rows, outs, answers):
            if not ok[a]:
                res.append(-math.inf)
                continue
            res.append(sum(o.prompt_logprobs[i][ids[i]].logprob for i in range(n, len(ids))))
        return res

    def train(self, rows: list[dict], recipe, desc: str = "train"):
        from .hf import load_pretrained

        return load_pretrained(self.base_path).train(rows, recipe, desc=desc)


def load_vllm(path: str | Path, **engine) -> VLLMModel:
    """A base checkpoint directory or a sublearn adapter directory (its base recorded in its meta)."""
    path = Path(path)
    meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
    if meta.get("adapter"):
        return VLLMModel(meta["base_path"], str(path), meta.get("name"), meta, **engine)
    return VLLMModel(str(path), None, meta.get("name"), meta, **engine)
