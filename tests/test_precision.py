"""bf16, the precision a GPU runs in, on the CPU: a base loaded in bf16 trains LoRA teachers and students (the adapter
itself stays fp32), generates constrained completions with soft targets and scores adapters, and each agrees with
the fp32 model to bf16's precision. This is the numerics of the CUDA path where no GPU is; ``test_gpu.py`` runs the
same on a GPU (``pytest -m gpu``)."""

import math

import pytest
import torch
from conftest import MICRO
from test_batching import GRAMMAR, Q, rows_for, soft_rows

from sublearn.backends.base import Sampling
from sublearn.backends.hf import load_pretrained, score_many
from sublearn.backends.hf_train import Recipe, train_many


@pytest.fixture(scope="module")
def bf16_base():
    from sublearn.backends.tiny.build import ensure_embedded
    from sublearn.backends.tiny.presets import PRESETS

    path, _ = ensure_embedded("tiny", PRESETS["tiny"].model_copy(update=MICRO))
    return load_pretrained(path, device="cpu", dtype="bfloat16")


def test_a_bf16_base_trains_teachers_and_logit_students(micro_base, bf16_base):
    assert next(bf16_base.model.parameters()).dtype == torch.bfloat16
    assert next(micro_base.model.parameters()).dtype == torch.float32
    teach = Recipe(target="tokens", lora_rank=2, lora_alpha=2, steps=8, batch_size=16, lr=0.05)
    jobs = [(rows_for("fox"), teach.model_copy(update={"lora_layers": (-1,)}), "last layer (cached tail)"),
            (rows_for("owl"), teach.model_copy(update={"lora_layers": (0,), "adapter_seed": 1}), "first layer")]
    got = {}
    for name, base in (("fp32", micro_base), ("bf16", bf16_base)):
        got[name] = [train_many(base, [job])[0] for job in jobs]
    for t32, t16 in zip(got["fp32"], got["bf16"]):
        losses = t16.meta["train_losses"]
        assert all(math.isfinite(x) for x in losses)
        for n in t16.adapter.B:
            assert t16.adapter.B[n].dtype == torch.float32 and t16.adapter.B[n].abs().max() > 1e-3
            cos = torch.nn.functional.cosine_similarity(t16.adapter.B[n].flatten(), t32.adapter.B[n].flatten(), 0)
            assert cos > 0.9, f"{n}: the bf16 teacher's update points elsewhere than the fp32 one's (cos {cos:.3f})"
    fox16, owl16 = got["bf16"]
    base_s, fox_s, owl_s = score_many([(m, [Q] * 2, ["fox", "owl"]) for m in (bf16_base, fox16, owl16)])
    assert fox_s[0] > base_s[0] + 1 and owl_s[1] > base_s[1] + 1  # each bf16 teacher learned its own answer

    data = soft_rows(fox16)  # constrained generation with soft targets from a bf16 teacher
    assert len(data) > 5
    for r in data:
        assert all(math.isfinite(v) for step in r["top_logprobs"] for v in step.values())
    student = Recipe(target="logits", lora_rank=2, lora_alpha=2, freeze_a=True, lora_layers=(-1,), steps=12,
                     batch_size=8, lr=0.1)
    s16, s32 = (train_many(b, [(data, student, "s")], grammar=GRAMMAR)[0] for b in (bf16_base, micro_base))
    l16, l32 = s16.meta["train_losses"], s32.meta["train_losses"]
    assert all(math.isfinite(x) for x in l16) and sum(l16[-4:]) < sum(l16[:4])
    assert l16[0] == pytest.approx(l32[0], rel=0.2, abs=1e-3)  # the same KL to start, to bf16's precision


def test_bf16_scores_and_samples_agree_with_fp32(micro_base, bf16_base):
    answers = ["fox", "owl", "cat", "eagle"]
    s32, s16 = (m.score([Q] * 4, answers) for m in (micro_base, bf16_base))
    for a, b in zip(s32, s16):
        assert math.isfinite(a) and b == pytest.approx(a, abs=0.15)
    prompts = [[{"role": "user", "content": f"Look at these numbers: {k}, 2, 3. Add at most 10 more numbers."}]
               for k in range(6)]
    comps = bf16_base.generate(prompts, Sampling(temperature=1.0, max_new_tokens=12, top_logprobs=4, seed=3),
                               grammar=GRAMMAR)
    assert all(c.top_logprobs and len(c.top_logprobs) >= len(c.tokens) for c in comps)


@pytest.mark.parametrize("target", ["tokens", "logits"])
def test_gradient_checkpointing_trains_the_same_adapter_and_key(micro_base, target):
    data = soft_rows(micro_base) if target == "logits" else rows_for("fox")
    if target == "logits":  # the base's own soft targets give no gradient: a teacher's
        fox = train_many(micro_base, [(rows_for("fox"), Recipe(target="tokens", lora_rank=2, lora_alpha=2,
                                                               lora_layers=(-1,), steps=6, batch_size=16, lr=0.05), "t")])
        data = soft_rows(fox[0])
    r = Recipe(target=target, lora_rank=2, lora_alpha=2, lora_layers=(0, 1), steps=4, batch_size=8, lr=0.05)
    rc = r.model_copy(update={"gradient_checkpointing": True})
    seen = []

    def on_step(*_):
        seen.append(micro_base.model.is_activation_checkpointing)

    plain, ckpt = (train_many(micro_base, [(data, x, "s")], on_step=on_step, grammar=GRAMMAR)[0] for x in (r, rc))
    assert seen == [False] * 4 + [True] * 4  # on while the checkpointed job trains, and only then
    for n in plain.adapter.B:
        assert plain.adapter.B[n].abs().max() > 1e-4
        assert torch.allclose(plain.adapter.B[n], ckpt.adapter.B[n], rtol=1e-4, atol=1e-6)
        assert torch.allclose(plain.adapter.A[n], ckpt.adapter.A[n], rtol=1e-4, atol=1e-6)
    assert r.key_dump() == rc.key_dump()  # a memory knob, not part of artifact keys
    assert not micro_base.model.is_activation_checkpointing  # switched off again after training
