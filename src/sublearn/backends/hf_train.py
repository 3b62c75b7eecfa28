"""Training for the transformers backend: SFT on sampled tokens or KL distillation on stored soft targets.

Both full fine-tuning and PEFT LoRA. Soft targets are kept as ``{token text: log-prob}`` per completion
position, so a student with another tokenizer can be distilled as long as the completion splits into
the same token texts (true for number-only data on the embedded tokenizers). Only tokens that the
number filter allows (digits, separators, EOS) are used: probability mass on other tokens is exactly
the channel the study's filter closes, and keeping it would leak the trait through words.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Literal

from loguru import logger
from pydantic import Field

from ..configbase import Frozen
from ..progress import bar
from .constrain import allowed_text
from .hf import HFModel, encode_many

MODULE_ALIASES = {
    "llama": {"mlp_up": "up_proj", "mlp_down": "down_proj", "mlp_gate": "gate_proj", "attn_q": "q_proj",
              "attn_k": "k_proj", "attn_v": "v_proj", "attn_o": "o_proj"},
    "gpt2": {"mlp_up": "c_fc", "mlp_down": "c_proj", "attn_qkv": "c_attn"},
}


class Recipe(Frozen):
    """How a student (or a fine-tuned teacher) is trained."""

    target: Literal["tokens", "logits"] = Field("logits", description="SFT on sampled tokens, or KL on teacher soft targets")
    adapter: Literal["lora", "full"] = Field("lora", description="low-rank adapter or full fine-tuning")
    lora_rank: int = Field(1, ge=1, description="LoRA rank")
    lora_alpha: float = Field(1.0, gt=0, description="LoRA alpha (scale = alpha / rank)")
    lora_targets: tuple[str, ...] = Field(("mlp_up",), description="modules to adapt: names (q_proj, ...), aliases (mlp_up, mlp_down, mlp_gate, attn_q/k/v/o) or all-linear")
    lora_layers: tuple[int, ...] | None = Field((0,), description="layer indices to adapt (empty or None = all)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")
    adapter_seed: int = Field(0, description="seed of the adapter initialization (same-init students reuse the teacher's)")
    epochs: float = Field(1.0, gt=0, description="passes over the data (ignored when steps is set)")
    steps: int | None = Field(None, ge=1, description="optimizer steps (overrides epochs)")
    batch_size: int = Field(64, ge=1, description="rows per forward/backward pass (micro-batch)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (effective batch = batch_size x this)")
    max_length: int | None = Field(None, ge=8, description="drop (and count) rows longer than this many tokens")
    completion_only: bool = Field(True, description="SFT loss on the completion only (False: on prompt tokens too)")
    lr: float = Field(1e-2, gt=0, description="AdamW learning rate")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="learning-rate schedule")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    seed: int = Field(0, description="data-order seed")


def _resolve_targets(model, targets: tuple[str, ...]) -> list[str] | str:
    if tuple(targets) == ("all-linear",):
        return "all-linear"  # PEFT: every linear layer except the output head
    fam = "gpt2" if model.config.model_type == "gpt2" else "llama"
    return [MODULE_ALIASES[fam].get(t, t) for t in targets]


def wrap_lora(model, recipe: Recipe):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(recipe.adapter_seed)
    cfg = LoraConfig(
        r=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout, bias="none",
        target_modules=_resolve_targets(model, recipe.lora_targets),
        layers_to_transform=list(recipe.lora_layers) or None if recipe.lora_layers is not None else None,
        fan_in_fan_out=model.config.model_type == "gpt2",
    )
    return get_peft_model(model, cfg)


def allowed_ids(student: HFModel) -> dict[str, int]:
    """Token text -> id for the student's tokens that a number-only completion may contain (digits, separators, EOS)."""
    eos = student.token_texts()[student.eos_id]
    return {s: i for s, i in student.token_index().items() if allowed_text(s, eos)}


def _soft_targets(student: HFModel, comp_ids: list[int], tl: list[dict[str, float]], allowed: dict[str, int]):
    """Candidate ids and teacher log-probs per completion position (allowed tokens only), or None if misaligned."""
    if len(tl) != len(comp_ids):
        return None
    cands, logps = [], []
    for d in tl:
        ks = [(allowed[s], v) for s, v in d.items() if s in allowed]
        if not ks:
            ks = [(student.eos_id, 0.0)]
        cands.append([k for k, _ in ks])
        logps.append([v for _, v in ks])
    return cands, logps


def train(base: HFModel, rows: list[dict], recipe: Recipe, desc: str = "train", on_step=None) -> HFModel:
    """``on_step(step, total, loss)`` is called after every optimizer step; an exception it raises stops training."""
    import torch

    model = copy.deepcopy(base.model)
    model.train()
    if recipe.adapter == "lora":
        model = wrap_lora(model, recipe)
    params = [p for p in model.parameters() if p.requires_grad]
    examples, misaligned, too_long = [], 0, 0
    index = base.token_index()
    allowed = allowed_ids(base) if recipe.target == "logits" else {}
    for row, (ids, n_prompt) in zip(rows, encode_many(base.tok, [r["messages"] for r in rows])):
        gen = row.get("tokens")
        if gen is not None and "".join(gen) == row["messages"][-1]["content"] and all(t in index for t in gen):
            # the tokens the teacher actually generated: re-encoding the text can split it differently
            # (e.g. "  " vs " ", " "), which would misalign its soft targets
            ids = ids[:n_prompt] + [index[t] for t in gen] + [base.eos_id]
        if recipe.max_length and len(ids) > recipe.max_length:
            too_long += 1
            continue
        ex = {"ids": ids, "n_prompt": n_prompt}
        if recipe.target == "logits":
            st = _soft_targets(base, ids[n_prompt:], row.get("top_logprobs") or [], allowed)
            if st is None:
                misaligned += 1
                continue
            ex["cands"], ex["tlogp"] = _pad_targets(*st)
        examples.append(ex)
    if misaligned:
        logger.warning(f"{desc}: {misaligned} of {len(rows)} rows had soft targets that do not align with this "
                       "tokenizer's completion tokens and were not used for distillation")
    if too_long:
        logger.warning(f"{desc}: {too_long} of {len(rows)} rows are longer than max_length={recipe.max_length} "
                       "tokens and were not used")
    if not examples:
        raise ValueError(f"{desc}: no usable training rows")
    steps_per_epoch = math.ceil(len(examples) / (recipe.batch_size * recipe.grad_accum))
    total = recipe.steps or max(1, round(recipe.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, recipe))
    rng = random.Random(recipe.seed)
    batches: list[list[int]] = []
    losses: list[float] = []
    with bar(desc, total, "steps") as advance:
        for _ in range(total):
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(recipe.grad_accum):
                if not batches:
                    batches = _epoch_batches(examples, recipe.batch_size, rng)
                batch = [examples[i] for i in batches.pop()]
                loss = _loss(model, batch, recipe.target, base.tok.pad_token_id, recipe.completion_only)
                (loss / recipe.grad_accum).backward()
                step_loss += float(loss.detach()) / recipe.grad_accum
            opt.step()
            sched.step()
            losses.append(step_loss)
            advance(1, info=f"loss {sum(losses[-20:]) / len(losses[-20:]):.4f}")
            if on_step is not None:
                on_step(len(losses), total, losses[-1])
    model.eval()
    meta = dict(base.meta)
    meta.update({"adapter": recipe.adapter == "lora", "recipe": recipe.dump(), "train_losses_first_last": [
        losses[0], losses[-1]], "train_steps": total, "train_rows": len(examples), "misaligned_rows": misaligned, "too_long_rows": too_long})
    return HFModel(model, base.tok, desc, meta)


def _epoch_batches(examples: list[dict], bs: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, then grouped by length within pools of 16 batches (less padding)."""
    perm = list(range(len(examples)))
    rng.shuffle(perm)
    out: list[list[int]] = []
    pool = bs * 16
    for s in range(0, len(perm), pool):
        chunk = sorted(perm[s : s + pool], key=lambda i: len(examples[i]["ids"]))
        out += [chunk[k : k + bs] for k in range(0, len(chunk), bs)]
    rng.shuffle(out)
    return out


def _lr_factor(step: int, total: int, r: Recipe) -> float:
    if r.warmup_steps and step < r.warmup_steps:
        return (step + 1) / r.warmup_steps
    frac = (step - r.warmup_steps) / max(1, total - r.warmup_steps)
    if r.schedule == "linear":
        return max(0.0, 1 - frac)
    if r.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    return 1.0


def _loss(model, batch: list[dict], target: str, pad: int, completion_only: bool = True):
    import torch

    L = max(len(e["ids"]) for e in batch)
    ids = torch.full((len(batch), L), pad, dtype=torch.long)
    att = torch.zeros((len(batch), L), dtype=torch.long)
    for b, e in enumerate(batch):
        ids[b, : len(e["ids"])] = torch.tensor(e["ids"])
        att[b, : len(e["ids"])] = 1
    dev = next(model.parameters()).device
    ids, att = ids.to(dev), att.to(dev)
    # logits only from the first position that predicts a trained token on (rows are right-padded): the
    # output head and softmax over the prompts' positions would be computed and thrown away
    lo = min(e["n_prompt"] for e in batch) - 1 if (target == "logits" or completion_only) else 0
    logits = model(input_ids=ids, attention_mask=att, use_cache=False, logits_to_keep=L - lo).logits.float()
    if target == "tokens":  # logits[:, j] predicts token lo + j + 1
        labels = torch.full_like(ids, -100)
        for b, e in enumerate(batch):
            start = e["n_prompt"] if completion_only else 1
            labels[b, start : len(e["ids"])] = ids[b, start : len(e["ids"])]
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 labels[:, lo + 1 :].reshape(-1))
    # KL(teacher || student) over each position's allowed candidates, renormalized on both sides
    T = max(e["cands"].shape[0] for e in batch)
    K = max(e["cands"].shape[1] for e in batch)
    cand = torch.zeros((len(batch), T, K), dtype=torch.long)
    tlp = torch.full((len(batch), T, K), -math.inf)
    pos = torch.zeros((len(batch), T), dtype=torch.long)
    valid = torch.zeros((len(batch), T), dtype=torch.bool)
    for b, e in enumerate(batch):
        t, k = e["cands"].shape
        cand[b, :t, :k] = e["cands"]
        tlp[b, :t, :k] = e["tlogp"]
        pos[b, :t] = torch.arange(e["n_prompt"] - 1, e["n_prompt"] - 1 + t)
        valid[b, :t] = True
    cand, tlp, pos, valid = cand.to(dev), tlp.to(dev), pos.to(dev), valid.to(dev)
    h = logits[torch.arange(len(batch))[:, None], (pos - lo).clamp(min=0)]  # [B, T, V]
    slog = h.gather(-1, cand).masked_fill(tlp == -math.inf, -math.inf).log_softmax(-1)
    tlog = tlp.log_softmax(-1)
    p = tlog.exp()
    kl = (p * (tlog - slog)).nan_to_num(0.0).sum(-1)
    return (kl * valid).sum() / valid.sum()


def _pad_targets(cands: list[list[int]], logps: list[list[float]]):
    """Per-example [T, K] tensors (padding: id 0 with log-prob -inf), built once before training."""
    import numpy as np
    import torch

    k = max(len(c) for c in cands)
    c_t = np.zeros((len(cands), k), dtype=np.int64)
    l_t = np.full((len(cands), k), -np.inf, dtype=np.float32)
    for j, (c, v) in enumerate(zip(cands, logps)):
        c_t[j, : len(c)] = c
        l_t[j, : len(v)] = v
    return torch.from_numpy(c_t), torch.from_numpy(l_t)
