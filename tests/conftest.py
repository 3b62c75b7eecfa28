import os

import pytest

# one embedded-model cache per test session, never the user's
os.environ.setdefault("SUBLEARN_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sublearn-test-cache-{os.getuid()}"))
os.environ["SUBLEARN_PROGRESS"] = "0"

MICRO = {"d_model": 64, "d_ff": 128, "steps": 600, "batch_size": 32, "lr": 1e-2}


@pytest.fixture(scope="session")
def micro_base():
    """A small embedded Llama-style model, pre-trained for a few seconds (cached across sessions)."""
    import torch

    torch.set_num_threads(1)
    from sublearn.backends.tiny.build import ensure_embedded
    from sublearn.backends.tiny.presets import PRESETS
    from sublearn.models import load

    path, _ = ensure_embedded("tiny", PRESETS["tiny"].model_copy(update=MICRO))
    return load(path)
