import os

import pytest

# one embedded-model cache per test session, never the user's
os.environ.setdefault("SUBLEARN_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sublearn-test-cache-{os.getuid()}"))
os.environ["SUBLEARN_PROGRESS"] = "0"

MICRO = {"d_model": 64, "d_ff": 128, "steps": 600, "batch_size": 32, "lr": 1e-2}


def micro_config(tmp_path, extra: str = "", *, model: str = "workers = 1", seeds: str = "[0, 1]",
                 spec: dict = MICRO, n_prompts: int = 64, student_recipe: str = "") -> str:
    """A TOML experiment on micro embedded models (both families built from ``spec``), written to tmp_path.

    ``model`` holds the [model] keys, ``student_recipe`` extra [students.recipe] keys, ``extra`` further tables.
    """
    emb = "".join(f"[model.embedded.{n}]\n" + "".join(f"{k} = {v}\n" for k, v in spec.items())
                  for n in ("tiny", "tiny-gpt2"))
    text = f"""name = "micro"
seeds = {seeds}
[model]
{model}
{emb}
[teacher]
trait_rows = 64
[teacher.recipe]
steps = 30
batch_size = 32
[generate]
n_prompts = {n_prompts}
[students.recipe]
{student_recipe}
steps = 4
batch_size = 16
[evaluate]
n_questions = 4
samples_per_question = 3
{extra}"""
    p = tmp_path / "micro.toml"
    p.write_text(text)
    return str(p)


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
