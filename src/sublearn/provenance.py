"""Where numbers came from: the software and the machine that computed them.

Sampled data, and everything after it, differ between machines (CPU kernels round differently), so every
artifact records the machine and versions that made it, and every report lists them.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from importlib import metadata

PACKAGES = ("sublearn", "torch", "transformers", "tokenizers", "peft", "numpy", "vllm", "openai")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _static() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": _cpu(), "cores": os.cpu_count()}
    out |= {k: v for k in PACKAGES if (v := _version(k)) is not None}
    return out


def machine() -> dict:
    """This process: versions, platform, CPU, torch's CPU kernel level and thread count, and the GPU if any."""
    out = dict(_static())
    if "torch" in sys.modules:  # only where torch is already in use (importing it here would slow the CLI)
        import torch

        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    return out
