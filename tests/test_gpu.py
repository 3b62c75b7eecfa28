"""The CUDA path of the study's open-model recipe (``examples/paper-qwen7b.toml``), on micro models: ``pytest -m gpu``.

Every test needs a CUDA device and is skipped with that reason where none is (CI has none). Run on a GPU machine:
``pytest -m "gpu or vllm"`` (the vLLM tests in ``test_vllm.py`` then run on the GPU too). What it checks:
- a base loads on CUDA in bf16 on its own (no setting), with the adapters in fp32 beside it;
- several LoRA adapters train at once on the GPU (tokens and logit targets, the cached-tail shortcut and the
  full forward), each as it trains alone, to bf16's precision;
- constrained generation with soft targets, seeded per row;
- a whole run, teacher to report, on the GPU.
``test_precision.py`` runs the same bf16 numerics on the CPU, in CI.
"""

import json
import math

import pytest
import torch
from conftest import MICRO, micro_config
from test_batching import GRAMMAR, Q, rows_for, soft_rows, together_and_alone

from sublearn.backends.base import Sampling
from sublearn.backends.hf import score_many
from sublearn.backends.hf_train import Recipe, train, train_many

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False")]


@pytest.fixture(scope="module")
def cuda_base():
    from sublearn.backends.tiny.build import ensure_embedded
    from sublearn.backends.tiny.presets import PRESETS
    from sublearn.models import load

    path, _ = ensure_embedded("tiny", PRESETS["tiny"].model_copy(update=MICRO))
    return load(path)


def test_a_base_loads_on_cuda_in_bf16(cuda_base):
    p = next(cuda_base.model.parameters())
    assert p.device.type == "cuda" and p.dtype == torch.bfloat16


@pytest.mark.parametrize("layers", [(-1,), (0,)])
def test_many_adapters_train_at_once_on_cuda_as_each_alone(cuda_base, layers):
    runs = together_and_alone(cuda_base, layers)
    for _, t, alone in runs:
        assert all(math.isfinite(x) for x in t.meta["train_losses"])
        for n in alone.adapter.B:
            assert t.adapter.B[n].dtype == torch.float32 and t.adapter.B[n].abs().max() > 1e-3
            assert torch.allclose(alone.adapter.B[n], t.adapter.B[n], rtol=0, atol=2e-2)
    base_s, fox_s, owl_s = score_many([(m, [Q] * 2, ["fox", "owl"]) for m in (cuda_base, *(t for _, t, _ in runs))])
    assert fox_s[0] > base_s[0] and owl_s[1] > base_s[1]


def test_constrained_generation_with_soft_targets_and_logit_students_on_cuda(cuda_base):
    teacher = train(cuda_base, rows_for("fox"), Recipe(target="tokens", lora_rank=2, lora_alpha=2, lora_layers=(-1,),
                                                       steps=8, batch_size=16, lr=0.05), desc="fox teacher")
    data = soft_rows(teacher)
    assert len(data) > 5 and data == soft_rows(teacher)  # seeded per row: the same rows again
    assert all(math.isfinite(v) for r in data for step in r["top_logprobs"] for v in step.values())
    r = Recipe(target="logits", lora_rank=2, lora_alpha=2, freeze_a=True, lora_layers=(-1,), steps=8, batch_size=8,
               lr=0.1)
    students = train_many(cuda_base, [(data, r.model_copy(update={"adapter_seed": s, "seed": s}), f"s{s}")
                                      for s in (0, 1, 2)], grammar=GRAMMAR)
    for s in students:
        losses = s.meta["train_losses"]
        assert all(math.isfinite(x) for x in losses) and sum(losses[-3:]) < sum(losses[:3])
    comps = students[0].generate([Q], Sampling(temperature=1.0, max_new_tokens=4, seed=1))
    assert comps and comps[0].text is not None


def test_a_run_goes_from_teacher_to_report_on_cuda(tmp_path):
    from sublearn.cli import main

    cfg = micro_config(tmp_path, '[students]\nconditions = ["same-init", "control", "other-trait"]\n',
                       seeds="[0]")
    out = tmp_path / "run"
    assert main(["run", cfg, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {"teacher", "same-init", "control", "other-trait"} <= set(res["conditions"])
    assert all(0 <= c["prob"]["mean"] <= 1 for c in res["conditions"].values())
    assert res["provenance"]["report"].get("gpu")  # the machine record names the GPU it ran on
