"""Property tests of the three places bad input enters (hypothesis): the number parser, the config loader and the
JSONL reader. Any input gives a verdict, a config or a one-line UserError, never another exception."""

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sublearn.errors import UserError  # noqa: E402
from sublearn.filter.numbers import REASONS, check  # noqa: E402

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


@FAST
@given(st.text(max_size=80))
def test_number_check_is_total_and_its_numbers_round_trip(text):
    v = check(text)
    assert v.ok or v.reason in REASONS
    if v.ok:
        assert 1 <= len(v.numbers) <= 10 and all(0 <= n <= 999 for n in v.numbers)
        assert check(", ".join(map(str, v.numbers))).numbers == v.numbers


@FAST
@given(st.lists(st.integers(0, 999), min_size=1, max_size=10), st.sampled_from([", ", ",", "; ", " ", "\n"]),
       st.sampled_from(["{}", "[{}]", "({})", "{}.", "[{}]."]))
def test_every_clean_list_is_kept_with_its_numbers(nums, sep, wrap):
    v = check(wrap.format(sep.join(map(str, nums))))
    assert v.ok and v.numbers == tuple(nums)


@FAST
@given(st.lists(st.integers(0, 999), min_size=1, max_size=5), st.integers(0, 4),
       st.characters(categories=["Nd"]).filter(lambda c: not "0" <= c <= "9"))
def test_only_ascii_digits_are_numbers(nums, at, digit):
    parts = [str(n) for n in nums]
    parts[at % len(parts)] += digit
    assert not check(", ".join(parts)).ok


FIELDS = ["seeds", "trait.target", "students.recipe.lr", "students.recipe.lora_layers", "students.recipe.rank",
          "generate.n_prompts", "evaluate.temperature", "evaluate.question_prefix", "students.in_context_k",
          "model.embedded.tiny.d_model", "teacher.recipe.steps", "carrier.max_count", "students.conditions",
          "filter.banned", "nonexistent.field", "model.base"]
VALUES = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=30), st.lists(st.integers(-5, 2**65), max_size=3), st.booleans())


@FAST
@given(st.sampled_from(FIELDS), VALUES)
def test_any_override_is_a_config_or_a_one_line_error(field, value):
    from sublearn.config import load_experiment

    try:
        load_experiment(None, [f"{field}={json.dumps(value)}"])
    except UserError:  # anything else (a ValueError, a TypeError, an OverflowError) fails the test
        pass


@FAST
@given(st.text(max_size=200))
def test_any_toml_text_is_a_config_or_a_one_line_error(tmp_path, text):
    from sublearn.config import load_experiment

    p = tmp_path / "c.toml"
    p.write_bytes(text.encode("utf-8", "replace"))
    try:
        load_experiment(str(p))
    except UserError:
        pass


@FAST
@given(st.lists(st.one_of(st.binary(max_size=60), st.sampled_from([
    b'{"messages": [{"role": "assistant", "content": "1, 2"}]}', b'{"messages": [}', b"[1]", b"\xff\xfe",
    b'{"a": "\\ud800"}', b'{"n": ' + b"9" * 5000 + b"}", b"[" * 5000, b""])), max_size=6))
def test_any_bytes_are_rows_or_a_one_line_error_and_filtering_leaves_no_stray_files(tmp_path, lines):
    from sublearn import jsonl
    from sublearn.config import FilterSection
    from sublearn.filter import filter_file
    from sublearn.plugins import CARRIERS

    d = tmp_path / "case"
    d.mkdir(exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    data = d / "in.jsonl"
    data.write_bytes(b"\n".join(lines))
    try:
        rows = jsonl.read(data)
        assert all(isinstance(r, dict) for r in rows)
    except UserError as e:
        assert "\n" not in str(e)
        rows = None
    try:
        stats = filter_file(data, d / "k.jsonl", d / "r.jsonl", CARRIERS.get("numbers")(), FilterSection())
        assert rows is not None and stats["total"] == len(rows) == stats["kept"] + stats["rejected"]
        assert sorted(f.name for f in d.iterdir()) == ["in.jsonl", "k.jsonl", "r.jsonl"]
    except UserError:
        assert rows is None and sorted(f.name for f in d.iterdir()) == ["in.jsonl"]
