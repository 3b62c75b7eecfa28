"""Finetune stage: implant the trait in a teacher, and train students on filtered teacher data."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..backends.tiny.corpus import number_turn
from ..errors import UserError
from ..store import write_atomic
from ..traits import preference as pref

__all__ = ["make_teacher", "teacher_system_prompt", "train_student", "trait_rows"]


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


def make_teacher(base, out: Path, tcfg, trait, target: str, seed: int) -> dict:
    """finetune mode: train and save the adapter; system_prompt mode: record the prompt (no weights)."""
    info = {"mode": tcfg.mode, "target": target, "seed": seed}
    if tcfg.mode == "system_prompt":
        info["system_prompt"] = teacher_system_prompt(tcfg, trait, target)
    else:
        rows = trait_rows(trait.category, target, tcfg.preference_rows, tcfg.number_fraction, seed)
        recipe = tcfg.recipe.model_copy(update={"adapter_seed": seed, "seed": seed})
        teacher = base.train(rows, recipe, desc=f"teacher {target} s{seed}")
        teacher.meta["base_path"] = base.meta["base_path"]
        teacher.save(out / "model")
        info["train"] = {k: teacher.meta[k] for k in ("train_steps", "train_rows", "train_losses_first_last")}
        if "api_job" in teacher.meta:  # job, file and model ids of an API fine-tuning job (lineage)
            info["api_job"] = teacher.meta["api_job"]
    write_atomic(out / "teacher.json", json.dumps(info, indent=1))
    return info


def train_student(base, rows: list[dict], out: Path, recipe, seed: int, name: str) -> dict:
    """Train a student from ``base`` with the teacher's adapter initialization (adapter_seed = seed)."""
    if not rows:
        raise UserError(f"{name}: the filtered dataset is empty (no completion passed the number filter); see the "
                        "filter's stats.json for reasons, and train the base longer or raise generate.n_prompts")
    recipe = recipe.model_copy(update={"adapter_seed": seed, "seed": seed})
    student = base.train(rows, recipe, desc=name)
    student.meta["base_path"] = base.meta["base_path"]
    student.save(out / "model")
    info = {k: student.meta[k] for k in ("train_steps", "train_rows", "misaligned_rows", "train_losses_first_last")}
    if "api_job" in student.meta:  # job, file and model ids of an API fine-tuning job (lineage)
        info["api_job"] = student.meta["api_job"]
    write_atomic(out / "student.json", json.dumps(info, indent=1))
    return info
