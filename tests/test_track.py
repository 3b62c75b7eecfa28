"""`--track mlflow|trackio`: a finished micro run logged to MLflow's local file store and to a local Trackio
project, read back through each tracker's own library."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from conftest import micro_config

from sublearn.cli import main
from sublearn.store import Store


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("track")
    cfg = micro_config(tmp, '\n[students]\nconditions = ["same-init", "control"]\n')
    out = tmp / "run"
    assert main(["run", cfg, "--out", str(out)]) == 0
    return cfg, out


def _jobs(out):
    return [r for r in Store(out).records() if r.stage != "base"]


def test_mlflow_gets_every_job_its_loss_curve_and_the_results(run_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    _, out = run_dir
    uri = (tmp_path / "mlruns").as_uri()
    assert main(["report", str(out), "--track", "mlflow", "--track-uri", uri]) == 0
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("sublearn")
    (parent,) = c.search_runs([exp.experiment_id], "tags.`sublearn.run_dir` != ''")
    res = json.loads((out / "results.json").read_text())
    assert parent.data.tags["sublearn.verdict"] == res["verdict"]
    assert parent.data.metrics["same-init.prob.mean"] == pytest.approx(res["conditions"]["same-init"]["prob"]["mean"])
    comp = next(x for x in res["comparisons"] if x["a"] == "same-init" and x["metric"] == "prob")
    assert parent.data.metrics[f"same-init-vs-{comp['b']}.prob.diff"] == pytest.approx(comp["diff"])
    assert parent.data.params["trait.target"] == "owl"
    files = {f.path for f in c.list_artifacts(parent.info.run_id)}
    assert {"results.json", "report.md", "report.html"} <= files

    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    jobs = _jobs(out)
    assert sorted(r.data.tags["sublearn.key"] for r in children) == sorted(j.key for j in jobs)
    student = next(j for j in jobs if j.stage == "finetune")
    losses = json.loads((Store(out).path("finetune", student.key) / "student.json").read_text())["train_losses"]
    run = next(r for r in children if r.data.tags["sublearn.key"] == student.key)
    hist = sorted(c.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
    assert [m.value for m in hist] == pytest.approx(losses) and len(hist) > 1
    ev = next(j for j in jobs if j.stage == "evaluate")
    run = next(r for r in children if r.data.tags["sublearn.key"] == ev.key)
    assert run.data.metrics["p_target"] == pytest.approx(ev.extra["p_target"])

    # logging the same run again adds nothing
    capsys.readouterr()
    assert main(["report", str(out), "--track", "mlflow", "--track-uri", uri]) == 0
    assert len(c.search_runs([exp.experiment_id], "")) == 1 + len(jobs)


def test_trackio_gets_every_job_through_the_cli(run_dir, tmp_path):
    pytest.importorskip("trackio")
    _, out = run_dir
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio")}
    p = subprocess.run([sys.executable, "-m", "sublearn", "report", str(out), "--track", "trackio", "--track-uri",
                        "micro"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "trackio project 'micro'" in p.stderr and "Trackio" not in p.stdout  # its chatter is not on the terminal
    db = next((tmp_path / "trackio").glob("micro*.db"))
    with sqlite3.connect(db) as con:
        runs = {r[0] for r in con.execute("SELECT DISTINCT run_name FROM metrics")}
    assert len(runs) == 1 + len(_jobs(out))


def test_a_tracker_that_cannot_store_is_a_one_line_error(run_dir, tmp_path, capsys):
    """A URI MLflow refuses, and a TRACKIO_DIR Trackio cannot write (it drops the runs silently), are said."""
    _, out = run_dir
    pytest.importorskip("mlflow")
    assert main(["report", str(out), "--track", "mlflow", "--track-uri", "nosuch://x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sublearn: error: mlflow (nosuch://x)")
    pytest.importorskip("trackio")
    (tmp_path / "afile").write_text("")
    p = subprocess.run([sys.executable, "-m", "sublearn", "report", str(out), "--track", "trackio"], capture_output=True,
                       text=True, env={**os.environ, "TRACKIO_DIR": str(tmp_path / "afile")}, timeout=300)
    assert p.returncode == 2 and "trackio stored 0 of" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_bad_tracker_flags_are_one_line_errors(run_dir, capsys):
    cfg, out = run_dir
    assert main(["report", str(out), "--track", "wandb"]) == 2
    assert "unknown tracker 'wandb'" in capsys.readouterr().err
    assert main(["report", str(out), "--track-uri", "x"]) == 2
    assert main(["generate", cfg, "--out", str(out), "--track", "mlflow"]) == 2
    assert "--track logs a finished run" in capsys.readouterr().err
