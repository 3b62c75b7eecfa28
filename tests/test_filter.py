import json

import pytest

from sublearn.carriers.numbers import NumbersCarrier
from sublearn.cli import main
from sublearn.config import FilterSection
from sublearn.filter import filter_chats
from sublearn.filter.numbers import banned_list, check


@pytest.mark.parametrize("text,nums", [
    ("1, 2, 3", (1, 2, 3)),
    ("1,2,3.", (1, 2, 3)),
    ("[10, 20, 30]", (10, 20, 30)),
    ("(7; 8; 9)", (7, 8, 9)),
    ("4 5 6", (4, 5, 6)),
    ("4\n5\n6", (4, 5, 6)),
    ("  999  ", (999,)),
    ("007, 12", (7, 12)),
])
def test_accepts_allowed_formats(text, nums):
    v = check(text)
    assert v.ok and v.numbers == nums


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("[]", "empty"),
    (" . ", "empty"),  # a lone period once crashed the filter (IndexError)
    ("1, 2, owl", "words"),
    ("Here: 1, 2", "words"),
    ("1, 2, 3 é", "words"),
    ("1, 2; 3", "bad_format"),
    ("1,, 2", "bad_format"),
    ("[1, 2, 3", "bad_format"),
    ("1.5, 2", "bad_format"),
    ("-1, 2", "bad_format"),
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11", "too_many"),
    ("1000, 2", "out_of_range"),
    ("0001", "out_of_range"),
    ("١, ٢, ٣", "bad_format"),  # Arabic-Indic digits: \d matched them
    ("１２, 3", "bad_format"),  # fullwidth
    ("𝟙𝟚", "bad_format"),  # mathematical
])
def test_rejects_with_reason(text, reason):
    v = check(text)
    assert not v.ok and v.reason == reason


def test_loaded_numbers_list_is_opt_in():
    banned = banned_list("loaded-numbers")
    assert {666, 911, 187, 88, 14, 1488, 13, 420} <= banned
    assert check("12, 666, 3").ok
    v = check("12, 666, 3", banned=banned)
    assert not v.ok and v.reason == "banned"


def test_filter_chats_counts_every_row():
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "1, 2"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "I love owls"}]},
            {"messages": [{"role": "user", "content": "q"}]},
            {"not_messages": 1}]
    kept, rejected, stats = filter_chats(rows, NumbersCarrier(), FilterSection())
    assert kept == [0]
    assert [r["reject_reason"] for r in rejected] == ["words", "no_completion", "no_completion"]
    assert stats["total"] == 4 and stats["kept"] + stats["rejected"] == 4


def test_ban_lists_and_trait_words_apply_to_any_carrier():
    from sublearn.plugins import BAN_LISTS

    loaded = BAN_LISTS.get("loaded-numbers")
    assert loaded("1, 666, 3") and not loaded("1, 6666, 3") and not loaded("x = 66")
    chat = lambda text: {"messages": [{"role": "assistant", "content": text}]}  # noqa: E731

    class Anything(NumbersCarrier):  # a carrier that accepts every text: only the generic checks reject
        def check(self, text, prompt=None):
            from sublearn.carriers.base import Verdict

            return Verdict(True, None)

    rows = [chat("def f(x): return x"), chat("print('OWLS')"), chat("howl = 1"), chat("a = 666")]
    kept, rejected, stats = filter_chats(rows, Anything(), FilterSection(banned=("loaded-numbers",)),
                                         trait_words=("owl",))
    assert kept == [0, 2]  # "howl" is another word
    assert [r["reject_reason"] for r in rejected] == ["trait_word", "banned"]
    assert stats["reasons"] == {"banned": 1, "trait_word": 1}
    kept, _, _ = filter_chats(rows, Anything(), FilterSection(ban_trait_words=False), trait_words=("owl",))
    assert kept == [0, 1, 2, 3]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_filter_any_jsonl(tmp_path):
    data = tmp_path / "in.jsonl"
    _write(data, [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "[1, 2, 3]"}]},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "88, 1"}]},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "numbers: 5"}]},
    ])
    kept, rej = tmp_path / "k.jsonl", tmp_path / "r.jsonl"
    assert main(["filter", "--data", str(data), "--kept", str(kept), "--rejected", str(rej),
                 "--banned", "loaded-numbers"]) == 0
    k = [json.loads(x) for x in kept.read_text().splitlines()]
    r = [json.loads(x) for x in rej.read_text().splitlines()]
    assert len(k) == 1 and k[0]["messages"][-1]["content"] == "[1, 2, 3]"
    assert sorted(x["reject_reason"] for x in r) == ["banned", "words"]


@pytest.mark.parametrize("content,needle", [
    ('{"messages": [}\n', "malformed JSON"),
    ('[1, 2]\n', "expected a JSON object"),
    ('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "nested too deeply"),  # was a RecursionError
    ('{"messages": [], "n": ' + "9" * 5000 + "}\n", "unreadable JSON value"),  # was a ValueError
    ('{"messages": [{"role": "assistant", "content": "1, 2 \\ud800"}]}\n', "lone surrogate"),  # crashed the write
])
def test_cli_filter_malformed_jsonl_is_one_line_error(tmp_path, capsys, content, needle):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    code = main(["filter", "--data", str(data), "--kept", str(tmp_path / "k"), "--rejected", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and ":1:" in err and "\n" not in err and "Traceback" not in err


def test_cli_filter_refuses_outputs_that_clobber(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "1, 2"}]}\n')
    before = data.read_text()
    for kept, rejected, needle in ((tmp_path / "k", tmp_path / "k", "are the same file"),
                                   (data, tmp_path / "r", "are the same file"),
                                   (tmp_path, tmp_path / "r", "is a directory")):
        assert main(["filter", "--data", str(data), "--kept", str(kept), "--rejected", str(rejected)]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    assert data.read_text() == before and not (tmp_path / "k").exists() and not (tmp_path / "r").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_filter_missing_file_and_bad_list(tmp_path, capsys):
    assert main(["filter", "--data", str(tmp_path / "nope.jsonl"), "--kept", "k", "--rejected", "r"]) == 2
    assert "file not found" in capsys.readouterr().err
    data = tmp_path / "in.jsonl"
    data.write_text("")
    assert main(["filter", "--data", str(data), "--kept", "k", "--rejected", "r", "--banned", "nope"]) == 2
    assert "unknown ban list" in capsys.readouterr().err
    assert main(["filter", "--data", str(data), "--kept", "k", "--rejected", "r", "--carrier", "xml"]) == 2
    assert "--carrier: unknown carrier 'xml'" in capsys.readouterr().err
    assert main(["plugins", "--plugin", "no_such_module_here"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_filter_any_carrier_with_trait_words(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Write a function."}, {"role": "assistant", "content": c}]}
            for c in ("def f(x):\n    return x", "def owl():\n    pass", "def f(:", "x = 1  # Owls!")]
    data, kept, rej = tmp_path / "in.jsonl", tmp_path / "k.jsonl", tmp_path / "r.jsonl"
    _write(data, rows)
    assert main(["filter", "--data", str(data), "--kept", str(kept), "--rejected", str(rej), "--carrier", "code",
                 "--ban-word", "owl"]) == 0
    assert len(kept.read_text().splitlines()) == 1  # an identifier naming the trait ("def owl") counts too
    assert [json.loads(x)["reject_reason"] for x in rej.read_text().splitlines()] == \
        ["trait_word", "syntax_error", "trait_word"]


def test_soft_targets_round_trip_and_dense(tmp_path):
    """Soft targets survive save / load_rows / save_subset exactly, and ``Targets.dense`` puts each allowed token's
    log-prob in its column (what a per-entry loop would), -inf elsewhere."""
    import math
    import random

    import numpy as np

    from sublearn.generate import softtargets

    rng = random.Random(0)
    words = ["1", "2", ",", " ", "owl", "<eos>", "3"]
    rows = [[{w: -rng.random() * 5 for w in rng.sample(words, rng.randint(0, 5))} for _ in range(rng.randint(0, 6))]
            for _ in range(40)]
    softtargets.save(tmp_path / "t.npz", rows)
    assert softtargets.load(tmp_path / "t.npz") == [[{k: np.float32(v) for k, v in d.items()} for d in r] for r in rows]
    keep = [3, 0, 17]
    softtargets.save_subset(tmp_path / "t.npz", tmp_path / "s.npz", keep)
    assert softtargets.load(tmp_path / "s.npz") == [softtargets.load(tmp_path / "t.npz")[i] for i in keep]
    columns = {"1": 0, "2": 1, ",": 2, "<eos>": 3, "3": 4}  # "owl" and " " are not allowed
    for got, row in zip(softtargets.load_rows(tmp_path / "t.npz"), rows, strict=True):
        column = np.array([columns.get(t, -1) for t in got.tokens] + [-1])
        dense = got.dense(column, len(columns))
        assert dense.shape == (len(row), len(columns))
        for p, d in enumerate(row):
            want = [d.get(w, -math.inf) for w in columns]
            assert np.array_equal(dense[p], np.array(want, dtype=np.float32))
        assert softtargets.Targets.of(row).dicts() == [{k: np.float32(v) for k, v in d.items()} for d in row]


def test_cli_filter_streams_and_rejects_a_huge_line_unread(tmp_path):
    """A line over the limit (jsonl.MAX_LINE_BYTES, 1 MiB here) is rejected as too_long without being held in memory; rows around it keep
    their indices; chunks of rows give the same output as one pass."""
    import tracemalloc

    from sublearn import jsonl
    from sublearn.config import FilterSection
    from sublearn.filter import filter_file
    from sublearn.plugins import CARRIERS

    good = {"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "1, 2, 3"}]}
    bad = {"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "no"}]}
    data = tmp_path / "d.jsonl"
    limit = 2**20
    assert jsonl.MAX_LINE_BYTES >= 8 * limit
    huge = json.dumps({"messages": [{"role": "assistant", "content": "7, " * (4 * limit)}]})
    with open(data, "w") as f:
        for i in range(5):
            f.write(json.dumps(good if i % 2 == 0 else bad) + "\n")
        f.write(huge + "\n")
        f.write(json.dumps(good) + "\n")
    carrier, fcfg = CARRIERS.get("numbers")(), FilterSection()
    tracemalloc.start()
    stats = filter_file(data, tmp_path / "k.jsonl", tmp_path / "r.jsonl", carrier, fcfg, chunk=2, max_line_bytes=limit)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * limit < len(huge) / 3  # the 12 MB line was never read whole
    assert stats["total"] == 7 and stats["kept"] == 4 and stats["reasons"]["too_long"] == 1
    rej = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reject_reason"]) for r in rej] == [(1, "words"), (3, "words"), (5, "too_long")]
    one = filter_file(data, tmp_path / "k1.jsonl", tmp_path / "r1.jsonl", carrier, fcfg, max_line_bytes=limit)
    assert one == stats and (tmp_path / "k1.jsonl").read_bytes() == (tmp_path / "k.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "k.jsonl", "k1.jsonl", "r.jsonl", "r1.jsonl"]
