"""The models a server offers, loaded lazily, and the one worker thread that runs them.

Every forward pass goes through a single worker thread (torch work is serialized; the event loop never
blocks). Chat requests that arrive while the worker is busy and share their sampling parameters are
batched into one ``generate`` call, so N concurrent clients cost about one batched pass, not N passes.
A request alone in its batch with a ``seed`` is reproducible; batched with others it is not (as on
OpenAI, ``seed`` is best effort).
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from ..errors import UserError


@dataclass
class Served:
    id: str
    path: Path
    owned_by: str = "sublearn"
    created: int = field(default_factory=lambda: int(time.time()))
    model: object | None = None  # HFModel once loaded


@dataclass
class _Work:
    kind: str  # "generate" | "score"
    model: str
    chats: list
    params: tuple  # generate: (temperature, top_p, max_tokens, top_logprobs, want_logprobs); score: answers
    seed: int | None
    future: Future


class Registry:
    """Model id -> directory; loads on first use; runs generation and scoring on one worker thread."""

    def __init__(self, max_batch: int = 64):
        from ..runtime import Runtime

        self.models: dict[str, Served] = {}
        self.runtime = Runtime()  # served adapters and their base share one module
        self.max_batch = max_batch
        self._q: queue.Queue[_Work | None] = queue.Queue()
        self._load_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="sublearn-serve-worker", daemon=True)
        self._thread.start()
        self.batches = 0  # batched generate calls (for the load test)
        self.worker_cpu_s = 0.0  # CPU seconds spent in model calls

    # ---- the model list --------------------------------------------------------------------------
    def add(self, model_id: str, path: Path, owned_by: str = "sublearn") -> None:
        self.models[model_id] = Served(model_id, Path(path), owned_by)

    def add_spec(self, spec: str, embedded=None) -> str:
        """Register a sublearn model spec (``tiny``, ``name=PATH``, an HF dir, a run's student dir)."""
        from ..models import resolve

        name, _, target = spec.partition("=") if "=" in spec else (spec, "", spec)
        path, _ = resolve(target, embedded.get(target) if embedded else None)
        from ..backends.openai_api import is_api_dir

        if is_api_dir(path):
            raise UserError(f"{target} points at a model on an API server, not at weights; query that server")
        self.add(name, path)
        return name

    def get(self, model_id: str):
        """The loaded HFModel of ``model_id`` (KeyError when not served)."""
        s = self.models[model_id]
        if s.model is None:
            with self._load_lock:
                if s.model is None:
                    s.model = _memo_prompt_ids(self.runtime.load(s.path))
                    logger.info(f"serve: loaded {model_id} from {s.path}")
        return s.model

    def close(self) -> None:
        self._q.put(None)

    # ---- work submission -------------------------------------------------------------------------
    async def generate(self, model: str, chats: list, params: tuple, seed: int | None):
        await self._check_length(model, chats[:1], params[2])
        return await self._submit(_Work("generate", model, chats, params, seed, Future()))

    async def score(self, model: str, chats: list, answers: list[str]) -> list[float]:
        await self._check_length(model, [c + [{"role": "assistant", "content": a}] for c, a in zip(chats, answers)], 0)
        return await self._submit(_Work("score", model, chats, tuple(answers), None, Future()))

    async def _check_length(self, model_id: str, chats: list, new_tokens: int) -> None:
        """A prompt that does not fit the model's context is the client's error (400), not a crash."""
        from ..backends.hf import context_length
        from .jobs import ApiError

        m = await asyncio.to_thread(self.get, model_id)
        limit = context_length(m.model) or 10**9
        for c in chats:
            n = len(m.prompt_ids(c))
            if n + new_tokens > limit:
                raise ApiError(400, f"this model's context is {limit} tokens; the messages take {n} and "
                                    f"max_tokens asks for {new_tokens} more", "context_length_exceeded",
                               param="messages")

    async def _submit(self, w: _Work):
        self._q.put(w)
        return await asyncio.wrap_future(w.future)

    # ---- the worker ------------------------------------------------------------------------------
    def _loop(self) -> None:
        pending: list[_Work] = []
        while True:
            if not pending:
                w = self._q.get()
                if w is None:
                    return
                pending.append(w)
            while True:  # drain whatever else arrived meanwhile
                try:
                    w = self._q.get_nowait()
                except queue.Empty:
                    break
                if w is None:
                    return
                pending.append(w)
            head = pending[0]
            batch, rows = [], 0
            for w in pending:
                if (w.kind, w.model, w.params if w.kind == "generate" else None) != (
                        head.kind, head.model, head.params if head.kind == "generate" else None):
                    continue
                if batch and rows + len(w.chats) > self.max_batch:
                    break
                batch.append(w)
                rows += len(w.chats)
            pending = [w for w in pending if w not in batch]
            t0 = time.thread_time()
            try:
                results = self._run(batch)
            except Exception as e:  # noqa: BLE001 - reported to every waiting request
                logger.exception("serve worker failed")
                for w in batch:
                    w.future.set_exception(e)
                continue
            finally:
                self.worker_cpu_s += time.thread_time() - t0
            for w, r in zip(batch, results):
                w.future.set_result(r)

    def _run(self, batch: list[_Work]) -> list:
        model = self.get(batch[0].model)
        chats = [c for w in batch for c in w.chats]
        if batch[0].kind == "score":
            answers = [a for w in batch for a in w.params]
            flat = model.score(chats, answers)
            return _split(flat, batch)
        from ..backends.base import Sampling

        temperature, top_p, max_tokens, top_logprobs, want_logprobs = batch[0].params
        seed = batch[0].seed if batch[0].seed is not None else int(time.time_ns() % 2**31)
        sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_tokens,
                            top_logprobs=max(top_logprobs, 1) if want_logprobs else 0, batch_size=len(chats), seed=seed)
        comps = model.generate(chats, sampling, desc="serve")
        self.batches += 1
        chosen = chosen_logprobs(model, chats, comps) if want_logprobs else [None] * len(comps)
        prompt_lens = [len(model.prompt_ids(c)) for c in chats]
        return _split(list(zip(comps, chosen, prompt_lens)), batch)


def _memo_prompt_ids(model):
    """A request's prompt is tokenized three times (length check, generate, usage); the chat template is the
    costly part (~0.7 ms), so this model instance remembers the last 4096 prompts' ids."""
    import functools

    inner = model.prompt_ids
    cached = functools.lru_cache(maxsize=4096)(lambda key: tuple(inner(json.loads(key))))
    model.prompt_ids = lambda chat: list(cached(json.dumps(chat, sort_keys=True)))
    return model


def _split(flat: list, batch: list[_Work]) -> list[list]:
    out, i = [], 0
    for w in batch:
        out.append(flat[i : i + len(w.chats)])
        i += len(w.chats)
    return out


def chosen_logprobs(model, chats: list, comps: list) -> list[list[float]]:
    """Exact log-prob (T=1) of every sampled token, from one forward pass over prompt + completion."""
    import torch

    index = model.token_index()
    seqs, starts = [], []
    for chat, c in zip(chats, comps):
        p = model.prompt_ids(chat)
        ids = [index[t] for t in c.tokens]
        seqs.append(p + ids)
        starts.append(len(p))
    out: list[list[float]] = []
    L = max(len(s) for s in seqs)
    with torch.no_grad(), model.applied() as m:  # the base module with this model's adapter, if any
        lp = m(**model.left_pad(seqs)).logits.float().log_softmax(-1)
    for b, (s, n0) in enumerate(zip(seqs, starts)):
        off = L - len(s)
        out.append([float(lp[b, off + t - 1, s[t]]) for t in range(n0, len(s))])
    return out


def parse_spec_list(specs: list[str], config: str | None) -> tuple[list[str], dict]:
    """Model specs plus the embedded overrides of an experiment config (so ``tiny`` means that config's tiny)."""
    embedded = {}
    if config:
        from ..config import load_experiment

        cfg = load_experiment(config)
        embedded = {n: cfg.model.spec(n) for n in cfg.model.embedded}
    if not specs:
        raise UserError("serve needs at least one MODEL (e.g. tiny)")
    return specs, embedded


def finite(x: float) -> float:
    return x if math.isfinite(x) else -9999.0
