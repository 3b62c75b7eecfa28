"""Time the vectorized aux-logit experiment against a straightforward per-model PyTorch loop, in one run.

Both do the same training from the same initial weights and config: M teachers (cross-entropy on the class
logits), then per teacher 4 students (shared/cross init x aux-only/all logits) distilled on the teacher's
logits of noise: fresh inputs every step, labelled by the teacher on the fly (the default), or with
``--set student.fresh_noise=false`` the same fixed pool (both then precompute the teacher's logits of the
pool). The loop version is one ``nn.Sequential`` + ``torch.optim.Adam`` per model, trained one after the
other. Data order differs (each draws its own), so accuracies agree statistically, not bit for bit.
For the study script's settings side by side, see ``aux_logits_vs_script.py``.

    PYTHONPATH=src .venv/bin/python benchmarks/aux_logits_vs_loop.py                 # 20 models, 300 steps
    PYTHONPATH=src .venv/bin/python benchmarks/aux_logits_vs_loop.py --set student.steps=1500 --threads 2
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; must precede the torch import

import torch  # noqa: E402
import torch.nn.functional as F

from sublearn.configbase import load
from sublearn.experiments.aux_logits.config import AuxLogitsConfig
from sublearn.experiments.aux_logits.data import load_digits, make_noise
from sublearn.experiments.aux_logits.experiment import N_CLASSES, run_experiment, tune_allocator
from sublearn.experiments.aux_logits.model import init_mlp, mix_init, seed_of, to_sequential
from sublearn.stats import mean_ci


def loop_distill_loss(out: torch.Tensor, target: torch.Tensor, aux_only: bool, loss: str, temp: float) -> torch.Tensor:
    if aux_only:
        out, target = out[:, N_CLASSES:], target[:, N_CLASSES:]
    if loss == "mse":
        return (out - target).pow(2).sum(-1).mean()
    return F.kl_div((out / temp).log_softmax(-1), (target / temp).log_softmax(-1), log_target=True,
                    reduction="batchmean") * temp**2


def fresh_batch(kind: str, batch: int, n_features: int, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(batch, n_features, generator=gen) * 2 - 1
    if kind == "gaussian":
        return torch.randn(batch, n_features, generator=gen)
    return images[torch.randint(0, len(images), (batch,), generator=gen)]


def run_loop(cfg: AuxLogitsConfig, data) -> tuple[dict[str, list[float]], float]:
    """The straightforward version: a Python loop over models, one small nn.Sequential each."""
    t0 = time.perf_counter()
    sizes = [data.n_features, *cfg.model.hidden, N_CLASSES + cfg.model.n_aux]
    m = cfg.n_models
    init = init_mlp(sizes, [seed_of(cfg.seed, i, "init") for i in range(m)], scheme=cfg.model.init)
    cross = init_mlp(sizes, [seed_of(cfg.seed, i, "cross") for i in range(m)], scheme=cfg.model.init)
    eps = init_mlp(sizes, [seed_of(cfg.seed, i, "eps") for i in range(m)], scheme=cfg.model.init)
    shared = mix_init(init, eps, cfg.student.init_distance)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    xt, yt = torch.as_tensor(data.x_test), torch.as_tensor(data.y_test)
    fresh = cfg.student.fresh_noise
    noise = None if fresh else torch.as_tensor(make_noise(cfg.student.noise, cfg.student.n_noise, data.n_features,
                                                          cfg.student.noise_seed, data.x_train))
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    acc: dict[str, list[float]] = {k: [] for k in ("teacher", "student-aux", "student-all", "cross-aux", "cross-all")}

    def test_acc(net: torch.nn.Module) -> float:
        with torch.no_grad():
            return float((net(xt)[:, :N_CLASSES].argmax(1) == yt).float().mean())

    tc, sc = cfg.teacher, cfg.student
    for i in range(m):
        teacher = to_sequential(init, i)
        opt = torch.optim.Adam(teacher.parameters(), lr=tc.lr)
        for _ in range(tc.epochs):
            perm = torch.randperm(len(x), generator=gen)
            for j in range(math.ceil(len(x) / tc.batch_size)):
                idx = perm[j * tc.batch_size : (j + 1) * tc.batch_size]
                loss = F.cross_entropy(teacher(x[idx])[:, :N_CLASSES], y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        acc["teacher"].append(test_acc(teacher))
        if noise is not None:
            with torch.no_grad():
                targets = teacher(noise)
        for name, base in (("student", shared), ("cross", cross)):
            for aux_only in (True, False):
                student = to_sequential(base, i)
                opt = torch.optim.Adam(student.parameters(), lr=sc.lr)
                for _ in range(sc.steps):
                    if noise is None:  # fresh inputs every step, labelled by the teacher on the fly
                        xb = fresh_batch(sc.noise, sc.batch_size, data.n_features, x, gen)
                        with torch.no_grad():
                            tb = teacher(xb)
                    else:
                        idx = torch.randint(0, len(noise), (sc.batch_size,), generator=gen)
                        xb, tb = noise[idx], targets[idx]
                    loss = loop_distill_loss(student(xb), tb, aux_only, sc.loss, sc.temperature)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                acc[f"{name}-{'aux' if aux_only else 'all'}"].append(test_acc(student))
    return acc, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="config override (defaults here: n_models=20, student.steps=300)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()  # both versions get the same allocator settings
    cfg = load(AuxLogitsConfig, None, ["n_models=20", "student.steps=300", "theorem.checkpoints=1",
                                       "theorem.probe_samples=64", *args.overrides])
    data = load_digits(cfg.data.test_fraction, cfg.data.split_seed)
    warm = load(AuxLogitsConfig, None, ["n_models=2", "model.hidden=[8]", "teacher.epochs=1", "student.steps=2",
                                        "student.n_noise=64", "theorem.probe_samples=8", "theorem.checkpoints=1"])
    run_experiment(warm, data)  # one-time torch warm-up (optimizer import, kernels) for neither to pay

    t = time.perf_counter()
    raw = run_experiment(cfg, data)
    t_vec = time.perf_counter() - t
    loop_acc, t_loop = run_loop(cfg, data)

    print(f"config: {cfg.n_models} models, MLP {raw['sizes']}, teacher {cfg.teacher.epochs} epochs, students "
          f"{cfg.student.steps} steps x batch {cfg.student.batch_size} ({cfg.student.loss}); {args.threads} thread(s)")
    print(f"{'condition':<13} {'vectorized':>22} {'per-model loop':>22}")
    for k in ("teacher", "student-aux", "student-all", "cross-aux", "cross-all"):
        a, b = mean_ci(raw["accuracy"][k]), mean_ci(loop_acc[k])
        print(f"{k:<13} {a[0]:>8.3f} [{a[1]:.3f},{a[2]:.3f}] {b[0]:>8.3f} [{b[1]:.3f},{b[2]:.3f}]")
    print(f"time: vectorized {t_vec:.1f}s (incl. theorem probes {raw['flops'].get('theorem', 0) / 1e9:.1f} GFLOP), "
          f"loop {t_loop:.1f}s, speed-up x{t_loop / t_vec:.1f}")
    train_flops = raw["flops"]["total"] - raw["flops"].get("theorem", 0)
    print(f"vectorized: {raw['gflops_per_s']:.1f} GFLOP/s; loop: {train_flops / t_loop / 1e9:.1f} GFLOP/s "
          f"({train_flops / 1e12:.2f} TFLOP of training matmuls)")


if __name__ == "__main__":
    main()
