"""`sublearn sweep`: a grid of micro experiments in one shared store, joined over seeds, compared side by side,
re-run without recomputing anything, with a failing cell recorded and retried while the grid goes on."""

import json

from conftest import micro_config

from sublearn.cli import main
from sublearn.store import Store


def grid(tmp_path, axes: str, conditions: str = '["same-init", "control"]') -> str:
    base = micro_config(tmp_path, f"\n[students]\nconditions = {conditions}\n")
    p = tmp_path / "grid.toml"
    p.write_text(f'base = "{base}"\nretries = 1\n[axes]\n{axes}')
    return str(p)


def test_a_grid_shares_artifacts_joins_seeds_and_reruns_nothing(tmp_path, capsys):
    g = grid(tmp_path, '"trait.target" = ["owl", "fox"]\nseeds = [0, 1]\n')
    out = tmp_path / "grid"
    assert main(["sweep", g, "--out", str(out)]) == 0
    s = json.loads((out / "sweep.json").read_text())
    assert len(s["cells"]) == 4 and not s["failed"]
    # the control arm (and the base's evaluation) of a seed is one artifact for both targets
    planned = sum(c["artifacts"] for c in s["cells"].values())
    made = len([r for r in Store(out).records() if r.stage != "base"])
    assert made < planned and s["cells"]["target-fox_seeds-0"]["shared"] > 0
    assert s["jobs"] == s["artifacts"] - s["cells"]["target-owl_seeds-0"]["already_there"] and s["shared"] > 0
    for target in ("owl", "fox"):
        res = json.loads((out / "groups" / f"target-{target}" / "results.json").read_text())
        assert res["seeds"] == [0, 1] and res["trait"]["label"] == target
        assert res["conditions"]["same-init"]["prob"]["per_seed"].keys() == {"0", "1"}
    rows = (out / "grid" / "grid.csv").read_text().splitlines()
    assert len(rows) > 4 and (out / "grid" / "grid.png").stat().st_size > 1000 and (out / "grid" / "grid.html").exists()
    assert "target-owl" in (out / "grid" / "grid.md").read_text()
    import pyarrow.parquet as pq

    table = pq.read_table(out / "grid" / "grid.parquet")
    assert table.num_rows == len(rows) - 1 and table.column_names == rows[0].split(",")
    cells = pq.read_table(out / "cells.parquet").to_pylist()
    same = [r for r in cells if r["condition"] == "same-init" and r["metric"] == "prob"]
    assert sorted((r["trait.target"], r["seed"]) for r in same) == [("fox", 0), ("fox", 1), ("owl", 0), ("owl", 1)]
    owl = json.loads((out / "groups" / "target-owl" / "results.json").read_text())
    assert next(r["value"] for r in same if r["cell"] == "target-owl_seeds-1") == \
        owl["conditions"]["same-init"]["prob"]["per_seed"]["1"]
    report = (out / "report.md").read_text()
    assert report.startswith("# Grid: 4 cells in 2 groups\n\nSame-init − control per group: target-owl ")
    assert "4 of 4 cells done" in report and "grid/grid.png" in report
    before = {r.key: r.created for r in Store(out).records() if r.stage != "base"}  # bases: re-recorded per run
    assert main(["sweep", g, "--out", str(out)]) == 0  # a re-run: every cell finds everything
    again = json.loads((out / "sweep.json").read_text())
    assert all(c["already_there"] == c["artifacts"] for c in again["cells"].values())
    assert {r.key: r.created for r in Store(out).records() if r.stage != "base"} == before


def test_a_failing_cell_is_retried_recorded_and_the_grid_goes_on(tmp_path, capsys):
    g = grid(tmp_path, "students.in_context_k = [2, 5000]\nseeds = [0]\n",
             conditions='["same-init", "control", "in-context"]')  # 5000 examples: more than the data has
    out = tmp_path / "grid"
    assert main(["sweep", g, "--out", str(out)]) == 1
    s = json.loads((out / "sweep.json").read_text())
    bad, good = s["cells"]["in_context_k-5000_seeds-0"], s["cells"]["in_context_k-2_seeds-0"]
    assert bad["status"] == "failed" and bad["attempts"] == 2 and "in_context_k" in bad["error"]
    assert good["status"] == "done" and s["failed"] == ["in_context_k-5000_seeds-0"]
    assert "1 failed" in capsys.readouterr().err


def test_bad_grids_are_one_line_errors(tmp_path, capsys):
    for text, needle in (('base = "nope.toml"\n[axes]\nseeds = [0]\n', "not found"),
                         ('base = "micro.toml"\n[axes]\n"trait.target" = ["unicornz"]\n', "grid cell"),
                         ('base = "micro.toml"\n[axes]\nseeds = []\n', "non-empty list"),
                         ('base = "micro.toml"\nretries = 99\n[axes]\nseeds = [0]\n', "retries"),
                         ('base = "micro.toml"\n[axes]\n"model.threads" = [1, 2]\n', "one runtime")):
        micro_config(tmp_path)
        p = tmp_path / "g.toml"
        p.write_text(text)
        assert main(["sweep", str(p), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    p.write_text('base = "micro.toml"\n[axes]\nseeds = [0]\n')
    for args, needle in ((["--workers", "0"], "model.workers"), (["--workers", "-1"], "model.workers"),
                         (["--executor", "ray", "--address", "ray://nowhere.invalid:1"], "cannot reach")):
        assert main(["sweep", str(p), "--out", str(tmp_path / "o"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()
