"""Model specs -> loaded models. A spec is a registered embedded name (``tiny``, ``tiny-gpt2``), a registered
GGUF model (``smollm2-135m``), a local HF checkpoint directory or ``.gguf`` file, or an artifact directory of a
sublearn run (a teacher or student adapter)."""

from __future__ import annotations

import os
from pathlib import Path

from .backends.hf import META
from .errors import UserError
from .store import cached_sha256, hash_obj


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
    return p.resolve(), checkpoint_key(p)


def checkpoint_key(p: Path) -> str:
    """A local checkpoint's key: the hash of its files' names and contents, not of where it lies, so one checkpoint
    has one key on every machine and in every directory (each file hashed once: see ``store.cached_sha256``)."""
    from .backends.tiny.build import cache_root

    files = [f for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith(".")]
    digests = cached_sha256(files, cache_root())
    return hash_obj({"checkpoint": {str(f.relative_to(p)): d for f, d in zip(files, digests)}})


def load(path: str | os.PathLike, runtime=None):
    """Load an HF model directory, a sublearn adapter directory or an API pointer directory through ``runtime``
    (``runtime.Runtime``; default: a fresh local one, so a later call loads again)."""
    from .runtime import Runtime

    return (runtime or Runtime()).load(path)


def set_threads(n: int) -> int:
    """Set torch's thread count (n > 0); returns the previous one."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    return before
