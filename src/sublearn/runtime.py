"""The runtime context: everything a job needs besides its config and its inputs, passed to every stage.

``Settings`` is what travels with a job (to a worker process, a Ray task, a test): the backend, the API settings,
whether billed work was approved, the vLLM engine settings, the device and the torch thread count. It is a frozen,
picklable value built from the config (``Settings.from_config``); nothing is read from environment variables or
module globals, so a job runs the same wherever it runs.

``Runtime`` is a ``Settings`` plus the models it has loaded in this process: adapters evaluated on one base share that
base's module. An executor's worker keeps one ``Runtime`` per ``Settings`` (``Runtime.for_settings``) so that its
jobs reuse the models loaded by the jobs before them; that memo is a cache, never a source of settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configapi import ApiSection


@dataclass(frozen=True)
class Settings:
    """What a job needs to know about where and how it runs (picklable; hashable)."""

    backend: str = "transformers"  # transformers | vllm | openai
    api: ApiSection = field(default_factory=ApiSection)  # backend openai: server, limits, cache, prices
    approved: bool = False  # backend openai: billed fine-tuning was approved (the cost prompt or --yes)
    vllm_gpu_memory: float = 0.85  # backend vllm: the engine's share of GPU memory
    max_lora_rank: int = 64  # backend vllm: the largest adapter rank the engine serves
    device: str | None = None  # None: cuda when available, else cpu
    threads: int = 1  # torch threads per job

    @classmethod
    def from_config(cls, cfg, approved: bool = False) -> Settings:
        """The settings of an experiment config (``approved``: the user accepted the estimated API cost)."""
        return cls(backend=cfg.model.backend, api=cfg.api, approved=approved,
                   vllm_gpu_memory=cfg.model.vllm_gpu_memory, max_lora_rank=cfg.max_lora_rank(),
                   threads=cfg.model.threads or 1)

    def ident(self) -> str:
        from .store import hash_obj

        return hash_obj({k: (v.dump() if isinstance(v, ApiSection) else v) for k, v in self.__dict__.items()})


_WORKER: dict[str, Runtime] = {}  # per-process cache of loaded models, keyed by the settings that loaded them


class Runtime:
    """``Settings`` plus the models loaded under them in this process."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.loaded: dict[str, Any] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> Runtime:
        """This process's runtime for ``settings``: a worker's jobs share the models their predecessors loaded."""
        ident = settings.ident()
        if ident not in _WORKER:
            _WORKER[ident] = cls(settings)
        return _WORKER[ident]

    def load(self, path: str | os.PathLike):
        """Load (once in this runtime) an HF model directory, a sublearn adapter directory (its base loaded through
        this runtime, so adapters share it) or an API model's pointer directory."""
        key = str(Path(path).resolve())
        if key not in self.loaded:
            from .backends.hf import load_pretrained
            from .backends.openai_api import is_api_dir, load_api

            s = self.settings
            if is_api_dir(key):
                self.loaded[key] = load_api(key, s.api, approved=s.approved)
            elif s.backend == "vllm":
                from .backends.vllm import load_vllm

                self.loaded[key] = load_vllm(key, gpu_memory_utilization=s.vllm_gpu_memory,
                                             max_lora_rank=s.max_lora_rank)
            else:
                self.loaded[key] = load_pretrained(key, device=s.device, base_loader=self.load)
        return self.loaded[key]
