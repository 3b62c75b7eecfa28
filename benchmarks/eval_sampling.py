"""Evaluation sampling (many answers per question) against plain transformers code, measured in the same run.

Evaluation samples ``--samples`` answers to each of 48 questions. ``HFModel.generate`` templates and tokenizes
each distinct prompt once and prefills it once, copying its KV cache to the repeats; the baseline is a plain
``model.generate`` over the same left-padded batches, every row templated and prefilled on its own. Two prompt
kinds: the bare question, and the in-context condition's (3 number examples before it). Printed: seconds and the
speed ratio, and whether both sides sampled the same answers (same seed, same batches).

    PYTHONPATH=src .venv/bin/python benchmarks/eval_sampling.py --model tiny
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; must precede the torch import

import torch  # noqa: E402

from sublearn.backends.base import Sampling  # noqa: E402
from sublearn.carriers.numbers import format_numbers, make_prompts  # noqa: E402
from sublearn.models import load, resolve  # noqa: E402
from sublearn.traits import preference as pref  # noqa: E402


def plain_sample(m, chats, sampling: Sampling) -> list[str]:
    """A plain loop: the same batches and seeds as HFModel.generate, every row prefilled on its own."""
    out: list[str] = []
    gen = torch.Generator().manual_seed(sampling.seed)
    for s in range(0, len(chats), sampling.batch_size):
        batch = m.left_pad([m.prompt_ids(c) for c in chats[s : s + sampling.batch_size]])
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        with torch.no_grad():
            res = m.model.generate(**batch, do_sample=True, temperature=sampling.temperature, top_k=None, top_p=None,
                                   max_new_tokens=sampling.max_new_tokens, eos_token_id=m.eos_id,
                                   pad_token_id=m.tok.pad_token_id)
        texts = m.token_texts()
        for row in res[:, batch["input_ids"].shape[1] :].tolist():  # the answer's tokens up to EOS, as sublearn keeps them
            out.append("".join(texts[i] for i in row[: row.index(m.eos_id) if m.eos_id in row else len(row)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="a model spec (embedded name, GGUF name, path)")
    ap.add_argument("--samples", type=int, default=20, help="answers sampled per question")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = load(resolve(args.model)[0])
    ctx = []
    for p in make_prompts(3, 0):
        ctx += [{"role": "user", "content": p.text},
                {"role": "assistant", "content": format_numbers(p.seed_numbers[:3], p)}]
    sampling = Sampling(temperature=1.0, max_new_tokens=8, batch_size=256, seed=10_000)
    for kind, head in (("question", []), ("in-context", ctx)):
        chats = [head + [{"role": "user", "content": q}] for q in pref.questions("animal")
                 for _ in range(args.samples)]
        m.generate(chats[: sampling.batch_size], sampling)  # warm up both paths
        plain_sample(m, chats[: sampling.batch_size], sampling)
        t = time.perf_counter()
        ours = [c.text for c in m.generate(chats, sampling)]
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        base = plain_sample(m, chats, sampling)
        t_base = time.perf_counter() - t
        same = sum(a == b for a, b in zip(ours, base))
        print(f"{args.model} {kind:10s} {len(chats)} samples: plain {t_base:.2f} s, sublearn {t_ours:.2f} s "
              f"({t_base / t_ours:.2f}x); identical answers {same}/{len(chats)}")


if __name__ == "__main__":
    main()
