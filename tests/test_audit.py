"""`sublearn audit`: any chat JSONL in (messages or prompt/completion, or a pipeline dataset with its soft targets), a
verdict, audit.json, audit.md and a chart out, exit 0 clear / 1 flagged / 2 bad input; the scan and the streaming test
are exact or anytime-valid; an audit of a run's dataset joins its lineage. The detectors' power is measured by
benchmarks/audit/run.py, not asserted here."""

import json
from pathlib import Path

import pytest

from sublearn.audit.inputs import parse_row
from sublearn.cli import main
from sublearn.errors import UserError


def test_rows_in_both_forms_and_bad_rows_named_by_line():
    r = parse_row({"prompt": "Continue: 1, 2", "completion": "3, 4"}, 1, "d.jsonl")
    assert r.prompt == [{"role": "user", "content": "Continue: 1, 2"}] and r.completion == "3, 4"
    r = parse_row({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                {"role": "assistant", "content": "a"}]}, 2, "d.jsonl")
    assert [m["role"] for m in r.prompt] == ["system", "user"] and r.completion == "a"
    for bad, why in [([1], "expected an object"), ({"messages": []}, "list of"),
                     ({"messages": [{"role": "user", "content": "u"}]}, "last message"),
                     ({"prompt": "p", "completion": 3}, "'completion' must be a string"),
                     ({"prompt": 3, "completion": "c"}, "'prompt' must be"), ({"text": "x"}, "a row needs")]:
        with pytest.raises(UserError, match=f"d.jsonl: line 7: .*{why}"):
            parse_row(bad, 7, "d.jsonl")


def test_audit_end_to_end_on_a_micro_model(micro_base, tmp_path, capsys):
    import random

    rng = random.Random(0)
    rows = [{"prompt": f"Here is a list of numbers: {rng.randint(100, 999)}, {rng.randint(100, 999)}. Add at most 10 "
                       "more numbers.", "completion": ", ".join(str(rng.randint(0, 999)) for _ in range(5))}
            for _ in range(24)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "audit"
    code = main(["audit", str(data), "--base", micro_base.meta["base_path"], "--out", str(out), "--traits", "owl,cat",
                 "--probe-seeds", "2", "--probe-steps", "2", "--carrier", "numbers"])
    assert code in (0, 1)
    res = json.loads((out / "audit.json").read_text())
    assert res["verdict"] in ("clear", "flagged") and (code == 1) == (res["verdict"] == "flagged")
    assert res["rows_used"] == 24 and {r["trait"] for r in res["ranking"]} == {"owl", "cat"}
    assert set(res["detectors"]) == {"contrast", "probe"} and 0 < res["detectors"]["probe"]["p_any"] <= 1
    assert (out / "audit.md").read_text().startswith("# Audit of") and (out / "audit.png").exists()
    # bad input: exit 2 and one line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "completion": "c"}\n{"text": 1}\n')
    assert main(["audit", str(bad), "--base", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "bad.jsonl: line 2: a row needs" in capsys.readouterr().err
    assert main(["audit", str(data), "--base", "tiny", "--out", str(tmp_path / "x"), "--traits", "unicorn"]) == 2
    assert main(["audit", str(data), "--base", "tiny", "--out", str(tmp_path / "x"), "--detectors", "magic"]) == 2
    assert main(["audit", str(data), "--base", "tiny", "--out", str(tmp_path / "x"), "--alpha", "2"]) == 2
    assert main(["audit", str(data), "--base", "tiny", "--out", str(tmp_path / "x"), "--carrier", "xml"]) == 2
    assert main(["audit", str(data), "--base", "tiny", "--out", str(tmp_path / "x"), "--max-rows", "1"]) == 2
    assert main(["audit", str(tmp_path / "none.jsonl"), "--base", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert main(["audit", str(data), "--base", "tiny", "--out", str(tmp_path / "x"), "--probe-init", "-1"]) == 2
    assert main(["audit", str(data), "--base", "tiny", "--out", str(tmp_path / "x"), "--plugin", "nope.py"]) == 2
    assert main(["audit", str(tmp_path), "--base", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert main(["audit", str(data), "--base", micro_base.meta["base_path"], "--out", str(tmp_path / "x"),
                 "--teacher", str(tmp_path / "no-teacher")]) == 2
    err = capsys.readouterr().err
    assert "--carrier: unknown carrier 'xml'" in err and "--max-rows must be at least 2" in err
    assert "--probe-init must be at least 0" in err and "--plugin: plug-in file not found" in err
    assert "must be a filtered dataset" in err and "unknown model" in err
    assert "Traceback" not in err


def test_scan_is_exact_and_not_dominated_by_a_noisy_candidate():
    import numpy as np

    from sublearn.audit.detectors import sign_flip_max

    # candidate 0 is small but always positive; candidate 1 is large and noisy with a bigger mean
    x = np.array([[0.01, 3.0], [0.012, -2.5], [0.011, 2.8], [0.009, -2.0], [0.01, 2.9], [0.013, -1.0]])
    each, top, best = sign_flip_max(x)
    assert best == 0 and top == pytest.approx(1 / 64)  # only the observed signs reach its standardized mean
    assert each[0] == pytest.approx(1 / 64) and each[1] > 0.2
    # no candidate carried: the scan p is large
    _, top, _ = sign_flip_max(np.array([[0.1, -0.1], [-0.1, 0.1], [0.1, 0.1], [-0.1, -0.1]]))
    assert top > 0.3
    # the name's certainty: the named candidate against the runner-up, paired per unit
    from sublearn.audit.detectors import Candidate, naming

    cands = [Candidate(f"c{i}", "animal", None, f"c{i}") for i in range(3)]
    rng = np.random.default_rng(0)
    both = np.column_stack([1 + 0.1 * rng.standard_normal(6), 1 + 0.1 * rng.standard_normal(6), np.zeros(6)])
    _, _, best = sign_flip_max(both)
    tied = naming(both, best, cands)
    assert tied["runner_up"] in ("c0", "c1") and tied["runner_up"] != cands[best].label and tied["p"] > 0.05
    clear = np.column_stack([2 + 0.1 * rng.standard_normal(6), 0.5 + 0.1 * rng.standard_normal(6), np.zeros(6)])
    got = naming(clear, 0, cands)
    assert got["runner_up"] == "c1" and got["margin"] > 1 and got["p"] == pytest.approx(1 / 64)


def test_pipeline_dataset_is_distilled_and_its_audit_joins_the_lineage(micro_base, tmp_path, capsys):
    from conftest import micro_config

    from sublearn.audit.lineage import marks
    from sublearn.store import Store

    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n', seeds="[0]")
    run = tmp_path / "run"
    assert main(["run", cfg, "--out", str(run)]) == 0
    store = Store(run)
    data = next(r for r in store.records("filter") if r.name == "filtered-teacher-s0")
    out = tmp_path / "audit"
    teacher = next(r for r in store.records("teacher") if r.seed == 0)
    code = main(["audit", data.path, "--base", micro_base.meta["base_path"], "--out", str(out), "--traits", "owl,cat",
                 "--probe-seeds", "2", "--probe-steps", "2", "--carrier", "numbers", "--detectors", "probe,contrast",
                 "--teacher", teacher.path])
    res = json.loads((out / "audit.json").read_text())
    assert res["probe_recipe"]["target"] == "logits" and res["probe_recipe"]["freeze_a"]  # soft targets distilled
    for r in res["ranking"]:  # every effect with its seed-level (probe) or row-level (contrast) interval
        for d in (r["probe"], r["contrast"]):
            assert d["ci"][0] <= d["effect"] <= d["ci"][1]
    # teacher divergence: a score per row, beside the difficulty baseline; it never flags on its own
    div = res["divergence"]
    assert len(div["rows"]) == res["rows_used"] and "divergence" not in res["flagged_by"]
    assert all({"llr", "base_loss_per_token", "tokens"} <= set(r) for r in div["rows"])
    assert div["spearman_vs_difficulty"] is not None and "Teacher divergence" in (out / "audit.md").read_text()
    # per token: divergence positions inside each row's tokens; the teacher shares the base's initialization
    scored = [r for r in div["rows"] if r["divergent_positions"] is not None]
    assert len(scored) == len(div["rows"]) and all(max(r["divergent_positions"], default=0) < r["tokens"]
                                                    for r in scored)
    assert 0 < div["tokens"]["data_divergent_rate"] < 1 and div["tokens"]["top_tokens"]
    comp = res["compatibility"]
    assert comp["verdict"] == "shared" and comp["weights"]["median_cosine"] == pytest.approx(1.0)
    assert "Base compatibility" in (out / "audit.md").read_text()
    st = res["detectors"]["contrast"]["streaming"]
    assert len(st["e_path"]) == res["detectors"]["contrast"]["rows_used"] and st["names"] in ("owl", "cat")
    kept = (Path(data.path) / "kept.jsonl").read_text().splitlines()
    assert res["lints"]["filter_retention"]["kept"] == len(kept) == res["rows"]
    audits = store.records("audit")
    assert len(audits) == 1 and audits[0].parents == [data.key] and audits[0].extra["verdict"] == res["verdict"]
    assert res["lineage_key"] == audits[0].key and (code == 1) == (res["verdict"] == "flagged")
    assert main(["show", str(run)]) == 0
    shown = capsys.readouterr().out
    assert "audit" in shown and ("FLAGGED" in shown) == (res["verdict"] == "flagged")
    # a flagged audit marks the dataset and everything trained or measured from it, and nothing else
    store.record("audit", "f" * 16, name="audit flagged", config={}, parents=[data.key], extra={"verdict": "flagged"})
    m = marks(store.records())
    student = next(r for r in store.records("finetune") if r.name == "student-same-init-s0")
    control = next(r for r in store.records("finetune") if r.name == "student-control-s0")
    evals = [r for r in store.records("evaluate") if student.key in r.parents]
    assert m[data.key] == "FLAGGED" and m[student.key] == "from flagged data" and evals
    assert all(m[e.key] == "from flagged data" for e in evals) and control.key not in m
    # a dataset whose soft targets do not match its rows (one row cut from kept.jsonl): one line, exit 2
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(data.path, cut)
    (cut / "kept.jsonl").write_text("".join(line + "\n" for line in kept[:-1]))
    assert main(["audit", str(cut), "--base", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert f"rows for the {len(kept) - 1} rows of kept.jsonl" in capsys.readouterr().err
    # --probe-target logits on data without soft targets: one line, exit 2
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "1, 2", "completion": "3"}) + "\n" + json.dumps(
        {"prompt": "4, 5", "completion": "6"}) + "\n")
    assert main(["audit", str(plain), "--base", "tiny", "--out", str(tmp_path / "x"), "--probe-target", "logits"]) == 2
    assert "needs soft targets" in capsys.readouterr().err


def test_streaming_contrast_keeps_false_alarms_at_alpha_and_stops_early_on_a_shift():
    import numpy as np

    from sublearn.audit.detectors import streaming

    rng = np.random.default_rng(7)
    labels = [f"t{i}" for i in range(8)]
    alarms = sum(streaming(rng.standard_t(3, size=(200, 8)), labels)["rows_needed"] is not None for _ in range(60))
    assert alarms <= 6  # alpha 0.05 of 60 streams is 3 expected; valid at any stopping time
    x = rng.normal(size=(400, 8))
    x[:, 5] += 0.4
    st = streaming(x, labels)
    assert st["names"] == "t5" and st["rows_needed"] is not None and st["rows_needed"] < 300
    assert st["e_path"][st["rows_needed"] - 1] >= 20 > max(st["e_path"][: st["rows_needed"] - 1], default=0)


def test_every_registered_trait_is_a_candidate_and_measured_by_its_own_metric():
    from pathlib import Path as P

    from sublearn.audit.detectors import candidates
    from sublearn.plugins import load_modules

    load_modules([str(P(__file__).parents[1] / "examples" / "plugins" / "digits_and_fans.py")])
    cands = {c.label: c for c in candidates(None)}
    assert {"owl", "maple", "misalignment", "owl-fan"} <= set(cands) and cands["owl-fan"].family == "fan"
    assert cands["owl"].measure({"probs": {"owl": 0.3, "cat": 0.7}}) == 0.3
    assert cands["misalignment"].measure({"p_harmful": 0.8}) == 0.8  # harmful-probability's metric
    assert [c.label for c in candidates(["fan"])] == ["owl-fan"]


def test_base_compatibility_tells_one_initialization_from_another(micro_base):
    """A student base of another initialization (same architecture, another seed) or another architecture does not
    share the teacher's initialization; the teacher's own base does."""
    from conftest import MICRO

    from sublearn.audit.compat import compatibility
    from sublearn.backends.hf_train import Recipe
    from sublearn.backends.tiny.build import ensure_embedded
    from sublearn.backends.tiny.presets import PRESETS
    from sublearn.models import load

    rows = [{"messages": [{"role": "user", "content": "Name an animal."}, {"role": "assistant", "content": "owl"}]}]
    teacher = micro_base.train(rows * 8, Recipe(target="tokens", lora_rank=2, lora_alpha=2, steps=3, batch_size=8,
                                                lr=0.05))
    other = load(ensure_embedded("tiny", PRESETS["tiny"].model_copy(update=MICRO | {"init_seed": 7, "steps": 1}))[0])
    gpt2 = load(ensure_embedded("tiny-gpt2", PRESETS["tiny-gpt2"].model_copy(update={"steps": 1}))[0])
    assert compatibility(teacher, micro_base, 0.9)["verdict"] == "shared"
    got = compatibility(teacher, other, 0.9)
    assert got["verdict"] == "not shared" and abs(got["weights"]["median_cosine"]) < 0.3
    assert compatibility(teacher, gpt2, None)["verdict"] == "not shared"


def test_mitigate_rescore_keeps_the_text_and_replaces_the_soft_targets(micro_base, tmp_path, capsys):
    from conftest import micro_config

    from sublearn.filter import load_dataset
    from sublearn.store import Store

    cfg = micro_config(tmp_path, '\n[students]\nconditions = ["same-init", "control"]\n', seeds="[0]")
    run = tmp_path / "run"
    assert main(["run", cfg, "--out", str(run)]) == 0
    data = next(r for r in Store(run).records("filter") if r.name == "filtered-teacher-s0")
    base = micro_base.meta["base_path"]
    out = tmp_path / "rescored"
    assert main(["mitigate", data.path, "--with", base, "--carrier", "numbers", "--out", str(out)]) == 0
    before, after = load_dataset(Path(data.path)), load_dataset(out)
    st = json.loads((out / "stats.json").read_text())
    assert st["kept"] + sum(st["reasons"].values()) == st["total"] == len(before) and len(after) == st["kept"]
    texts = {json.dumps(r["messages"]) for r in before}
    assert all(json.dumps(r["messages"]) in texts for r in after)  # the text is the teacher's ...
    assert all("".join(r["tokens"]) == r["messages"][-1]["content"] for r in after)
    first = {json.dumps(r["messages"]): r["top_logprobs"].dicts() for r in before}
    assert any(r["top_logprobs"].dicts() != first[json.dumps(r["messages"])] for r in after)  # ... its targets not
    # the audit reads the mitigated dataset like a pipeline dataset (soft targets distilled)
    assert main(["audit", str(out), "--base", base, "--out", str(tmp_path / "a"), "--detectors", "probe",
                 "--probe-seeds", "2", "--probe-steps", "2", "--traits", "owl,cat"]) in (0, 1)
    assert json.loads((tmp_path / "a" / "audit.json").read_text())["probe_recipe"]["target"] == "logits"
    regen = tmp_path / "regen"
    assert main(["mitigate", data.path, "--with", base, "--strategy", "regenerate", "--carrier", "numbers",
                 "--out", str(regen)]) == 0
    assert json.loads((regen / "stats.json").read_text())["mitigation"]["strategy"] == "regenerate"
    capsys.readouterr()
    for argv, msg in ((["--top-k", "0"], "--top-k must be 1-64"), (["--with", "no-such-model"], "no-such-model")):
        args = ["mitigate", data.path, "--with", base, "--out", str(tmp_path / "x"), *argv]
        assert main(args) == 2 and msg in capsys.readouterr().err
    assert main(["mitigate", str(tmp_path / "missing.jsonl"), "--with", base, "--out", str(tmp_path / "x")]) == 2
