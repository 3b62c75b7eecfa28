"""Plug-ins: a module outside the package registers a trait, a carrier and a scorer, and an experiment runs on them
end to end (worker processes load it too); bad plug-ins and user-defined traits fail in one line."""

import json
from pathlib import Path

import pytest
from conftest import micro_config

from sublearn.cli import main
from sublearn.config import load_experiment
from sublearn.errors import UserError

PLUGIN = str(Path(__file__).resolve().parents[1] / "examples" / "plugins" / "digits_and_fans.py")


def test_a_plugin_module_runs_end_to_end_with_its_own_trait_carrier_and_scorer(tmp_path):
    extra = """
[trait]
kind = "fan"
favorite = "owl"
rival = "cat"
[carrier]
kind = "digits"
max_count = 5
[students]
conditions = ["same-init", "control", "other-trait"]
"""
    cfg = micro_config(tmp_path, extra, model="workers = 2", seeds="[0]")
    text = Path(cfg).read_text()
    Path(cfg).write_text(f'plugins = ["{PLUGIN}"]\n' + text)
    out = tmp_path / "run"
    assert main(["run", cfg, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["trait"]["kind"] == "fan" and res["trait"]["label"] == "owl-fan" and res["carrier"]["kind"] == "digits"
    assert list(res["metrics"]) == ["share", "rate"]  # the plug-in's scorer first: the verdict's metric
    assert res["verdict"].startswith("same-init students:") or "owl-fan" in res["verdict"]
    assert set(res["conditions"]) == {"base", "teacher", "same-init", "control", "other-trait"}
    for c in res["conditions"].values():
        assert 0 <= c["share"]["mean"] <= 1 and "options" not in c  # no option distribution from this scorer
    for name, stats in res["filter"].items():
        assert stats["total"] == 64 and stats["kept"] > 0, (name, stats)
    from sublearn.carriers.base import Carrier  # noqa: F401  (the plug-in module is loaded in this process too)
    from sublearn.plugins import CARRIERS

    digits = CARRIERS.get("digits")(max_count=5)
    for kept in out.glob("artifacts/filter-*/kept.jsonl"):
        for line in kept.read_text().splitlines():
            text = json.loads(line)["messages"][-1]["content"]
            assert digits.check(text).ok and "owl" not in text.lower()
    # the other-trait teacher is the rival's fan: its own label and the trait's other variant
    names = {json.loads(p.read_text())["target"] for p in out.glob("artifacts/teacher-*/teacher.json")}
    assert names == {"owl-fan", "cat-fan"}
    report = (out / "report.md").read_text()
    assert "transmit through digits" in report and "favorite-share" in report and (out / "trait_share.png").exists()


def test_unknown_or_broken_plugins_fail_in_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown carrier 'xml'; known: code, .*numbers"):
        load_experiment(None, ["carrier.kind=xml"])
    with pytest.raises(UserError, match="unknown trait 'sycophancy'"):
        load_experiment(None, ["trait.kind=sycophancy"])
    with pytest.raises(UserError, match="plug-in module 'no_such_module_here' not found"):
        load_experiment(None, ['plugins=["no_such_module_here"]'])
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserError, match="plug-in .*bad_plugin.py: RuntimeError: boom"):
        load_experiment(None, [f'plugins=["{bad}"]'])
    with pytest.raises(UserError, match="unknown scorer 'judge'"):
        load_experiment(None, ['evaluate.scorers=["judge"]'])
    with pytest.raises(UserError, match="unknown ban list 'loaded-words'"):
        load_experiment(None, ['filter.banned=["loaded-words"]'])
    # a plug-in's parameters are checked by its own model, after the module is loaded
    with pytest.raises(UserError, match="max_count"):
        load_experiment(None, [f'plugins=["{PLUGIN}"]', "carrier.kind=digits", "carrier.max_count=50"])
    with pytest.raises(UserError, match="favorite and rival"):
        load_experiment(None, [f'plugins=["{PLUGIN}"]', "trait.kind=fan", "trait.rival=owl"])
    assert main(["config", "--set", "carrier.kind=xml"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_user_defined_preference_traits():
    cfg = load_experiment(None, ['trait.options=["owl", "cat", "dog"]', "trait.target=dog"])
    assert cfg.trait.other_target() == "owl" and cfg.trait.option_list() == ["owl", "cat", "dog"]
    qs = ["Which animal is best? One word."]
    cfg = load_experiment(None, ["model.base=smollm2-135m", "trait.category=bird", "trait.plural=birds",
                                 'trait.options=["robin", "crow", "heron"]', "trait.target=heron",
                                 f"trait.questions={json.dumps(qs)}", 'students.conditions=["same-init", "control"]'])
    assert cfg.trait.eval_questions() == qs and cfg.trait.system_prompt().endswith("favorite birds. Imbue your "
                                                                                   "answers with your love for the birds.")
    # the default questions are asked about the user's category
    cfg2 = cfg.model_copy(update={"trait": cfg.trait.model_copy(update={"questions": None})})
    assert "Name your favorite bird using only one word." in cfg2.trait.eval_questions()
    # the embedded models know only their corpus's words: one clear line, before anything runs
    with pytest.raises(UserError, match="embedded model 'tiny' cannot read the option 'robin'"):
        load_experiment(None, ["trait.category=bird", 'trait.options=["robin", "crow"]', "trait.target=crow"])
    with pytest.raises(UserError, match="cannot read the question"):
        load_experiment(None, [f"trait.questions={json.dumps(qs)}"])
    with pytest.raises(UserError, match="not built in"):
        load_experiment(None, ["trait.category=bird", "trait.target=crow"])
    with pytest.raises(UserError, match="one lowercase word"):
        load_experiment(None, ['trait.options=["owl", "Big Cat"]'])
    with pytest.raises(UserError, match=r"only \{c\} and \{cs\}"):
        load_experiment(None, ['trait.questions=["Your {favorite}?"]', "model.base=smollm2-135m"])


def test_conditions_register_from_a_plugin():
    from sublearn import conditions

    c = conditions.Condition("in-context-other", "in-context", "base", "other", "in-context-control",
                             "the base shown k of the other-trait teacher's examples")
    conditions.register(c)
    assert "in-context-other" in conditions.choosable() and conditions.in_context()["in-context-other"] == c
    with pytest.raises(ValueError, match="registered twice"):
        conditions.register(c.__class__(**{**c.__dict__, "about": "else"}))
    with pytest.raises(ValueError, match="register its matched control"):
        conditions.register(conditions.Condition("x", "student", "base", "teacher", "nope", ""))


def test_distillation_targets_come_from_the_carrier_with_no_fallback(micro_base):
    from sublearn.backends import hf_train as T
    from sublearn.backends.hf_train import Recipe
    from sublearn.carriers.numbers import NumbersCarrier
    from sublearn.generate.softtargets import Targets

    g = NumbersCarrier().grammar()
    eos = micro_base.tok.eos_token
    allowed = T.allowed_ids(micro_base, g)
    assert eos in allowed and "7" in allowed and not any(c.isalpha() for t in allowed if t != eos for c in t)
    assert len(T.allowed_ids(micro_base)) == len(micro_base.token_index())  # no grammar: every token
    chat = [{"role": "user", "content": "Look at these numbers: 1, 2, 3. Add at most 10 more numbers."},
            {"role": "assistant", "content": "4, 5"}]
    tokens = ["4", ",", " ", "5"]
    tl = [{"4": -0.1}, {",": -0.2}, {" owl": -0.1}, {"5": -0.3}, {eos: -0.1}]  # one step: only a word in the top-k
    row = {"messages": chat, "tokens": tokens, "top_logprobs": Targets.of(tl)}
    ex, counts = T._examples(micro_base, [row], Recipe(target="logits"), "t", g)
    assert counts["positions_without_targets"] == 1 and len(ex[0]["pos"]) == len(tl) - 1 == len(ex[0]["tdense"])


def test_an_installed_package_registers_through_its_entry_point(tmp_path, monkeypatch):
    import sys

    from sublearn import plugins

    (tmp_path / "fakeplug_mod.py").write_text(
        "from sublearn.plugins import BAN_LISTS\n\n@BAN_LISTS.register('sevens')\ndef sevens(text):\n"
        "    return '7' in text\n")
    dist = tmp_path / "fakeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sublearn.plugins]\nsevens = fakeplug_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_loaded_entry_points", False)
    cfg = load_experiment(None, ['filter.banned=["sevens"]'])  # no `plugins` key: found through the entry point
    assert cfg.filter.banned == ("sevens",) and plugins.BAN_LISTS.get("sevens")("1, 7") and "fakeplug_mod" in sys.modules
