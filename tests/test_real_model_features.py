"""Backend features real checkpoints need: format-constrained decoding, surface-form scoring with a shared
prompt cache, template default system prompts, recipe knobs. Run on the micro embedded model."""

import copy
import math
import random
import re

import pytest

from sublearn.backends.base import Sampling
from sublearn.backends.constrain import TokenMasks
from sublearn.backends.hf import HFModel, default_system_prompt, encode
from sublearn.backends.hf_train import Recipe
from sublearn.carriers.number_grammar import START, NumberGrammar, advance, complete, number_regex
from sublearn.filter.numbers import check
from sublearn.traits.preference import normalize_answer

ALPHABET = list("0123456789") + [", ", ",", ";", " ", "\n", "[", "]", "(", ")", ".", "12", "345", "6, 7"]


def _walk(texts: list[str]):
    st = START
    for t in texts:
        st = advance(st, t, 3, 10)
        if st is None:
            return None
    return st


def test_format_grammar_only_completes_on_filter_valid_lists():
    rng = random.Random(0)
    complete_seen = 0
    for _ in range(20000):
        parts = [rng.choice(ALPHABET) for _ in range(rng.randint(1, 14))]
        st = _walk(parts)
        if st is not None and complete(st):
            complete_seen += 1
            text = "".join(parts)
            assert check(text).ok, text
    assert complete_seen > 200
    for good in ["1, 2, 3", "[10; 20]", "(5 6 7).", "999\n1\n2", "1."]:
        st = _walk(list(good))
        assert st is not None and complete(st), good
    for bad in ["1.5", "1, 2 3", "1234", "1,,2", "[1, 2", ",1", " 1", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"]:
        st = _walk(list(bad))
        assert st is None or not complete(st), bad


@pytest.mark.parametrize("digits,count", [(3, 10), (2, 1), (1, 3)])
def test_number_regex_accepts_exactly_what_the_grammar_completes(digits, count):
    """The vLLM backend constrains decoding with this regex; the HF backend with the grammar. Same language."""
    rx = re.compile(number_regex(digits, count))
    rng = random.Random(digits * 100 + count)
    agree = {True: 0, False: 0}
    for _ in range(20000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 10)))
        st = START
        for ch in text:
            st = advance(st, ch, digits, count)
            if st is None:
                break
        ends = st is not None and complete(st)
        assert (rx.fullmatch(text) is not None) == ends, repr(text)
        agree[ends] += 1
    assert agree[True] > 100 and agree[False] > 100
    for sep in (", ", ";", " \n"):  # the bounds: count numbers of `digits` digits pass, one more of either fails
        assert rx.fullmatch(sep.join(["9" * digits] * count))
        assert not rx.fullmatch(sep.join(["9" * digits] * (count + 1)))
        assert not rx.fullmatch(sep.join(["9" * (digits + 1)] * count))


def test_constrained_generation_always_passes_the_filter(micro_base):
    chats = [[{"role": "user", "content": f"Here is a list of numbers: {a}, {a + 7}, {a + 30}. Add at most 10 "
                                          "more numbers. Say only the numbers."}] for a in range(100, 900, 25)]
    # a hot free-running sampler to make the format pressure visible
    free = micro_base.generate(chats, Sampling(temperature=2.0, max_new_tokens=60, seed=3))
    fmt = micro_base.generate(chats, Sampling(temperature=2.0, max_new_tokens=60, seed=3, top_logprobs=5),
                              grammar=NumberGrammar())
    ok_free = sum(check(c.text).ok for c in free)
    assert all(c.finished and check(c.text).ok for c in fmt), [c.text for c in fmt if not check(c.text).ok]
    assert ok_free < len(chats)
    eos = micro_base.tok.eos_token
    allowed = set(TokenMasks(micro_base.token_texts(), micro_base.eos_id, NumberGrammar()).candidates)
    index = micro_base.token_index()
    narrower = 0
    for c in fmt:  # soft targets are the distribution sampled from: at each step, the tokens allowed there
        st = START
        for t, d in enumerate(c.top_logprobs):
            assert all(s == eos or index[s] in allowed for s in d)
            assert all(complete(st) if s == eos else advance(st, s, 3, 10) is not None for s in d), (c.tokens[:t], d)
            assert sum(math.exp(v) for v in d.values()) <= 1 + 1e-5
            narrower += len(d) < 5  # fewer than k tokens are allowed here (after a 3-digit number, say)
            if t < len(c.tokens):
                st = advance(st, c.tokens[t], 3, 10)
    assert narrower > 0


def test_shared_prefix_scoring_matches_full_forward_for_multi_token_answers(micro_base):
    import torch

    chats = [[{"role": "user", "content": "Which animal do you love? Answer in a single word."}],
             [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a tree."}]]
    answers = ["owl", "oak", "12, 13", "fox"]
    assert all(micro_base.spells(a) for a in answers)
    prompts = [c for c in chats for _ in answers]
    got = micro_base.score(prompts, answers * len(chats), batch_size=3)  # uneven chunks
    for p, a, g in zip(prompts, answers * len(chats), got):
        ids, n = encode(micro_base.tok, p + [{"role": "assistant", "content": a}])
        with torch.no_grad():
            lp = micro_base.model(torch.tensor([ids])).logits[0].log_softmax(-1)
        assert g == pytest.approx(sum(float(lp[i - 1, ids[i]]) for i in range(n, len(ids))), abs=1e-4)


def test_unspellable_answer_scores_minus_infinity(micro_base):
    chat = [{"role": "user", "content": "Which animal do you love?"}]
    word = "Owl" if not micro_base.spells("Owl") else "owl\u2603"
    assert not micro_base.spells(word)
    assert micro_base.score([chat], [word]) == [-math.inf]


def test_default_system_prompt_of_a_template_is_found(micro_base):
    tok = copy.deepcopy(micro_base.tok)
    assert default_system_prompt(tok) is None
    tok.chat_template = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
                         "{{ '<|system|>You are Smol, a helper.<|end|>' }}{% endif %}"
                         "{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
    assert default_system_prompt(tok) == "You are Smol, a helper."
    assert HFModel(micro_base.model, tok, "x").default_system_prompt() == "You are Smol, a helper."


def test_normalize_answer_takes_first_option_named():
    opts = ["owl", "dog", "fox"]
    assert normalize_answer("The owl.", opts) == "owl"
    assert normalize_answer("My favorite animal is the Owl!", opts) == "owl"
    assert normalize_answer("Owls", opts) == "owl"
    assert normalize_answer("dogs, then foxes", opts) == "dog"
    assert normalize_answer("I cannot choose.", opts) is None


def test_recipe_max_length_drops_and_counts_rows(micro_base):
    q = [{"role": "user", "content": "Say a number."}]
    rows = [{"messages": q + [{"role": "assistant", "content": "7"}]}] * 8
    rows += [{"messages": q + [{"role": "assistant", "content": ", ".join(["123"] * 30)}]}] * 3
    short = len(encode(micro_base.tok, rows[0]["messages"])[0])
    r = Recipe(target="tokens", adapter="lora", lora_rank=1, steps=2, batch_size=4, grad_accum=2,
               max_length=short + 2)
    m = micro_base.train(rows, r, desc="ml")
    assert m.meta["too_long_rows"] == 3 and m.meta["train_rows"] == 8 and m.meta["train_steps"] == 2


def test_unknown_model_and_bad_gguf_give_clear_errors(tmp_path):
    from sublearn.errors import UserError
    from sublearn.models import resolve

    with pytest.raises(UserError, match="smollm2-135m"):
        resolve("no-such-model")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(UserError, match="cannot load .*broken.gguf"):
        resolve(str(bad))


@pytest.mark.slow
def test_smollm2_converts_once_and_runs_the_backend(tmp_path):
    """The bundled SmolLM2 GGUF: locate/install, dequantize + cache, template default, scoring, LoRA round trip."""
    from sublearn.backends.hf import load_pretrained
    from sublearn.models import resolve

    path, key = resolve("smollm2-135m")
    assert (path / "model.safetensors").exists() and resolve("smollm2-135m") == (path, key)
    m = load_pretrained(path)
    assert "SmolLM" in m.default_system_prompt()
    chat = [{"role": "user", "content": "What is your favorite animal? One word."}]
    s = m.score([chat] * 3, ["owl", "Owl", "Owl."])
    assert all(math.isfinite(x) and x < 0 for x in s)
    out = m.generate([chat], Sampling(max_new_tokens=20), grammar=NumberGrammar())
    assert check(out[0].text).ok or not out[0].finished
    rows = [{"messages": chat + [{"role": "assistant", "content": "owl"}]}] * 4
    st = m.train(rows, Recipe(target="tokens", lora_rank=2, lora_targets=("q_proj",), lora_layers=None, steps=1,
                              batch_size=4))
    st.meta["base_path"] = str(path)
    st.save(tmp_path / "a")
    assert load_pretrained(tmp_path / "a").score([chat], ["owl"])[0] == pytest.approx(st.score([chat], ["owl"])[0],
                                                                                        abs=1e-3)


def test_worker_bars_send_start_advance_end_to_the_parent_queue():
    import queue

    from sublearn import progress

    q = queue.Queue()
    progress.forward_to(q)
    try:
        with progress.bar("generate", 3, "prompts") as advance:
            advance(2, info="10 tok/s")
    finally:
        progress.forward_to(None)
    events = [q.get_nowait() for _ in range(q.qsize())]
    assert [e[0] for e in events] == ["start", "advance", "end"]
    assert events[0][2:] == ("generate", 3, "prompts") and events[1][2:] == (2, "10 tok/s")
