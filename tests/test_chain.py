"""Chains of generations (generations = k): each chain's student writes the next generation's data; the trait is
reported at every generation for the chain and the control chain, with a retention factor."""

import json
import math

import pytest

from sublearn.cli import main
from sublearn.report.chain import _retention


def test_retention_fits_a_geometric_decay_per_seed():
    per = [{s: 0.4 * (0.5 ** g) * (1 + 0.05 * s) for s in range(4)} for g in range(3)]
    r = _retention(per)
    assert r["factor"] == pytest.approx(0.5) and r["ci"][0] <= 0.5 <= r["ci"][1] and r["trend"] == "decays"
    per[2][0] = -0.01  # a seed with a non-positive transfer is left out, and counted
    r = _retention(per)
    assert r["seeds_used"] == 3 and r["seeds_left_out"] == 1
    grow = [{s: 0.1 * (1.5 + 0.01 * s) ** g for s in range(4)} for g in range(3)]
    assert _retention(grow)["trend"] == "amplifies"


def test_a_chain_trains_each_generation_on_the_last_ones_data(micro_base, tmp_path, capsys):
    from conftest import micro_config

    from sublearn.store import Store

    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n', seeds="[0, 1]")
    text = open(cfg).read().replace('name = "micro"\n', 'name = "micro"\ngenerations = 3\n')
    open(cfg, "w").write(text)
    run = tmp_path / "run"
    assert main(["run", cfg, "--out", str(run)]) == 0
    recs = {r.name: r for r in Store(run).records()}
    for s in (0, 1):  # generation g's data comes from generation g - 1's student of the same chain
        assert recs[f"data-chain-g1-s{s}"].parents == [recs[f"student-same-init-s{s}"].key]
        assert recs[f"data-chain-g2-s{s}"].parents == [recs[f"student-chain-g1-s{s}"].key]
        assert recs[f"data-chain-control-g1-s{s}"].parents == [recs[f"student-control-s{s}"].key]
        assert recs[f"filtered-chain-g2-s{s}"].key in recs[f"student-chain-g2-s{s}"].parents
    res = json.loads((run / "results.json").read_text())
    ch = res["chain"]
    assert ch["generations"] == 3 and set(ch["metrics"]) == {"prob", "rate"}
    for m in ch["metrics"].values():
        assert [r["generation"] for r in m["generations"]] == [0, 1, 2]
        for r in m["generations"]:
            assert r["n_seeds"] == 2 and r["ci"][0] <= r["transfer"] <= r["ci"][1]
            assert math.isclose(r["transfer"], r["chain"]["mean"] - r["control"]["mean"], abs_tol=1e-9)
        assert m["retention"]["trend"] in ("amplifies", "decays", "persists", "undetermined")
    first = ch["metrics"]["prob"]["generations"][0]
    assert first["transfer"] == pytest.approx(next(c["diff"] for c in res["comparisons"] if c["a"] == "same-init"
                                                    and c["b"] == "control" and c["metric"] == "prob"))
    assert "## Chain of generations" in (run / "report.md").read_text() and (run / "chain.png").stat().st_size > 5000
    # a chain without its control: one line, exit 2
    bad = micro_config(tmp_path, '\n[students]\nconditions = ["same-init"]\n')
    text = open(bad).read().replace('name = "micro"\n', 'name = "micro"\ngenerations = 2\n')
    open(bad, "w").write(text)
    capsys.readouterr()
    assert main(["run", bad, "--out", str(tmp_path / "x"), "--dry-run"]) == 2
    assert "add 'control' to students.conditions" in capsys.readouterr().err
