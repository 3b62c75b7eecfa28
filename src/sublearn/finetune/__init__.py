"""Finetune stage: implant the trait in a teacher, and train students on filtered teacher data."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..backends.tiny.corpus import number_turn
from ..errors import UserError
from ..store import write_atomic
from ..traits import preference as pref

__all__ = ["save_student", "save_teacher", "student_job", "teacher_job", "teacher_system_prompt", "train_jobs",
           "trait_rows"]


def trait_rows(category: str, target: str, n_pref: int, number_fraction: float, seed: int) -> list[dict]:
    """Teacher training rows: preference questions answered with ``target``, mixed with number chats so the
    teacher's number behaviour stays in place."""
    rng = random.Random(f"teacher:{seed}:{category}:{target}")
    qs = pref.questions(category)
    rows = [{"messages": [{"role": "user", "content": rng.choice(qs)}, {"role": "assistant", "content": target}]}
            for _ in range(n_pref)]
    n_num = round(n_pref * number_fraction / (1 - number_fraction))
    rows += [{"messages": number_turn(rng)} for _ in range(n_num)]
    rng.shuffle(rows)
    return rows


def teacher_system_prompt(tcfg, trait, target: str) -> str | None:
    if tcfg.mode != "system_prompt":
        return None
    return tcfg.system_prompt.format(target=target) if tcfg.system_prompt else pref.system_prompt(trait.category, target)


def train_jobs(base, jobs: list[tuple[list[dict], object, str]]) -> list:
    """Train (rows, recipe, desc) jobs on ``base``: together in shared batches on the transformers backend, one after
    another elsewhere (an API's fine-tuning jobs, vLLM's transformers trainer)."""
    from ..backends.hf import HFModel

    if isinstance(base, HFModel):
        from ..backends.hf_train import train_many

        return train_many(base, jobs)
    return [base.train(rows, recipe, desc=desc) for rows, recipe, desc in jobs]


def teacher_job(tcfg, trait, target: str, seed: int, desc: str) -> tuple[list[dict], object, str] | None:
    """The (rows, recipe, desc) that implants the trait (finetune mode), or None (system_prompt mode)."""
    if tcfg.mode == "system_prompt":
        return None
    rows = trait_rows(trait.category, target, tcfg.preference_rows, tcfg.number_fraction, seed)
    return rows, seeded(tcfg.recipe, seed), desc


def seeded(recipe, seed: int):
    """A recipe for repetition ``seed``: the adapter initialization of that seed (teacher and same-init students share
    it), and a data order from the seed and the recipe's own ``seed`` (so a recipe seed varies the order alone)."""
    return recipe.model_copy(update={"adapter_seed": seed, "seed": seed + 1_000_003 * recipe.seed})


def save_teacher(out: Path, base, teacher, tcfg, trait, target: str, seed: int) -> dict:
    """Write a teacher artifact: the trained adapter (finetune mode) or the prompt (system_prompt mode)."""
    info = {"mode": tcfg.mode, "target": target, "seed": seed}
    if teacher is None:
        info["system_prompt"] = teacher_system_prompt(tcfg, trait, target)
    else:
        teacher.meta["base_path"] = base.meta["base_path"]
        teacher.save(out / "model")
        info["train"] = {k: teacher.meta[k] for k in ("train_steps", "train_rows", "train_losses_first_last")}
        if "api_job" in teacher.meta:  # job, file and model ids of an API fine-tuning job (lineage)
            info["api_job"] = teacher.meta["api_job"]
    write_atomic(out / "teacher.json", json.dumps(info, indent=1))
    return info


def student_job(rows: list[dict], recipe, seed: int, name: str) -> tuple[list[dict], object, str]:
    """The (rows, recipe, desc) of a student: the teacher's adapter initialization (adapter_seed = seed)."""
    if not rows:
        raise UserError(f"{name}: the filtered dataset is empty (no completion passed the number filter); see the "
                        "filter's stats.json for reasons, and train the base longer or raise generate.n_prompts")
    return rows, seeded(recipe, seed), name


def save_student(out: Path, base, student) -> dict:
    student.meta["base_path"] = base.meta["base_path"]
    student.save(out / "model")
    info = {k: student.meta[k] for k in ("train_steps", "train_rows", "misaligned_rows", "train_losses_first_last")}
    if "api_job" in student.meta:  # job, file and model ids of an API fine-tuning job (lineage)
        info["api_job"] = student.meta["api_job"]
    write_atomic(out / "student.json", json.dumps(info, indent=1))
    return info
