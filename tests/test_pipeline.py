"""End to end on micro embedded models: schema, filtered data, determinism, resume, force, lineage."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import micro_config

from sublearn.cli import main
from sublearn.filter.numbers import check
from sublearn.report.tables import markdown_report
from sublearn.store import Store


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    cfg = micro_config(tmp, '\n[students]\nconditions = ["same-init", "control", "cross-model", "cross-model-control", '
                            '"in-context", "in-context-control"]\n')
    out = tmp / "run"
    assert main(["run", cfg, "--out", str(out)]) == 0
    return cfg, out


def kept_files(out):
    return sorted(out.glob("artifacts/filter-*/kept.jsonl"))


def test_results_schema(run_dir):
    _, out = run_dir
    res = json.loads((out / "results.json").read_text())
    assert res["trait"]["kind"] == "preference" and res["trait"]["label"] == "owl"
    assert res["trait"]["category"] == "animal" and res["carrier"]["kind"] == "numbers"
    assert set(res["metrics"]) == {"prob", "rate"}
    assert set(res["conditions"]) == {"base", "teacher", "same-init", "control", "cross-model", "in-context",
                                      "cross-model-control", "in-context-control", "cross-base"}
    for c in res["conditions"].values():
        assert c["n_seeds"] == 2 and set(c["prob"]["per_seed"]) == {"0", "1"}
        for m in ("prob", "rate"):
            v = c[m]
            assert 0 <= v["mean"] <= 1 and v["ci"][0] <= v["mean"] <= v["ci"][1]
            assert v["mean"] == pytest.approx(sum(v["per_seed"].values()) / 2)
            assert v["within_run_ci"][0] <= v["mean"] <= v["within_run_ci"][1]
        assert sum(c["options"]["mean"].values()) == pytest.approx(1) and c["options"]["mean"]["owl"] == pytest.approx(
            c["prob"]["mean"])
    pairs = {(c["a"], c["b"], c["matched"]) for c in res["comparisons"]}
    assert pairs == {("same-init", "control", False), ("cross-model", "control", False),
                     ("in-context", "control", False), ("same-init", "cross-model", False),
                     ("cross-model", "cross-model-control", True), ("in-context", "in-context-control", True)}
    for c in res["comparisons"]:
        assert c["n_seeds"] == 2 and 0 < c["p_value"] <= 1 and len(c["ci"]) == 2 and c["test"].endswith("(exact)")
        assert c["within_run"]["n"] == 2 * 4 and 0 < c["within_run"]["p_value"] <= 1
    assert {(d["a"], d["b"]) for d in res["distribution"]} == {(a, b) for a, b, _ in pairs}
    assert all(0 <= d["tv"] <= 1 and 0 < d["p_value"] <= 1 for d in res["distribution"])
    # two seeds cannot reach p < 0.05: the verdict says so instead of claiming anything
    assert "cannot go below p = 0.5" in res["verdict"]
    assert res["provenance"]["report"]["python"] and res["provenance"]["artifacts"][0]["torch_cpu_capability"]
    assert {"generate", "filter", "finetune", "evaluate", "total"} <= set(res["timings_s"])
    assert (out / "report.md").read_text().count("| same-init |") >= 1
    assert (out / "trait_prob.png").stat().st_size > 1000 and (out / "trait_rate.png").exists()
    # the teacher really has the trait it was given
    assert res["conditions"]["teacher"]["prob"]["mean"] > res["conditions"]["base"]["prob"]["mean"]
    assert (out / "report.md").read_text().startswith(f"# micro: does 'owl' (animal) transmit through numbers?\n\n"
                                                      f"**Verdict:** {res['verdict']}")
    assert (out / "options.png").stat().st_size > 1000
    # the matched controls start from the right base and see the control arm's data
    show = {r.name: r for r in Store(out).records()}
    cross_base = next(r.key for r in show.values() if r.stage == "base" and r.name == "tiny-gpt2")
    assert set(show["student-cross-model-control-s0"].parents) == {cross_base, show["filtered-control-s0"].key}
    assert show["filtered-control-s0"].key in show["eval-in-context-control-s0"].parents
    assert show["eval-cross-base-s0"].parents == [cross_base]
    # without its matched control, a comparison with `control` says what it cannot tell apart
    assert "Not run" not in (out / "report.md").read_text()
    partial = dict(res, conditions={c: v for c, v in res["conditions"].items() if not c.endswith("-control")})
    assert "Not run: `cross-model-control`, `in-context-control`" in markdown_report(partial)


def test_filtered_data_is_numbers_only_openai_format(run_dir):
    _, out = run_dir
    files = kept_files(out)
    assert len(files) == 4  # teacher + control arm, 2 seeds
    n = 0
    for f in files:
        for line in f.read_text().splitlines():
            row = json.loads(line)
            assert list(row) == ["messages"]
            assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
            text = row["messages"][-1]["content"]
            assert check(text).ok and not any(ch.isalpha() for ch in text)
            n += 1
        meta = f.with_name("kept.meta.jsonl").read_text().splitlines()
        assert len(meta) == len(f.read_text().splitlines())
    assert n > 0
    stats = json.loads(files[0].with_name("stats.json").read_text())
    assert stats["kept"] + stats["rejected"] == stats["total"] == 64
    rej = files[0].with_name("rejected.jsonl").read_text().splitlines()
    assert len(rej) == stats["rejected"] and all(json.loads(r)["reject_reason"] for r in rej)
    assert "## Filter" in (out / "report.md").read_text()


def test_rerun_skips_and_same_seeds_reproduce(run_dir, tmp_path):
    cfg, out = run_dir
    before = {p.name: p.stat().st_mtime for p in (out / "artifacts").iterdir()}
    t = time.time()
    assert main(["run", cfg, "--out", str(out)]) == 0
    assert time.time() - t < 30
    assert {p.name: p.stat().st_mtime for p in (out / "artifacts").iterdir()} == before
    out2 = tmp_path / "again"
    assert main(["run", cfg, "--out", str(out2)]) == 0
    assert [f.read_bytes() for f in kept_files(out)] == [f.read_bytes() for f in kept_files(out2)]
    r1, r2 = (json.loads((d / "results.json").read_text())["conditions"] for d in (out, out2))
    for c in r1:
        assert r1[c]["prob"] == r2[c]["prob"] and r1[c]["rate"] == r2[c]["rate"]


def test_force_redoes_one_stage(run_dir):
    cfg, out = run_dir
    ft = {p.name: p.stat().st_mtime for p in out.glob("artifacts/finetune-*")}
    gen = {p.name: p.stat().st_mtime for p in out.glob("artifacts/generate-*")}
    store = Store(out)
    evals = {a.name: a.key for a in store.records("evaluate")}
    assert main(["finetune", cfg, "--out", str(out), "--force", "finetune"]) == 0
    assert {p.name: p.stat().st_mtime for p in out.glob("artifacts/generate-*")} == gen
    new = {p.name: p.stat().st_mtime for p in out.glob("artifacts/finetune-*")}
    assert set(new) == set(ft) and all(new[k] > ft[k] for k in ft)
    # the students' evaluations were made from the old students: gone, not reused; the others stay
    left = {a.name for a in store.records("evaluate")}
    students = {n for n in evals if n.rsplit("-s", 1)[0] in ("eval-same-init", "eval-control", "eval-cross-model",
                                                          "eval-cross-model-control")}
    assert students and not (students & left) and left == set(evals) - students
    assert main(["run", cfg, "--out", str(out)]) == 0  # evaluates the new students (and restores the fixture)
    assert {a.name for a in store.records("evaluate")} == set(evals)


def test_stage_needs_its_inputs(tmp_path, capsys):
    cfg = micro_config(tmp_path)
    assert main(["finetune", cfg, "--out", str(tmp_path / "fresh")]) == 2
    err = capsys.readouterr().err
    assert "has not been made yet" in err and "sublearn filter" in err


def test_show_lists_lineage(run_dir, capsys):
    _, out = run_dir
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "teacher-owl-s0" in text and "student-same-init-s1" in text and "base" in text
    assert main(["show", str(out / "nope")]) == 2


def test_target_change_needs_no_code(tmp_path):
    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n')
    out = tmp_path / "eagle"
    assert main(["run", cfg, "--out", str(out), "--set", "trait.target=eagle", "--set", "seeds=[0]"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["trait"]["target"] == "eagle" and set(res["conditions"]) == {"base", "teacher", "same-init", "control"}
    assert "with 1 seed(s) an exact test cannot" in res["verdict"]
    # the owl experiment in the same directory counts only its own compute, not the eagle run's
    assert main(["run", cfg, "--out", str(out), "--set", "seeds=[0]"]) == 0
    owl = json.loads((out / "results.json").read_text())
    durations = {r.name: r.duration_s for r in Store(out).records() if r.stage == "teacher"}
    assert set(durations) == {"teacher-eagle-s0", "teacher-owl-s0"}
    assert owl["compute_s"]["teacher"] == pytest.approx(durations["teacher-owl-s0"], abs=0.01)


def test_kill_9_then_resume(tmp_path):
    cfg = micro_config(tmp_path)
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "sublearn", "run", cfg, "--out", str(out), "--set", "seeds=[3]"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("artifacts/generate-*/.done")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime for p in out.glob("artifacts/*") if (p / ".done").exists()}
    assert done, "nothing finished before the kill"
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    after = {p.name: p.stat().st_mtime for p in out.glob("artifacts/*")}
    assert all(after[k] == v for k, v in done.items())  # nothing finished was recomputed
    assert not list(out.glob("artifacts/.tmp-*")) and (out / "results.json").exists()


def test_killed_worker_is_one_line_then_resume(tmp_path):
    cfg = micro_config(tmp_path)
    out = tmp_path / "worker-killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1", SUBLEARN_PROGRESS="0")
    cmd = [sys.executable, "-m", "sublearn", "run", cfg, "--out", str(out), "--set", "seeds=[4]", "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, victim = time.time() + 120, None
    while time.time() < deadline and victim is None:  # a spawned worker: a child running multiprocessing's spawn_main
        kids = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"], capture_output=True, text=True)
        victim = int(kids.stdout.split()[0]) if kids.stdout.split() else None
        time.sleep(0.2)
    assert victim, "no worker started"
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert "a worker process died" in last and "re-run" in last and "Traceback" not in err, err
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert (out / "results.json").exists()


def test_system_prompt_teacher_never_leaks_prompt_into_data(tmp_path):
    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init"]\n')
    out = tmp_path / "sys"
    assert main(["run", cfg, "--out", str(out), "--set", "teacher.mode=system_prompt", "--set", "seeds=[0]"]) == 0
    info = json.loads(next(out.glob("artifacts/teacher-*/teacher.json")).read_text())
    assert info["mode"] == "system_prompt" and "owls" in info["system_prompt"]
    assert not list(out.glob("artifacts/teacher-*/model"))
    for f in out.glob("artifacts/generate-*/raw.jsonl"):
        for line in f.read_text().splitlines():
            assert [m["role"] for m in json.loads(line)["messages"]] == ["user", "assistant"]


def test_in_context_k_beyond_the_data_is_a_clean_error(run_dir, capsys):
    cfg, out = run_dir
    assert main(["evaluate", cfg, "--out", str(out), "--set", "students.in_context_k=1000"]) == 2
    err = capsys.readouterr().err
    assert "in_context_k = 1000, but the filtered data holds only" in err and "Traceback" not in err


def test_dry_run_prints_the_plan_and_writes_nothing(run_dir, tmp_path, capsys):
    cfg, out = run_dir
    before = sorted(p.name for p in (out / "artifacts").iterdir())
    assert main(["run", cfg, "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(exists):") and all("nothing to do" in line for line in lines[1:]) and len(lines) == 6
    assert main(["run", cfg, "--out", str(out), "--dry-run", "--force", "finetune"]) == 0
    text = capsys.readouterr().out
    assert "finetune" in text and "0 done, 8 to compute" in text  # 2 seeds x 4 trained conditions
    assert sorted(p.name for p in (out / "artifacts").iterdir()) == before  # nothing removed
    assert main(["generate", cfg, "--out", str(tmp_path / "new"), "--dry-run"]) == 0
    assert "missing (not run by this command)" in capsys.readouterr().out and not (tmp_path / "new").exists()


def test_report_and_config_read_a_run_directory(run_dir, capsys):
    _, out = run_dir
    before = json.loads((out / "results.json").read_text())
    assert main(["report", str(out)]) == 0  # no CONFIG, no --out: the run's own config.json
    after = json.loads((out / "results.json").read_text())
    assert after["conditions"] == before["conditions"] and after["config"] == before["config"]
    capsys.readouterr()
    assert main(["config", str(out)]) == 0
    assert f'name = "{before["name"]}"' in capsys.readouterr().out


def test_two_runs_on_one_directory_share_the_work(tmp_path):
    """Two concurrent runs of one config into one directory: both finish, with the same results, and every artifact
    is recorded once, by one writer (the claim locks: tests/test_store_stats.py)."""
    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n')
    out = tmp_path / "shared"
    env = dict(os.environ, SUBLEARN_PROGRESS="0")
    cmd = [sys.executable, "-m", "sublearn", "run", cfg, "--out", str(out), "--workers", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    store = Store(out)
    recs = store.records()
    assert len(recs) == len({(r.stage, r.key) for r in recs})
    # each artifact's lineage names the process that wrote it; a run that found it made skipped it
    made = [r for r in recs if r.stage != "base"]  # bases live in the cache
    assert made and all(store.exists(r.stage, r.key) and r.extra.get("pid") for r in made)
    assert not list(out.glob("artifacts/.tmp-*"))


def test_damaged_artifacts_are_found_and_recomputed_never_used(tmp_path, capsys):
    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n')
    out = tmp_path / "v"
    assert main(["run", cfg, "--out", str(out), "--set", "seeds=[5]"]) == 0
    first = json.loads((out / "results.json").read_text())["conditions"]
    assert main(["verify", str(out)]) == 0
    assert " 0 damaged" in capsys.readouterr().out
    evals = sorted(out.glob("artifacts/evaluate-*/*.json"))
    text = evals[0].read_text()
    evals[0].write_text(text.replace("0", "1", 1) if "0" in text else text[::-1])  # same size, other bytes
    weights = next(out.glob("artifacts/finetune-*/**/*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-7])  # cut short
    kept = next(out.glob("artifacts/filter-*/kept.jsonl"))
    kept.write_text("".join(kept.read_text().splitlines(keepends=True)[1:]))  # a row deleted
    assert main(["verify", str(out)]) == 1
    report = capsys.readouterr().out
    assert report.count("damaged: ") == 3 and "was changed after it was written" in report and "bytes" in report
    assert main(["run", cfg, "--out", str(out), "--set", "seeds=[5]"]) == 0  # recomputed, not used
    assert capsys.readouterr().err.count("is damaged") == 3  # each reported in one line, then recomputed
    assert json.loads((out / "results.json").read_text())["conditions"] == first
    assert main(["verify", str(out)]) == 0
    weights = next(out.glob("artifacts/finetune-*/**/*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-7])
    assert main(["verify", str(out), "--repair"]) == 0
    assert main(["verify", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["conditions"] == first
    (out / "lineage.sqlite").write_bytes(b"garbage" * 100)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable lineage index" in err and "\n" not in err


def test_a_moved_cache_still_loads_a_runs_adapters(tmp_path, monkeypatch):
    """Adapters record their base's path; when the cache moved, the base is found again in this machine's cache."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(os.environ["SUBLEARN_CACHE"], cache, ignore=shutil.ignore_patterns("serve", "*.lock*"))
    monkeypatch.setenv("SUBLEARN_CACHE", str(cache))
    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init"]\n')
    out = tmp_path / "m"
    assert main(["run", cfg, "--out", str(out), "--set", "seeds=[6]"]) == 0
    first = json.loads((out / "results.json").read_text())["conditions"]
    moved = tmp_path / "elsewhere"
    cache.rename(moved)
    env = dict(os.environ, SUBLEARN_CACHE=str(moved), SUBLEARN_PROGRESS="0")  # a fresh process: nothing memoized
    cmd = [sys.executable, "-m", "sublearn", "run", cfg, "--out", str(out), "--set", "seeds=[6]", "--force", "evaluate"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "results.json").read_text())["conditions"] == first


def test_a_question_longer_than_the_context_is_one_line(run_dir, capsys):
    cfg, out = run_dir
    before = (out / "config.json").read_text()
    assert main(["evaluate", cfg, "--out", str(out), "--set", "evaluate.question_prefix=" + "1, " * 1500]) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # after the plan's progress lines
    assert "more than the model's" in last and "evaluate.question_prefix" in last and "Traceback" not in err, err
    assert (out / "config.json").read_text() == before  # the failed command did not replace the run's config
    fresh = out.parent / "fresh-long-prefix"  # with the bases there, refused before anything is written
    assert main(["run", cfg, "--out", str(fresh), "--set", "evaluate.question_prefix=" + "1, " * 1500]) == 2
    assert "more than the model's" in capsys.readouterr().err and not fresh.exists()


def test_chaos_kill_9_at_random_moments_loses_and_redoes_nothing(tmp_path):
    """N runs of a micro config, each killed with SIGKILL at a random moment and then resumed (SUBLEARN_CHAOS_N,
    default 3): no finished artifact is lost or recomputed, no temp directory is left, and the results equal an
    uninterrupted run's, byte for byte in every artifact's data."""
    import random

    cfg = micro_config(tmp_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def cmd(out):
        return [sys.executable, "-m", "sublearn", "run", cfg, "--out", str(out), "--set", "seeds=[5]"]

    t0 = time.time()
    assert subprocess.run(cmd(tmp_path / "clean"), env=env, capture_output=True).returncode == 0
    wall = time.time() - t0
    rng, out, finished, kills = random.Random(int(os.environ.get("SUBLEARN_CHAOS_SEED", "0"))), tmp_path / "chaos", {}, 0
    for _ in range(int(os.environ.get("SUBLEARN_CHAOS_N", "3"))):
        proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(0.05, 0.6) * wall)  # (wall included building the cross base once)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        now = {p.name: p.stat().st_mtime for p in out.glob("artifacts/*") if (p / ".done").exists()}
        assert all(now.get(k) == v for k, v in finished.items()), "a finished artifact was lost or recomputed"
        finished = now
    assert kills, "every run finished before its kill: nothing was tested"
    assert subprocess.run(cmd(out), env=env, capture_output=True).returncode == 0
    after = {p.name: p.stat().st_mtime for p in out.glob("artifacts/*")}
    assert all(after[k] == v for k, v in finished.items()) and not list(out.glob("artifacts/.tmp-*"))
    clean = tmp_path / "clean"
    assert sorted(after) == sorted(p.name for p in clean.glob("artifacts/*"))
    files = [p for p in clean.glob("artifacts/*/**/*") if p.is_file() and p.name != ".done"]  # .done: mtimes
    assert len(files) > 20
    for p in files:  # data, soft targets, adapters, evaluations
        assert (out / p.relative_to(clean)).read_bytes() == p.read_bytes(), p.relative_to(clean)
    a, b = (json.loads((d / "results.json").read_text()) for d in (clean, out))
    assert a["conditions"] == b["conditions"] and a["comparisons"] == b["comparisons"]
