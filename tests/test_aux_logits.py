"""Fast offline tests of ``sublearn aux-logits``: IDX loader, batched model == per-model loop, the init scheme,
the first-step theorem, a small run that transmits, a tiny end-to-end run, config errors."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sublearn.configbase import load
from sublearn.errors import UserError
from sublearn.experiments.aux_logits.__main__ import main
from sublearn.experiments.aux_logits.config import AuxLogitsConfig, parse_sweep
from sublearn.experiments.aux_logits.data import load_digits, load_mnist, read_idx
from sublearn.experiments.aux_logits.experiment import distill_loss, make_adam, run_experiment
from sublearn.experiments.aux_logits.model import init_mlp, mix_init, to_sequential

torch.set_num_threads(1)  # tiny models: threads only add synchronization (and the machine is shared)

TINY = ["n_models=3", "model.hidden=[16]", "teacher.epochs=1", "student.steps=15", "student.n_noise=256",
        "theorem.probe_samples=64", "theorem.checkpoints=2"]


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def tiny_mnist(d: Path, gz: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    y = np.array([0, 1, 2, 3, 9, 5], dtype=np.uint8)
    sfx = ".gz" if gz else ""
    write_idx(d / f"train-images-idx3-ubyte{sfx}", x, gz)
    write_idx(d / f"train-labels-idx1-ubyte{sfx}", y, gz)
    write_idx(d / f"t10k-images-idx3-ubyte{sfx}", x[:4], gz)
    write_idx(d / f"t10k-labels-idx1-ubyte{sfx}", y[:4], gz)
    return x, y


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader_roundtrip(tmp_path: Path, gz: bool) -> None:
    x, y = tiny_mnist(tmp_path, gz)
    ds = load_mnist(tmp_path)
    assert ds.x_train.shape == (6, 784) and ds.x_test.shape == (4, 784)
    assert ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_train, x.reshape(6, -1) / 127.5 - 1, atol=1e-6)
    assert ds.y_train.tolist() == y.tolist() and ds.y_test.tolist() == y[:4].tolist()
    assert ds.x_train.min() >= -1 and ds.x_train.max() <= 1


def test_idx_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x03abc")
    with pytest.raises(UserError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")  # says 10 bytes, has 3
    with pytest.raises(UserError, match="header says"):
        read_idx(short)
    tiny_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="missing t10k-labels"):
        load_mnist(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        load_mnist(tmp_path / "nope")


def test_batched_equals_per_model_loop() -> None:
    torch.manual_seed(0)
    sizes, m = [8, 12, 12, 13], 3
    model = init_mlp(sizes, [11, 12, 13])
    x = torch.randn(m, 5, 8)
    target = torch.randn(m, 5, 13)
    seqs = [to_sequential(model, i) for i in range(m)]
    out = model(x)
    for i in range(m):
        torch.testing.assert_close(out[i], seqs[i](x[i]), rtol=1e-5, atol=1e-6)
    # a shared batch for all models broadcasts the same way
    torch.testing.assert_close(model(x[0])[1], seqs[1](x[0]), rtol=1e-5, atol=1e-6)
    # one Adam step of distillation (first 2 models aux-only, the last all logits), batched vs per model
    b = model.clone(requires_grad=True)
    opt = make_adam(b.params(), 1e-2)
    distill_loss(b(x), target, 2, "kl", 2.0).backward()
    opt.step()
    for i, seq in enumerate(seqs):
        o = torch.optim.Adam(seq.parameters(), lr=1e-2)
        loss = distill_loss(seq(x[i]).unsqueeze(0), target[i : i + 1], 1 if i < 2 else 0, "kl", 2.0)
        loss.backward()
        o.step()
        lins = [mod for mod in seq if isinstance(mod, torch.nn.Linear)]
        for w, bias, lin in zip(b.weights, b.biases, lins, strict=True):
            torch.testing.assert_close(w[i].detach(), lin.weight.detach().T, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(bias[i].detach(), lin.bias.detach(), rtol=1e-5, atol=1e-6)
    # the step moved the weights: the comparison is not vacuous
    assert (b.weights[0] - model.weights[0]).abs().max() > 1e-3


def test_init_per_model_seed_and_mix() -> None:
    a = init_mlp([4, 6, 13], [1, 2, 3])
    b = init_mlp([4, 6, 13], [2])
    torch.testing.assert_close(a.weights[0][1], b.weights[0][0])
    other = init_mlp([4, 6, 13], [7, 8, 9])
    assert torch.equal(mix_init(a, other, 0.0).flat(), a.flat())
    far = mix_init(a, other, 100.0).flat()
    cos = torch.nn.functional.cosine_similarity(far, other.flat(), dim=1)
    assert (cos > 0.99).all()


def test_init_scheme() -> None:
    sizes = [64, 256, 13]
    normal = init_mlp(sizes, [1, 2, 3])  # the default: N(0, 1/fan_in) weights, zero biases (the study's init)
    for w, b, fan_in in zip(normal.weights, normal.biases, sizes[:-1], strict=True):
        assert abs(float(w.std()) * fan_in**0.5 - 1) < 0.05, float(w.std())
        assert abs(float(w.mean())) < 0.01 and torch.count_nonzero(b) == 0
    torch_default = init_mlp(sizes, [1, 2, 3], scheme="torch_default")  # nn.Linear's U(+-1/sqrt(fan_in))
    w = torch_default.weights[1]
    assert abs(float(w.std()) * (3 * 256) ** 0.5 - 1) < 0.05 and float(w.abs().max()) <= 256**-0.5
    assert torch.count_nonzero(torch_default.biases[0]) > 0
    assert load(AuxLogitsConfig, None).model.init == "normal_fan_in"
    with pytest.raises(UserError, match="model.init"):
        load(AuxLogitsConfig, None, ["model.init=garbage"])
    with pytest.raises(UserError, match="unknown init scheme"):
        init_mlp(sizes, [1], scheme="xavier")


def test_small_config_transmits() -> None:
    """A few seconds of the experiment: aux-only students from the teacher's init learn digits, those from
    another init do not; with the old torch-default init the same run transmits much less."""
    small = ["n_models=4", "model.hidden=[64, 64]", "teacher.epochs=4", "student.steps=300", "theorem.checkpoints=1",
             "theorem.probe_samples=64"]
    data = load_digits()
    acc = run_experiment(load(AuxLogitsConfig, None, small), data)["accuracy"]
    student, cross = np.mean(acc["student-aux"]), np.mean(acc["cross-aux"])
    assert np.mean(acc["teacher"]) > 0.9
    assert student > 0.4 and cross < 0.2 and student - cross > 0.25, (student, cross)
    old = run_experiment(load(AuxLogitsConfig, None, [*small, "model.init=torch_default"]), data)["accuracy"]
    assert np.mean(old["student-aux"]) < student - 0.1


def test_noise_pool_and_fresh_noise() -> None:
    data = load_digits()
    for fresh in ("true", "false"):
        raw = run_experiment(load(AuxLogitsConfig, None, [*TINY, "student.batch_size=64", f"student.fresh_noise={fresh}"]),
                             data)
        assert all(0 <= a <= 1 for a in raw["accuracy"]["student-aux"])
        # fresh noise: the teachers label every batch (M x steps x batch inputs); pool: the pool once
        labelled = raw["flops"]["teacher-logits"] / (2 * sum(a * b for a, b in zip(raw["sizes"], raw["sizes"][1:])))
        assert labelled == 3 * (64 + (15 * 64 if fresh == "true" else 256)), (fresh, labelled)


def test_first_step_theorem_shared_init_nonneg() -> None:
    cfg = load(AuxLogitsConfig, None, TINY + ["n_models=6", "model.hidden=[32]"])
    raw = run_experiment(cfg, load_digits())
    m = cfg.n_models
    first = raw["theorem"]  # per condition, a trace of checkpoints
    assert first["student-aux"][0]["step"] == 0
    for cond in ("student-aux", "student-all"):
        cos = first[cond][0]["grad_cos"]
        inner = first[cond][0]["grad_inner"]
        assert len(cos) == m
        assert min(cos) >= 0, (cond, cos)
        assert min(inner) >= 0
    # cross-model students have no guarantee: their cosines are near 0, far below the all-logit students'
    assert abs(np.mean(first["cross-aux"][0]["grad_cos"])) < np.mean(first["student-all"][0]["grad_cos"])
    assert [r["step"] for r in first["student-aux"]] == [0, 1, 8, 15]


def test_end_to_end_results_schema_and_cache(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--out", str(out), "--device", "cpu", "--sweep", "init_distance=0,3"]
    for o in [*TINY, "teacher.epochs=3"]:
        args += ["--set", o]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_models"] == 3
    assert set(res["conditions"]) == {"reference", "teacher", "student-aux", "student-all", "cross-aux", "cross-all"}
    for c in res["conditions"].values():
        assert 0 <= c["ci"][0] <= c["acc"] <= c["ci"][1] <= 1
    assert res["timings_s"]["total"] > 0 and res["gflops_per_s"] > 0
    assert res["conditions"]["teacher"]["acc"] > 0.6  # 3 epochs on digits already learn a lot
    assert len(res["sweep"]["points"]) == 2 and res["sweep"]["points"][0]["cached"]  # d=0 is the main experiment
    assert res["sweep"]["points"][1]["init_cos"] < 0.5
    for f in ("report.md", "accuracy.png", "theorem.png", "sweep.png", "config.json", "lineage.sqlite"):
        assert (out / f).exists(), f
    assert "student, aux only" in (out / "report.md").read_text()
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["cached"] is True
    assert main([*args, "--force"]) == 0  # recomputed once; the d=0 sweep point reuses this run's main experiment
    again = json.loads((out / "results.json").read_text())
    assert again["cached"] is False and again["sweep"]["points"][0]["cached"] is True


def test_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserError, match="unknown key 'student.stepz'"):
        load(AuxLogitsConfig, None, ["student.stepz=3"])
    with pytest.raises(UserError, match="n_models"):
        load(AuxLogitsConfig, None, ["n_models=many"])
    with pytest.raises(UserError, match="noise"):
        load(AuxLogitsConfig, None, ["student.noise=pink"])
    with pytest.raises(UserError, match="fresh_noise"):
        load(AuxLogitsConfig, None, ["student.fresh_noise=sometimes"])
    with pytest.raises(UserError, match="finite number"):
        load(AuxLogitsConfig, None, ["student.lr=inf"])
    with pytest.raises(UserError, match="unknown sweep knob"):
        parse_sweep("colour=1,2")
    bad = tmp_path / "bad.toml"
    bad.write_text("n_models = [\n")
    with pytest.raises(UserError, match="invalid TOML"):
        load(AuxLogitsConfig, bad)
    assert main(["--out", str(tmp_path / "o"), "--set", "model.hidden=[0]"]) == 2
    assert main(["--out", str(tmp_path / "o"), "--mnist-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "hidden sizes must be >= 1" in err and "not a directory" in err and "Traceback" not in err


def test_example_configs_load() -> None:
    root = Path(__file__).resolve().parents[1] / "examples"
    assert load(AuxLogitsConfig, root / "aux-logits.toml") == load(AuxLogitsConfig, None)  # documented = defaults
    sweep = load(AuxLogitsConfig, root / "aux-logits-sweep.toml").sweep
    assert sweep.knob == "init_distance" and sweep.values[0] == 0


def test_mnist_dir_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    tiny_mnist(tmp_path / "mnist")
    args = ["--out", str(tmp_path / "run"), "--mnist-dir", str(tmp_path / "mnist"), "--set", "student.noise=images"]
    for o in TINY:
        args += ["--set", o]
    assert main(args) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["data"] == {"name": "mnist", "n_train": 6, "n_test": 4, "n_features": 784}
    assert res["model"]["sizes"] == [784, 16, 13] and res["config"]["data"]["source"] == "mnist"
