"""The study script's settings two ways, in one process and run: a plain per-model PyTorch loop vs
``sublearn aux-logits``. Prints both accuracy tables (mean and 95% t-CI over the models), both wall times
and the speed ratio.

(a) The loop, written the straightforward way: for each of M models, one after the other, one ``nn.Module``
    (MLP 64-256-256-13, ReLU; weights N(0, 1/fan_in), zero biases, the model's own seed) and one
    ``torch.optim.Adam`` (lr 1e-3) per network:
    - teacher: 20 epochs over the training images, reshuffled every epoch, batches of 256, cross-entropy on
      the 10 class logits only;
    - noise: the model's own fixed set of 20,000 uniform [-1, 1] images;
    - 4 students (teacher's init / another init x auxiliary logits only / all logits): 20 epochs over the
      noise set, reshuffled every epoch, batches of 256 (79 per epoch, the last one 32 images: 1,580 steps);
      the teacher's logits of each batch under ``no_grad``; loss KL(softmax(teacher) || softmax(student)) on
      the distilled logits, temperature 1, averaged over the batch (``batchmean``).
(b) ``sublearn aux-logits`` (the whole command: data, training, theorem probes, report, plots) at the same
    settings: hidden [256, 256], Adam lr 1e-3, batch 256 for teachers and students, 20 teacher epochs, KL loss,
    20,000 uniform [-1, 1] noise images, ``student.steps`` = ceil(20 x 20,000 / 256) = 1,563 full batches (the
    same number of noise images as 20 epochs), init ``normal_fan_in``, a fixed noise pool. Differences that
    remain: sublearn shares one noise pool between all models and samples batches with replacement; its
    "other init" students use a separate seed, as the loop's do. Accuracies therefore agree statistically, not
    bit for bit.
(c) ``sublearn aux-logits`` with its own defaults (hidden 128 x 128, 6 teacher epochs, 1,500 steps of MSE on
    fresh noise at batch 64: 14x fewer FLOPs), the run a user gets, for the time it takes to reach the script's
    accuracy or more.

    PYTHONPATH=src .venv/bin/python benchmarks/aux_logits_vs_script.py               # 20 models, ~15 min on 1 core
    PYTHONPATH=src .venv/bin/python benchmarks/aux_logits_vs_script.py --models 2 --epochs 1 --n-noise 512   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; must precede the torch import

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from loguru import logger  # noqa: E402
from torch import nn  # noqa: E402

from sublearn.configbase import load  # noqa: E402
from sublearn.experiments.aux_logits.config import AuxLogitsConfig  # noqa: E402
from sublearn.experiments.aux_logits.data import load_digits  # noqa: E402
from sublearn.experiments.aux_logits.experiment import tune_allocator  # noqa: E402
from sublearn.experiments.aux_logits.run import run  # noqa: E402
from sublearn.stats import mean_ci  # noqa: E402

CONDITIONS = ("teacher", "student-aux", "cross-aux", "student-all", "cross-all")
N_CLASSES = 10


class Net(nn.Module):
    """The study's MLP: class logits first, then the auxiliary logits, all from one output layer."""

    def __init__(self, sizes: list[int], seed: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.body:
                if isinstance(layer, nn.Linear):
                    layer.weight.normal_(0.0, layer.in_features**-0.5, generator=g)
                    layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def kl_on(student_out: torch.Tensor, teacher_out: torch.Tensor, cols: slice) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) over the chosen logits, mean over the batch."""
    return F.kl_div(F.log_softmax(student_out[:, cols], dim=-1), F.softmax(teacher_out[:, cols], dim=-1),
                    reduction="batchmean")


def run_loop(args: argparse.Namespace, data) -> tuple[dict[str, list[float]], float]:
    t0 = time.perf_counter()
    sizes = [data.n_features, args.hidden, args.hidden, N_CLASSES + 3]
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    xt, yt = torch.as_tensor(data.x_test), torch.as_tensor(data.y_test)
    acc: dict[str, list[float]] = {k: [] for k in CONDITIONS}

    def test_acc(net: nn.Module) -> float:
        with torch.no_grad():
            return float((net(xt)[:, :N_CLASSES].argmax(1) == yt).float().mean())

    def epochs_of(n: int, gen: torch.Generator):
        for _ in range(args.epochs):
            perm = torch.randperm(n, generator=gen)
            for j in range(0, n, args.batch):
                yield perm[j : j + args.batch]

    for m in range(args.models):
        gen = torch.Generator().manual_seed(10_000 + m)
        teacher = Net(sizes, seed=3 * m)
        opt = torch.optim.Adam(teacher.parameters(), lr=args.lr)
        for idx in epochs_of(len(x), gen):
            loss = F.cross_entropy(teacher(x[idx])[:, :N_CLASSES], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        teacher.eval()
        acc["teacher"].append(test_acc(teacher))
        noise = torch.rand(args.n_noise, data.n_features, generator=gen) * 2 - 1
        for name, seed in (("student", 3 * m), ("cross", 3 * m + 1)):
            for cols, tag in ((slice(N_CLASSES, None), "aux"), (slice(None), "all")):
                student = Net(sizes, seed=seed)
                opt = torch.optim.Adam(student.parameters(), lr=args.lr)
                for idx in epochs_of(len(noise), gen):
                    xb = noise[idx]
                    with torch.no_grad():
                        target = teacher(xb)
                    loss = kl_on(student(xb), target, cols)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                acc[f"{name}-{tag}"].append(test_acc(student))
    return acc, time.perf_counter() - t0


def sublearn_config(args: argparse.Namespace) -> AuxLogitsConfig:
    steps = math.ceil(args.epochs * args.n_noise / args.batch)
    return load(AuxLogitsConfig, None, [
        f"n_models={args.models}", f"model.hidden=[{args.hidden}, {args.hidden}]", "model.n_aux=3",
        "model.init=normal_fan_in", f"teacher.epochs={args.epochs}", f"teacher.batch_size={args.batch}",
        f"teacher.lr={args.lr}", f"student.steps={steps}", f"student.batch_size={args.batch}", f"student.lr={args.lr}",
        "student.loss=kl", "student.temperature=1.0", "student.noise=uniform", "student.fresh_noise=false",
        f"student.n_noise={args.n_noise}",
        "student.init_distance=0.0",
    ])


def run_sublearn(cfg: AuxLogitsConfig) -> tuple[dict[str, list[float]], float, dict]:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        summary = run(cfg, out, device="cpu", force=True)
        wall = time.perf_counter() - t0
    acc = {k: summary["conditions"][k]["values"] for k in CONDITIONS}
    return acc, wall, summary


def fmt(values: list[float]) -> str:
    m, lo, hi = mean_ci(values)
    return f"{m:.3f} [{max(0.0, lo):.3f}, {min(1.0, hi):.3f}]"  # accuracies live in [0, 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=20, help="models per condition (default 20)")
    ap.add_argument("--epochs", type=int, default=20, help="teacher epochs = student epochs over the noise (20)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n-noise", type=int, default=20000, dest="n_noise")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1)")
    ap.add_argument("--order", choices=["loop-first", "sublearn-first"], default="sublearn-first")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the numbers here")
    args = ap.parse_args()
    logger.remove()  # sublearn's progress logging would interleave with the table
    torch.set_num_threads(args.threads)
    tune_allocator()  # process-wide: both versions get the same allocator settings
    data = load_digits()
    cfg = sublearn_config(args)

    # one-time warm-up (imports, kernels, matplotlib) for neither to pay
    tiny = argparse.Namespace(**{**vars(args), "models": 2, "epochs": 1, "n_noise": 512})
    run_loop(tiny, data)
    run_sublearn(sublearn_config(tiny))

    defaults = load(AuxLogitsConfig, None, [f"n_models={args.models}"])
    if args.order == "sublearn-first":
        sub_acc, t_sub, summary = run_sublearn(cfg)
        def_acc, t_def, _ = run_sublearn(defaults)
        loop_acc, t_loop = run_loop(args, data)
    else:
        loop_acc, t_loop = run_loop(args, data)
        sub_acc, t_sub, summary = run_sublearn(cfg)
        def_acc, t_def, _ = run_sublearn(defaults)

    print(f"{args.models} models, MLP {summary['model']['sizes']}, Adam lr {args.lr}, batch {args.batch}, "
          f"{args.epochs} teacher epochs; students: KL on the distilled logits, {args.n_noise} uniform noise images, "
          f"loop {args.epochs} epochs ({args.epochs * math.ceil(args.n_noise / args.batch)} steps), sublearn "
          f"{cfg.student.steps} steps; {args.threads} torch thread(s), CPU")
    print(f"{'condition':<12} {'(a) per-model loop':>24} {'(b) sublearn, same':>24} {'(c) sublearn defaults':>24}")
    for k in CONDITIONS:
        print(f"{k:<12} {fmt(loop_acc[k]):>24} {fmt(sub_acc[k]):>24} {fmt(def_acc[k]):>24}")
    print(f"wall: (a) loop {t_loop:.1f}s; (b) sublearn at the same settings {t_sub:.1f}s (whole command; its training "
          f"phases teachers {summary['timings_s']['teacher']:.1f}s, students {summary['timings_s']['students']:.1f}s), "
          f"x{t_loop / t_sub:.2f} faster; (c) sublearn defaults {t_def:.1f}s, x{t_loop / t_def:.2f} faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "loop": {"acc": loop_acc, "wall_s": t_loop},
                       "sublearn": {"acc": sub_acc, "wall_s": t_sub, "timings_s": summary["timings_s"]},
                       "sublearn_defaults": {"acc": def_acc, "wall_s": t_def},
                       "ratio": t_loop / t_sub, "ratio_defaults": t_loop / t_def, "mean": {k: [float(np.mean(loop_acc[k])), float(np.mean(sub_acc[k]))]
                                                          for k in CONDITIONS},
                       "mean_defaults": {k: float(np.mean(def_acc[k])) for k in CONDITIONS}}, f, indent=2)


if __name__ == "__main__":
    main()
