"""Model specs -> loaded models. A spec is a registered embedded name (``tiny``, ``tiny-gpt2``), a registered
GGUF model (``smollm2-135m``), a local HF checkpoint directory or ``.gguf`` file, or an artifact directory of a
sublearn run (a teacher or student adapter)."""

from __future__ import annotations

import os
from pathlib import Path

from .backends.hf import META
from .errors import UserError
from .store import hash_obj


def resolve(spec: str, embedded=None) -> tuple[Path, str]:
    """Path of the model directory and a content key for lineage (``embedded``: spec override)."""
    from .backends import gguf
    from .backends.tiny.build import cache_root
    from .backends.tiny.presets import PRESETS

    if spec in PRESETS:
        from .backends.tiny.build import ensure_embedded

        return ensure_embedded(spec, embedded)
    if spec in gguf.REGISTRY:
        return gguf.ensure_converted(gguf.locate(spec), spec, cache_root())
    p = Path(spec).expanduser()
    if not p.exists():
        known = ", ".join([*PRESETS, *gguf.REGISTRY])
        raise UserError(f"unknown model {spec!r}: not a registered model ({known}) and no such path")
    if p.is_file() and p.suffix == ".gguf":
        return gguf.ensure_converted(p.resolve(), p.stem, cache_root())
    if p.is_file():
        raise UserError(f"{p} is a file but not a .gguf model: give a .gguf file or a checkpoint directory")
    if p.is_dir() and (p / "model").is_dir() and not (p / "config.json").exists():
        p = p / "model"  # a run's teacher or student artifact holds its model in model/
    if p.is_dir() and not ((p / "config.json").exists() or (p / META).exists()):
        raise UserError(f"{p} is not a model directory (no config.json)")
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    sig = [(str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size, int(f.stat().st_mtime))
           for f in files if f.is_file()]
    return p.resolve(), hash_obj({"path": str(p.resolve()), "files": sig})


_LOADED: dict[str, object] = {}
_VLLM: dict | None = None  # engine settings when backend = "vllm" (set by use_vllm in this process)


def use_vllm(gpu_memory_utilization: float, max_lora_rank: int = 64) -> None:
    """Load local models through vLLM from now on in this process (training still uses transformers); its engine
    serves LoRA adapters up to ``max_lora_rank``."""
    global _VLLM
    _VLLM = {"gpu_memory_utilization": gpu_memory_utilization, "max_lora_rank": max_lora_rank}


def load(path: str | os.PathLike):
    """Load (and memoize in this process) an HF model directory or a sublearn adapter directory."""
    from .backends.hf import load_pretrained

    key = str(Path(path).resolve())
    if key not in _LOADED:
        from .backends.openai_api import is_api_dir, load_api

        if is_api_dir(key):
            _LOADED[key] = load_api(key)
        elif _VLLM is not None:
            from .backends.vllm import load_vllm

            _LOADED[key] = load_vllm(key, **_VLLM)
        else:
            _LOADED[key] = load_pretrained(key, base_loader=load)
    return _LOADED[key]


def set_threads(n: int) -> int:
    """Set torch's thread count (n > 0); returns the previous one."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    return before
