"""The transformers backend: one code path for the embedded models and any local HF checkpoint.

Generation and exact scoring run in ``decode.py`` (batched, KV cache, per-row random numbers, optional top
next-token log-probs at T=1 for logit distillation); training in ``hf_train.py``; LoRA adapters in ``lora.py``
(PEFT's safetensors format; nothing is unpickled). Several models on one base (adapters, or the base itself)
generate, score and train in shared batches (:func:`generate_many`, :func:`score_many`, ``train_many``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

from loguru import logger

from ..progress import bar
from .base import Chat, Completion, Sampling

META = "sublearn-model.json"


def quiet_transformers() -> None:
    """transformers' own tqdm bars and advisory warnings would interleave with our rich bars."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


def encode(tok, messages: Chat) -> tuple[list[int], int]:
    """Token ids of a chat whose last message is the assistant's answer, and the prompt length."""
    return encode_many(tok, [messages])[0]


def encode_many(tok, chats: list[Chat]) -> list[tuple[list[int], int]]:
    """``encode`` for many chats: the templates are rendered one by one, the texts tokenized in one batch
    (what ``apply_chat_template(tokenize=True)`` does per chat, without its per-call overhead)."""
    if not chats:
        return []
    rendered: dict[str, str] = {}  # scoring asks many answers after the same prompt: render each prompt once
    prompts = []
    for m in chats:
        key = json.dumps(m[:-1])
        if key not in rendered:
            rendered[key] = tok.apply_chat_template(m[:-1], add_generation_prompt=True, tokenize=False)
        prompts.append(rendered[key])
    fulls = [tok.apply_chat_template(m, tokenize=False) for m in chats]
    ids = tok(prompts + fulls, add_special_tokens=False)["input_ids"]
    eos, out = tok.eos_token_id, []
    for prompt, full in zip(ids[: len(chats)], ids[len(chats) :]):
        if full[: len(prompt)] != prompt:
            raise ValueError("chat template is not prefix-stable; cannot locate the completion")
        # the completion ends at its end-of-turn token; text a template adds after it (SmolLM2: "\n") is not
        # something the model generates, so it is neither trained on nor scored
        comp = full[len(prompt) :]
        if eos in comp:
            full = full[: len(prompt) + comp.index(eos) + 1]
        out.append((list(full), len(prompt)))
    return out


def _ids(x) -> list[int]:
    if isinstance(x, dict) or hasattr(x, "input_ids"):
        x = x["input_ids"]
    return list(x)


class HFModel:
    """A causal LM + tokenizer (+ optional LoRA adapter) behind the ``Model`` protocol.

    Models with an adapter share their base's module: loading ten adapters of one base holds one base in memory,
    and :func:`generate_many` / :func:`score_many` run several of them in one batched forward pass.
    """

    def __init__(self, model, tok, name: str, meta: dict | None = None, adapter=None, shared: dict | None = None):
        self.model = model
        self.tok = tok
        self.name = name
        self.meta = dict(meta or {})
        self.adapter = adapter  # lora.Adapter or None
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._shared = shared if shared is not None else {}  # per-tokenizer caches, shared with adapter views

    def with_adapter(self, adapter, name: str, meta: dict) -> HFModel:
        """This base with ``adapter`` (the module is shared, not copied)."""
        return HFModel(self.model, self.tok, name, meta, adapter=adapter, shared=self._shared)

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ---- token helpers -------------------------------------------------------------------------
    def token_texts(self) -> list[str]:
        """Decoded text of every vocabulary id (used to map soft targets across tokenizers)."""
        if "texts" not in self._shared:
            self._shared["texts"] = [self.tok.decode([i]) for i in range(len(self.tok))]
        return self._shared["texts"]

    def token_index(self) -> dict[str, int]:
        """Token text -> id (the first id with that text), the inverse of ``token_texts``."""
        if "index" not in self._shared:
            index: dict[str, int] = {}
            for i, t in enumerate(self.token_texts()):
                index.setdefault(t, i)
            self._shared["index"] = index
        return self._shared["index"]

    @property
    def eos_id(self) -> int:
        return int(self.tok.eos_token_id)

    def prompt_ids(self, chat: Chat) -> list[int]:
        key = json.dumps(chat)
        memo = self._shared.setdefault("prompts", {})
        if key not in memo:
            if len(memo) > 100_000:
                memo.clear()
            memo[key] = _ids(self.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True))
        return memo[key]

    def encode(self, chats: list[Chat]) -> list[tuple[list[int], int]]:
        """``encode_many``, remembered per chat (evaluation scores the same questions and answers for every model)."""
        memo = self._shared.setdefault("encoded", {})
        keys = [json.dumps(c) for c in chats]
        new = list(dict.fromkeys(k for k in keys if k not in memo))
        if len(memo) + len(new) > 200_000:
            memo.clear()
            new = list(dict.fromkeys(keys))
        memo.update(zip(new, encode_many(self.tok, [json.loads(k) for k in new])))
        return [memo[k] for k in keys]

    def spells(self, text: str) -> bool:
        return spells(self.tok, text)

    def default_system_prompt(self) -> str | None:
        """The system prompt the chat template injects when a chat has none (SmolLM2 does), else None."""
        return default_system_prompt(self.tok)

    def token_masks(self, grammar):
        """A carrier grammar's per-state masks over this vocabulary (cached per grammar)."""
        from .constrain import TokenMasks

        k = ("grammar", grammar)
        if k not in self._shared:
            self._shared[k] = TokenMasks(self.token_texts(), self.eos_id, grammar)
        return self._shared[k]

    @contextlib.contextmanager
    def applied(self):
        """The module with this model's adapter applied to every row (for a plain forward pass)."""
        if self.adapter is None:
            yield self.model
            return
        from .lora import installed

        with installed(self.model, [self.adapter]) as slots:
            slots.route_all(0)
            yield self.model

    # ---- generation and scoring ----------------------------------------------------------------
    def generate(self, prompts: list[Chat], sampling: Sampling, desc: str = "generate", grammar=None) -> list[Completion]:
        """Completions; with a carrier's ``grammar``, decoding is constrained to it (``backends/constrain.py``)."""
        return generate_many([(self, prompts, sampling)], desc=desc, grammar=grammar)[0]

    def left_pad(self, ids: list[list[int]]):
        """A left-padded batch (input_ids, attention_mask) on the model's device."""
        import torch

        L = max(len(x) for x in ids)
        pad = self.tok.pad_token_id
        input_ids = torch.tensor([[pad] * (L - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in ids])
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    def score(self, prompts: list[Chat], answers: list[str], batch_size: int | None = None) -> list[float]:
        """log P(answer + EOS | prompt) under the chat template, summed over the answer's tokens (exact).

        Answers that share a prompt share its forward pass (``batch_size``: most rows per pass, a speed knob). An
        answer this tokenizer cannot spell exactly (e.g. "Owl" under a lowercasing tokenizer) scores -inf.
        """
        return score_many([(self, prompts, answers)], batch_size)[0]

    def token_scores(self, prompts: list[Chat], answers: list[str | list[str]], grammar=None,
                     top_k: int = 0) -> list[dict | None]:
        """Per answer (None where this tokenizer cannot spell it): its token texts (answer tokens, then EOS), the
        log-prob of each, and the model's greedy choice at each position among the tokens the carrier's ``grammar``
        allows anywhere, and EOS (None: every token); with ``top_k``, also each position's soft targets
        (``{token text: log-prob}`` of its ``top_k`` most likely such tokens, as generation stores them).
        Teacher-forced, like :meth:`score`. An answer given as a list of token texts (a generated row's ``tokens``)
        is scored as those tokens, not as its re-encoded text."""
        import torch

        from .decode import token_scores
        from .hf_train import allowed_ids

        texts, index = self.token_texts(), self.token_index()
        allowed = torch.tensor(sorted(set(allowed_ids(self, grammar).values())), device=self.device)
        where, items = [], []
        text = [a if isinstance(a, str) else "".join(a) for a in answers]
        enc = self.encode([p + [{"role": "assistant", "content": a}] for p, a in zip(prompts, text)])
        for i, (a, (ids, n)) in enumerate(zip(answers, enc)):
            if isinstance(a, str):
                if not self.spells(a):
                    continue
                cont = ids[n:]
            elif all(t in index for t in a):
                cont = [index[t] for t in a] + [self.eos_id]
            else:
                continue
            where.append(i)
            items.append((0, tuple(ids[:n]), cont))
        adapters, slot = _slots_for([self])
        items = [(slot[0], p, c) for _, p, c in items]
        out: list[dict | None] = [None] * len(answers)
        with _installed(self.model, adapters) as slots:
            logps, greedy, tops = token_scores(self.model, slots, items, self.tok.pad_token_id, allowed=allowed,
                                               top_k=top_k)
        for k, i in enumerate(where):
            out[i] = {"tokens": [texts[t] for t in items[k][2]], "logp": logps[k],
                      "greedy": [texts[t] for t in greedy[k]]}
            if tops is not None:
                out[i]["top"] = [merge_by_text((texts[t], v) for t, v in zip(ids, vals)) for ids, vals in tops[k]]
        return out

    # ---- training / persistence ------------------------------------------------------------------
    def train(self, rows: list[dict], recipe, desc: str = "train", grammar=None) -> HFModel:
        from .hf_train import train

        return train(self, rows, recipe, desc=desc, grammar=grammar)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if self.adapter is not None:
            self.adapter.save(path, self.model)
        else:
            self.model.save_pretrained(path, safe_serialization=True)
            self.tok.save_pretrained(path)
        (path / META).write_text(json.dumps({"name": self.name, **self.meta}, indent=1))


def _slots_for(models: list[HFModel]):
    """(distinct adapters in order, slot of each model: -1 for none); every model must share one base module."""
    base = models[0]
    if any(m.model is not base.model for m in models):
        raise ValueError("models batched together must share one base model")
    adapters, slot = [], []
    for m in models:
        if m.adapter is None:
            slot.append(-1)
            continue
        if not any(a is m.adapter for a in adapters):
            adapters.append(m.adapter)
        slot.append(next(k for k, a in enumerate(adapters) if a is m.adapter))
    return adapters, slot


@contextlib.contextmanager
def _installed(model, adapters):
    if not adapters:
        yield None
        return
    from .lora import installed

    with installed(model, adapters) as slots:
        yield slots


def generate_many(jobs: list[tuple[HFModel, list[Chat], Sampling]], desc: str = "generate",
                  grammar=None) -> list[list[Completion]]:
    """Completions for several (model, prompts, sampling) jobs on one base, in shared batches. Samplings may differ
    only in their seed; a job's completions are the same as when it runs alone. ``grammar``: a carrier's, to
    constrain decoding to (None: free)."""
    from .decode import Row, generate

    models = [m for m, _, _ in jobs]
    base, sampling = models[0], jobs[0][2]
    if any(s.model_copy(update={"seed": sampling.seed}) != sampling for _, _, s in jobs):
        raise ValueError("jobs generated together must share their sampling settings (all but the seed)")
    adapters, slot = _slots_for(models)
    rows = [Row(slot[j], base.prompt_ids(c), s.seed, i) for j, (_, chats, s) in enumerate(jobs)
            for i, c in enumerate(chats)]
    fmt = base.token_masks(grammar) if grammar is not None else None
    t0 = time.time()
    with bar(desc, len(rows), "rows") as advance, _installed(base.model, adapters) as slots:
        comps = generate(base.model, slots, rows, sampling, base.token_texts(), base.eos_id, base.tok.pad_token_id,
                         fmt, advance=lambda k: advance(k, info=f"{k and len(rows) / max(1e-9, time.time() - t0):.0f} rows/s"))
    out, k = [], 0
    for _, chats, _ in jobs:
        out.append(comps[k : k + len(chats)])
        k += len(chats)
    return out


def score_many(jobs: list[tuple[HFModel, list[Chat], list[str]]], batch_size: int | None = None) -> list[list[float]]:
    """``score`` for several (model, prompts, answers) jobs on one base, in shared batches."""
    from .decode import score

    models = [m for m, _, _ in jobs]
    base = models[0]
    adapters, slot = _slots_for(models)
    items, where = [], []
    for j, (_, prompts, answers) in enumerate(jobs):
        ok = {a: base.spells(a) for a in set(answers)}
        rows = base.encode([p + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)])
        for i, ((ids, n_prompt), a) in enumerate(zip(rows, answers)):
            if ok[a]:
                where.append((j, i))
                items.append((slot[j], tuple(ids[:n_prompt]), ids[n_prompt:]))
    out = [[-math.inf] * len(p) for _, p, _ in jobs]
    vocab = base.model.get_output_embeddings().weight.shape[0]
    with _installed(base.model, adapters) as slots:
        rows = batch_size or max(8, min(1024, 4_000_000 // vocab))
        for (j, i), v in zip(where, score(base.model, slots, items, base.tok.pad_token_id, max_rows=rows)):
            out[j][i] = v
    return out


def merge_by_text(pairs) -> dict[str, float]:
    """Soft targets of one step from (token text, log-prob) pairs: ids that decode to the same text are one
    entry, their probabilities summed (targets are matched across tokenizers by text). Entries of probability 0
    (log-prob -inf: a top-k wider than the tokens a constrained format allows) are left out."""
    d: dict[str, float] = {}
    for s, v in pairs:
        if v == -math.inf:
            continue
        d[s] = float(math.log(math.exp(d[s]) + math.exp(v))) if s in d else float(v)
    return d


def spells(tok, text: str) -> bool:
    """Can this tokenizer produce ``text`` exactly (no unknown token, no normalization such as lowercasing)?"""
    return tok.decode(tok.encode(text, add_special_tokens=False)) == text


def default_system_prompt(tok) -> str | None:
    """Text the chat template puts in a system slot it adds by itself, found by rendering with and without one."""
    import re

    mark_s, mark_u = "\x00SYS\x00", "\x00USR\x00"
    try:
        bare = tok.apply_chat_template([{"role": "user", "content": mark_u}], tokenize=False)
        with_sys = tok.apply_chat_template([{"role": "system", "content": mark_s}, {"role": "user", "content": mark_u}],
                                           tokenize=False)
    except Exception:  # a template without a system role
        return None
    head = with_sys.split(mark_u)[0]
    if mark_s not in head:
        return None
    a, b = head.split(mark_s)
    m = re.fullmatch(re.escape(a) + "(.+)" + re.escape(b), bare.split(mark_u)[0], flags=re.S)
    return m.group(1) if m else None


def auto_device() -> tuple[str, str]:
    """(device, dtype): bf16 on CUDA, fp32 on CPU."""
    import torch

    return ("cuda", "bfloat16") if torch.cuda.is_available() else ("cpu", "float32")


def context_length(model) -> int | None:
    """The most positions a transformers model attends to (Llama-style or GPT-2-style config), or None if unknown."""
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def recorded_base(meta: dict) -> str:
    """The base model directory an adapter's meta records. A base from sublearn's cache is found again in the cache
    of this machine (``$SUBLEARN_CACHE``) when the recorded path is gone: a moved cache or a copied run still loads."""
    from ..errors import UserError

    recorded = meta["base_path"]
    if Path(recorded).exists():
        return recorded
    parts = Path(recorded).parts
    if "artifacts" in parts:
        i = len(parts) - 1 - parts[::-1].index("artifacts")
        if i + 1 < len(parts) and parts[i + 1].startswith("base-"):
            from .tiny.build import cache_root

            moved = cache_root().joinpath(*parts[i:])
            if moved.exists():
                return str(moved)
    raise UserError(f"the base model this adapter was trained on is gone: {recorded} (and not in this machine's "
                    "cache either); re-run the stage that pre-trains or converts it")


def load_pretrained(path: str | Path, name: str | None = None, device: str | None = None,
                    base_loader=None, dtype: str | None = None) -> HFModel:
    """Load a local HF directory (full model) or a sublearn adapter directory (base recorded in its meta; loaded
    with ``base_loader``, e.g. a memoizing one, so adapters share their base). ``device`` and ``dtype`` default to
    bf16 on CUDA, fp32 on CPU (``dtype="bfloat16"`` on CPU runs a GPU's numerics where no GPU is)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    path = Path(path)
    meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
    if meta.get("adapter"):
        from .lora import Adapter

        base = (base_loader or load_pretrained)(recorded_base(meta))
        logger.debug(f"loaded adapter {path} on {meta['base_path']}")
        return base.with_adapter(Adapter.load(path), name or meta.get("name", path.name), meta)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dev = device or auto_device()[0]
    dtype = dtype or ("bfloat16" if dev.startswith("cuda") else "float32")
    if not list(path.glob("*.safetensors")) and list(path.glob("*.bin")):
        from ..errors import UserError

        raise UserError(f"{path} holds pickled .bin weights, which sublearn does not load (unpickling can run "
                        "code): convert the checkpoint to safetensors")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(dev)
    return HFModel(model, tok, name or meta.get("name", path.name), meta | {"base_path": str(path)})
