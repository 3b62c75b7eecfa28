"""One auxiliary-logit experiment: train M teachers on class labels, distil 4 students per teacher on noise
(shared/cross init x aux-only/all logits), evaluate all, and check the first-order theorem along the way.

All 4M students train as one batched model; the loss is the sum over students of each one's mean loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from ...progress import bar
from .config import AuxLogitsConfig
from .data import Dataset, make_noise
from .model import BatchedMLP, init_mlp, mix_init, seed_of

if TYPE_CHECKING:
    import torch

N_CLASSES = 10
STUDENTS = ("student-aux", "student-all", "cross-aux", "cross-all")


def tune_allocator() -> None:
    """Keep freed large buffers in the heap (glibc ``mallopt``) instead of returning them to the OS.

    A training step allocates the same few-MB activations every step; by default glibc maps and unmaps them,
    and the page faults cost ~25% of a CPU step here. Process-wide and idempotent; a no-op off glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def make_adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """One Adam over the batched tensors (= one independent Adam per model); fused kernels where available."""
    import torch

    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class FlopCounter:
    """Matmul FLOPs actually done (2 per multiply-add), by phase."""

    def __init__(self) -> None:
        self.by_phase: dict[str, float] = {}

    def add(self, phase: str, flops: float) -> None:
        self.by_phase[phase] = self.by_phase.get(phase, 0.0) + flops

    @property
    def total(self) -> float:
        return sum(self.by_phase.values())


def train_flops(sizes: list[int], n_models: int, batch: int) -> float:
    """Forward + backward matmul FLOPs of one step: forward, weight grads, input grads of all but the first layer."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return 2.0 * n_models * batch * (2 * sum(macs) + sum(macs[1:]))


def accuracy(model: BatchedMLP, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Test accuracy of each model on the 10 class logits: [M]."""
    import torch

    correct = torch.zeros(model.n_models, device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            pred = model(x[i : i + chunk])[..., :N_CLASSES].argmax(-1)
            correct += (pred == y[i : i + chunk]).float().sum(1)
    return correct / len(x)


def logits_on(model: BatchedMLP, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)], dim=1)


def distill_loss(out: torch.Tensor, target: torch.Tensor, n_aux_students: int, loss: str, temp: float) -> torch.Tensor:
    """Sum over students of the mean per-sample loss. Students ``[:n_aux_students]`` see only the auxiliary
    logits (``[..., 10:]``), the rest all logits. out, target: [S, B, 10 + n_aux]."""
    total = out.new_zeros(())
    for sl, cols in ((slice(0, n_aux_students), slice(N_CLASSES, None)), (slice(n_aux_students, None), slice(None))):
        s, t = out[sl, :, cols], target[sl, :, cols]
        if s.shape[0] == 0:
            continue
        if loss == "mse":
            total = total + (s - t).pow(2).sum(-1).mean(-1).sum()
        else:
            logp_s = (s / temp).log_softmax(-1)
            logp_t = (t / temp).log_softmax(-1)
            total = total + (logp_t.exp() * (logp_t - logp_s)).sum(-1).mean(-1).sum() * temp**2
    return total


def train_teachers(model: BatchedMLP, x: torch.Tensor, y: torch.Tensor, cfg: AuxLogitsConfig, seed: int,
                   flops: FlopCounter) -> BatchedMLP:
    """Cross-entropy on the 10 class logits only; each model its own shuffle each epoch."""
    import torch
    import torch.nn.functional as F

    tc = cfg.teacher
    model = model.clone(requires_grad=True)
    opt = make_adam(model.params(), tc.lr)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    n, m = len(x), model.n_models
    per_epoch = math.ceil(n / tc.batch_size)
    with bar("aux-logits teachers", tc.epochs * per_epoch, unit="steps") as advance:
        for _ in range(tc.epochs):
            perm = torch.argsort(torch.rand(m, n, generator=gen, device=x.device), dim=1)
            for i in range(per_epoch):
                idx = perm[:, i * tc.batch_size : (i + 1) * tc.batch_size]
                out = model(x[idx])[..., :N_CLASSES]
                loss = F.cross_entropy(out.reshape(-1, N_CLASSES), y[idx].reshape(-1), reduction="sum") / idx.shape[1]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                flops.add("teacher", train_flops(model.sizes, m, idx.shape[1]))
                advance()
    return model.clone()


def flat_grad(model: BatchedMLP) -> torch.Tensor:
    import torch

    return torch.cat([p.grad.reshape(p.shape[0], -1) for p in model.params()], dim=1)


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def pool_sampler(noise: torch.Tensor, targets: torch.Tensor, teacher_of: torch.Tensor, batch: int,
                 gen: torch.Generator) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Batches from the fixed noise pool (with replacement, each student its own): (inputs [S, B, F], teacher
    logits [S, B, C]). targets: [M, N, C], the teachers' logits of the pool, computed once."""
    import torch

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(noise), (len(teacher_of), batch), generator=gen, device=noise.device)
        return noise[idx], targets[teacher_of.unsqueeze(1), idx]

    return draw


def fresh_sampler(kind: str, teacher: BatchedMLP, teacher_of: torch.Tensor, batch: int, n_features: int,
                  gen: torch.Generator, images: torch.Tensor, flops: FlopCounter) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """New noise inputs every step, labelled by the teachers on the fly: one batch per teacher, shared by that
    teacher's students (so their comparisons are paired). Returns (inputs [S, B, F], teacher logits [S, B, C])."""
    import torch

    m, dev = teacher.n_models, images.device

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        if kind == "uniform":
            x = torch.rand(m, batch, n_features, generator=gen, device=dev) * 2 - 1
        elif kind == "gaussian":
            x = torch.randn(m, batch, n_features, generator=gen, device=dev)
        else:  # real (unlabelled) training images, with replacement
            x = images[torch.randint(0, len(images), (m, batch), generator=gen, device=dev)]
        with torch.no_grad():
            t = teacher(x)
        flops.add("teacher-logits", m * teacher.flops_forward(batch))
        return x[teacher_of], t[teacher_of]

    return draw


def train_students(students: BatchedMLP, sample: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                   probe_x: torch.Tensor, probe_t: torch.Tensor, delta: torch.Tensor, n_aux_students: int,
                   cfg: AuxLogitsConfig, flops: FlopCounter) -> tuple[BatchedMLP, list[dict]]:
    """Distil every student on its teacher's logits of the batches ``sample()`` returns; measure the theorem's
    cosines at checkpoints. delta: [S, P] teacher - teacher init."""
    sc = cfg.student
    model = students.clone(requires_grad=True)
    theta0 = model.flat().detach().clone()
    opt = make_adam(model.params(), sc.lr)
    s = model.n_models
    checks = sorted({0, 1} | {round(sc.steps * (k + 1) / cfg.theorem.checkpoints) for k in range(cfg.theorem.checkpoints)})
    checks = [c for c in checks if c <= sc.steps]
    trace: list[dict] = []

    def measure(step: int) -> None:
        # plain gradient of the distillation loss on a fixed probe batch (the theorem is about gradient descent)
        model_g = model.clone(requires_grad=True)
        distill_loss(model_g(probe_x), probe_t, n_aux_students, sc.loss, sc.temperature).backward()
        g = flat_grad(model_g)
        flops.add("theorem", train_flops(model.sizes, s, probe_x.shape[0]))
        disp = model.flat().detach() - theta0
        trace.append({
            "step": step,
            "grad_inner": (-g * delta).sum(1).tolist(),
            "grad_cos": cosine_rows(-g, delta).tolist(),
            "disp_cos": cosine_rows(disp, delta).tolist() if step > 0 else [0.0] * s,
        })

    with bar(f"aux-logits {s} students", sc.steps, unit="steps") as advance:
        for step in range(sc.steps + 1):
            if step in checks:
                measure(step)
            if step == sc.steps:
                break
            x, tgt = sample()
            loss = distill_loss(model(x), tgt, n_aux_students, sc.loss, sc.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            flops.add("students", train_flops(model.sizes, s, sc.batch_size))
            advance()
    return model.clone(), trace


def run_experiment(cfg: AuxLogitsConfig, data: Dataset, device: str = "cpu") -> dict[str, Any]:
    """Everything one results.json needs, per model (raw numbers; stats are done by the report)."""
    import torch

    if device == "cpu":
        tune_allocator()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    flops = FlopCounter()
    m = cfg.n_models
    sizes = [data.n_features, *cfg.model.hidden, N_CLASSES + cfg.model.n_aux]
    x_tr = torch.as_tensor(data.x_train, device=device)
    y_tr = torch.as_tensor(data.y_train, device=device)
    x_te = torch.as_tensor(data.x_test, device=device)
    y_te = torch.as_tensor(data.y_test, device=device)

    t = time.perf_counter()
    init = init_mlp(sizes, [seed_of(cfg.seed, i, "init") for i in range(m)], device, cfg.model.init)
    cross = init_mlp(sizes, [seed_of(cfg.seed, i, "cross") for i in range(m)], device, cfg.model.init)
    eps = init_mlp(sizes, [seed_of(cfg.seed, i, "eps") for i in range(m)], device, cfg.model.init)
    shared = mix_init(init, eps, cfg.student.init_distance)
    fresh = cfg.student.fresh_noise
    noise = None if fresh else torch.as_tensor(make_noise(cfg.student.noise, cfg.student.n_noise, data.n_features,
                                                          cfg.student.noise_seed, data.x_train), device=device)
    probe = torch.as_tensor(make_noise(cfg.student.noise, cfg.theorem.probe_samples, data.n_features,
                                       seed_of(cfg.student.noise_seed, "probe") % 2**32, data.x_train), device=device)
    timings["setup"] = time.perf_counter() - t

    t = time.perf_counter()
    teacher = train_teachers(init, x_tr, y_tr, cfg, seed_of(cfg.seed, "teacher-order") % 2**62, flops)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    timings["teacher"] = time.perf_counter() - t
    logger.info(f"trained {m} teachers in {timings['teacher']:.1f}s")

    t = time.perf_counter()
    targets = None if noise is None else logits_on(teacher, noise)  # [M, N, C], once for the whole pool
    probe_targets = logits_on(teacher, probe)
    flops.add("teacher-logits", m * teacher.flops_forward((0 if noise is None else len(noise)) + len(probe)))
    # students in one batch: [shared-aux, cross-aux, shared-all, cross-all], each block of M
    order = ["student-aux", "cross-aux", "student-all", "cross-all"]
    blocks = {"student-aux": shared, "cross-aux": cross, "student-all": shared, "cross-all": cross}
    students = BatchedMLP(
        [torch.cat([blocks[c].weights[i] for c in order]) for i in range(len(sizes) - 1)],
        [torch.cat([blocks[c].biases[i] for c in order]) for i in range(len(sizes) - 1)],
    )
    teacher_of = torch.arange(m, device=device).repeat(4)
    delta = (teacher.flat() - init.flat())[teacher_of]
    probe_t = probe_targets[teacher_of]
    timings["teacher_logits"] = time.perf_counter() - t

    t = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(seed_of(cfg.seed, "student-order") % 2**62)
    if noise is None:
        sample = fresh_sampler(cfg.student.noise, teacher, teacher_of, cfg.student.batch_size, data.n_features, gen,
                               x_tr, flops)
    else:
        assert targets is not None
        sample = pool_sampler(noise, targets, teacher_of, cfg.student.batch_size, gen)
    trained, trace = train_students(students, sample, probe, probe_t, delta, 2 * m, cfg, flops)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    timings["students"] = time.perf_counter() - t
    logger.info(f"distilled {4 * m} students for {cfg.student.steps} steps in {timings['students']:.1f}s")

    t = time.perf_counter()
    acc: dict[str, list[float]] = {"reference": accuracy(init, x_te, y_te).tolist(),
                                   "teacher": accuracy(teacher, x_te, y_te).tolist()}
    acc_all = accuracy(trained, x_te, y_te).tolist()
    for k, c in enumerate(order):
        acc[c] = acc_all[k * m : (k + 1) * m]
    flops.add("eval", (2 * m + 4 * m) * init.flops_forward(len(x_te)))
    timings["eval"] = time.perf_counter() - t

    theorem = {c: [{key: (v if key == "step" else v[k * m : (k + 1) * m]) for key, v in row.items()} for row in trace]
               for k, c in enumerate(order)}
    init_cos = cosine_rows(shared.flat(), init.flat()).tolist()
    timings["total"] = time.perf_counter() - t_start
    compute_s = timings["teacher"] + timings["teacher_logits"] + timings["students"] + timings["eval"]
    return {
        "n_models": m,
        "sizes": sizes,
        "n_params": init.n_params(),
        "accuracy": {c: acc[c] for c in ("reference", "teacher", *STUDENTS)},
        "theorem": theorem,
        "init_cos_student_vs_teacher": init_cos,
        "timings_s": timings,
        "flops": {**flops.by_phase, "total": flops.total},
        "gflops_per_s": flops.total / compute_s / 1e9 if compute_s > 0 else 0.0,
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
