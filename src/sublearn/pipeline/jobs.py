"""Executing one plan node: load its inputs from the store, run the stage function, write its artifact.

Job functions take only picklable arguments so they run the same inline or in a worker process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import STUDENTS, ExperimentConfig
from ..store import Store, write_atomic
from .plan import Node


def _paths(out: Path) -> tuple[Store, Store]:
    from ..backends.tiny.build import cache_root

    return Store(out), Store(cache_root())


def base_path(run: Store, cache: Store, spec: str, key: str) -> Path:
    """Where a base model lives: the shared cache (embedded and converted GGUF models, made before any job
    runs), the run's pointer directory of an API base, or the user's checkpoint directory."""
    for p in (cache.path("base", key), run.path("base", key)):
        if (p / ".done").exists():
            return p
    return Path(spec).expanduser().resolve()


def _model_for_eval(run: Store, cache: Store, cfg: ExperimentConfig, node: Node):
    """(model, system prompt, context) for an evaluation node."""
    from .. import models

    a = node.args
    if a["kind"] == "cross-base":
        return models.load(base_path(run, cache, cfg.model.cross, a["model"])), None, None
    base = models.load(base_path(run, cache, cfg.model.base, a["base"]))
    if a["kind"] == "base":
        return base, None, None
    if a["kind"] == "teacher":
        tdir = run.path("teacher", a["model"])
        info = json.loads((tdir / "teacher.json").read_text())
        if info["mode"] == "system_prompt":
            return base, info["system_prompt"], None
        return models.load(tdir / "model"), None, None
    if a["kind"] == "in-context":
        from .. import jsonl

        rows = jsonl.read(run.path("filter", a["data"]) / "kept.jsonl")[: cfg.students.in_context_k]
        return base, None, [m for r in rows for m in r["messages"]]
    return models.load(run.path("finetune", a["model"]) / "model"), None, None


def _system_seen(model, system: str | None) -> str | None:
    """What the model saw in its system slot: ours, or the chat template's own default (SmolLM2 has one)."""
    return system or getattr(model, "default_system_prompt", lambda: None)()


def run_node(cfg_json: str, out: str, node: Node, threads: int = 0) -> dict:
    """Build ``node``'s artifact (no-op if finished). Returns the extra info recorded in the lineage index."""
    from .. import models

    if threads:
        models.set_threads(threads)
    cfg = ExperimentConfig.model_validate_json(cfg_json)
    if cfg.model.backend == "openai":
        from ..backends.openai_api import configure

        configure(cfg.api)
    elif cfg.model.backend == "vllm":
        models.use_vllm(cfg.model.vllm_gpu_memory, cfg.max_lora_rank())
    run, cache = _paths(Path(out))
    if run.exists(node.stage, node.key):
        return {}
    a = node.args
    with run.writing(node.stage, node.key, name=node.name, config=node.config, parents=node.parents,
                     seed=node.seed, model=node.model) as (tmp, extra):
        if node.stage == "teacher":
            from ..finetune import make_teacher

            base = models.load(base_path(run, cache, cfg.model.base, a["base"]))
            extra.update(make_teacher(base, tmp, cfg.teacher, cfg.trait, a["target"], node.seed))
        elif node.stage == "generate":
            from ..generate import run_generate

            base = models.load(base_path(run, cache, cfg.model.base, a["base"]))
            model, system = base, None
            if a["teacher"]:
                tdir = run.path("teacher", a["teacher"])
                info = json.loads((tdir / "teacher.json").read_text())
                system = info.get("system_prompt")
                if info["mode"] == "finetune":
                    model = models.load(tdir / "model")
            extra["system_prompt_seen"] = _system_seen(model, system)
            extra.update(run_generate(model, tmp, n_prompts=cfg.generate.n_prompts, sampling=cfg.generate.sampling,
                                      seed=node.seed, arm=a["arm"], system_prompt=system, desc=node.name))
        elif node.stage == "filter":
            from ..filter import run_filter

            extra.update(run_filter(run.path("generate", a["gen"]), tmp, cfg.filter))
        elif node.stage == "finetune":
            from ..filter import load_dataset
            from ..finetune import train_student

            spec = cfg.model.cross if STUDENTS[a["condition"]][0] == "cross" else cfg.model.base
            base = models.load(base_path(run, cache, spec, a["base"]))
            rows = load_dataset(run.path("filter", a["data"]))
            extra.update(train_student(base, rows, tmp, cfg.students.recipe, node.seed, node.name))
        elif node.stage == "evaluate":
            from ..evaluate import evaluate_model

            model, system, context = _model_for_eval(run, cache, cfg, node)
            res = evaluate_model(model, cfg.evaluate, cfg.trait.category, cfg.trait.target, node.seed,
                                 context=context, system_prompt=system, desc=node.name)
            seen = _system_seen(model, system)
            write_atomic(tmp / "eval.json", json.dumps({"condition": a["condition"], "seed": node.seed,
                                                        "system_prompt_seen": seen, "questions": res}, indent=1))
            extra["p_target"] = sum(r["p_target"] for r in res) / len(res)
            extra["rate"] = sum(r["rate"] for r in res) / len(res)
        else:
            raise ValueError(node.stage)
        extra["pid"] = os.getpid()
    return extra
