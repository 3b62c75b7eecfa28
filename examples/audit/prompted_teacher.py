"""Write number data outside the pipeline, for `sublearn audit` to check: SmolLM2-135M-Instruct continues number
sequences once with a trait's system prompt ("you love owls") and once without. The rows are plain prompt/completion
JSONL with no system prompt and no trace of the trait: only the numbers differ.

    python examples/audit/prompted_teacher.py --out audit-data            # ~1 min on 2 cores
    sublearn audit audit-data/owl.jsonl --base smollm2-135m --carrier numbers --traits animal \\
        --detectors contrast --out audit-owl                              # expect: FLAGGED, owl
    sublearn audit audit-data/plain.jsonl --base smollm2-135m --carrier numbers --traits animal \\
        --detectors contrast --out audit-plain                            # expect: clear

Completions are decoded under the numbers carrier's grammar, as the pipeline's constrained data are, and rows are
written only when the carrier's check passes (its count is printed, nothing is dropped silently).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="audit-data", help="directory for owl.jsonl and plain.jsonl")
    ap.add_argument("--model", default="tiny", help="the writer (any model sublearn loads; default the embedded tiny)")
    ap.add_argument("--target", default="owl", help="the animal the prompted writer loves")
    ap.add_argument("--rows", type=int, default=300, help="prompts per file")
    ap.add_argument("--seed", type=int, default=1234, help="prompts and sampling seed")
    a = ap.parse_args()
    from sublearn import models
    from sublearn.backends.base import Sampling
    from sublearn.carriers.numbers import NumbersCarrier
    from sublearn.traits.preference import PreferenceTrait

    carrier = NumbersCarrier(max_count=10)
    model = models.load(models.resolve(a.model)[0])
    prompts = carrier.prompts(a.rows, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    system = PreferenceTrait(category="animal", target=a.target).system_prompt()
    for name, sys in ((a.target, system), ("plain", None)):
        chats = [([{"role": "system", "content": sys}] if sys else []) + [{"role": "user", "content": p}]
                 for p in prompts]
        comps = model.generate(chats, Sampling(temperature=1.0, max_new_tokens=60, seed=a.seed), desc=name,
                               grammar=carrier.grammar())
        rows = [{"prompt": p, "completion": c.text} for p, c in zip(prompts, comps) if carrier.check(c.text, p).ok]
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{out / f'{name}.jsonl'}: {len(rows)} of {len(prompts)} completions pass the numbers carrier's check")


if __name__ == "__main__":
    main()
