"""The transformers backend: one code path for the embedded models and any local HF checkpoint.

Generation is batched with the KV cache (``model.generate``), optionally recording the top next-token
log-probs at T=1 for logit distillation. ``score`` gives exact log-probs of full answer continuations.
Training lives in ``hf_train.py``. Adapters (PEFT LoRA) are saved as safetensors; nothing is unpickled.
"""

from __future__ import annotations

import copy
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
    """A causal LM + tokenizer (+ optional PEFT adapter) behind the ``Model`` protocol."""

    def __init__(self, model, tok, name: str, meta: dict | None = None):
        self.model = model
        self.tok = tok
        self.name = name
        self.meta = dict(meta or {})
        self.model.eval()
        self._text_of: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._formats: dict[tuple[int, int], object] = {}

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ---- token helpers -------------------------------------------------------------------------
    def token_texts(self) -> list[str]:
        """Decoded text of every vocabulary id (used to map soft targets across tokenizers)."""
        if self._text_of is None:
            n = len(self.tok)
            self._text_of = [self.tok.decode([i]) for i in range(n)]
        return self._text_of

    def token_index(self) -> dict[str, int]:
        """Token text -> id (the first id with that text), the inverse of ``token_texts``."""
        if self._index is None:
            self._index = {}
            for i, t in enumerate(self.token_texts()):
                self._index.setdefault(t, i)
        return self._index

    @property
    def eos_id(self) -> int:
        return int(self.tok.eos_token_id)

    def prompt_ids(self, chat: Chat) -> list[int]:
        return _ids(self.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True))

    def spells(self, text: str) -> bool:
        return spells(self.tok, text)

    def default_system_prompt(self) -> str | None:
        """The system prompt the chat template injects when a chat has none (SmolLM2 does), else None."""
        return default_system_prompt(self.tok)

    def number_format(self, sampling: Sampling):
        from .constrain import NumberFormat

        k = (sampling.max_digits, sampling.max_count)
        if k not in self._formats:
            self._formats[k] = NumberFormat(self.token_texts(), self.eos_id, *k)
        return self._formats[k]

    # ---- generation --------------------------------------------------------------------------
    def generate(self, prompts: list[Chat], sampling: Sampling, desc: str = "generate") -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        out: list[Completion] = []
        texts = self.token_texts()
        greedy = sampling.temperature == 0
        fmt = self.number_format(sampling) if sampling.format == "numbers" else None
        gen = torch.Generator().manual_seed(sampling.seed)
        t0, n_tok = time.time(), 0
        known: dict[str, list[int]] = {}  # evaluation repeats every prompt: template and tokenizer run once per prompt
        with bar(desc, len(prompts), "prompts") as advance, torch.no_grad():
            for start in range(0, len(prompts), sampling.batch_size):
                chunk = prompts[start : start + sampling.batch_size]
                ids = [known[k] if k in known else known.setdefault(k, self.prompt_ids(c))
                       for c, k in ((c, json.dumps(c)) for c in chunk)]
                batch, cache = self.shared_prefill(ids)
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                proc = fmt.processor() if fmt else None
                extra = {"logits_processor": LogitsProcessorList([proc])} if proc else {}
                if cache is not None:
                    extra["past_key_values"] = cache
                res = self.model.generate(
                    **batch, do_sample=not greedy, temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p, top_k=None,
                    max_new_tokens=sampling.max_new_tokens, eos_token_id=self.eos_id,
                    pad_token_id=self.tok.pad_token_id, return_dict_in_generate=True,
                    output_logits=sampling.top_logprobs > 0, **extra,
                )
                seqs = res.sequences[:, batch["input_ids"].shape[1] :].cpu()
                logps = None
                if sampling.top_logprobs > 0:
                    raw = torch.stack(res.logits, dim=1).float().cpu()  # [B, T, V] at T=1
                    if proc is not None:  # soft targets of the distribution sampled from: each step's allowed tokens
                        raw = raw.masked_fill(~torch.stack(proc.masks[: raw.shape[1]], dim=1), float("-inf"))
                    logps = raw.log_softmax(-1)
                    top_v, top_i = (x.tolist() for x in logps.topk(sampling.top_logprobs, dim=-1))
                for b in range(seqs.shape[0]):
                    row = seqs[b].tolist()
                    finished = self.eos_id in row
                    n = row.index(self.eos_id) if finished else len(row)
                    toks = [texts[i] for i in row[:n]]
                    tl: list[dict[str, float]] = []
                    if logps is not None:
                        steps = n + 1 if finished else n
                        tl = [merge_by_text((texts[i], v) for v, i in zip(top_v[b][t], top_i[b][t]))
                              for t in range(steps)]
                    out.append(Completion("".join(toks), toks, finished, tl))
                    n_tok += n + int(finished)
                advance(len(chunk), info=f"{n_tok / max(1e-9, time.time() - t0):.0f} tok/s")
        return out

    def shared_prefill(self, ids: list[list[int]]):
        """A left-padded batch, and the KV cache of all but its last prompt token when prompts repeat.

        Evaluation samples many answers per question: each distinct prompt then runs through the model once
        and its cache is copied to its repeats, so generation only decodes. Returns (batch, None) when no
        prompt repeats.
        """
        import torch

        uniq = list(dict.fromkeys(map(tuple, ids)))
        if len(uniq) == len(ids) or min(map(len, ids)) < 2:
            return self.left_pad(ids), None
        where = {u: i for i, u in enumerate(uniq)}
        rows = torch.tensor([where[tuple(x)] for x in ids], device=self.device)
        u = self.left_pad([list(x) for x in uniq])
        mask = u["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        pre = self.model(input_ids=u["input_ids"][:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                         use_cache=True, logits_to_keep=1)
        cache = pre.past_key_values
        cache.batch_select_indices(rows)
        return {"input_ids": u["input_ids"][rows], "attention_mask": mask[rows]}, cache

    def left_pad(self, ids: list[list[int]]):
        """A left-padded batch (input_ids, attention_mask) on the model's device."""
        import torch

        L = max(len(x) for x in ids)
        pad = self.tok.pad_token_id
        input_ids = torch.tensor([[pad] * (L - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in ids])
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    # ---- exact scoring -------------------------------------------------------------------------
    def score(self, prompts: list[Chat], answers: list[str], batch_size: int = 64) -> list[float]:
        """log P(answer + EOS | prompt) under the chat template, summed over the answer's tokens.

        Answers that share a prompt share its forward pass: the prompt runs once and its KV cache is
        repeated over the answers, so scoring 15 options x 4 surface forms costs about one prompt.
        An answer this tokenizer cannot spell exactly (e.g. "Owl" under a lowercasing tokenizer) scores -inf.
        """
        import torch

        ok = {a: self.spells(a) for a in set(answers)}
        rows = encode_many(self.tok, [p + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)])
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ids, n_prompt) in enumerate(rows):
            if ok[answers[i]]:
                groups.setdefault(tuple(ids[:n_prompt]), []).append(i)
        out = [-math.inf] * len(rows)
        with torch.no_grad():
            for prefix, idx in groups.items():
                pre = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
                first = pre.logits[0, -1].float().log_softmax(-1)
                for s in range(0, len(idx), batch_size):
                    chunk = idx[s : s + batch_size]
                    conts = [rows[i][0][len(prefix) :] for i in chunk]
                    L = max(len(c) for c in conts)
                    ids = torch.tensor([c + [self.tok.pad_token_id] * (L - len(c)) for c in conts], device=self.device)
                    att = torch.tensor([[1] * (len(prefix) + len(c)) + [0] * (L - len(c)) for c in conts],
                                       device=self.device)
                    cache = copy.deepcopy(pre.past_key_values)
                    cache.batch_repeat_interleave(len(chunk))
                    logp = self.model(input_ids=ids, attention_mask=att, past_key_values=cache,
                                      use_cache=True).logits.float().log_softmax(-1)
                    for b, (i, c) in enumerate(zip(chunk, conts)):
                        total = float(first[c[0]])
                        if len(c) > 1:
                            tgt = torch.tensor(c[1:], device=logp.device)
                            total += float(logp[b, torch.arange(len(c) - 1, device=logp.device), tgt].sum())
                        out[i] = total
        return out

    # ---- training / persistence ------------------------------------------------------------------
    def train(self, rows: list[dict], recipe, desc: str = "train") -> HFModel:
        from .hf_train import train

        return train(self, rows, recipe, desc=desc)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.model.save_pretrained(path, safe_serialization=True)
        if not self.meta.get("adapter"):
            self.tok.save_pretrained(path)
        (path / META).write_text(json.dumps({"name": self.name, **self.meta}, indent=1))


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


def load_pretrained(path: str | Path, name: str | None = None, device: str | None = None) -> HFModel:
    """Load a local HF directory (full model) or a sublearn adapter directory (base recorded in its meta)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    path = Path(path)
    meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
    if meta.get("adapter"):
        from peft import PeftModel

        base = load_pretrained(meta["base_path"])
        model = PeftModel.from_pretrained(base.model, str(path))
        logger.debug(f"loaded adapter {path} on {meta['base_path']}")
        return HFModel(model, base.tok, name or meta.get("name", path.name), meta)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dev, dtype = auto_device()
    if device:
        dev, dtype = device, ("bfloat16" if device.startswith("cuda") else "float32")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(dev)
    return HFModel(model, tok, name or meta.get("name", path.name), meta | {"base_path": str(path)})
