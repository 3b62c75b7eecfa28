"""The offline pages (the family tree, report.html) in a real headless browser: they load from a file, draw what
they should, and log nothing to the console. Needs Debian's `chromium` (.ci/run installs it); skipped without it,
unless SUBLEARN_REQUIRE_BROWSER=1 (CI) makes its absence a failure."""

import os
import re
import shutil
import subprocess

import pytest

from sublearn.cli import main


def browser() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("SUBLEARN_REQUIRE_BROWSER") == "1":
            pytest.fail("no headless browser (chromium) on PATH, and SUBLEARN_REQUIRE_BROWSER=1")
        pytest.skip("no headless browser (chromium) on PATH")
    return exe


def render(url: str, tmp_path) -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran, and every console line it logged."""
    out = subprocess.run([browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                          "--virtual-time-budget=3000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, [line for line in out.stderr.splitlines() if ":CONSOLE" in line]


def test_family_tree_and_report_pages_load_offline_and_draw_the_run(micro_base, tmp_path, capsys):
    from conftest import micro_config

    from sublearn.report.tree import build_graph
    from sublearn.store import Store

    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n', seeds="[0, 1]")
    run = tmp_path / "run"
    assert main(["run", cfg, "--out", str(run)]) == 0
    page = tmp_path / "tree" / "tree.html"
    assert main(["show", str(run), "--graph", str(page)]) == 0
    graph = build_graph(run)
    recs = Store(run).records()
    want = [r for r in recs if r.stage in ("base", "teacher", "generate", "filter", "finetune")]
    assert len(graph["nodes"]) == len(want) and graph["edges"]
    student = next(n for n in graph["nodes"] if n["name"] == "student-same-init-s0")
    assert student["value"] is not None and any(e["to"] == student["key"] and "dataset" in e["label"]
                                                for e in graph["edges"])
    dom, console = render(page.as_uri() + f"#key={student['key'][:12]}", tmp_path)
    assert console == [], console
    assert re.search(r'data-nodes="(\d+)"', dom).group(1) == str(len(want))
    assert re.search(r'data-edges="(\d+)"', dom).group(1) == str(len(graph["edges"]))
    assert dom.count('class="node') == len(want)
    record = re.search(r'<pre id="record">(.*?)</pre>', dom, re.S).group(1)  # the click on the linked node
    assert "student-same-init-s0" in record and student["key"] in record
    # report.html: the verdict, the tables and the charts, all inline
    html = (run / "report.html").read_text()
    assert "Verdict" in html and "<table>" in html and 'src="data:image/png;base64,' in html
    dom, console = render((run / "report.html").as_uri(), tmp_path)
    assert console == [] and dom.count("<img") >= 1 and "<table>" in dom
    # a bad --graph: one line, exit 2
    assert main(["show", str(run), "--graph", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_compare_puts_runs_side_by_side_and_refuses_other_differences(micro_base, tmp_path, capsys):
    import csv

    from conftest import micro_config

    runs = []
    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n', seeds="[0, 1]")
    for target in ("owl", "cat"):
        run = tmp_path / f"run-{target}"
        assert main(["run", cfg, "--out", str(run), "--set", f"trait.target={target}"]) == 0
        runs.append(str(run))
    out = tmp_path / "cmp"
    assert main(["compare", *runs, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert {r["trait.target"] for r in rows} == {"owl", "cat"}
    got = {(r["trait.target"], r["condition"]): r for r in rows}
    assert {("owl", "same-init"), ("cat", "control"), ("cat", "base")} <= set(got)
    for r in rows:  # every row: the seed mean inside its seed-level CI, with both seeds' values
        assert float(r["ci_lo"]) <= float(r["mean"]) <= float(r["ci_hi"]) and len(r["per_seed"].split()) == 2
    md = (out / "compare.md").read_text()
    assert md.count("| owl |") == 1 and "## Verdicts" in md and (out / "compare.png").stat().st_size > 5000
    dom, console = render((out / "compare.html").as_uri(), tmp_path)
    assert console == [] and "<table>" in dom and 'src="data:image/png' in dom
    # runs that differ elsewhere too: one line, exit 2, naming the field (a results.json whose config says another lr)
    import json

    res = json.loads((tmp_path / "run-cat" / "results.json").read_text())
    res["config"]["students"]["recipe"]["lr"] = 0.5
    (tmp_path / "edited.json").write_text(json.dumps(res))
    assert main(["compare", runs[0], str(tmp_path / "edited.json"), "--out", str(out)]) == 2
    assert "differ in students.recipe.lr" in capsys.readouterr().err
    assert main(["compare", runs[0], str(tmp_path / "edited.json"), "--out", str(out), "--axis", "trait.target",
                 "--axis", "students.recipe.lr"]) == 0
    assert main(["compare", runs[0], str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no results.json" in capsys.readouterr().err
    assert main(["compare", *runs, "--out", str(out), "--axis", "trait.nonexistent"]) == 2
    assert "no such config field" in capsys.readouterr().err
    assert main(["compare", *runs, "--out", str(out), "--metric", "nope"]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err
    assert main(["compare", *runs, "--out", str(out), "--conditions", "base,contrl"]) == 2  # a typo is not dropped
    assert "--conditions: contrl ran in none" in capsys.readouterr().err
