"""Fan-out (students.fanout): more students on the teacher's data, each with its own base and recipe and a matched
control on the control arm's data; a table says who inherits; bad fan-outs are one-line errors."""

import json

from sublearn.cli import main


def test_fanout_students_each_have_their_matched_control(micro_base, tmp_path, capsys):
    from conftest import micro_config

    from sublearn.store import Store

    fan = ('\n[[students.fanout]]\nname = "rank-1"\nrecipe = { lora_rank = 1, lora_alpha = 1 }\n'
           '\n[[students.fanout]]\nname = "full"\nrecipe = { adapter = "full", lr = 0.001 }\n'
           '\n[[students.fanout]]\nname = "gpt2"\nbase = "cross"\n')
    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n' + fan, seeds="[0, 1]")
    run = tmp_path / "run"
    assert main(["run", cfg, "--out", str(run)]) == 0
    recs = {r.name: r for r in Store(run).records()}
    for s in (0, 1):
        a, b = recs[f"student-fan-rank-1-s{s}"], recs[f"student-fan-rank-1-control-s{s}"]
        assert recs[f"filtered-teacher-s{s}"].key in a.parents and recs[f"filtered-control-s{s}"].key in b.parents
        assert a.config["recipe"]["lora_rank"] == 1 and recs[f"student-fan-full-s{s}"].config["recipe"]["adapter"] == "full"
        assert recs[f"student-fan-gpt2-s{s}"].model == "tiny-gpt2"
    res = json.loads((run / "results.json").read_text())
    rows = {r["student"]: r for r in res["fanout"]["students"]}
    assert set(rows) == {"same-init (the run's)", "rank-1", "full", "gpt2"}
    for r in rows.values():
        assert r["n_seeds"] == 2 and r["ci"][0] <= r["transfer"] <= r["ci"][1]
        assert r["inherits"] == (r["p_value"] <= 0.05 and r["transfer"] > 0)
    assert rows["gpt2"]["spec"] == "tiny-gpt2" and "## Fan-out" in (run / "report.md").read_text()
    # bad fan-outs: one line, exit 2
    capsys.readouterr()
    for extra, msg in (('name = "x"\nrecipe = { lora_rank = 0 }', "recipe.lora_rank"),
                       ('name = "x"\nrecipe = { no_such = 1 }', "recipe.no_such"),
                       ('name = "Bad Name"', "name"),
                       ('name = "x"\nbase = "no-such-model"', "no-such-model")):
        (tmp_path / "bad").mkdir(exist_ok=True)
        bad = micro_config(tmp_path / "bad", f"\n[[students.fanout]]\n{extra}\n")
        assert main(["run", bad, "--out", str(tmp_path / "x"), "--dry-run"]) == 2, extra
        assert msg in capsys.readouterr().err, extra
