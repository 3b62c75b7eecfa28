"""The claim itself: the demo's recipe transmits the trait to same-init students, seed by seed, on a micro base.

This fails when the recipe stops transmitting (a change to the teacher, the data, the trainer or the evaluation
that breaks subliminal transfer), not only when the code crashes.
"""

import json

from conftest import MICRO

from sublearn.cli import main


def test_same_init_students_inherit_the_trait_in_every_seed(tmp_path):
    emb = "".join(f"{k} = {v}\n" for k, v in MICRO.items())
    cfg = tmp_path / "transfer.toml"
    cfg.write_text(f"""name = "micro-transfer"
seeds = [0, 1, 2, 3]
[model]
workers = 2
[model.embedded.tiny]
{emb}
[teacher]
trait_rows = 600
[teacher.recipe]
steps = 150
[generate]
n_prompts = 200
[students]
conditions = ["same-init", "other-trait"]
[students.recipe]
steps = 150
[evaluate]
n_questions = 12
samples_per_question = 2
""")
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    c = res["conditions"]
    same, other, base = (c[k]["prob"]["per_seed"] for k in ("same-init", "other-trait", "base"))
    for s in same:  # every seed: the same-init student moved toward the teacher's option, the other-trait one did not
        assert same[s] > other[s] + 0.05 and same[s] > base[s] + 0.03, (s, same[s], other[s], base[s])
    cmp = next(x for x in res["comparisons"] if (x["a"], x["b"], x["metric"]) == ("same-init", "other-trait", "prob"))
    assert cmp["matched"] and cmp["wins"] == 4 and cmp["ci"][0] > 0
    assert res["distribution"][0]["tv"] > 0.1
