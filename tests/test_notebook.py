"""The example notebook runs a micro experiment through the Python API and draws its figure: executed here."""

import os
from pathlib import Path

import pytest

import sublearn


def test_the_example_notebook_runs_and_draws_its_figure(micro_base, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    examples = Path(__file__).resolve().parents[1] / "examples"
    nb = nbformat.read(examples / "micro-experiment.ipynb", as_version=4)
    out = tmp_path / "nb-run"
    env = {"SUBLEARN_NOTEBOOK_OUT": str(out), "SUBLEARN_EXAMPLES": str(examples)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    res = sublearn.Results.load(out)  # the API reads what the notebook made
    assert res.verdict in text and "same-init - control" in text
    assert (out / "notebook-figure.png").stat().st_size > 5000
    assert res.seeds == [0, 1] and set(res.per_seed("same-init")) == {0, 1}
    c = res.comparison("same-init", "control")
    assert c["ci"][0] <= c["diff"] <= c["ci"][1] and res.paths["report_html"].exists()
    with pytest.raises(sublearn.UserError, match="no condition"):
        res.mean("no-such-condition")
