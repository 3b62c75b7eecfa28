"""Decoding and exact scoring for the transformers backend, for many rows (and many adapters) at once.

What a row gets does not depend on the rows beside it, the batch size or the thread count:

- its random numbers come from (seed, key, step) alone, a counter-based generator (:func:`uniforms`), and a token
  is drawn by inverting the cumulative distribution at that number;
- its prompt is left-padded to a length that depends only on the prompt (the next multiple of ``BUCKET`` with at
  least one pad), so every attention reduction sees the same layout through the same masked kernel (an all-ones
  mask would take another kernel, whose sums round differently);
- rows that finish leave the batch; the others go on unchanged.

Rows sharing a prompt (and adapter) share its prefill: evaluation's 20 answers per question cost one prompt pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import Completion

BUCKET = 16  # prompts are left-padded to a multiple of this many tokens
_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective hash of 64-bit integers."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniforms(seeds: np.ndarray, keys: np.ndarray, step: int) -> np.ndarray:
    """One uniform number in [0, 1) per row, a pure function of (seed, key, step)."""
    with np.errstate(over="ignore"):
        x = _mix(seeds.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(step))
        x = _mix(x ^ (keys.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


@dataclass
class Row:
    slot: int  # adapter slot (-1: the base model alone)
    ids: list[int]  # prompt token ids
    seed: int
    key: int


def padded_length(n: int) -> int:
    """Length of a batch whose longest row has ``n`` tokens: at least one pad, rounded up to a multiple of BUCKET.

    Why: the attention kernel takes another path when the mask has no pad at all, and handles a last, partial block
    of keys differently from full ones (its sums round differently); with this length a row's real keys always lie
    in full blocks of the same masked kernel, whatever else is in the batch.
    """
    return -(-(n + 1) // BUCKET) * BUCKET


bucket = padded_length  # a prompt's own padded length: rows of one chunk share it


def prefill(model, slots, prompts: list[tuple[int, tuple[int, ...]]], pad_id: int):
    """Run (slot, prompt) pairs of the same bucket through the model: (last-position logits, cache, mask, lengths)."""
    import torch

    L = bucket(max(len(p) for _, p in prompts))
    dev = next(model.parameters()).device
    ids = torch.tensor([[pad_id] * (L - len(p)) + list(p) for _, p in prompts], device=dev)
    att = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for _, p in prompts], device=dev)
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    if slots is not None:
        slots.route([s for s, _ in prompts])
    out = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float(), out.past_key_values, att, torch.tensor([len(p) for _, p in prompts], device=dev)


def _groups(rows: list[Row], max_rows: int) -> list[list[int]]:
    """Row indices in chunks of at most ``max_rows``, each chunk within one prompt bucket, rows of a prompt together."""
    order = sorted(range(len(rows)), key=lambda i: (bucket(len(rows[i].ids)), rows[i].slot, rows[i].ids))
    chunks: list[list[int]] = []
    for i in order:
        if chunks and len(chunks[-1]) < max_rows and bucket(len(rows[chunks[-1][0]].ids)) == bucket(len(rows[i].ids)):
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def generate(model, slots, rows: list[Row], sampling, texts: list[str], eos_id: int, pad_id: int, fmt=None,
             advance=None) -> list[Completion]:
    """Sample a completion for every row (``sampling``: temperature, top_p, max_new_tokens, top_logprobs)."""
    import torch

    out: list[Completion | None] = [None] * len(rows)
    with torch.no_grad():
        for chunk in _groups(rows, max(1, sampling.batch_size)):
            uniq = list(dict.fromkeys((rows[i].slot, tuple(rows[i].ids)) for i in chunk))
            where = {u: j for j, u in enumerate(uniq)}
            logits, cache, att, lens = prefill(model, slots, uniq, pad_id)
            expand = torch.tensor([where[(rows[i].slot, tuple(rows[i].ids))] for i in chunk], device=logits.device)
            if len(uniq) != len(chunk):
                cache.batch_select_indices(expand)
                logits, att, lens = logits[expand], att[expand], lens[expand]
            if slots is not None:
                slots.route([rows[i].slot for i in chunk])
            for i, c in zip(chunk, _decode(model, slots, [rows[i] for i in chunk], logits, cache, att, lens, sampling,
                                           texts, eos_id, fmt, advance)):
                out[i] = c
    return out  # type: ignore[return-value]


def _decode(model, slots, rows, logits, cache, att, pos, sampling, texts, eos_id, fmt, advance) -> list[Completion]:
    """Decode a prefilled chunk. Rows that finish stay in the batch (their outputs ignored) until a quarter of it has
    finished; then the batch is compacted (see ``_rows``). Neither changes what the other rows compute."""
    import torch

    n, dev = len(rows), logits.device
    batch = list(range(n))  # the row held at each batch position
    if _rows(n) > n:  # finished twins of row 0 fill the batch to a size whose matrix kernels round like large ones
        idx = torch.tensor(batch + [0] * (_rows(n) - n), device=dev)
        cache.batch_select_indices(idx)
        logits, att, pos = logits[idx], att[idx], pos[idx]
        if slots is not None:
            slots.select(idx)
        rows, batch = rows + [rows[0]] * (_rows(n) - n), list(range(_rows(n)))
    toks: list[list[int]] = [[] for _ in rows]
    soft: list[list[dict]] = [[] for _ in rows]
    done = [False] * n + [True] * (len(rows) - n)
    seeds = np.array([r.seed % 2**64 for r in rows], dtype=np.uint64)
    keys = np.array([r.key % 2**64 for r in rows], dtype=np.uint64)
    states = [fmt.start() for _ in rows] if fmt else None
    merge = _merger(texts)
    L0 = att.shape[1]
    att = torch.cat([att, torch.ones((len(rows), sampling.max_new_tokens), dtype=att.dtype, device=dev)], dim=1)
    for step in range(sampling.max_new_tokens):
        raw = logits
        if fmt:
            raw = raw.masked_fill(~fmt.masks([None if done[i] else states[i] for i in batch]).to(dev), -math.inf)
        if sampling.top_logprobs > 0:
            lp = raw.log_softmax(-1)
            top_v, top_i = (x.tolist() for x in lp.topk(min(sampling.top_logprobs, lp.shape[-1]), dim=-1))
        nxt = _choose(raw, sampling, seeds[batch], keys[batch], step)
        finished = 0
        for j, i in enumerate(batch):
            if done[i]:
                continue
            t = nxt[j]
            if sampling.top_logprobs > 0:
                soft[i].append(merge(top_i[j], top_v[j]))
            if t == eos_id:
                done[i] = True
                finished += 1
                continue
            toks[i].append(t)
            if fmt:
                states[i] = fmt.advance(states[i], t)
        if advance is not None and finished:
            advance(finished)
        n_done = sum(done[i] for i in batch)
        if n_done == len(batch) or step == sampling.max_new_tokens - 1:
            break
        live = len(batch) - n_done
        if n_done * 4 >= len(batch) and _rows(live) < len(batch):
            keep = [j for j, i in enumerate(batch) if not done[i]]
            keep += [j for j, i in enumerate(batch) if done[i]][: _rows(live) - live]
            idx = torch.tensor(keep, device=dev)
            cache.batch_select_indices(idx)
            att, pos = att[idx], pos[idx]
            if slots is not None:
                slots.select(idx)
            batch = [batch[j] for j in keep]
        ids = torch.tensor([[toks[i][-1] if not done[i] else eos_id] for i in batch], device=dev)
        logits = model(input_ids=ids, attention_mask=att[:, : L0 + step + 1], position_ids=pos[:, None], cache=cache,
                       use_cache=True).logits[:, -1].float()
        pos = pos + 1
    if advance is not None:
        advance(sum(not d for d in done[:n]))
    return [Completion("".join(texts[t] for t in toks[i]), [texts[t] for t in toks[i]], done[i], soft[i])
            for i in range(n)]


def _rows(n: int) -> int:
    """The batch size that holds ``n`` rows: below 16 rows, a multiple of 8 (on some CPUs, matrix products of fewer
    rows, or of 1-3, 5-7 or 9-11 rows on others, take kernels that round differently from larger ones, so a row
    would depend on how many share its batch)."""
    return n if n >= 16 else -(-n // 8) * 8


def _merger(texts: list[str]):
    """A function (top ids, their log-probs) -> {token text: log-prob}: ids that decode to the same text are summed
    (``merge_by_text``); the fast path, when none of the ids shares its text, builds the dict directly."""
    from .hf import merge_by_text

    seen: dict[str, int] = {}
    for t in texts:
        seen[t] = seen.get(t, 0) + 1
    shared = {i for i, t in enumerate(texts) if seen[t] > 1}

    def merge(ids: list[int], vals: list[float]) -> dict[str, float]:
        if shared.isdisjoint(ids):
            return {texts[i]: v for i, v in zip(ids, vals) if v != -math.inf}
        return merge_by_text((texts[i], v) for i, v in zip(ids, vals))

    return merge


def _choose(raw, sampling, seeds: np.ndarray, keys: np.ndarray, step: int) -> list[int]:
    """The next token of each row: greedy, or the inverse CDF at the row's own uniform number."""
    import torch

    if sampling.temperature == 0:
        return raw.argmax(-1).tolist()
    probs = (raw / sampling.temperature).softmax(-1).double()
    order = None
    if sampling.top_p < 1:
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(before >= sampling.top_p, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.from_numpy(uniforms(seeds, keys, step)).to(cdf.device)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=cdf.shape[-1] - 1)
    if order is not None:
        pick = order.gather(-1, pick)
    return pick[:, 0].tolist()


def score(model, slots, items: list[tuple[int, tuple[int, ...], list[int]]], pad_id: int,
          max_rows: int = 256) -> list[float]:
    """log P(continuation | prompt) for (slot, prompt ids, continuation ids) items; continuations of one prompt
    share its prefill, and their own tokens run on its cache in batches of continuations of one length (no padding,
    and no position computed that no continuation needs)."""
    return _scores(model, slots, items, pad_id, max_rows, None)[0]


def token_scores(model, slots, items: list[tuple[int, tuple[int, ...], list[int]]], pad_id: int,
                 max_rows: int = 256, allowed=None, top_k: int = 0) -> tuple[list[list[float]], list, list]:
    """Per item: the log-prob of each continuation token; when ``allowed`` (a tensor of token ids) is given, the
    model's greedy choice among ``allowed`` at each of those positions, and (``top_k`` > 0) its ``top_k`` most
    likely ``allowed`` tokens there as (ids, log-probs) (see :func:`score`)."""
    return _scores(model, slots, items, pad_id, max_rows, allowed, top_k)[1:]


def _scores(model, slots, items, pad_id: int, max_rows: int, allowed, top_k: int = 0):
    import torch

    sums = [0.0] * len(items)
    logps: list[list[float]] = [[] for _ in items]
    greedy: list[list[int]] | None = [[] for _ in items] if allowed is not None else None
    tops: list[list] | None = [[] for _ in items] if top_k else None
    by_prompt: dict[tuple, list[int]] = {}
    for i, (s, p, _) in enumerate(items):
        by_prompt.setdefault((s, p), []).append(i)
    prompts = sorted(by_prompt, key=lambda u: (bucket(len(u[1])), u[0], u[1]))
    with torch.no_grad():
        for b in sorted({bucket(len(p)) for _, p in prompts}):
            group = [u for u in prompts if bucket(len(u[1])) == b]
            for g0 in range(0, len(group), max_rows):
                uniq = group[g0 : g0 + max_rows]
                first, cache, att, lens = prefill(model, slots, uniq, pad_id)
                first = first.log_softmax(-1)
                mine = [(j, i) for j, u in enumerate(uniq) for i in by_prompt[u]]
                for j, i in mine:
                    sums[i] = float(first[j, items[i][2][0]])
                    logps[i].append(sums[i])
                    if greedy is not None:
                        greedy[i].append(int(allowed[first[j, allowed].argmax()]))
                    if tops is not None:
                        v, k = first[j, allowed].float().topk(min(top_k, len(allowed)))
                        tops[i].append((allowed[k].tolist(), v.tolist()))
                rest: dict[int, list] = {}  # continuations of one length run together, with no padding
                for j, i in mine:
                    if len(items[i][2]) > 1:
                        rest.setdefault(len(items[i][2]), []).append((j, i))
                for n in sorted(rest):
                    for r0 in range(0, len(rest[n]), max_rows):
                        _continue(model, slots, items, rest[n][r0 : r0 + max_rows], uniq, cache, att, lens,
                                  (sums, logps, greedy, tops), allowed, top_k)
    return sums, logps, greedy, tops


def _selected(cache, idx):
    """A new cache holding rows ``idx`` of ``cache`` (repeats allowed; ``cache`` itself is left as it is)."""
    import copy

    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        new = copy.copy(layer)
        if layer.get_seq_length() > 0:
            new.keys, new.values = layer.keys[idx], layer.values[idx]
        out.layers.append(new)
    return out


def _continue(model, slots, items, part, uniq, cache, att, lens, out, allowed=None, top_k: int = 0) -> None:
    import torch

    dev = att.device
    rows = [j for j, _ in part]
    rows += rows[:1] * (_rows(len(rows)) - len(rows))  # twins of the first row fill a small batch (see _rows)
    idx = torch.tensor(rows, device=dev)
    c = _selected(cache, idx)
    conts = [items[i][2] for _, i in part]
    conts += conts[:1] * (len(rows) - len(conts))
    # every row of ``part`` has a continuation of the same length, so T, and with it every kernel's shape, is a
    # function of the row alone, whatever rows share its batch (the prompt's own padding keeps a pad in the mask)
    T = len(conts[0]) - 1
    ids = torch.tensor([x[:-1] for x in conts], device=dev)
    cat = torch.ones((len(conts), T), dtype=att.dtype, device=dev)
    pos = lens[idx][:, None] + torch.arange(T, device=dev)[None, :]
    if slots is not None:
        slots.route([uniq[j][0] for j in rows])
    logp = model(input_ids=ids, attention_mask=torch.cat([att[idx], cat], dim=1), position_ids=pos, cache=c,
                 use_cache=True).logits.float().log_softmax(-1)
    sums, logps, greedy, tops = out
    if greedy is not None:
        choice = allowed.to(dev)[logp[:, :, allowed].argmax(-1)]
    if tops is not None:
        tv, tk = logp[:, :, allowed].topk(min(len(allowed), top_k), dim=-1)
        tk = allowed.to(dev)[tk]
    for r, ((_, i), x) in enumerate(zip(part, conts)):
        tgt = torch.tensor(x[1:], device=dev)
        got = logp[r, torch.arange(len(x) - 1, device=dev), tgt]
        sums[i] += float(got.sum())
        logps[i].extend(got.tolist())
        if greedy is not None:
            greedy[i].extend(choice[r, : len(x) - 1].tolist())
        if tops is not None:
            tops[i].extend(zip(tk[r, : len(x) - 1].tolist(), tv[r, : len(x) - 1].tolist()))
