"""Dilution (students.dilution): diluted datasets hold the stated shares of teacher and clean rows, nested across
percents, in both modes; their same-init students are compared with the control student per seed; bad settings are
one-line errors."""

import json
from pathlib import Path

from sublearn.cli import main
from sublearn.filter.mix import counts


def test_counts_follow_the_modes():
    assert counts("rows", 25, 400, 380, 10) == (95, 285)  # the smaller arm's size, a quarter of it teacher rows
    t = [counts("teacher-rows", x, 400, 380, 10) for x in (10, 50, 90)]
    assert {k for k, _ in t} == {42} and [m for _, m in t] == [378, 42, 5]  # T = floor(380 * 10 / 90)


def test_diluted_students_are_measured_against_control(micro_base, tmp_path, capsys):
    from conftest import micro_config

    from sublearn.store import Store

    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\ndilution = [25, 75]\n',
                       seeds="[0, 1]")
    run = tmp_path / "run"
    assert main(["run", cfg, "--out", str(run)]) == 0
    recs = {r.name: r for r in Store(run).records()}
    for s in (0, 1):
        n_t = len((Path(recs[f"filtered-teacher-s{s}"].path) / "kept.jsonl").read_text().splitlines())
        n_c = len((Path(recs[f"filtered-control-s{s}"].path) / "kept.jsonl").read_text().splitlines())
        picked = {}
        for mode in ("rows", "teacher-rows"):
            for x in (25, 75):
                d = Path(recs[f"mixed-{mode}-{x}-s{s}"].path)
                st = json.loads((d / "stats.json").read_text())
                meta = [json.loads(line) for line in (d / "kept.meta.jsonl").read_text().splitlines()]
                assert (st["teacher_rows"], st["clean_rows"]) == counts(mode, x, n_t, n_c, 25)
                assert sum(m["source"] == "teacher" for m in meta) == st["teacher_rows"] and len(meta) == st["kept"]
                picked[mode, x] = {m["source_row"] for m in meta if m["source"] == "teacher"}
        assert picked["rows", 25] < picked["rows", 75]  # nested: a lower percent's teacher rows are a subset
        assert picked["teacher-rows", 25] == picked["teacher-rows", 75]  # the same teacher rows at every percent
    res = json.loads((run / "results.json").read_text())
    dil = res["dilution"]
    assert set(dil["modes"]) == {"rows", "teacher-rows"} and dil["full"]["n_seeds"] == 2
    for m in dil["modes"].values():
        assert [lv["percent"] for lv in m["levels"]] == [25, 75]
        for lv in m["levels"]:
            assert lv["n_seeds"] == 2 and len(lv["per_seed"]) == 2 and lv["ci"][0] <= lv["transfer"] <= lv["ci"][1]
    assert "## Dilution" in (run / "report.md").read_text() and (run / "dilution.png").stat().st_size > 5000
    assert "dilute-rows-25" not in res["conditions"]  # the curve is its own section, not a condition
    # every training job keeps its loss curve, and the report draws them
    student = json.loads((Path(recs["student-dilute-rows-25-s0"].path) / "student.json").read_text())
    assert len(student["train_losses"]) == student["train_steps"] > 1
    assert (run / "losses.png").stat().st_size > 5000 and "## Training" in (run / "report.md").read_text()
    # bad settings: one line, exit 2
    capsys.readouterr()
    for extra, msg in (('conditions = ["same-init"]\ndilution = [25]', "add \\\"control\\\""),
                       ("dilution = [0, 50]", "must be 1-99")):
        (tmp_path / "bad").mkdir(exist_ok=True)
        bad = micro_config(tmp_path / "bad", f"\n[students]\n{extra}\n")
        assert main(["run", bad, "--out", str(tmp_path / "x"), "--dry-run"]) == 2
        assert msg.replace("\\", "") in capsys.readouterr().err
