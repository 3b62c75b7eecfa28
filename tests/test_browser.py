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
