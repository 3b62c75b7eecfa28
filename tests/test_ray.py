"""The ray executor on a real local Ray instance: a small grid makes exactly the artifacts and results the local
executor makes, every job a Ray task; an unreachable cluster and a missing executor are one-line errors."""

import json

import pytest
from conftest import micro_config

from sublearn.cli import main
from sublearn.store import Store

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    import os

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"SUBLEARN_CACHE": os.environ["SUBLEARN_CACHE"]}})
    yield
    ray.shutdown()


def _grid(tmp_path, name: str) -> str:
    d = tmp_path / name
    d.mkdir()
    base = micro_config(d, '\n[students]\nconditions = ["same-init", "control"]\n', model="workers = 2")
    p = d / "grid.toml"
    p.write_text(f'base = "{base}"\n[axes]\n"trait.target" = ["owl", "fox"]\nseeds = [0, 1]\n')
    return str(p)


def _made(out) -> dict[str, dict]:
    """Every artifact's files and their sha256, by artifact key (bases are the shared cache's)."""
    store = Store(out)
    return {r.key: {f: m[2] for f, m in json.loads((store.path(r.stage, r.key) / ".done").read_text())
                    ["files"].items()} for r in store.records() if r.stage != "base"}


def test_a_grid_on_ray_makes_what_the_local_executor_makes(tmp_path, local_ray, capsys):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main(["sweep", _grid(tmp_path, "a"), "--out", str(local)]) == 0
    assert main(["sweep", _grid(tmp_path, "b"), "--out", str(on_ray), "--executor", "ray"]) == 0
    s = json.loads((on_ray / "sweep.json").read_text())
    assert s["executor"] == "ray" and not s["failed"] and s["jobs"] > 0
    a, b = _made(local), _made(on_ray)
    assert a.keys() == b.keys() and a == b  # the same keys, the same bytes
    for g in ("target-owl", "target-fox"):
        ra = json.loads((local / "groups" / g / "results.json").read_text())
        rb = json.loads((on_ray / "groups" / g / "results.json").read_text())
        assert ra["conditions"] == rb["conditions"] and ra["verdict"] == rb["verdict"]
    pids = {r.extra.get("pid") for r in Store(on_ray).records() if r.stage == "finetune"}
    assert pids and not pids & {__import__("os").getpid()}  # the students were trained in Ray workers


def test_executor_errors_are_one_line(tmp_path, capsys):
    cfg = micro_config(tmp_path)
    for args, needle in ((["--executor", "slurm"], "unknown executor 'slurm'"),
                         (["--address", "auto"], "--address is for --executor ray")):
        assert main(["run", cfg, "--out", str(tmp_path / "o"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()


def test_an_unreachable_cluster_is_one_line(tmp_path, capsys):
    if ray.is_initialized():
        ray.shutdown()
    cfg = micro_config(tmp_path, seeds="[0]")
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--executor", "ray", "--address", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach a Ray cluster at auto" in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()  # said before anything was written
