"""Training for the transformers backend: SFT on sampled tokens or KL distillation on stored soft targets.

LoRA jobs that share a base model train together (:func:`train_many`): every job's adapter sits in one slot of
the same layers (``lora.py``), each optimizer step draws every job's own batch from its own data with its own
seed, runs all of them in one forward pass, and sums the jobs' mean losses, so each adapter gets exactly its own
gradient; the optimizer is elementwise per slot (AdamW with each slot's learning rate and step count). A job's
result therefore does not depend on which jobs it trained beside. Full fine-tuning trains one model at a time.

Soft targets are kept as ``{token text: log-prob}`` per completion position, so a student with another tokenizer
can be distilled as long as the completion splits into the same token texts (true for number-only data on the
embedded tokenizers). Only tokens the carrier's grammar allows (``grammar``; for number lists: digits, separators,
EOS) are used: probability mass on other tokens is exactly the channel the study's filter closes. The student's logits
are computed only for those candidate tokens (the KL renormalizes over them), and only at the positions that carry a
loss. A position where the teacher's top-k holds no allowed token has no target: it is left out and counted
(``positions_without_targets``), never given a made-up one.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from typing import Literal

from loguru import logger
from pydantic import Field

from ..configbase import ANY, SEED_MAX, Frozen
from ..progress import bar
from .decode import padded_length
from .hf import HFModel


class Recipe(Frozen):
    """How a student (or a fine-tuned teacher) is trained."""

    KEY_OMIT = {"freeze_a": False, "gradient_checkpointing": ANY}  # a memory knob: the same bytes either way

    target: Literal["tokens", "logits"] = Field("logits", description="SFT on sampled tokens, or KL on teacher soft targets")
    adapter: Literal["lora", "full"] = Field("lora", description="low-rank adapter or full fine-tuning")
    lora_rank: int = Field(1, ge=1, description="LoRA rank")
    lora_alpha: float = Field(1.0, gt=0, description="LoRA alpha (scale = alpha / rank)")
    lora_targets: tuple[str, ...] = Field(("mlp_up",), description="modules to adapt: names (q_proj, ...), aliases (mlp_up, mlp_down, mlp_gate, attn_q/k/v/o) or all-linear")
    lora_layers: tuple[int, ...] | None = Field((0,), description="layer indices to adapt (-1 = the last; empty or "
                                                                  "None = all)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")
    freeze_a: bool = Field(False, description="train only the adapter's B; A keeps its seeded initialization (the "
                                              "teacher's and a same-init student's are then the same A)")
    adapter_seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the adapter initialization (same-init "
                                                                 "students reuse the teacher's)")
    epochs: float = Field(1.0, gt=0, description="passes over the data (ignored when steps is set)")
    steps: int | None = Field(None, ge=1, description="optimizer steps (overrides epochs)")
    batch_size: int = Field(64, ge=1, description="rows per forward/backward pass (micro-batch)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (effective batch = batch_size x this)")
    max_length: int | None = Field(None, ge=8, description="drop (and count) rows longer than this many tokens")
    gradient_checkpointing: bool = Field(False, description="recompute each layer's activations in the backward "
                                                            "pass: far less memory for a few layers' more compute "
                                                            "(a 7B model on one GPU); not part of artifact keys")
    completion_only: bool = Field(True, description="SFT loss on the completion only (False: on prompt tokens too)")
    lr: float = Field(1e-2, gt=0, allow_inf_nan=False, description="AdamW learning rate")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="learning-rate schedule")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False, description="AdamW weight decay")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="data-order seed (in an experiment, combined with each "
                                                        "repetition's seed)")

    def batch_shape(self) -> tuple:
        """What jobs trained together must share (everything but seeds, learning rates and lengths)."""
        return (self.target, self.adapter, self.lora_rank, self.lora_alpha, self.lora_targets, self.lora_layers,
                self.lora_dropout, self.freeze_a, self.batch_size, self.grad_accum, self.max_length,
                self.completion_only, self.gradient_checkpointing)


def allowed_ids(student: HFModel, grammar=None) -> dict[str, int]:
    """Token text -> id for the student's tokens a completion may contain: those the carrier's ``grammar`` allows,
    and EOS (None: every token)."""
    eos = student.token_texts()[student.eos_id]
    return {s: i for s, i in student.token_index().items() if s == eos or grammar is None or grammar.allowed(s)}


def _examples(base: HFModel, rows: list[dict], recipe: Recipe, desc: str, grammar=None) -> tuple[list[dict], dict]:
    """Training examples (token ids, positions that carry a loss, their targets) and counts of unusable rows.

    Logit targets become a dense [positions, allowed tokens] matrix of the teacher's log-probs (-inf where the
    teacher's top-k has no entry: the student is renormalized over the same candidates)."""
    import numpy as np
    import torch

    from ..generate.softtargets import Targets

    examples, misaligned, too_long, no_target, bad_masks, masked = [], 0, 0, 0, 0, 0
    index = base.token_index()
    allowed = allowed_ids(base, grammar) if recipe.target == "logits" else {}
    col = {i: j for j, i in enumerate(sorted(set(allowed.values())))}
    columns: dict[int, tuple[list[str], np.ndarray]] = {}
    for row, (ids, n_prompt) in zip(rows, base.encode([r["messages"] for r in rows])):
        gen = row.get("tokens")
        if gen is not None and "".join(gen) == row["messages"][-1]["content"] and all(t in index for t in gen):
            # the tokens the teacher actually generated: re-encoding the text can split it differently
            # (e.g. "  " vs " ", " "), which would misalign its soft targets
            ids = ids[:n_prompt] + [index[t] for t in gen] + [base.eos_id]
        if recipe.max_length and len(ids) > recipe.max_length:
            too_long += 1
            continue
        first = n_prompt - 1 if (recipe.target == "logits" or recipe.completion_only) else 0
        ex = {"ids": ids, "pos": torch.arange(first, len(ids) - 1)}
        keep = None  # positions a row's loss_mask keeps (over the completion's tokens and EOS)
        if (mask := row.get("loss_mask")) is not None:
            if len(mask) != len(ids) - n_prompt:
                bad_masks += 1
                continue
            keep = np.array([True] * (n_prompt - 1 - first) + [bool(v) for v in mask])
            masked += int((~keep).sum())
            if not keep.any():
                continue
        if recipe.target == "logits":
            tl = row.get("top_logprobs") or []
            if len(tl) != len(ids) - n_prompt:
                misaligned += 1
                continue
            if not isinstance(tl, Targets):
                tl = Targets.of(tl)
            known = columns.get(id(tl.tokens))  # the rows of one file share its vocabulary: map it to columns once
            if known is None or known[0] is not tl.tokens:
                known = columns[id(tl.tokens)] = (tl.tokens, np.array(
                    [col[allowed[t]] if t in allowed else -1 for t in tl.tokens] + [-1]))
            dense = tl.dense(known[1], len(col))
            has = np.isfinite(dense).any(1)  # positions where the teacher's top-k holds an allowed token
            no_target += int((~has).sum())
            if keep is not None:
                has &= keep
            if not has.all():
                dense, ex["pos"] = dense[has], ex["pos"][torch.from_numpy(has)]
                if not len(dense):
                    continue
            ex["tdense"] = torch.from_numpy(dense)
        else:
            ex["labels"] = torch.tensor(ids[first + 1 :])
            if keep is not None:
                ex["labels"], ex["pos"] = ex["labels"][torch.from_numpy(keep)], ex["pos"][torch.from_numpy(keep)]
        examples.append(ex)
    if misaligned:
        logger.warning(f"{desc}: {misaligned} of {len(rows)} rows had soft targets that do not align with this "
                       "tokenizer's completion tokens and were not used for distillation")
    if too_long:
        logger.warning(f"{desc}: {too_long} of {len(rows)} rows are longer than max_length={recipe.max_length} "
                       "tokens and were not used")
    if no_target:
        logger.warning(f"{desc}: {no_target} completion positions have no allowed token in the teacher's top-k "
                       "and carry no loss")
    if bad_masks:
        logger.warning(f"{desc}: {bad_masks} of {len(rows)} rows have a loss_mask whose length differs from their "
                       "completion's tokens (+ EOS) and were not used")
    if not examples:
        raise ValueError(f"{desc}: no usable training rows")
    counts = {"misaligned_rows": misaligned, "too_long_rows": too_long, "positions_without_targets": no_target}
    return examples, counts | ({"bad_mask_rows": bad_masks, "masked_positions": masked} if bad_masks or masked else {})


def train(base: HFModel, rows: list[dict], recipe: Recipe, desc: str = "train", on_step=None, grammar=None) -> HFModel:
    """Train one model. ``on_step(step, total, loss)`` is called after every optimizer step; an exception it raises
    stops training. ``grammar``: the carrier's, whose tokens alone are distillation targets (None: every token)."""
    return train_many(base, [(rows, recipe, desc)], on_step=on_step, grammar=grammar)[0]


def train_many(base: HFModel, jobs: list[tuple[list[dict], Recipe, str]], on_step=None, grammar=None) -> list[HFModel]:
    """Train several jobs on ``base`` at once (LoRA jobs with the same ``Recipe.batch_shape``) or one after another."""
    if not jobs:
        return []
    if base.adapter is not None:
        raise ValueError(f"{base.name} carries an adapter; training on top of an adapter is not supported")
    shapes = {r.batch_shape() for _, r, _ in jobs}
    if len(jobs) > 1 and len(shapes) > 1:  # each shape's jobs together, results in the jobs' order
        out: list[HFModel | None] = [None] * len(jobs)
        for shape in dict.fromkeys(r.batch_shape() for _, r, _ in jobs):
            idx = [i for i, (_, r, _) in enumerate(jobs) if r.batch_shape() == shape]
            for i, m in zip(idx, train_many(base, [jobs[i] for i in idx], on_step, grammar)):
                out[i] = m
        return out
    if len(jobs) > 1 and jobs[0][1].adapter != "lora":
        return [m for job in jobs for m in train_many(base, [job], on_step, grammar)]
    prepared = [_examples(base, rows, r, d, grammar) for rows, r, d in jobs]
    recipes = [r for _, r, _ in jobs]
    totals = [r.steps or max(1, round(r.epochs * math.ceil(len(ex) / (r.batch_size * r.grad_accum))))
              for (ex, _), r in zip(prepared, recipes)]
    desc = jobs[0][2] if len(jobs) == 1 else f"train {len(jobs)} adapters"
    if recipes[0].adapter == "full":
        return [_train_full(base, prepared[0], recipes[0], totals[0], desc, on_step, grammar)]
    return _train_lora(base, prepared, recipes, totals, desc, on_step, grammar)


def _train_full(base: HFModel, prepared, recipe: Recipe, total: int, desc: str, on_step, grammar) -> HFModel:
    import torch

    examples, counts = prepared
    model = copy.deepcopy(base.model)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    if recipe.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, recipe))
    rng, batches, losses = random.Random(recipe.seed), [], []
    with bar(desc, total, "steps") as advance:
        for _ in range(total):
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(recipe.grad_accum):
                if not batches:
                    batches = _epoch_batches(examples, recipe.batch_size, rng)
                (loss,) = _losses(model, base, [[examples[i] for i in batches.pop()]], recipe.target, grammar=grammar)
                (loss / recipe.grad_accum).backward()
                step_loss += float(loss.detach()) / recipe.grad_accum
            opt.step()
            sched.step()
            losses.append(step_loss)
            advance(1, info=f"loss {sum(losses[-20:]) / len(losses[-20:]):.4f}")
            if on_step is not None:
                on_step(len(losses), total, losses[-1])
    for p in model.parameters():
        p.requires_grad_(False)
    if recipe.gradient_checkpointing:
        model.activation_checkpointing_disable()
    model.eval()
    return HFModel(model, base.tok, desc, _meta(base, recipe, losses, total, len(examples), counts))


def _train_lora(base: HFModel, prepared, recipes: list[Recipe], totals: list[int], desc: str, on_step,
                grammar) -> list[HFModel]:
    import torch

    from .lora import Adapter, installed, target_modules

    r0 = recipes[0]
    names = target_modules(base.model, r0.lora_targets, r0.lora_layers)
    inits = [Adapter.init(base.model, names, r.lora_rank, r.lora_alpha, r.adapter_seed, r.lora_dropout) for r in recipes]
    S, T = len(recipes), max(totals)
    rngs = [random.Random(r.seed) for r in recipes]
    queues: list[list[list[int]]] = [[] for _ in recipes]
    losses: list[list[float]] = [[] for _ in recipes]
    model = base.model
    tail = tail_of(model, names)
    if tail is not None:
        for examples, _ in prepared:
            _cache_tail(model, base, examples, tail)
    with installed(model, inits, trainable=(not r0.freeze_a, True)) as slots:
        opt = SlotAdamW(slots.params(), S)
        lrs = torch.tensor([r.lr for r in recipes])
        wds = torch.tensor([r.weight_decay for r in recipes])
        model.train()
        checkpointing = r0.gradient_checkpointing and tail is None  # the cached tail keeps no activations to spare
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        try:
            with bar(desc, T, "steps") as advance:
                for step in range(T):
                    active = [s for s in range(S) if step < totals[s]]
                    opt.zero_grad()
                    step_loss = [0.0] * S
                    for _ in range(r0.grad_accum):
                        batch = []
                        for s in active:
                            if not queues[s]:
                                queues[s] = _epoch_batches(prepared[s][0], r0.batch_size, rngs[s])
                            batch.append([prepared[s][0][i] for i in queues[s].pop()])
                        starts = [0]  # the rows (or, with the tail, the positions) of each slot's batch
                        for b in batch:
                            starts.append(starts[-1] + (sum(len(e["pos"]) for e in b) if tail else len(b)))
                        slots.route_segments([(s, a, e) for s, a, e in zip(active, starts, starts[1:])])
                        ls = _losses(model, base, batch, r0.target, tail, grammar)
                        (sum(ls) / r0.grad_accum).backward()
                        for s, loss in zip(active, ls):
                            step_loss[s] += float(loss.detach()) / r0.grad_accum
                    on = torch.zeros(S, dtype=torch.bool)
                    on[active] = True
                    factor = torch.tensor([_lr_factor(step, totals[s], recipes[s]) for s in range(S)])
                    opt.step(lrs * factor, wds, on)
                    for s in active:
                        losses[s].append(step_loss[s])
                    recent = [sum(x[-20:]) / len(x[-20:]) for x in losses if x]
                    advance(1, info=f"loss {sum(recent) / len(recent):.4f}")
                    if on_step is not None:
                        on_step(step + 1, T, step_loss[active[0]])
        finally:
            slots.route(None)
            if checkpointing:
                model.activation_checkpointing_disable()
            model.eval()
        for examples, _ in prepared:
            for e in examples:
                e.pop("tail_h", None), e.pop("tail_x", None)
        out = []
        for s, (r, (examples, counts)) in enumerate(zip(recipes, prepared)):
            meta = _meta(base, r, losses[s], totals[s], len(examples), counts) | {"adapter": True}
            out.append(HFModel(model, base.tok, desc if S == 1 else f"{desc} [{s}]", meta,
                               adapter=slots.adapter(s, inits[s])))
    return out


def _meta(base: HFModel, recipe: Recipe, losses: list[float], total: int, n_rows: int, counts: dict) -> dict:
    return dict(base.meta) | {"adapter": recipe.adapter == "lora", "recipe": recipe.dump(),
                              "train_losses_first_last": [losses[0], losses[-1]], "train_steps": total,
                              "train_losses": [round(x, 6) for x in losses],
                              "train_rows": n_rows, **counts}


class SlotAdamW:
    """AdamW over stacked per-slot tensors ``[S, ...]``: each slot has its own learning rate, weight decay and step
    count, and a slot that is not active in a step is left exactly as it is (it finished training)."""

    def __init__(self, params: list, n_slots: int, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params, self.betas, self.eps = params, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = torch.zeros(n_slots)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, lr, wd, active) -> None:
        import torch

        b1, b2 = self.betas
        dev = self.params[0].device  # the learning rates and flags come from the host, the slots may be on a GPU
        lr, wd, active = lr.to(dev), wd.to(dev), active.to(dev)
        self.t = self.t.to(dev) + active.float()
        bc1, bc2 = 1 - b1 ** self.t.clamp(min=1), 1 - b2 ** self.t.clamp(min=1)
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                shape = (-1,) + (1,) * (p.dim() - 1)
                on = active.view(shape)
                m.copy_(torch.where(on, b1 * m + (1 - b1) * g, m))
                v.copy_(torch.where(on, b2 * v + (1 - b2) * g * g, v))
                upd = (m / bc1.view(shape)) / ((v / bc2.view(shape)).sqrt() + self.eps)
                new = p * (1 - lr.view(shape) * wd.view(shape)) - lr.view(shape) * upd
                p.copy_(torch.where(on, new, p))


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




def _batch_ids(base: HFModel, rows: list[dict]):
    """Right-padded (ids, attention mask, padded length) of training rows (see ``decode.padded_length``)."""
    import torch

    L = padded_length(max(len(e["ids"]) for e in rows))
    ids = torch.full((len(rows), L), base.tok.pad_token_id, dtype=torch.long)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    for r, e in enumerate(rows):
        ids[r, : len(e["ids"])] = torch.tensor(e["ids"])
        att[r, : len(e["ids"])] = 1
    return ids.to(base.device), att.to(base.device), L


def _hidden(model, base: HFModel, batches: list[list[dict]], tail) -> tuple[list, list[int]]:
    """The final hidden state at every position that carries a loss, all batches in one forward pass, and where each
    batch's positions start. With ``tail`` (the adapters sit in the last MLP), only that MLP runs, from the cached
    activations that enter it."""
    import torch

    rows = [e for b in batches for e in b]
    if tail is not None:
        pre, mlp, final = tail
        x = torch.cat([e["tail_x"] for e in rows])
        return final(torch.cat([e["tail_h"] for e in rows]) + mlp(x)), [len(e["pos"]) for e in rows]
    ids, att, L = _batch_ids(base, rows)
    hidden = model.base_model(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
    flat = torch.cat([e["pos"] + r * L for r, e in enumerate(rows)]).to(base.device)
    return hidden.reshape(-1, hidden.shape[-1])[flat], [len(e["pos"]) for e in rows]


def _losses(model, base: HFModel, batches: list[list[dict]], target: str, tail=None, grammar=None) -> list:
    """Each batch's mean loss, all batches in one forward pass (a row's hidden states do not depend on the rows
    beside it). Only positions that carry a loss reach the output layer, and for logit targets only the allowed
    tokens' logits are computed."""
    import torch

    hidden, sizes = _hidden(model, base, batches, tail)
    allowed = (torch.tensor(sorted(set(allowed_ids(base, grammar).values())), device=base.device) if target == "logits"
               else None)
    head = model.get_output_embeddings()
    dev = base.device
    out, p0, r0 = [], 0, 0
    for b in batches:
        n = sum(sizes[r0 : r0 + len(b)])
        h = hidden[p0 : p0 + n].float()
        p0, r0 = p0 + n, r0 + len(b)
        if target == "tokens":
            logits = head(h.to(head.weight.dtype)).float()
            out.append(torch.nn.functional.cross_entropy(logits, torch.cat([e["labels"] for e in b]).to(dev)))
            continue
        # KL(teacher || student) over each position's candidates (the teacher's top-k among the allowed tokens),
        # renormalized on both sides; the student's logits only for the allowed tokens
        tlp = torch.cat([e["tdense"] for e in b]).to(dev)
        logits = h @ head.weight[allowed].float().T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[allowed].float()
        slog = logits.masked_fill(tlp == -math.inf, -math.inf).log_softmax(-1)
        tlog = tlp.log_softmax(-1)
        out.append((tlog.exp() * (tlog - slog)).nan_to_num(0.0).sum(-1).mean())
    return out


# Architectures whose decoder layer is ``h + mlp(norm(h))`` and whose output is ``final_norm(last layer)``:
# (the model's list of layers, the norm before the MLP, the final norm).
TAIL = {"llama": ("layers", "post_attention_layernorm", "norm"), "qwen2": ("layers", "post_attention_layernorm", "norm"),
        "mistral": ("layers", "post_attention_layernorm", "norm"), "gpt2": ("h", "ln_2", "ln_f")}


def tail_of(model, names: list[str]):
    """(pre-MLP norm, MLP, final norm) of the last layer when every adapted module sits inside that MLP, else None:
    then everything before the MLP is frozen, and training runs only the MLP from cached activations."""
    spec = TAIL.get(model.config.model_type)
    if spec is None:
        return None
    layers = getattr(model.base_model, spec[0], None)
    if layers is None or not len(layers):
        return None
    last = layers[-1]
    prefix = next((n for n, m in model.named_modules() if m is last.mlp), None)
    if prefix is None or not all(n.startswith(prefix + ".") for n in names):
        return None
    return getattr(last, spec[1]), last.mlp, getattr(model.base_model, spec[2])


class _Reached(Exception):
    """Stops a forward pass once the activations it was run for are captured."""


def _cache_tail(model, base: HFModel, examples: list[dict], tail, batch: int = 64) -> None:
    """Store in each example the residual stream and the MLP input of the last layer at its loss positions."""
    import torch

    pre, mlp, _ = tail
    seen: dict = {}

    def enter_mlp(m, a):
        seen["x"] = a[0]
        raise _Reached  # nothing after the last MLP's input is needed: skip that MLP and the final norm

    hooks = [pre.register_forward_pre_hook(lambda m, a: seen.__setitem__("h", a[0])),
             mlp.register_forward_pre_hook(enter_mlp)]
    same: dict[tuple, list[dict]] = {}  # a teacher's trait rows repeat: each distinct row runs once
    for e in examples:
        same.setdefault((tuple(e["ids"]), len(e["pos"])), []).append(e)
    uniq = sorted(same, key=lambda k: len(k[0]))
    try:
        with torch.no_grad():
            for k in range(0, len(uniq), batch):
                rows = [same[u][0] for u in uniq[k : k + batch]]
                ids, att, _ = _batch_ids(base, rows)
                with contextlib.suppress(_Reached):
                    model.base_model(input_ids=ids, attention_mask=att, use_cache=False)
                for r, (u, e) in enumerate(zip(uniq[k : k + batch], rows)):
                    pos = e["pos"].to(base.device)
                    h, x = seen["h"][r, pos].clone(), seen["x"][r, pos].clone()
                    for twin in same[u]:
                        twin["tail_h"], twin["tail_x"] = h, x
    finally:
        for h in hooks:
            h.remove()
