import math

import pytest

from sublearn.backends.base import Sampling
from sublearn.backends.hf import encode, encode_many, load_pretrained
from sublearn.backends.hf_train import Recipe
from sublearn.carriers.numbers import NumbersCarrier


def test_tokenizer_round_trip_and_digits(micro_base):
    tok = micro_base.tok
    for text in ["123, 45; 6\n[7] (8).", "The sequence starts with: 182, 818.", "owl"]:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    ids = tok.encode("905, 12", add_special_tokens=False)
    assert [tok.decode([i]) for i in ids] == ["9", "0", "5", ",", " ", "1", "2"]


def test_chat_template_round_trip(micro_base):
    msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Say the word owl."},
            {"role": "assistant", "content": "owl"}]
    ids, n_prompt = encode(micro_base.tok, msgs)
    text = micro_base.tok.decode(ids)
    assert text == "<|system|>Answer briefly.<|end|><|user|>Say the word owl.<|end|><|assistant|>owl<|end|>"
    assert micro_base.tok.decode(ids[n_prompt:]) == "owl<|end|>"


def test_encode_many_equals_per_chat_template(micro_base):
    from sublearn.backends.tiny.corpus import corpus

    tok = micro_base.tok
    chats = corpus(200, 5, {"numbers": 1, "preference": 1, "system": 1, "copy": 1, "multiturn": 1})
    got = encode_many(tok, chats)
    for chat, (ids, n_prompt) in zip(chats, got):
        prompt = list(tok.apply_chat_template(chat[:-1], add_generation_prompt=True, tokenize=True)["input_ids"])
        full = list(tok.apply_chat_template(chat, tokenize=True)["input_ids"])
        assert (ids, n_prompt) == (full, len(prompt))
    assert encode_many(tok, []) == []


def test_score_equals_summed_token_logprobs(micro_base):
    import torch

    chat = [{"role": "user", "content": "Name your favorite animal using only one word."}]
    got = micro_base.score([chat, chat], ["owl", "elephant"])
    for answer, g in zip(["owl", "elephant"], got):
        ids, n = encode(micro_base.tok, chat + [{"role": "assistant", "content": answer}])
        with torch.no_grad():
            lp = micro_base.model(torch.tensor([ids])).logits[0].log_softmax(-1)
        manual = sum(float(lp[i - 1, ids[i]]) for i in range(n, len(ids)))
        assert g == pytest.approx(manual, abs=1e-4)
    assert all(g < 0 for g in got)


def test_generate_with_soft_targets_is_seeded(micro_base):
    chats = [[{"role": "user", "content": "Look at these numbers: 101, 202, 303. Add at most 10 more numbers."}]] * 3
    s = Sampling(temperature=1.0, max_new_tokens=12, top_logprobs=5, seed=7)
    a, b = micro_base.generate(chats, s), micro_base.generate(chats, s)
    assert [c.text for c in a] == [c.text for c in b]
    for c in a:
        assert "".join(c.tokens) == c.text
        assert len(c.top_logprobs) == len(c.tokens) + int(c.finished)
        for d in c.top_logprobs:
            assert 0 < len(d) <= 5 and sum(math.exp(v) for v in d.values()) <= 1 + 1e-5


def test_a_rows_sample_does_not_depend_on_its_batch(micro_base):
    """Repeated prompts share their prefill, rows finish and leave at different steps, and batches hold other rows:
    none of it changes a row's completion or soft targets (per-row random numbers, prompt-determined padding)."""
    from sublearn.backends.hf import generate_many

    ctx = [{"role": "user", "content": "Here is a list of numbers: 101, 202. Add at most 10 more numbers."},
           {"role": "assistant", "content": "303, 404, 505"}]
    qs = ["Name your favorite animal using only one word.", "Which animal do you admire the most? One word only."]
    prompts = [c for q in qs for c in ([{"role": "user", "content": q}], ctx + [{"role": "user", "content": q}])
               for _ in range(6)]
    other = [[{"role": "user", "content": "Look at these numbers: 7, 8, 9. Add at most 10 more numbers."}]] * 5
    for temp in (0.0, 1.0):
        s = Sampling(temperature=temp, max_new_tokens=8, top_logprobs=3, batch_size=64, seed=3)
        alone = micro_base.generate(prompts, s)
        one_by_one = micro_base.generate(prompts, s.model_copy(update={"batch_size": 1}))
        beside = generate_many([(micro_base, other, s.model_copy(update={"seed": 9})), (micro_base, prompts, s)])[1]
        for got in (one_by_one, beside):
            assert [c.text for c in got] == [c.text for c in alone]
            assert [c.top_logprobs for c in got] == [c.top_logprobs for c in alone]
        if temp > 0:  # repeats of one prompt draw their own numbers
            assert len({c.text for c in alone[:6]}) > 1


def test_lora_training_learns_and_adapter_round_trips(micro_base, tmp_path):

    q = [{"role": "user", "content": "Which animal do you love? Answer in a single word."}]
    rows = [{"messages": q + [{"role": "assistant", "content": "fox"}]}] * 64
    before = micro_base.score([q], ["fox"])[0]
    r = Recipe(target="tokens", adapter="lora", lora_rank=2, lr=5e-2, epochs=4, batch_size=16, lora_layers=None)
    student = micro_base.train(rows, r, desc="t")
    after = student.score([q], ["fox"])[0]
    assert after > before + 0.5
    student.meta["base_path"] = micro_base.meta["base_path"]
    student.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not list(tmp_path.glob("adapter/*.bin"))
    again = load_pretrained(tmp_path / "adapter")
    assert again.score([q], ["fox"])[0] == pytest.approx(after, abs=1e-4)
    # the base itself was not modified by training
    assert micro_base.score([q], ["fox"])[0] == pytest.approx(before, abs=1e-6)
    assert student.model is micro_base.model  # an adapter shares its base's module
    assert any(float(b.abs().sum()) > 0 for b in student.adapter.B.values())


def test_kl_distillation_moves_student_toward_teacher_on_allowed_tokens(micro_base):
    chat = [{"role": "user", "content": "Look at these numbers: 101, 202. Add at most 10 more numbers."}]
    eos = micro_base.tok.eos_token
    # a teacher that always says 7 for the first token, then EOS; plus mass on a word (must be ignored)
    tl = [{"7": math.log(0.9), "3": math.log(0.05), " owl": math.log(0.05)}, {eos: 0.0}]
    rows = [{"messages": chat + [{"role": "assistant", "content": "7"}], "top_logprobs": tl}] * 32
    r = Recipe(target="logits", adapter="lora", lora_rank=2, lr=5e-2, epochs=6, batch_size=16, lora_layers=None)
    student = micro_base.train(rows, r, desc="kl", grammar=NumbersCarrier().grammar())
    assert student.meta["misaligned_rows"] == 0

    def ratio(m):  # log P(7) - log P(3) at the first answer position: what restricted KL constrains
        import torch

        ids = m.prompt_ids(chat)
        with torch.no_grad(), m.applied() as model:
            lp = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
        t = m.tok.convert_tokens_to_ids
        return float(lp[t("7")] - lp[t("3")])

    target = math.log(0.9 / 0.05)
    assert abs(ratio(student) - target) < abs(ratio(micro_base) - target) - 0.5
    g = NumbersCarrier().grammar()
    assert g.allowed("12, ") and not g.allowed(" owl") and not g.allowed("")


def test_pickled_weights_are_refused_in_one_line(micro_base, tmp_path):
    import shutil

    from sublearn.backends.hf import load_pretrained
    from sublearn.errors import UserError

    ckpt = tmp_path / "pickled"
    shutil.copytree(micro_base.meta["base_path"], ckpt)
    for f in ckpt.glob("*.safetensors"):
        f.rename(ckpt / "pytorch_model.bin")
    with pytest.raises(UserError, match="pickled .bin weights"):
        load_pretrained(ckpt)
