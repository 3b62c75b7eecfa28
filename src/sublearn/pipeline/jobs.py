"""Executing plan nodes: load their inputs from the store, run the stage, write one artifact per node.

A job runs a list of nodes of one stage. On the transformers backend, nodes whose models share a base run
together (``Node.batch``): teachers and students train as slots of one batched model, every arm's data and every
model's evaluation come from shared batches. Each node's artifact is exactly what it would be alone (see
``backends/decode.py`` and ``backends/hf_train.py``). Job functions take only picklable arguments, so they run the
same inline or in a worker process.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from .. import conditions
from ..config import ExperimentConfig
from ..provenance import machine
from ..runtime import Runtime, Settings
from ..store import Store, write_atomic
from .plan import Node

Writer = Callable[[Path], dict]  # writes a node's files into its temp directory, returns its lineage info


@dataclass
class Context:
    """What every stage of one job needs: the config, the run's store, the model cache and the runtime (its
    settings and the models it loaded)."""

    cfg: ExperimentConfig
    run: Store
    cache: Store
    runtime: Runtime

    def base(self, spec: str, key: str):
        return self.runtime.load(base_path(self.run, self.cache, spec, key))

    def load(self, path: Path):
        return self.runtime.load(path)


def base_path(run: Store, cache: Store, spec: str, key: str) -> Path:
    """Where a base model lives: the shared cache (embedded and converted GGUF models, made before any job
    runs), the run's pointer directory of an API base, or the user's checkpoint directory."""
    for p in (cache.path("base", key), run.path("base", key)):
        if (p / ".done").exists():
            return p
    return Path(spec).expanduser().resolve()


def _system_seen(model, system: str | None) -> str | None:
    """What the model saw in its system slot: ours, or the chat template's own default (SmolLM2 has one)."""
    return system or getattr(model, "default_system_prompt", lambda: None)()


def _teacher_model(ctx: Context, key: str):
    """(model, system prompt) of a teacher artifact."""
    tdir = ctx.run.path("teacher", key)
    info = json.loads((tdir / "teacher.json").read_text())
    if info["mode"] == "system_prompt":
        return None, info["system_prompt"]
    return ctx.load(tdir / "model"), None


def _by_base(items: list, model_of: Callable) -> list[list]:
    """Items grouped so that each group's models can share batches (one transformers base module), in order; items
    of other backends each alone."""
    from ..backends.hf import HFModel

    groups: dict[object, list] = {}
    for k, it in enumerate(items):
        m = model_of(it)
        groups.setdefault(id(m.model) if isinstance(m, HFModel) else ("alone", k), []).append(it)
    return list(groups.values())


def _teachers(ctx: Context, nodes: list[Node]) -> dict[str, Writer]:
    from ..finetune import save_teacher, teacher_job, train_jobs

    cfg = ctx.cfg
    base = ctx.base(cfg.model.base, nodes[0].args["base"])
    traits = {n.key: teacher_trait(cfg, n.args["arm"]) for n in nodes}
    jobs = {n.key: teacher_job(cfg.teacher, traits[n.key], cfg.carrier, n.seed,
                               f"teacher {traits[n.key].label()} s{n.seed}") for n in nodes}
    trainable = [k for k, j in jobs.items() if j is not None]
    trained = dict(zip(trainable, train_jobs(base, [jobs[k] for k in trainable])))
    return {n.key: (lambda tmp, n=n: save_teacher(tmp, base, trained.get(n.key), cfg.teacher, traits[n.key], n.seed))
            for n in nodes}


def teacher_trait(cfg: ExperimentConfig, arm: str):
    """The trait of a teacher arm: the config's, or (arm ``other``) its other-trait variant."""
    return cfg.trait if arm == "teacher" else cfg.trait.other_trait()


def _generate(ctx: Context, nodes: list[Node]) -> dict[str, Writer]:
    from ..backends.hf import generate_many
    from ..generate import GenerateRequest, write_generated

    cfg = ctx.cfg
    items = []
    for n in nodes:
        model, system = ctx.base(cfg.model.base, n.args["base"]), None
        if n.args.get("student"):  # a chain's generation: the previous generation's student writes the data
            model = ctx.load(ctx.run.path("finetune", n.args["student"]) / "model")
        elif n.args["teacher"]:
            teacher, system = _teacher_model(ctx, n.args["teacher"])
            model = teacher or model
        items.append((n, model, system, GenerateRequest(cfg.carrier, cfg.generate.n_prompts, cfg.generate.sampling,
                                                        n.seed, n.args["arm"], system,
                                                        cfg.generate.format == "constrained")))
    comps = {}
    for group in _by_base(items, lambda it: it[1]):
        if len(group) == 1:
            for n, model, _, req in group:
                comps[n.key] = model.generate(req.chats, req.sampling, desc=n.name, grammar=req.grammar)
        else:
            out = generate_many([(model, req.chats, req.sampling) for _, model, _, req in group],
                                desc=f"generate {len(group)} arms", grammar=group[0][3].grammar)
            comps.update({n.key: c for (n, *_), c in zip(group, out)})

    def writer(n, model, system, req):
        return lambda tmp: {"system_prompt_seen": _system_seen(model, system)} | write_generated(
            tmp, req, comps[n.key], model.name)

    return {n.key: writer(n, model, system, req) for n, model, system, req in items}


def _filter(ctx: Context, nodes: list[Node]) -> dict[str, Writer]:
    from ..filter import run_filter
    from ..filter.mix import write_mix

    cfg = ctx.cfg

    def mixed(n: Node) -> Writer:  # a diluted dataset (students.dilution): teacher rows and clean rows
        m = n.args["mix"]
        return lambda tmp: write_mix(ctx.run.path("filter", m["teacher"]), ctx.run.path("filter", m["clean"]), tmp,
                                     mode=m["mode"], percent=m["percent"], lowest=m["lowest"], seed=n.seed)

    return {n.key: mixed(n) if "mix" in n.args else (lambda tmp, n=n: run_filter(ctx.run.path("generate", n.args["gen"]), tmp, cfg.carrier, cfg.filter,
                                                tuple(n.config["trait_words"]), cfg.evaluate.judge, cfg.trait))
            for n in nodes}


def _finetune(ctx: Context, nodes: list[Node]) -> dict[str, Writer]:
    from ..backends.hf_train import Recipe
    from ..filter import load_dataset
    from ..finetune import save_student, student_job, train_jobs

    cfg = ctx.cfg
    items = []
    for n in nodes:
        spec = n.args.get("spec") or (cfg.model.cross if conditions.REGISTRY[n.args["condition"]].start == "cross"
                                      else cfg.model.base)
        base = ctx.base(spec, n.args["base"])
        rows = load_dataset(ctx.run.path("filter", n.args["data"]))
        recipe = Recipe.model_validate(n.args["recipe"]) if "recipe" in n.args else cfg.students.recipe  # a fan-out's
        items.append((n, base, student_job(rows, recipe, n.seed, n.name)))
    trained = {}
    for group in _by_base(items, lambda it: it[1]):
        from ..filter.banlists import target_vocab
        from .plan import filter_words

        grammar = target_vocab(cfg.carrier.grammar(), filter_words(cfg))  # never a trait word as a target
        for (n, _, _), model in zip(group, train_jobs(group[0][1], [job for _, _, job in group], grammar)):
            trained[n.key] = model
    return {n.key: (lambda tmp, n=n, base=base: save_student(tmp, base, trained[n.key])) for n, base, _ in items}


def _eval_task(ctx: Context, node: Node):
    """The EvalTask of an evaluation node: the model, and the system prompt or context before each question."""
    from .. import jsonl
    from ..evaluate import EvalTask

    cfg, a = ctx.cfg, node.args
    task = EvalTask(None, cfg.evaluate, cfg.trait, node.seed, desc=node.name, scorers=cfg.evaluate.scorers)
    if a["kind"] == "cross-base":
        task.model = ctx.base(cfg.model.cross, a["model"])
    elif a["kind"] in ("base", "in-context"):
        task.model = ctx.base(cfg.model.base, a["base"])
        if a["kind"] == "in-context":
            rows = jsonl.read(ctx.run.path("filter", a["data"]) / "kept.jsonl")
            if len(rows) < cfg.students.in_context_k:
                from ..errors import UserError

                raise UserError(f"{node.name}: students.in_context_k = {cfg.students.in_context_k}, but the filtered "
                                f"data holds only {len(rows)} rows; lower in_context_k or raise generate.n_prompts")
            task.context = [m for r in rows[: cfg.students.in_context_k] for m in r["messages"]]
    elif a["kind"] == "teacher":
        teacher, task.system_prompt = _teacher_model(ctx, a["model"])
        task.model = teacher or ctx.base(cfg.model.base, a["base"])
    else:
        task.model = ctx.load(ctx.run.path("finetune", a["model"]) / "model")
    return task


def _evaluate(ctx: Context, nodes: list[Node]) -> dict[str, Writer]:
    from ..evaluate import evaluate_many

    tasks = [_eval_task(ctx, n) for n in nodes]
    results = evaluate_many(tasks)

    def writer(n, task, res):
        def write(tmp: Path) -> dict:
            seen = _system_seen(task.model, task.system_prompt)
            write_atomic(tmp / "eval.json", json.dumps({"condition": n.args["condition"], "seed": n.seed,
                                                        "system_prompt_seen": seen, "questions": res}, indent=1))
            from ..plugins import SCORERS

            keys = [SCORERS.get(name).metric for name in task.scorers or task.trait.scorers()]
            return {k: sum(r[k] for r in res) / len(res) for k in keys}
        return write

    return {n.key: writer(n, t, r) for n, t, r in zip(nodes, tasks, results)}


STAGE_JOBS = {"teacher": _teachers, "generate": _generate, "filter": _filter, "finetune": _finetune,
              "evaluate": _evaluate}


def run_nodes(cfg_json: str, out: str, nodes: list[Node], settings: Settings | None = None) -> dict[str, dict]:
    """Build the artifacts of ``nodes`` (one stage; finished ones are skipped) under the runtime ``settings``
    (default: the config's own). Returns each built node's lineage info. The batch's compute time is shared out
    evenly among its artifacts' records."""
    from .. import models
    from ..backends.tiny.build import cache_root

    cfg = ExperimentConfig.model_validate_json(cfg_json)
    settings = settings or Settings.from_config(cfg)
    models.set_threads(settings.threads)
    ctx = Context(cfg, Store(out), Store(cache_root(), "SUBLEARN_CACHE"), Runtime.for_settings(settings))
    todo = [n for n in nodes if not ctx.run.exists(n.stage, n.key)]
    if not todo:
        return {}
    with ctx.run.claimed([(n.stage, n.key) for n in todo]):  # another run on this directory computes them once
        left = [n for n in todo if not ctx.run.exists(n.stage, n.key)]  # ... and it may have just finished them
        if len(left) < len(todo):
            logger.info(f"{len(todo) - len(left)} {todo[0].stage} artifact(s) made by another run meanwhile: reused")
        todo = left
        if not todo:
            return {}
        t0 = time.time()
        writers = STAGE_JOBS[todo[0].stage](ctx, todo)
        share = (time.time() - t0) / len(todo)
        done = {}
        for n in todo:
            with ctx.run.writing(n.stage, n.key, name=n.name, config=n.config, parents=n.parents, seed=n.seed,
                                 model=n.model, extra_seconds=share) as (tmp, extra):
                extra.update(writers[n.key](tmp))
                extra["pid"] = os.getpid()
                extra["machine"] = machine()
                if len(todo) > 1:
                    extra["batch"] = len(todo)
            done[n.key] = extra
    return done
