"""LoRA adapters for the transformers backend: many adapters on one base model, in one forward pass.

An :class:`Adapter` is the weights of one low-rank adapter (``A [r, in]`` and ``B [out, r]`` per adapted module).
On disk it is PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``), so PEFT, vLLM and
``sublearn serve`` read it unchanged. To run or train several adapters at once, :func:`installed` wraps the
adapted modules of a base model in :class:`Slots`: each holds a stack of adapters and a route (which adapter
each batch row uses; -1 = none). Rows never mix: a row's output depends only on its own adapter, so a batch of
many adapters computes, row for row, what each adapter computes alone.

An adapter's initialization is a function of its seed and the module's name only (``A`` uniform in
``±1/sqrt(in)``, PEFT's default distribution; ``B = 0``): a same-init student and its teacher start from the
same adapter, however the jobs are batched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

MODULE_ALIASES = {
    "llama": {"mlp_up": "up_proj", "mlp_down": "down_proj", "mlp_gate": "gate_proj", "attn_q": "q_proj",
              "attn_k": "k_proj", "attn_v": "v_proj", "attn_o": "o_proj"},
    "gpt2": {"mlp_up": "c_fc", "mlp_down": "c_proj", "attn_qkv": "c_attn"},
}
# the linear modules of each embedded family (what a config can be checked against before any model loads)
LINEARS = {"llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
           "gpt2": ("c_attn", "c_proj", "c_fc")}
_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _linear_shape(mod) -> tuple[int, int] | None:
    """(in, out) of a linear module (nn.Linear or GPT-2's Conv1D), else None."""
    import torch.nn as nn

    if isinstance(mod, nn.Linear):
        return mod.in_features, mod.out_features
    if type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None and mod.weight.dim() == 2:
        return int(mod.weight.shape[0]), int(mod.weight.shape[1])
    return None


def check_recipe(family: str, layers_in_model: int, targets: tuple[str, ...], layers: tuple[int, ...] | None) -> None:
    """A recipe's targets and layers against an embedded family and depth (ValueError naming what is wrong)."""
    if tuple(targets) != ("all-linear",):
        if not targets:
            raise ValueError("lora_targets is empty; name modules (e.g. mlp_up) or 'all-linear'")
        unknown = [t for t in targets if MODULE_ALIASES[family].get(t, t) not in LINEARS[family]]
        if unknown:
            raise ValueError(f"lora_targets {unknown} are not modules of the {family} family; known: "
                             f"{', '.join(LINEARS[family])}, aliases {', '.join(MODULE_ALIASES[family])} or all-linear")
    bad = [i for i in layers or () if not -layers_in_model <= i < layers_in_model]
    if bad:
        raise ValueError(f"lora_layers {bad} out of range for a {layers_in_model}-layer model (0..{layers_in_model - 1}, "
                         "or -1 for the last)")


def n_layers(model) -> int:
    return int(getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", 0))


def target_modules(model, targets: tuple[str, ...], layers: tuple[int, ...] | None) -> list[str]:
    """Names of the linear modules a recipe adapts. Raises UserError naming what does not exist."""
    fam = "gpt2" if model.config.model_type == "gpt2" else "llama"
    out_head = model.get_output_embeddings()
    linears = {n: m for n, m in model.named_modules() if _linear_shape(m) is not None and m is not out_head}
    shorts = sorted({n.rsplit(".", 1)[-1] for n in linears})
    wanted = None if tuple(targets) == ("all-linear",) else {MODULE_ALIASES[fam].get(t, t) for t in targets}
    if wanted is not None:
        if not wanted:
            raise UserError("lora_targets is empty; name modules (e.g. mlp_up) or 'all-linear'")
        unknown = sorted(wanted - set(shorts))
        if unknown:
            raise UserError(f"lora_targets {unknown} match no linear module of this {model.config.model_type} model; "
                             f"known: {', '.join(shorts)}, aliases {', '.join(MODULE_ALIASES[fam])} or all-linear")
    if layers:
        n = n_layers(model)
        bad = [i for i in layers if not -n <= i < n]
        if bad:
            raise UserError(f"lora_layers {bad} out of range: this model has {n} layers (0..{n - 1}, or -1 for the "
                             "last)")
        layers = tuple(i % n for i in layers)
    names = []
    for name in linears:
        if wanted is not None and name.rsplit(".", 1)[-1] not in wanted:
            continue
        if layers:
            m = _LAYER.search(f".{name}.")
            if m is None or int(m.group(1)) not in layers:
                continue
        names.append(name)
    if not names:
        raise UserError(f"lora_targets {list(targets)} in layers {list(layers or [])} select no module")
    return names


def _seed_of(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"lora-init:{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


@dataclass
class Adapter:
    """The weights of one LoRA adapter: per module name, ``A [r, in]`` and ``B [out, r]``; delta = scale * B A x."""

    rank: int
    alpha: float
    A: dict = field(default_factory=dict)
    B: dict = field(default_factory=dict)
    dropout: float = 0.0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def modules(self) -> list[str]:
        return list(self.A)

    @staticmethod
    def init(model, names: list[str], rank: int, alpha: float, seed: int, dropout: float = 0.0) -> Adapter:
        """A fresh adapter: A uniform in ±1/sqrt(in) from a generator keyed by (seed, module name), B = 0."""
        import torch

        ad = Adapter(rank, alpha, dropout=dropout)
        mods = dict(model.named_modules())
        for n in names:
            fin, fout = _linear_shape(mods[n])
            g = torch.Generator().manual_seed(_seed_of(seed, n))
            bound = 1.0 / fin**0.5
            ad.A[n] = (torch.rand((rank, fin), generator=g) * 2 - 1) * bound
            ad.B[n] = torch.zeros((fout, rank))
        return ad

    def save(self, path: str | Path, model) -> None:
        """PEFT's on-disk format: adapter_config.json + adapter_model.safetensors."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for n in self.A:
            tensors[f"{PREFIX}{n}.lora_A.weight"] = self.A[n].detach().float().contiguous().cpu()
            tensors[f"{PREFIX}{n}.lora_B.weight"] = self.B[n].detach().float().contiguous().cpu()
        save_file(tensors, str(path / WEIGHTS))
        layers = sorted({int(m.group(1)) for n in self.A if (m := _LAYER.search(f".{n}."))})
        cfg = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.rank, "lora_alpha": self.alpha,
            "lora_dropout": self.dropout, "bias": "none", "fan_in_fan_out": model.config.model_type == "gpt2",
            "target_modules": sorted({n.rsplit(".", 1)[-1] for n in self.A}),
            "layers_to_transform": layers if len(layers) < n_layers(model) else None,
            "init_lora_weights": True, "use_rslora": False, "use_dora": False, "modules_to_save": None,
            "base_model_name_or_path": None, "inference_mode": True,
        }
        (path / "adapter_config.json").write_text(json.dumps(cfg, indent=1))

    @staticmethod
    def load(path: str | Path) -> Adapter:
        """An adapter saved by :meth:`save` (or by PEFT, for plain LoRA adapters)."""
        from safetensors.torch import load_file

        path = Path(path)
        cfg = json.loads((path / "adapter_config.json").read_text())
        if cfg.get("peft_type") != "LORA" or cfg.get("use_dora") or cfg.get("use_rslora"):
            raise ValueError(f"{path}: only plain LoRA adapters are supported")
        ad = Adapter(int(cfg["r"]), float(cfg["lora_alpha"]), dropout=float(cfg.get("lora_dropout") or 0.0))
        for k, v in load_file(str(path / WEIGHTS)).items():
            name = k.removeprefix(PREFIX)
            for part, into in ((".lora_A.weight", ad.A), (".lora_B.weight", ad.B)):
                if name.endswith(part):
                    into[name[: -len(part)]] = v.float()
        if set(ad.A) != set(ad.B) or not ad.A:
            raise ValueError(f"{path}: adapter weights are incomplete")
        return ad


class Slots:
    """Adapter stacks on the adapted modules of one base model, and the route of each batch row.

    ``A[name]`` is ``[S, r, in]`` and ``B[name]`` ``[S, out, r]`` (a smaller rank is zero-padded); ``scale`` is
    ``[S]``. ``route(rows)`` sets, for the next forward passes, the adapter of each batch row (-1 = none).
    """

    def __init__(self, wrappers: dict, adapters: list[Adapter], trainable: tuple[bool, bool] = (False, False)):
        import torch

        self.wrappers = wrappers
        self.names = list(wrappers)
        self.rank = max((a.rank for a in adapters), default=1)
        self.scale = torch.tensor([a.scale for a in adapters], dtype=torch.float32)
        self.dropout = max((a.dropout for a in adapters), default=0.0)
        self.A, self.B = {}, {}
        for n, w in wrappers.items():
            fin, fout = _linear_shape(w.base)
            A = torch.zeros((len(adapters), self.rank, fin))
            B = torch.zeros((len(adapters), fout, self.rank))
            for s, ad in enumerate(adapters):
                if n in ad.A:
                    A[s, : ad.rank] = ad.A[n]
                    B[s, :, : ad.rank] = ad.B[n]
            dev = w.base.weight.device
            self.A[n] = A.to(dev).requires_grad_(trainable[0])
            self.B[n] = B.to(dev).requires_grad_(trainable[1])
            w.slots = self
        self.scale = self.scale.to(next(iter(wrappers.values())).base.weight.device) if wrappers else self.scale
        self.rows = self.row_scale = self.segments = None

    def route_all(self, slot: int) -> None:
        """Every row of every following batch uses adapter ``slot`` (a single adapted model)."""
        self.route_segments([(slot, 0, None)])

    def route_segments(self, segments: list[tuple[int, int, int | None]] | None) -> None:
        """Rows ``start:end`` use adapter ``slot``, for each (slot, start, end): contiguous blocks that cover the batch
        in order. Each block is its own matrix product, the same whatever other blocks the batch holds."""
        self.rows = self.row_scale = None
        self.segments = segments

    def route(self, rows) -> None:
        """The adapter index of each row of the next batches (a LongTensor, -1 = no adapter), or None."""
        import torch

        self.segments = None
        if rows is None:
            self.rows = self.row_scale = None
            return
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.scale.device)
        self.rows = rows.clamp(min=0)
        self.row_scale = (self.scale[self.rows] * (rows >= 0)).view(-1, 1, 1)

    def select(self, idx) -> None:
        """Keep only rows ``idx`` of the current route (rows that finished generating are dropped)."""
        self.rows = self.rows[idx]
        self.row_scale = self.row_scale[idx]

    def delta(self, name: str, x):
        """The adapters' update of module ``name``'s output for input ``x`` (None: no adapter routed)."""
        import torch

        A, B = self.A[name], self.B[name]
        x = x.to(A.dtype)  # the adapter computes in its own precision (fp32) on a bf16 base too
        if self.segments is not None:
            parts = []
            for s, a, b in self.segments:
                xs = x[a:b]
                parts.append(((xs @ A[s].T) @ B[s].T) * self.scale[s] if s >= 0 else
                             torch.zeros((*xs.shape[:-1], B.shape[1]), dtype=x.dtype, device=x.device))
            return parts[0] if len(parts) == 1 else torch.cat(parts)
        if self.rows is None:
            return None
        shape = x.shape
        z = x.reshape(shape[0], -1, shape[-1]) @ A[self.rows].transpose(1, 2)  # [N, T, r]
        return ((z @ B[self.rows].transpose(1, 2)) * self.row_scale).reshape(*shape[:-1], -1)

    def params(self) -> list:
        return [t for d in (self.A, self.B) for t in d.values() if t.requires_grad]

    def adapter(self, s: int, like: Adapter) -> Adapter:
        """Slot ``s`` as an Adapter of ``like``'s rank and alpha (after training)."""
        out = Adapter(like.rank, like.alpha, dropout=like.dropout)
        for n in self.names:
            out.A[n] = self.A[n][s, : like.rank].detach().cpu().clone()
            out.B[n] = self.B[n][s, :, : like.rank].detach().cpu().clone()
        return out


def _make_wrapper(base):
    import torch.nn as nn
    import torch.nn.functional as F

    class SlotLinear(nn.Module):
        """A linear module plus the low-rank update of each row's adapter."""

        def __init__(self, base):
            super().__init__()
            self.base = base
            self.slots: Slots | None = None
            self.name = ""

        def forward(self, x):
            y = self.base(x)
            sl = self.slots
            if sl is None:
                return y
            if sl.dropout and self.training:
                x = F.dropout(x, sl.dropout)
            d = sl.delta(self.name, x)
            return y if d is None else y + d.to(y.dtype)

    return SlotLinear(base)


@contextlib.contextmanager
def installed(model, adapters: list[Adapter], trainable: tuple[bool, bool] = (False, False)) -> Iterator[Slots]:
    """Wrap the modules any of ``adapters`` adapts with slot layers for the duration of the block."""
    names = list(dict.fromkeys(n for a in adapters for n in a.A))
    mods = dict(model.named_modules())
    wrappers = {}
    for n in names:
        if n not in mods or _linear_shape(mods[n]) is None:
            raise ValueError(f"the adapter adapts {n!r}, which is not a linear module of this model")
        parent_name, _, child = n.rpartition(".")
        parent = mods[parent_name] if parent_name else model
        w = _make_wrapper(mods[n])
        w.name = n
        setattr(parent, child, w)
        wrappers[n] = w
    try:
        yield Slots(wrappers, adapters, trainable)
    finally:
        for n, w in wrappers.items():
            parent_name, _, child = n.rpartition(".")
            setattr(mods[parent_name] if parent_name else model, child, w.base)
