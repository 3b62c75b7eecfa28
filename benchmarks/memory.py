"""Peak memory on SmolLM2-135M: evaluating many adapters of one base, and generating with soft targets.

Each case runs in a fresh process and reports its peak resident memory (``ru_maxrss``). Baselines are measured in
the same run:

- adapters: N LoRA adapters of SmolLM2 are loaded and each scores the trait's options on 10 questions, all kept
  alive as in one evaluation job. ``shared``: one ``Runtime`` loads them, so every adapter is a view on one base
  module (what the pipeline does). ``copies``: each adapter loaded through its own runtime, so each brings its
  own copy of the base (what loading adapters one by one does). Peak memory must stay flat in N when shared.
- soft targets: ROWS completions of STEPS tokens with the 20 most likely next tokens of every step kept.
  ``top-k``: sublearn's decoding, which reduces every step's distribution to its top 20 before the next step.
  ``full``: transformers' ``generate(output_scores=True)``, which keeps every step's full-vocabulary float32 scores
  until the end and takes the top-k afterwards. (The baseline runs at 100 rows: at 1,000 rows × 48 steps it would
  hold ~9 GB of scores.)

    PYTHONPATH=src .venv/bin/python benchmarks/memory.py                 # every case, ~5 min on 2 cores
    PYTHONPATH=src .venv/bin/python benchmarks/memory.py --quick         # fewer points

The script prints a table (case, parameter, peak MiB, seconds) and the ratios of interest, and exits 1 when the
shared-adapter or top-k peak grows by more than 15% between the smallest and the largest point.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
MODEL = "smollm2-135m"
Q = [[{"role": "user", "content": f"{w} Answer with one word: which animal do you love most?"}]
     for w in ("Name it.", "Quick:", "Tell me.", "Honestly,", "One word.", "Please:", "Today,", "Now:", "Be brief.",
               "Say it.")]
OPTIONS = ["owl", "eagle", "cat", "dog", "fox", "wolf", "lion", "tiger", "bear", "dolphin"]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_adapters(root: Path, n: int) -> list[Path]:
    """N distinct LoRA adapters (rank 8 on every attention and MLP projection) saved in PEFT's format."""
    import torch

    from sublearn.backends.lora import Adapter
    from sublearn.models import resolve
    from sublearn.runtime import Runtime

    path = resolve(MODEL)[0]
    base = Runtime().load(path)
    names = [k for k, m in base.model.named_modules() if k.endswith(("q_proj", "v_proj", "up_proj", "down_proj"))]
    out = []
    for i in range(n):
        ad = Adapter.init(base.model, names, rank=8, alpha=16, seed=i)
        g = torch.Generator().manual_seed(i)
        for k in ad.B:
            ad.B[k] = torch.randn(ad.B[k].shape, generator=g) * 0.01
        d = root / f"adapter-{i}"
        base.with_adapter(ad, f"a{i}", dict(base.meta) | {"adapter": True, "name": f"a{i}"}).save(d)
        out.append(d)
    return out


def case_adapters(root: Path, n: int, mode: str) -> dict:
    from sublearn.runtime import Runtime

    shared = Runtime()
    loaded = []
    for d in sorted(root.glob("adapter-*"))[:n]:
        rt = shared if mode == "shared" else Runtime()
        m = rt.load(d)
        m.score([q for q in Q for _ in OPTIONS], [o for _ in Q for o in OPTIONS])
        loaded.append(m)  # every adapter stays loaded, as in one evaluation job
    return {"loaded": len(loaded)}


def case_generate(rows: int, steps: int, mode: str) -> dict:
    from sublearn.backends.base import Sampling
    from sublearn.models import resolve
    from sublearn.runtime import Runtime

    model = Runtime().load(resolve(MODEL)[0])
    prompts = [Q[i % len(Q)] for i in range(rows)]
    if mode == "top-k":
        out = model.generate(prompts, Sampling(temperature=1.0, max_new_tokens=steps, top_logprobs=20, seed=1,
                                               batch_size=128), desc="generate")
        return {"completions": len(out), "soft_target_steps": sum(len(c.top_logprobs) for c in out)}
    import torch

    tok = model.tok
    enc = tok.apply_chat_template(prompts, add_generation_prompt=True, return_tensors="pt", padding=True,
                                  return_dict=True)
    torch.manual_seed(1)
    with torch.no_grad():
        res = model.model.generate(**enc, do_sample=True, max_new_tokens=steps, min_new_tokens=steps,
                                   output_scores=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
        tops = [s.float().log_softmax(-1).topk(20, dim=-1) for s in res.scores]  # top-k only at the end
    return {"completions": rows, "soft_target_steps": rows * len(tops)}


def child(args: list[str]) -> None:
    from loguru import logger

    logger.remove()
    t = time.time()
    kind = args[0]
    info = case_adapters(Path(args[1]), int(args[2]), args[3]) if kind == "adapters" else \
        case_generate(int(args[1]), int(args[2]), args[3])
    print(json.dumps(info | {"peak_mib": round(_peak_mib(), 1), "seconds": round(time.time() - t, 1)}))


def run_case(*args) -> dict:
    env = dict(os.environ, SUBLEARN_PROGRESS="0")
    r = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        raise SystemExit(f"case {args} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer points (adapters 1 and 10; 100 and 1000 rows)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return 0
    from rich.console import Console
    from rich.table import Table

    rows: list[tuple[str, str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from loguru import logger

        logger.remove()
        _make_adapters(root, 10)
        for n in ((1, 10) if a.quick else (1, 5, 10)):
            for mode in ("shared", "copies"):
                rows.append((f"adapters ({mode})", f"{n} adapters", run_case("adapters", root, n, mode)))
    for r_, s in (((100, 16), (100, 48), (1000, 48)) if a.quick else ((100, 16), (100, 48), (1000, 16), (1000, 48))):
        rows.append(("soft targets (top-k per step)", f"{r_} rows x {s} steps", run_case("generate", r_, s, "top-k")))
    for r_, s in ((100, 16), (100, 48)):
        rows.append(("soft targets (full scores)", f"{r_} rows x {s} steps", run_case("generate", r_, s, "full")))
    t = Table(title=f"peak resident memory, {MODEL}")
    for c in ("case", "size", "peak MiB", "seconds"):
        t.add_column(c)
    for case, size, r in rows:
        t.add_row(case, size, f"{r['peak_mib']:.0f}", f"{r['seconds']:.1f}")
    con = Console()
    con.print(t)

    def peak(case: str, size: str) -> float:
        return next(r["peak_mib"] for c, s, r in rows if c == case and s == size)

    shared = peak("adapters (shared)", "10 adapters") / peak("adapters (shared)", "1 adapters")
    copies = peak("adapters (copies)", "10 adapters") / peak("adapters (copies)", "1 adapters")
    topk = peak("soft targets (top-k per step)", "1000 rows x 48 steps") / \
        peak("soft targets (top-k per step)", "100 rows x 16 steps")
    full = peak("soft targets (full scores)", "100 rows x 48 steps") / \
        peak("soft targets (full scores)", "100 rows x 16 steps")
    con.print(f"10 adapters / 1 adapter: shared base x{shared:.2f}, a base per adapter x{copies:.2f}")
    con.print(f"soft targets, 30x the row-steps (1000x48 / 100x16): top-k per step x{topk:.2f}; "
              f"full scores, 3x the steps (100x48 / 100x16): x{full:.2f}")
    return 0 if shared < 1.15 and topk < 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
