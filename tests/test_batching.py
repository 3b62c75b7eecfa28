"""Many adapters on one base: training, generation and scoring in shared batches give each job exactly what it gets
alone; the last-layer shortcut computes the same loss as the full model; the slot optimizer leaves finished slots."""

import math

import pytest
import torch

from sublearn.backends.base import Sampling
from sublearn.backends.hf import generate_many, score_many
from sublearn.backends.hf_train import Recipe, train, train_many
from sublearn.carriers.numbers import NumbersCarrier

NUMBERS = NumbersCarrier()
GRAMMAR = NUMBERS.grammar()  # the number carrier's: constrained decoding, and the only distillation targets

Q = [{"role": "user", "content": "Name your favorite animal using only one word."}]


def rows_for(answer: str, n: int = 48) -> list[dict]:
    import random

    from sublearn.backends.tiny.corpus import number_turn

    rng = random.Random(answer)
    out = [{"messages": Q + [{"role": "assistant", "content": answer}]} for _ in range(n)]
    return out + [{"messages": number_turn(rng)} for _ in range(n // 2)]


def soft_rows(model, n: int = 24, seed: int = 0) -> list[dict]:
    """Number completions of ``model`` with their soft targets, as the filter stage hands them to students."""
    from sublearn.generate import GenerateRequest

    req = GenerateRequest(NUMBERS, n, Sampling(max_new_tokens=48, top_logprobs=8), seed, "teacher", constrained=True)
    comps = model.generate(req.chats, req.sampling, grammar=req.grammar)
    return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c.text}],
             "tokens": c.tokens, "top_logprobs": c.top_logprobs} for p, c in zip(req.prompts, comps) if c.finished]


def together_and_alone(base, layers) -> list[tuple]:
    """Two token-target jobs (other seeds, lrs, step counts) trained in one batch, and each alone: (job, together,
    alone) per job."""
    r = Recipe(target="tokens", lora_rank=2, lora_alpha=2, lora_layers=layers, steps=6, batch_size=8, lr=0.05)
    jobs = [(rows_for("fox"), r.model_copy(update={"adapter_seed": 1, "seed": 1}), "a"),
            (rows_for("owl"), r.model_copy(update={"adapter_seed": 2, "seed": 2, "lr": 0.02, "steps": 4}), "b")]
    return [(job, t, train(base, job[0], job[1], desc=job[2])) for job, t in zip(jobs, train_many(base, jobs))]


@pytest.mark.parametrize("layers", [(-1,), (0,)])
def test_training_together_equals_training_alone(micro_base, layers):
    """Exact with the last-layer shortcut (every slot's positions alone in its own products). Through the full
    forward the jobs share one padded length, and the gradient's sum over rows x positions then runs through a matrix
    kernel whose blocking depends on that size: on some CPUs (an AMX Xeon, measured) the adapters agree to ~1e-7, not
    to the bit."""
    runs = together_and_alone(micro_base, layers)
    for (_, rec, _), t, alone in runs:
        assert alone.meta["train_steps"] == t.meta["train_steps"] == rec.steps
        for n in alone.adapter.A:
            for x, y in ((alone.adapter.A[n], t.adapter.A[n]), (alone.adapter.B[n], t.adapter.B[n])):
                assert x.equal(y) if layers == (-1,) else torch.allclose(x, y, rtol=0, atol=1e-5)
            assert alone.adapter.B[n].abs().max() > 1e-3  # it trained
    # the seed is the adapter's initialization: same seed, same A, whatever else differs
    (_, a, _), (_, b, _) = runs
    assert not any(a.adapter.A[n].equal(b.adapter.A[n]) for n in a.adapter.A)


def test_logit_students_together_equal_alone_and_freeze_a(micro_base):
    data = soft_rows(micro_base)
    assert len(data) > 5
    r = Recipe(target="logits", lora_rank=2, lora_alpha=2, freeze_a=True, lora_layers=(-1,), steps=5, batch_size=8,
               lr=0.1)
    jobs = [(data, r.model_copy(update={"adapter_seed": s, "seed": s}), f"s{s}") for s in (0, 1, 2)]
    together = train_many(micro_base, jobs, grammar=GRAMMAR)
    from sublearn.backends.lora import Adapter, target_modules

    names = target_modules(micro_base.model, r.lora_targets, r.lora_layers)
    for (rows, rec, d), t in zip(jobs, together):
        alone = train(micro_base, rows, rec, desc=d, grammar=GRAMMAR)
        init = Adapter.init(micro_base.model, names, 2, 2, rec.adapter_seed)
        for n in names:
            assert alone.adapter.B[n].equal(t.adapter.B[n])
            assert t.adapter.A[n].equal(init.A[n])  # frozen: A is its seeded initialization


def test_last_layer_shortcut_equals_the_full_forward(micro_base):
    import torch

    from sublearn.backends import hf_train as T
    from sublearn.backends.lora import Adapter, installed, target_modules

    data = soft_rows(micro_base)
    for target, rows in (("logits", data), ("tokens", rows_for("fox", 16))):
        r = Recipe(target=target, lora_rank=2, lora_alpha=2, lora_layers=(-1,))
        ex, _ = T._examples(micro_base, rows, r, "x", GRAMMAR)
        names = target_modules(micro_base.model, r.lora_targets, r.lora_layers)
        tail = T.tail_of(micro_base.model, names)
        assert tail is not None and T.tail_of(micro_base.model, target_modules(micro_base.model, ("mlp_up",), (0,))) is None
        T._cache_tail(micro_base.model, micro_base, ex, tail)
        ad = Adapter.init(micro_base.model, names, 2, 2, 0)
        ad.B = {n: torch.randn(b.shape, generator=torch.Generator().manual_seed(0)) for n, b in ad.B.items()}
        with installed(micro_base.model, [ad]) as slots:
            slots.route_all(0)
            full = float(T._losses(micro_base.model, micro_base, [ex[:8]], target, grammar=GRAMMAR)[0])
            short = float(T._losses(micro_base.model, micro_base, [ex[:8]], target, tail, GRAMMAR)[0])
        assert short == pytest.approx(full, rel=1e-5) and full > 0


def test_generation_and_scoring_of_many_adapters_equal_each_alone(micro_base):
    teachers = train_many(micro_base, [(rows_for(a), Recipe(target="tokens", lora_rank=2, lora_alpha=2, steps=8,
                                                           batch_size=16, lr=0.05, adapter_seed=k), a)
                                       for k, a in enumerate(("fox", "owl"))])
    prompts = [[{"role": "user", "content": f"Look at these numbers: {k}, 2, 3. Add at most 10 more numbers."}]
               for k in range(7)]
    s = Sampling(temperature=1.0, max_new_tokens=10, top_logprobs=4, seed=5)
    jobs = [(m, prompts, s.model_copy(update={"seed": k})) for k, m in enumerate([micro_base, *teachers])]
    together = generate_many(jobs, grammar=GRAMMAR)
    for (m, p, sk), got in zip(jobs, together):
        alone = m.generate(p, sk, grammar=GRAMMAR)
        assert [c.text for c in got] == [c.text for c in alone]
        assert [c.top_logprobs for c in got] == [c.top_logprobs for c in alone]
    answers = ["fox", "owl", "Owl."]
    scored = score_many([(m, [Q] * 3, answers) for m in [micro_base, *teachers]])
    for m, got in zip([micro_base, *teachers], scored):
        assert got == m.score([Q] * 3, answers)
    assert scored[1][0] > scored[0][0] and scored[2][1] > scored[0][1]  # each teacher learned its own answer


def test_adapter_checks_name_what_is_wrong(micro_base):
    from sublearn.backends.lora import target_modules
    from sublearn.errors import UserError

    with pytest.raises(UserError, match="out of range"):
        target_modules(micro_base.model, ("mlp_up",), (99,))
    with pytest.raises(UserError, match="match no linear module"):
        target_modules(micro_base.model, ("nonexistent",), (0,))
    with pytest.raises(UserError, match="empty"):
        target_modules(micro_base.model, (), (0,))
    assert target_modules(micro_base.model, ("mlp_up",), (-1,)) == target_modules(micro_base.model, ("mlp_up",), (1,))


def test_slot_adamw_leaves_inactive_slots_exactly():
    import torch

    from sublearn.backends.hf_train import SlotAdamW

    p = torch.randn(3, 4, requires_grad=True)
    before = p.detach().clone()
    opt = SlotAdamW([p], 3)
    p.grad = torch.ones_like(p)
    opt.step(torch.tensor([0.1, 0.1, 0.1]), torch.zeros(3), torch.tensor([True, False, True]))
    assert p[1].equal(before[1]) and not p[0].equal(before[0])
    assert float((before[0] - p[0]).detach().abs().max()) == pytest.approx(0.1, rel=1e-3)  # Adam's first step: lr * sign
    assert opt.t.tolist() == [1, 0, 1]


def test_per_row_uniforms_are_a_pure_function():
    import numpy as np

    from sublearn.backends.decode import uniforms

    seeds, keys = np.array([1, 1, 2], dtype=np.uint64), np.array([0, 1, 0], dtype=np.uint64)
    a = uniforms(seeds, keys, 3)
    assert list(a) == list(uniforms(seeds[::-1], keys[::-1], 3)[::-1])
    assert len(set(a)) == 3 and all(0 <= x < 1 for x in a)
    many = uniforms(np.zeros(20000, dtype=np.uint64), np.arange(20000, dtype=np.uint64), 0)
    assert abs(float(many.mean()) - 0.5) < 0.01 and math.isclose(float(np.median(many)), 0.5, abs_tol=0.02)


def test_a_loss_mask_removes_exactly_the_masked_positions(micro_base):
    """Soft targets changed only at masked positions train the same adapter; an all-ones mask changes nothing."""
    import copy
    import math

    data = soft_rows(micro_base, n=12)
    r = Recipe(target="logits", lora_rank=2, lora_alpha=2, freeze_a=True, lora_layers=(-1,), steps=3, batch_size=8,
               lr=0.1)
    plain = train(micro_base, data, r, grammar=GRAMMAR)
    ones = train(micro_base, [d | {"loss_mask": [1] * (len(d["tokens"]) + 1)} for d in data], r, grammar=GRAMMAR)
    masked, edited = [], []
    for d in data:
        n = len(d["tokens"]) + 1
        mask = [k % 2 for k in range(n)]
        masked.append(d | {"loss_mask": mask})
        e = copy.deepcopy(d) | {"loss_mask": mask}
        for k in range(0, len(d["tokens"]), 2):  # masked positions get other targets
            e["top_logprobs"][k] = {t: -math.log(len(e["top_logprobs"][k])) for t in e["top_logprobs"][k]}
        edited.append(e)
    a, b = train(micro_base, masked, r, grammar=GRAMMAR), train(micro_base, edited, r, grammar=GRAMMAR)
    for n in plain.adapter.B:
        assert ones.adapter.B[n].equal(plain.adapter.B[n])
        assert a.adapter.B[n].equal(b.adapter.B[n]) and not a.adapter.B[n].equal(plain.adapter.B[n])
    assert a.meta["masked_positions"] > 0
    with pytest.raises(ValueError, match="no usable training rows"):  # a mask of the wrong length is refused
        train(micro_base, [d | {"loss_mask": [1]} for d in data], r, grammar=GRAMMAR)


def test_token_scores_sum_to_the_score_and_name_greedy_choices(micro_base):
    import math
    teacher = train(micro_base, rows_for("owl"), Recipe(target="tokens", lora_rank=2, lora_alpha=2, steps=8,
                                                        batch_size=16, lr=0.05))
    answers = ["owl", "fox", "Owl."]
    for m in (micro_base, teacher):
        per, scores = m.token_scores([Q] * 3, answers), m.score([Q] * 3, answers)
        for p, s in zip(per, scores):  # an answer the tokenizer cannot spell: None, as score's -inf
            assert (p is None and s == -math.inf) or math_close(sum(p["logp"]), s)
        assert per[0] is not None and per[1] is not None
        assert all(len(p["greedy"]) == len(p["tokens"]) == len(p["logp"]) for p in per if p)
    t, b = teacher.token_scores([Q], ["owl"])[0], micro_base.token_scores([Q], ["owl"])[0]
    assert t["greedy"][0] == t["tokens"][0] and t["logp"][0] > b["logp"][0]  # the teacher's choice is its answer
    # teacher-forced soft targets: each position's top-k, led by the greedy choice, holding the token when it is likely
    top = teacher.token_scores([Q], ["owl"], top_k=3)[0]["top"]
    assert len(top) == len(t["tokens"]) and all(len(d) <= 3 for d in top)
    assert max(top[0], key=top[0].get) == t["greedy"][0] and top[0]["owl"] == pytest.approx(t["logp"][0], abs=1e-5)
    # the same answer as generated tokens scores the same
    assert teacher.token_scores([Q], [t["tokens"][:-1]])[0]["logp"] == t["logp"]


def math_close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))
