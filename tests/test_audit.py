"""`sublearn audit`, first increment: any chat JSONL in (messages or prompt/completion), a verdict, audit.json,
audit.md and a chart out, exit 0 clear / 1 flagged / 2 bad input. The detectors' power is not asserted here (see
docs/audit.md: it is not yet where the issue wants it)."""

import json

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
    err = capsys.readouterr().err
    assert "--carrier: unknown carrier 'xml'" in err and "--max-rows must be at least 2" in err
    assert "Traceback" not in err
