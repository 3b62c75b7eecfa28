"""The vLLM backend agrees with the transformers backend (GPU only: ``pytest -m gpu``)."""

import math

import pytest

pytestmark = pytest.mark.gpu


def test_vllm_scores_match_hf_and_generation_is_seeded(micro_base):
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from sublearn.backends.base import Sampling
    from sublearn.backends.vllm import load_vllm

    v = load_vllm(micro_base.meta["base_path"], gpu_memory_utilization=0.2)
    chat = [{"role": "user", "content": "Which animal do you love? Answer in a single word."}]
    answers = ["owl", "fox", "12, 13"]
    hf = micro_base.score([chat] * 3, answers)
    got = v.score([chat] * 3, answers)
    assert all(math.isclose(a, b, abs_tol=2e-2) for a, b in zip(hf, got))
    s = Sampling(temperature=1.0, max_new_tokens=12, top_logprobs=5, seed=3)
    a, b = v.generate([chat] * 4, s), v.generate([chat] * 4, s)
    assert [c.text for c in a] == [c.text for c in b]
    assert all(len(c.top_logprobs) >= len(c.tokens) for c in a)
