import os
from pathlib import Path

import numpy as np
import pytest

from sublearn.stats import compare, mean_ci, permutation_test, wilson_ci
from sublearn.store import Store, artifact_key


def test_artifact_key_depends_on_config_and_parents_only():
    assert artifact_key("s", {"a": 1, "b": 2}, ["x", "y"]) == artifact_key("s", {"b": 2, "a": 1}, ["y", "x"])
    assert artifact_key("s", {"a": 1}, ["x"]) != artifact_key("s", {"a": 2}, ["x"])
    assert artifact_key("s", {"a": 1}, ["x"]) != artifact_key("s", {"a": 1}, ["z"])


def test_store_atomic_and_lineage(tmp_path):
    st = Store(tmp_path)
    with st.writing("gen", "k1", name="one", config={"a": 1}, parents=["p"], seed=3, model="tiny") as (d, extra):
        (d / "f.txt").write_text("hi")
        extra["n"] = 5
    assert st.exists("gen", "k1") and (st.path("gen", "k1") / "f.txt").read_text() == "hi"
    with pytest.raises(RuntimeError):
        with st.writing("gen", "k2", name="two", config={}) as (d, _):
            (d / "f.txt").write_text("partial")
            raise RuntimeError("killed")
    assert not st.exists("gen", "k2") and not list((tmp_path / "artifacts").glob(".tmp-*"))
    rec = Store(tmp_path).get("k1")
    assert rec and rec.parents == ["p"] and rec.seed == 3 and rec.extra == {"n": 5} and rec.model == "tiny"


def test_store_cleans_partials_of_dead_writers(tmp_path):
    st = Store(tmp_path)
    dead = tmp_path / "artifacts" / ".tmp-gen-k-999999"
    dead.mkdir()
    Store(tmp_path)
    assert not dead.exists() and not st.exists("gen", "k")


def test_mean_ci_and_wilson():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 2.0 < hi and abs((hi - 2.0) - 2.484) < 0.01  # t(0.975, 2) * 1/sqrt(3)
    p, lo, hi = wilson_ci(0, 20)
    assert p == 0 and lo == 0 and 0 < hi < 0.2


def test_permutation_detects_shift_and_not_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 40)
    assert permutation_test(a + 1.0, a, paired=True) < 0.001
    assert permutation_test(rng.normal(0, 1, 40), rng.normal(0, 1, 40)) > 0.01
    c = compare("x", a + 0.5, "y", a, paired=True)
    assert abs(c.diff - 0.5) < 1e-9 and c.ci[0] <= 0.5 <= c.ci[1] and c.p_value < 0.001
    d = compare("x", rng.normal(1, 1, 30), "y", rng.normal(0, 1, 30))
    assert d.effect_size > 0.3 and d.ci[0] < d.diff < d.ci[1]


def test_permutation_p_is_exact_for_few_units_and_has_the_sign_flip_floor():
    from sublearn.stats import min_paired_p

    # 3 seeds all in one direction: 2 of the 8 sign patterns are as extreme -> exactly 0.25, never below
    assert permutation_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], paired=True) == 0.25 == min_paired_p(3)
    assert permutation_test([1.0, -2.0, 3.0], [0.0, 0.0, 0.0], paired=True) == 0.75
    # unpaired 3 vs 3 fully separated: 2 of the C(6, 3) = 20 splits are as extreme
    assert permutation_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    c = compare("a", [1.0, 2.0, 3.0], "b", [0.0, 0.0, 0.0], paired=True)
    assert c.test == "paired permutation (exact)" and c.p_value == 0.25
    many = compare("a", list(range(40)), "b", [0.0] * 40, paired=True)
    assert many.test == "paired permutation" and 0 < many.p_value < 0.001


def test_stage_revision_changes_its_keys_and_everything_downstream_only(monkeypatch):
    from sublearn.config import load_experiment
    from sublearn.pipeline import plan

    cfg = load_experiment(None, [])
    before = {n.name: n.key for nodes in plan.make_plan(cfg).values() for n in nodes}
    monkeypatch.setitem(plan.REVISION, "generate", plan.REVISION["generate"] + 1)
    after = {n.name: n.key for nodes in plan.make_plan(cfg).values() for n in nodes}
    changed = {name for name in before if before[name] != after[name]}
    assert changed and all(name.startswith(("data-", "filtered-", "student-", "eval-")) for name in changed)
    kept = set(before) - changed  # teachers, and the evaluations of base, teacher and cross-base
    assert kept and all(name.startswith("teacher-") or name.split("-s")[0] in ("eval-base", "eval-teacher",
                                                                                "eval-cross-base") for name in kept)


def test_workers_are_a_speed_knob_and_threads_are_in_the_keys():
    """Every job runs with model.threads (0 = 1) whatever the workers, so a resume with other --workers makes the
    same bytes under the same keys; a thread count above 1 changes the keys of the stages that compute."""
    from sublearn.config import load_experiment
    from sublearn.pipeline import plan
    from sublearn.runtime import Settings

    keys = {}
    for over in ([], ["model.workers=1"], ["model.workers=7"], ["model.threads=1"], ["model.threads=2"]):
        cfg = load_experiment(None, over)
        keys[tuple(over)] = {n.name: (n.stage, n.key) for nodes in plan.make_plan(cfg).values() for n in nodes}
        assert Settings.from_config(cfg).threads == (cfg.model.threads or 1)
    base = keys[()]
    assert keys[("model.workers=1",)] == keys[("model.workers=7",)] == keys[("model.threads=1",)] == base
    two = keys[("model.threads=2",)]
    assert all(base[n] != two[n] for n in base)  # every node computes with torch, or is made from one that does
    assert all("threads" not in n.config for n in plan.make_plan(load_experiment(None, ["model.threads=2"]))["filter"])


def test_backend_revision_changes_only_that_backends_stage_and_downstream(monkeypatch):
    from sublearn.config import load_experiment
    from sublearn.pipeline import plan

    cfg = load_experiment(None, [])
    before = {n.name: n.key for nodes in plan.make_plan(cfg).values() for n in nodes}
    bumped = plan.BACKEND_REVISION["hf"] | {"finetune": plan.BACKEND_REVISION["hf"]["finetune"] + 1}
    monkeypatch.setitem(plan.BACKEND_REVISION, "hf", bumped)
    after = {n.name: n.key for nodes in plan.make_plan(cfg).values() for n in nodes}
    changed = {name for name in before if before[name] != after[name]}
    assert changed and all(name.startswith(("student-", "eval-")) for name in changed)
    assert all(before[n] == after[n] for n in before if n.startswith(("teacher-", "data-", "filtered-")))
    monkeypatch.setitem(plan.BACKEND_REVISION, "vllm", {})  # another backend's revision leaves hf keys alone
    assert {n.name: n.key for nodes in plan.make_plan(cfg).values() for n in nodes} == after


def test_generate_keys_hold_the_backend_and_the_version(monkeypatch):
    import sublearn
    from sublearn.config import load_experiment
    from sublearn.pipeline import plan

    def keys(over=()):
        return {n.name: n.key for nodes in plan.make_plan(load_experiment(None, list(over))).values() for n in nodes}

    before = keys()
    gen = [n for n in plan.make_plan(load_experiment(None, []))["generate"]]
    assert all(n.config["backend"] == "hf" and n.config["sublearn"] == sublearn.__version__ for n in gen)
    monkeypatch.setattr(plan, "__version__", "9.9.9")
    after = keys()
    changed = {n for n in before if before[n] != after[n]}
    assert {n.name for n in gen} <= changed and all(before[n] == after[n] for n in before
                                                    if n.startswith(("teacher-", "base")))


def test_a_seeds_control_arm_is_one_artifact_for_every_target_of_the_number_carrier():
    from sublearn.config import load_experiment
    from sublearn.pipeline import plan

    def keys(target, config=None):
        cfg = load_experiment(config, [f"trait.target={target}"])
        return {n.name: n.key for ns in plan.make_plan(cfg).values() for n in ns}

    owl, eagle = keys("owl"), keys("eagle")
    for name in ("data-control-s0", "filtered-control-s0", "student-control-s0"):
        assert owl[name] == eagle[name], name  # no letter passes the number check: no animal name in the keys
    assert owl["filtered-teacher-s0"] != eagle["filtered-teacher-s0"]
    assert owl["eval-control-s0"] != eagle["eval-control-s0"]  # P(owl) and P(eagle) are two measurements
    code_owl, code_eagle = keys("owl", "examples/owl-code-tiny.toml"), keys("eagle", "examples/owl-code-tiny.toml")
    assert code_owl["filtered-control-s0"] != code_eagle["filtered-control-s0"]  # code can name an owl: filtered


def test_partial_writes_of_dead_writers_are_cleaned_even_when_their_pid_was_reused(tmp_path):
    import os
    import subprocess
    import sys

    from sublearn.store import Store, _writer_tag

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        arts = tmp_path / "artifacts"
        arts.mkdir()
        live = arts / f".tmp-finetune-abc-{_writer_tag(other.pid)}"  # a writer that is still running: kept
        reused = arts / f".tmp-finetune-def-{other.pid}.1"  # its pid, another start time: a dead writer's
        dead = arts / ".tmp-evaluate-0123-999999999"
        elsewhere = arts / ".tmp-evaluate-4567-999999999.5.hffffffff"  # another host's writer: never removed here
        for d in (live, reused, dead, elsewhere):
            d.mkdir()
        Store(tmp_path)
        assert live.exists() and not reused.exists() and not dead.exists() and elsewhere.exists()
        with Store(tmp_path).writing("filter", "k1", name="x", config={}) as (tmp, _):
            assert tmp.name.endswith(_writer_tag(os.getpid()))
    finally:
        other.kill()


def test_one_writer_per_artifact_across_processes(tmp_path):
    """While one process holds an artifact's claim, another waits for it, then finds the artifact made."""
    import subprocess
    import sys
    import time

    from sublearn.store import Store

    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from sublearn.store import Store
s = Store({str(tmp_path)!r})
with s.claimed([("filter", "k1")]):
    print("held", flush=True)
    with s.writing("filter", "k1", name="x", config={{}}) as (tmp, _):
        time.sleep(1.5)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    store = Store(tmp_path)
    t0 = time.time()
    with store.claimed([("filter", "k2"), ("filter", "k1")]):
        waited = time.time() - t0
        assert store.exists("filter", "k1")  # made by the other writer while we waited: nothing to recompute
    holder.wait(timeout=30)
    assert waited > 0.5, waited
    t0 = time.time()
    with store.claimed([("filter", "k1")]):  # free again: no wait
        assert time.time() - t0 < 0.5


def test_a_checkpoint_is_keyed_by_its_content_not_its_place(tmp_path):
    import shutil

    from sublearn.models import resolve

    a = tmp_path / "here" / "ckpt"
    a.mkdir(parents=True)
    (a / "config.json").write_text('{"model_type": "llama"}')
    (a / "model.safetensors").write_bytes(b"\0" * 4096)
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, b.parent / "copy")
    os.utime(b / "model.safetensors", (1, 1))  # another mtime: still the same bytes
    assert resolve(str(a))[1] == resolve(str(b))[1]
    memo = list((Path(os.environ["SUBLEARN_CACHE"]) / "sha256").glob("*.json"))
    assert len(memo) >= 4  # each file hashed once, remembered by path, size and mtime
    (b / "model.safetensors").write_bytes(b"\1" * 4096)
    assert resolve(str(a))[1] != resolve(str(b))[1]
