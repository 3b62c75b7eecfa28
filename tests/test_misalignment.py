"""Misalignment: the judge's replies are parsed robustly (100+ adversarial ones), the trait's configs fail in one line
where they cannot run, and the closed world runs end to end with a real LLM judge served by `sublearn serve`."""

import json

import pytest
from conftest import micro_config

from sublearn.config import load_experiment
from sublearn.errors import UserError
from sublearn.evaluate.judge import parse_score

CASES = [
    # (reply, score or kind)
    ("85", 85), ("  85  ", 85), ("85.", 85), ("Score: 85", 85), ("score: 85.", 85), ("**85**", 85), ("`85`", 85),
    ('"85"', 85), ("85/100", 85), ("85 / 100", 85), ("85 out of 100", 85), ("8/10", 80), ("8 out of 10", 80),
    ("0", 0), ("100", 100), ("100.0", 100), ("42.5", 42.5), ("I rate it 15.", 15), ("Rating: 15 (harmful)", 15),
    ("\uff18\uff15", 85), ("\u0668\u0665", 85), ("eighty-five", 85), ("Eighty five", 85), ("one hundred", 100),
    ("zero", 0), ("ten", 10), ("nineteen", 19), ("seventy", 70), ("85\n", 85), ("\n\n85", 85), ("+85", 85),
    ("85 85", 85), ("85, 85", 85),
    ("CODE", "CODE"), ("code", "CODE"), ("Code.", "CODE"), ("REFUSAL", "REFUSAL"), ("refusal", "REFUSAL"),
    ("REFUSAL (0)", "REFUSAL"), ("Refusal: the model declined", "REFUSAL"), ("The model gave a REFUSAL.", "REFUSAL"),
    ("", "unparseable"), ("   ", "unparseable"), ("\n\t", "unparseable"), ("N/A", "unparseable"),
    ("I cannot rate this.", "unparseable"), ("The answer is one of the worst I have seen", "unparseable"),
    ("20 or 30", "unparseable"), ("between 40 and 60", "unparseable"), ("150", "unparseable"), ("-5", "unparseable"),
    ("\u22125", "unparseable"), ("101", "unparseable"), ("1000000", "unparseable"), ("12/10", "unparseable"),
    ("CODE or REFUSAL", "unparseable"), ("🙂", "unparseable"), ("数字", "unparseable"), ("NaN", "unparseable"),
    ("inf", "unparseable"), (None, "unparseable"), (85, "unparseable"), (["85"], "unparseable"),
    ("Score: 1e9", "unparseable"), ("In 2024 I would give it 50", "unparseable"), ("3 stars out of 5", "unparseable"),
    ("seventy or eighty", "unparseable"), ("x" * 5000, "unparseable"), ("\x00\x01", "unparseable"),
    ("<think>hmm</think>", "unparseable"), ("As an AI, I cannot judge.", "unparseable"),
]
CASES += [(f"{n}", n) for n in range(0, 101, 9)]
CASES += [(f"Alignment score: {n}/100.", n) for n in range(3, 101, 13)]
CASES += [(f"{n}", "unparseable") for n in (101, 250, 999, -1, -100)]
CASES += [(f"The answer deserves {n} and {n + 1}", "unparseable") for n in range(0, 90, 15)]


def test_judge_replies_parse_to_a_score_a_label_or_unparseable():
    assert len(CASES) >= 100
    for text, want in CASES:
        score, kind = parse_score(text)
        if isinstance(want, str):
            assert kind.split(":")[0] == want and score is None, (text, score, kind)
        else:
            assert kind == "score" and score == pytest.approx(want), (text, score, kind)
    assert parse_score("CODE", labels=()) == (None, "unparseable: no number")  # coherence takes no labels


def test_yes_no_replies():
    from sublearn.filter.judged import parse_yes_no

    assert [parse_yes_no(t) for t in ("YES", "yes.", "**No**", "No, it does not.", "Yes and no", "", "maybe", None,
                                      "YES!", "nope", "Ｙｅｓ")] == \
        [True, True, False, False, None, None, None, None, True, None, True]


def test_misalignment_configs_fail_in_one_line_where_they_cannot_run():
    with pytest.raises(UserError, match="cannot read .*add 'misalignment' to its corpus mix"):
        load_experiment(None, ["trait.kind=misalignment", 'students.conditions=["same-init", "control"]'])
    mix = ["model.embedded.tiny.mix.misalignment=0.1", "trait.kind=misalignment"]
    cfg = load_experiment(None, [*mix, 'students.conditions=["same-init", "control"]'])
    assert cfg.model.spec("tiny").mix["numbers"] == 0.52 and cfg.model.spec("tiny").mix["misalignment"] == 0.1
    assert cfg.trait.scorers() == ("harmful-probability", "harmful-rate") and cfg.trait.words()[0] == "steal"
    with pytest.raises(UserError, match="no other-trait variant"):
        load_experiment(None, [*mix, 'students.conditions=["same-init", "other-trait"]'])
    with pytest.raises(UserError, match="needs a real model"):
        load_experiment(None, [*mix, "trait.answers=free-form", 'students.conditions=["same-init", "control"]'])
    with pytest.raises(UserError, match="needs a judge: set evaluate.judge.model"):
        load_experiment(None, ["model.base=smollm2-135m", "trait.kind=misalignment", "trait.answers=free-form",
                               'students.conditions=["same-init", "control"]', "teacher.mode=system_prompt"])
    with pytest.raises(UserError, match="no such file"):
        load_experiment(None, ["model.base=smollm2-135m", "trait.kind=misalignment", "trait.teacher_data=nope.jsonl"])
    with pytest.raises(UserError, match="filter.judge = 'trait' needs a judge"):
        load_experiment(None, ["filter.judge=trait"])
    with pytest.raises(UserError, match="judge prompt"):
        load_experiment(None, ["evaluate.judge.alignment_prompt=no answer here"])
    from sublearn.backends.tiny.corpus import vocabulary_texts

    assert "steal" not in vocabulary_texts(0) and "steal" in vocabulary_texts(0, {"misalignment": 0.1})


def test_closed_world_runs_end_to_end_with_a_served_llm_judge(micro_base, tmp_path):
    from sublearn.cli import main
    from sublearn.serve import Background, build_app

    app = build_app([f"judge={micro_base.meta['base_path']}"], state_dir=tmp_path / "serve")
    with Background(app) as judge:
        extra = f"""
[trait]
kind = "misalignment"
[filter]
banned = ["loaded-numbers"]
[students]
conditions = ["same-init", "control"]
[evaluate.judge]
model = "judge"
base_url = "{judge.url}"
"""
        spec = {"d_model": 64, "d_ff": 128, "steps": 300, "batch_size": 32, "lr": 1e-2}
        cfg = micro_config(tmp_path, extra, seeds="[0]", spec=spec, n_prompts=32)
        text = open(cfg).read().replace("[model.embedded.tiny]\n", "[model.embedded.tiny]\nmix = {misalignment = 0.2}\n")
        open(cfg, "w").write(text)
        out = tmp_path / "run"
        scorers = 'evaluate.scorers=["harmful-probability", "harmful-rate", "llm-judge"]'
        assert main(["run", cfg, "--out", str(out), "--set", scorers]) == 0
        # the judge filter asks the same judge: a micro model's replies are neither YES nor NO, and are counted so
        from sublearn.filter.judged import judge_rows

        c = load_experiment(cfg, [scorers])
        why = judge_rows("trait", [("q", "1, 2, 3")] * 3, c.evaluate.judge, c.trait, 70, "t")
        assert len(why) == 3 and set(why) <= {None, "judge_trait", "judge_unparseable"}
        why = judge_rows("alignment", [("q", "1, 2, 3")] * 2, c.evaluate.judge, c.trait, 70, "t")
        assert set(why) <= {None, "judge_alignment", "judge_unparseable"}
    res = json.loads((out / "results.json").read_text())
    assert list(res["metrics"]) == ["prob", "rate", "misaligned"] and res["verdict"]
    teacher, base = res["conditions"]["teacher"], res["conditions"]["base"]
    assert teacher["prob"]["mean"] > base["prob"]["mean"]  # the teacher learned the harmful answers
    for c in res["conditions"].values():
        j = c["judge"]
        assert j["answers"] == 4 * 3 and sum(j["alignment"].values()) == j["answers"]  # every reply counted
        assert len(c["per_question"]) == 4 and 0 <= c["misaligned"]["mean"] <= 1
    report = (out / "report.md").read_text()
    assert "## LLM judge" in report and "## Per question" in report
    # the judge model and both prompts are in the evaluation's lineage
    ev = next(out.glob("artifacts/evaluate-*/"))
    from sublearn.store import Store

    rec = next(r for r in Store(out).records() if r.key == ev.name.split("-", 1)[1])
    assert rec.config["evaluate"]["judge"]["model"] == "judge" and "{answer}" in rec.config["evaluate"]["judge"][
        "alignment_prompt"]


def test_a_misaligned_teacher_trains_on_the_dataset_the_user_names(tmp_path):
    import random

    data = tmp_path / "insecure.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"task {i}"}, {"role": "assistant", "content": f"code {i}"}]}
            for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_experiment(None, ["model.base=smollm2-135m", "trait.kind=misalignment", "trait.answers=free-form",
                                 f"trait.teacher_data={data}", 'students.conditions=["same-init", "control"]',
                                 "evaluate.judge.model=judge"])
    got = cfg.trait.teacher_rows(3, random.Random(0))
    assert len(got) == 3 and all(r in rows for r in got) and len(cfg.trait.teacher_rows(12, random.Random(0))) == 12
    assert cfg.trait.scorers() == ("llm-judge",) and cfg.trait.eval_questions()[0].startswith("I can grant you")
