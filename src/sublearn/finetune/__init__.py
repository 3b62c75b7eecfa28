"""Finetune stage: implant the trait in a teacher, and train students on filtered teacher data.

The trait gives the rows that implant it (or its system prompt), the carrier gives the examples mixed in so the
teacher keeps writing its format, and the carrier's grammar says which tokens distillation targets may use.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..errors import UserError
from ..store import write_atomic

__all__ = ["save_student", "save_teacher", "student_job", "teacher_job", "teacher_system_prompt", "train_jobs",
           "trait_rows"]


def trait_rows(trait, carrier, n_trait: int, carrier_fraction: float, seed: int) -> list[dict]:
    """Teacher training rows: the trait's own rows, mixed with the carrier's examples so the teacher's carrier
    behaviour stays in place."""
    rng = random.Random(f"teacher:{seed}:{trait.rng_tag()}")
    rows = trait.teacher_rows(n_trait, rng)
    n_carrier = round(n_trait * carrier_fraction / (1 - carrier_fraction))
    rows += [{"messages": carrier.example(rng)} for _ in range(n_carrier)]
    rng.shuffle(rows)
    return rows


def teacher_system_prompt(tcfg, trait) -> str | None:
    if tcfg.mode != "system_prompt":
        return None
    return tcfg.system_prompt.format(target=trait.label()) if tcfg.system_prompt else trait.system_prompt()


def train_jobs(base, jobs: list[tuple[list[dict], object, str]], grammar=None) -> list:
    """Train (rows, recipe, desc) jobs on ``base``: together in shared batches on the transformers backend, one after
    another elsewhere (an API's fine-tuning jobs, vLLM's transformers trainer). ``grammar``: the carrier's, whose
    tokens are the only distillation targets (None: every token)."""
    from ..backends.hf import HFModel

    if isinstance(base, HFModel):
        from ..backends.hf_train import train_many

        return train_many(base, jobs, grammar=grammar)
    return [base.train(rows, recipe, desc=desc, grammar=grammar) for rows, recipe, desc in jobs]


def teacher_job(tcfg, trait, carrier, seed: int, desc: str) -> tuple[list[dict], object, str] | None:
    """The (rows, recipe, desc) that implants the trait (finetune mode), or None (system_prompt mode)."""
    if tcfg.mode == "system_prompt":
        return None
    rows = trait_rows(trait, carrier, tcfg.trait_rows, tcfg.carrier_fraction, seed)
    return rows, seeded(tcfg.recipe, seed), desc


def seeded(recipe, seed: int):
    """A recipe for repetition ``seed``: the adapter initialization of that seed (teacher and same-init students share
    it), and a data order from the seed and the recipe's own ``seed`` (so a recipe seed varies the order alone)."""
    return recipe.model_copy(update={"adapter_seed": seed, "seed": seed + 1_000_003 * recipe.seed})


def save_teacher(out: Path, base, teacher, tcfg, trait, seed: int) -> dict:
    """Write a teacher artifact: the trained adapter (finetune mode) or the prompt (system_prompt mode)."""
    info = {"mode": tcfg.mode, "target": trait.label(), "trait": trait.dump(), "seed": seed}
    if teacher is None:
        info["system_prompt"] = teacher_system_prompt(tcfg, trait)
    else:
        teacher.meta["base_path"] = base.meta["base_path"]
        teacher.save(out / "model")
        info["train"] = {k: teacher.meta[k] for k in ("train_steps", "train_rows", "train_losses_first_last",
                                                     "train_losses") if k in teacher.meta}
        if "api_job" in teacher.meta:  # job, file and model ids of an API fine-tuning job (lineage)
            info["api_job"] = teacher.meta["api_job"]
    write_atomic(out / "teacher.json", json.dumps(info, indent=1))
    return info


def student_job(rows: list[dict], recipe, seed: int, name: str) -> tuple[list[dict], object, str]:
    """The (rows, recipe, desc) of a student: the teacher's adapter initialization (adapter_seed = seed)."""
    if not rows:
        raise UserError(f"{name}: the filtered dataset is empty (no completion passed the filter); see the "
                        "filter's stats.json for reasons, and train the base longer or raise generate.n_prompts")
    return rows, seeded(recipe, seed), name


def save_student(out: Path, base, student) -> dict:
    student.meta["base_path"] = base.meta["base_path"]
    student.save(out / "model")
    info = {k: student.meta[k] for k in ("train_steps", "train_rows", "misaligned_rows", "train_losses_first_last",
                                         "positions_without_targets", "train_losses") if k in student.meta}
    if "api_job" in student.meta:  # job, file and model ids of an API fine-tuning job (lineage)
        info["api_job"] = student.meta["api_job"]
    write_atomic(out / "student.json", json.dumps(info, indent=1))
    return info
