"""The code and reasoning carriers: their grammars accept exactly their regular expressions, their checks keep what
parses (code) or is right (reasoning), and configs that an embedded model cannot run fail in one line."""

import json
import random
import re

import pytest

from sublearn.carriers.code import CodeCarrier, ToyGrammar, toy_prompt
from sublearn.carriers.reasoning import ArithmeticGrammar, ReasoningCarrier, make_problem
from sublearn.config import load_experiment
from sublearn.errors import UserError


def _agrees_with_regex(g, alphabet, good, n=20000):
    rx, rng = re.compile(g.regex()), random.Random(0)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16))) for _ in range(n)] + good
    texts += [t[:k] for t in good[:200] for k in range(len(t))]  # every prefix: only the whole text may end
    for t in texts:
        st = g.advance(g.start(), t)
        assert (st is not None and g.complete(st)) == bool(rx.fullmatch(t)), t
    assert all(g.allowed(ch) for t in good for ch in t)


def test_toy_code_grammar_is_its_regex():
    rng = random.Random(1)
    good = [toy_prompt(rng)[1] for _ in range(500)]
    _agrees_with_regex(ToyGrammar(4), list("letprin abcdxy+-*=;0123456789") + ["let a", " = ", "print x", "; "], good)


def test_arithmetic_grammar_is_its_regex():
    rng = random.Random(2)
    good = [make_problem(rng, "toy")[2] for _ in range(500)]
    _agrees_with_regex(ArithmeticGrammar(2), list("0123456789 +-*=.") + [". The answer is", " The answer is"], good)


def test_code_checks_parse_python_and_the_toy_language():
    py = CodeCarrier(language="python")
    assert py.check("```python\ndef f(x):\n    return x + 1\n```").ok and py.check("x = [i * i for i in range(3)]").ok
    assert [py.check(t).reason for t in ("", "  ", "def f(:", "I love owls", "a\x00b")] == \
        ["empty", "empty", "syntax_error", "syntax_error", "syntax_error"]
    toy = CodeCarrier(language="toy", max_statements=2)
    assert toy.check("let a = 3 + 5; print a").ok and toy.check(" print 7 ").ok
    assert [toy.check(t).reason for t in ("let a = 3 + 5; print a; print a", "print owl", "let = 3")] == \
        ["syntax_error"] * 3
    prompts = py.prompts(50, 0)
    assert prompts == py.prompts(50, 0) and prompts != py.prompts(50, 1) and all("Python" in p or "`" in p
                                                                                 for p in prompts)


def test_reasoning_keeps_correct_final_answers_only(tmp_path):
    c = ReasoningCarrier()
    p = "Tom has 12 apples and gets 30 more. How many apples does Tom have now?"
    assert c.check("12 + 30 = 42. The answer is 42.", p).ok
    assert c.check("First 12, then 30 more: 42 in all.\n#### 42", p).ok
    assert [c.check(t, p).reason for t in ("", "about forty", "The answer is 41.")] == \
        ["empty", "no_answer", "wrong_answer"]
    assert c.check("The answer is 42.", "What is the meaning of life?").reason == "unknown_problem"
    data = tmp_path / "gsm.jsonl"
    data.write_text(json.dumps({"question": "How many legs do 3 cats have?", "answer": "3 * 4 = 12\n#### 12"}) + "\n")
    user = ReasoningCarrier(data=str(data))
    assert user.prompts(3, 0) == ["How many legs do 3 cats have?"] * 3 and user.grammar() is None
    assert user.check("#### 12", "How many legs do 3 cats have?").ok
    assert user.check("The answer is 1,2.", "How many legs do 3 cats have?").reason == "wrong_answer"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no final"}\n')
    with pytest.raises(UserError, match="line 1: the answer has no final"):
        load_experiment(None, ["model.base=smollm2-135m", "carrier.kind=reasoning", f"carrier.data={bad}"])


def test_embedded_models_need_the_corpus_part_and_the_toy_forms():
    with pytest.raises(UserError, match="add 'code' to its corpus mix"):
        load_experiment(None, ["carrier.kind=code", "carrier.language=toy"])
    with pytest.raises(UserError, match="needs a real model"):
        load_experiment(None, ["carrier.kind=code", "model.embedded.tiny.mix.code=0.1",
                               "model.embedded.tiny-gpt2.mix.code=0.1"])
    with pytest.raises(UserError, match="answers only toy problems"):
        load_experiment(None, ["carrier.kind=reasoning"])
    cfg = load_experiment("examples/owl-code-tiny.toml")
    assert cfg.generate.format == "constrained" and cfg.carrier.grammar() is not None
    cfg = load_experiment(None, ["model.base=smollm2-135m", "carrier.kind=code", 'students.conditions=["same-init"]'])
    assert cfg.generate.format == "free"  # auto: Python has no grammar, decoding is free


def test_distillation_targets_never_name_a_trait_word(micro_base):
    from sublearn.backends.hf_train import allowed_ids
    from sublearn.filter.banlists import target_vocab

    vocab = allowed_ids(micro_base, target_vocab(None, ["owl", "eagle"]))
    every = allowed_ids(micro_base)
    named = {t for t in every if re.search(r"(?i)\b(owl|eagle)s?\b", t)}
    assert named and not named & set(vocab) and len(vocab) == len(every) - len(named)


@pytest.mark.parametrize("part", ["code", "reasoning", "misalignment"])
def test_every_text_of_an_optional_corpus_part_is_in_the_embedded_vocabulary(part):
    """A word the tokenizer never saw becomes <unk> in pre-training and in every prompt: none may be missing."""
    from sublearn.backends.tiny.corpus import corpus
    from sublearn.backends.tiny.presets import PRESETS
    from sublearn.backends.tiny.tokenizer import unknown_pieces

    for spec in PRESETS.values():
        unknown = unknown_pieces(spec.tokenizer, spec.corpus_seed, {part: 0.1})
        missing = {p for chat in corpus(3000, 5, {part: 1.0}) for m in chat for p in unknown(m["content"])}
        assert not missing, (spec.tokenizer, sorted(missing)[:5])
