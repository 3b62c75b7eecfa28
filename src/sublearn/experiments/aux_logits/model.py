"""Many MLPs at once: one weight tensor per layer with a leading model axis, one batched matmul per layer.

Model ``m`` is the slice ``[m]`` of every tensor. Losses are the *sum over models* of each model's own
mean loss, so the gradient of slice ``m`` is exactly that model's gradient, and one ``torch.optim.Adam``
over the batched tensors is exactly one independent Adam per model (Adam is elementwise).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def seed_of(*parts: object) -> int:
    """A 63-bit seed derived from any parts (stable across runs and processes)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


@dataclass
class BatchedMLP:
    """ReLU MLP for M models: ``weights[l]`` is [M, in, out], ``biases[l]`` is [M, out]."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]

    @property
    def n_models(self) -> int:
        return self.weights[0].shape[0]

    @property
    def sizes(self) -> list[int]:
        return [self.weights[0].shape[1]] + [w.shape[2] for w in self.weights]

    def params(self) -> list[torch.Tensor]:
        return [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [M, B, in] (each model its own batch) or [B, in] (one batch for all). Returns [M, B, out]."""
        import torch

        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if h.dim() == 2:
                h = torch.matmul(h, w) + b.unsqueeze(1)  # [B,in] @ [M,in,out] broadcasts to [M,B,out]
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < last:
                h = torch.relu(h)
        return h

    __call__ = forward

    def flat(self) -> torch.Tensor:
        """All parameters of each model as one vector: [M, P]."""
        import torch

        return torch.cat([p.reshape(p.shape[0], -1) for p in self.params()], dim=1)

    def clone(self, requires_grad: bool = False) -> BatchedMLP:
        w = [p.detach().clone().requires_grad_(requires_grad) for p in self.weights]
        b = [p.detach().clone().requires_grad_(requires_grad) for p in self.biases]
        return BatchedMLP(w, b)

    def select(self, index: torch.Tensor | Sequence[int]) -> BatchedMLP:
        """Models at ``index`` (a copy, detached), e.g. to repeat teachers for their students."""
        import torch

        idx = torch.as_tensor(index, device=self.weights[0].device, dtype=torch.long)
        return BatchedMLP([w.detach()[idx].clone() for w in self.weights], [b.detach()[idx].clone() for b in self.biases])

    def n_params(self) -> int:
        return sum(p[0].numel() for p in self.params())

    def flops_forward(self, batch: int) -> int:
        """Multiply-adds x2 of one forward pass of one model on ``batch`` inputs."""
        s = self.sizes
        return 2 * batch * sum(a * b for a, b in zip(s[:-1], s[1:], strict=True))


INIT_SCHEMES = ("normal_fan_in", "torch_default")


def init_mlp(sizes: Sequence[int], seeds: Sequence[int], device: str = "cpu",
             scheme: str = "normal_fan_in") -> BatchedMLP:
    """Random MLP weights, one seed per model. ``scheme``:

    - ``normal_fan_in`` (default): weights N(0, 1/fan_in), biases 0 -- the study's init. Weight std 1/sqrt(fan_in).
    - ``torch_default``: PyTorch's ``nn.Linear`` init, U(+-1/sqrt(fan_in)) for weights and biases (weight std
      1/sqrt(3 fan_in), i.e. sqrt(3) smaller). Transmits much less through the auxiliary logits (docs/aux-logits.md).

    Model m's weights depend only on ``seeds[m]``, not on how many models are built together.
    """
    import torch

    from ...errors import UserError

    if scheme not in INIT_SCHEMES:
        raise UserError(f"unknown init scheme {scheme!r}: expected one of {', '.join(INIT_SCHEMES)}")
    ws: list[list[torch.Tensor]] = [[] for _ in sizes[1:]]
    bs: list[list[torch.Tensor]] = [[] for _ in sizes[1:]]
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if scheme == "normal_fan_in":
                ws[i].append(torch.randn(fan_in, fan_out, generator=g) / fan_in**0.5)
                bs[i].append(torch.zeros(fan_out))
            else:
                bound = 1.0 / fan_in**0.5
                ws[i].append((torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound)
                bs[i].append((torch.rand(fan_out, generator=g) * 2 - 1) * bound)
    return BatchedMLP([torch.stack(w).to(device) for w in ws], [torch.stack(b).to(device) for b in bs])


def mix_init(base: BatchedMLP, other: BatchedMLP, distance: float) -> BatchedMLP:
    """``(base + distance * other) / sqrt(1 + distance**2)``: the base init plus init-like noise of scale
    ``distance``, renormalized so every init has the base init's scale (for ``normal_fan_in`` the mix is
    again exactly N(0, 1/fan_in)). 0 = the base init itself;
    large = an unrelated init (``other``). Cosine to the base init is about ``1 / sqrt(1 + distance**2)``."""
    if distance == 0:
        return base.clone()
    c = 1.0 / (1.0 + distance**2) ** 0.5
    w = [(a.detach() + distance * b.detach()) * c for a, b in zip(base.weights, other.weights, strict=True)]
    bb = [(a.detach() + distance * b.detach()) * c for a, b in zip(base.biases, other.biases, strict=True)]
    return BatchedMLP(w, bb)


def to_sequential(model: BatchedMLP, m: int) -> torch.nn.Sequential:
    """Model ``m`` as a plain ``nn.Sequential`` (Linear/ReLU) with the same weights (for tests and benchmarks)."""
    import torch

    layers: list[torch.nn.Module] = []
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        lin = torch.nn.Linear(w.shape[1], w.shape[2])
        with torch.no_grad():
            lin.weight.copy_(w[m].detach().T)
            lin.bias.copy_(b[m].detach())
        layers.append(lin)
        if i < len(model.weights) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(model.weights[0].device)
