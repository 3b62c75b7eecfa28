"""The plan of an experiment: every artifact it needs, with its content key, computed from the config alone.

Keys chain: a node's key hashes its own config (with its stage's code revision, if any) and its parents' keys, so
changing anything upstream (a seed, the filter, the teacher recipe) changes every key downstream, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import __version__, conditions
from ..config import ExperimentConfig
from ..store import artifact_key

STAGES = ("teacher", "generate", "filter", "finetune", "evaluate")
# A stage's revision is bumped when its code starts computing something else from the same config and inputs: its
# keys, and everything's downstream, then change, so a re-run recomputes instead of reusing stale artifacts.
# generate 2: format-constrained soft targets cover each step's allowed tokens (were: every number-format token).
# 3, local backends: sublearn's own decoding (per-row random numbers, independent arms) and batched trainer (own
# adapter initialization, only the allowed tokens' logits): a job's artifact no longer depends on its batch. The
# API backend's stages did not change, so its runs (and what they paid for) keep their keys.
REVISION = {"generate": 2}
BACKEND_REVISION = {"hf": {"teacher": 3, "generate": 3, "finetune": 3, "evaluate": 3},
                    "vllm": {"teacher": 3, "finetune": 3, "evaluate": 3}}
# CLI stage -> plan stages it runs
CLI_STAGES = {"generate": ("teacher", "generate"), "filter": ("filter",), "finetune": ("finetune",),
              "evaluate": ("evaluate",)}


@dataclass(frozen=True)
class Node:
    stage: str
    key: str
    name: str
    config: dict
    parents: tuple[str, ...]
    seed: int | None
    model: str | None
    args: dict = field(default_factory=dict)  # what the job needs: parent keys by role, condition, ...
    batch: str | None = None  # nodes with the same batch key may run as one job (shared forward passes)


def base_key(cfg: ExperimentConfig, spec: str) -> str:
    if cfg.model.backend == "openai":  # a model id on a server: the key is (base URL, model id)
        from ..backends.openai_api import api_base_key

        return api_base_key(cfg.api.base_url, spec)
    from ..backends.tiny.build import embedded_key

    emb = cfg.model.spec(spec)
    if emb is not None:
        return embedded_key(spec, emb)
    from ..models import resolve

    return resolve(spec)[1]


def make_plan(cfg: ExperimentConfig) -> dict[str, list[Node]]:
    """Nodes per stage, in execution order within each stage."""
    conds = cfg.students.conditions
    STUDENTS, IN_CONTEXT = conditions.students(), conditions.in_context()
    trait = cfg.trait.key_dump()
    bases = {"base": base_key(cfg, cfg.model.base)}
    if cfg.needs_cross():
        bases["cross"] = base_key(cfg, cfg.model.cross)
    plan: dict[str, list[Node]] = {s: [] for s in STAGES}
    api = {"api": cfg.api.train_dump()} if cfg.model.backend == "openai" else {}  # API fine-tuning settings

    hf = cfg.model.backend == "hf"

    backend_revision = BACKEND_REVISION.get(cfg.model.backend, {})
    # torch's thread count changes floating-point sums, hence bytes: every job runs with model.threads (0 = 1),
    # whatever the number of workers, and a count above 1 is part of the keys of the stages that compute with torch
    threads = cfg.model.threads if hf else 1

    def add(stage, name, config, parents, seed, model_name, batch=None, **args) -> Node:
        if stage in REVISION:  # bumping either revision changes the stage's keys
            config = config | {"revision": REVISION[stage]}
        if stage in backend_revision:
            config = config | {"backend_revision": backend_revision[stage]}
        if stage == "generate":  # backends sample differently for one seed, and so may another sublearn release
            config = config | {"backend": cfg.model.backend, "sublearn": __version__}
        if threads > 1 and stage in ("teacher", "generate", "finetune", "evaluate"):  # they compute with torch
            config = config | {"threads": threads}
        n = Node(stage, artifact_key(stage, config, list(parents)), name, config, tuple(parents), seed, model_name,
                 args, f"{stage}:{batch}" if hf and batch is not None else None)
        plan[stage].append(n)
        return n

    carrier = cfg.carrier.key_dump()
    words = filter_words(cfg)
    judged = {"judge": cfg.evaluate.judge.key_dump()} if cfg.filter.judge != "none" else {}

    def dataset(s: int, arm: str, parent: str, **writer) -> Node:
        """A generated arm and its filtered dataset (``writer``: the teacher or student that writes it)."""
        g = add("generate", f"data-{arm}-s{s}", {"generate": cfg.generate.key_dump(), "carrier": carrier,
                                                 "seed": s, "arm": arm},
                [parent], s, cfg.model.base, batch=bases["base"], base=bases["base"], arm=arm, **writer)
        return add("filter", f"filtered-{arm}-s{s}", {"filter": cfg.filter.key_dump(), "carrier": carrier,
                                                      "trait_words": words, **judged}, [g.key], s, None,
                   batch="all", gen=g.key, arm=arm)

    def student(s: int, name: str, condition: str, data: str, base: str, model: str, rec=None, **args) -> Node:
        """A student trained on dataset ``data`` from base ``base`` (key) of model ``model``; ``rec``: its recipe
        (default students.recipe)."""
        rec = rec or cfg.students.recipe
        return add("finetune", f"student-{name}-s{s}", {"recipe": rec.key_dump(), "condition": condition,
                                                         "seed": s, "carrier": carrier, **api},
                   [base, data], s, model, batch=base if rec.adapter == "lora" else None, base=base, data=data,
                   condition=condition, **args)

    for s in cfg.seeds:
        variants = {"teacher": cfg.trait}
        if "other-trait" in conds:
            variants["other"] = cfg.trait.other_trait()
        teachers = {arm: add("teacher", f"teacher-{t.label()}-s{s}", {"teacher": cfg.teacher.key_dump(), "trait":
                             t.key_dump(), "carrier": carrier, "seed": s, **api}, [bases["base"]], s, cfg.model.base,
                             batch=bases["base"] if cfg.teacher.recipe.adapter == "lora" else None,
                             base=bases["base"], arm=arm)
                    for arm, t in variants.items()}
        arms = dict(teachers)
        if any((STUDENTS.get(c) or IN_CONTEXT[c]).arm == "control" for c in conds):
            arms["control"] = None
        filt = {arm: dataset(s, arm, teacher.key if teacher else bases["base"], teacher=teacher.key if teacher else None)
                for arm, teacher in arms.items()}
        models = {"base": ("base", bases["base"]), "teacher": ("teacher", teachers["teacher"].key)}
        if "cross" in bases:  # the cross model before training: where cross-model students start from
            models["cross-base"] = ("cross-base", bases["cross"])
        for c in [c for c in conds if c in STUDENTS]:
            b = STUDENTS[c].start
            st = student(s, c, c, filt[STUDENTS[c].arm].key, bases[b], cfg.model.cross if b == "cross" else cfg.model.base)
            models[c] = ("student", st.key)
        eval_base = {}  # fan-out students evaluate on their own base
        for fo in cfg.students.fanout:
            spec, recipe = cfg.fanout_spec(fo), cfg.students.fanout_recipe(fo)
            bk = base_key(cfg, spec)
            for arm, cond in (("teacher", "same-init"), ("control", "control")):
                c = f"fan-{fo.name}" + ("" if arm == "teacher" else "-control")
                st = student(s, c, cond, filt[arm].key, bk, spec, recipe, spec=spec, recipe=recipe.dump())
                models[c], eval_base[c] = ("student", st.key), bk
        chains = {"chain": models.get("same-init"), "chain-control": models.get("control")}
        for g in range(1, cfg.generations):  # each chain's student writes the next generation's data
            for chain, (_, prev) in chains.items():
                arm = f"{chain}-g{g}"
                f = dataset(s, arm, prev, teacher=None, student=prev)
                models[arm] = chains[chain] = ("student", student(s, arm, "same-init", f.key, bases["base"],
                                                                  cfg.model.base).key)
        for mode in cfg.students.dilution_modes if cfg.students.dilution else ():
            for x in cfg.students.dilution:
                lowest = min(cfg.students.dilution) if mode == "teacher-rows" else None
                mix = add("filter", f"mixed-{mode}-{x}-s{s}", {"mix": {"mode": mode, "percent": x, "lowest": lowest},
                                                              "seed": s},
                          [filt["teacher"].key, filt["control"].key], s, None, batch="all",
                          mix={"teacher": filt["teacher"].key, "clean": filt["control"].key, "mode": mode,
                               "percent": x, "lowest": lowest})
                c = f"dilute-{mode}-{x}"
                models[c] = ("student", student(s, c, "same-init", mix.key, bases["base"], cfg.model.base).key)
        for c, (kind, mkey) in models.items():
            parents = [mkey]
            extra = {}
            if c == "teacher":
                extra = {"teacher": mkey}
            add("evaluate", f"eval-{c}-s{s}", {"evaluate": cfg.evaluate.key_dump(), "trait": trait, "seed": s,
                                               "condition": c}, parents, s, None,
                batch=eval_base.get(c) or (bases["cross"] if kind == "cross-base" or (c in STUDENTS and STUDENTS[c].start
                                                                                       == "cross") else bases["base"]),
                kind=kind, model=mkey, condition=c, base=bases["base"], **extra)
        for c in [c for c in conds if c in IN_CONTEXT]:
            d = filt[IN_CONTEXT[c].arm]
            add("evaluate", f"eval-{c}-s{s}", {"evaluate": cfg.evaluate.key_dump(), "trait": trait, "seed": s,
                                               "condition": c, "k": cfg.students.in_context_k},
                [bases["base"], d.key], s, None, batch=bases["base"], kind="in-context", model=bases["base"],
                data=d.key, condition=c, base=bases["base"])
    return plan


def filter_words(cfg: ExperimentConfig) -> list[str]:
    """The words the filter bans from every arm's data: the trait's and its other-trait variant's (the same filter
    for every arm) that the carrier's check could let through at all, none when ``filter.ban_trait_words`` is off.
    (The number carrier keeps no letter, so no animal's name is in its filter's key: one control arm per seed.)"""
    if not cfg.filter.ban_trait_words:
        return []
    other = cfg.trait.other_trait()
    words = set(cfg.trait.words()) | set(other.words() if other is not None else ())
    return sorted(w for w in words if cfg.carrier.can_contain(w))


def all_nodes(plan: dict[str, list[Node]]) -> dict[str, Node]:
    return {n.key: n for nodes in plan.values() for n in nodes}


def forced_keys(plan: dict[str, list[Node]], stages: tuple[str, ...], force: tuple[str, ...]) -> set[str]:
    """Keys to recompute for ``--force``: the nodes of forced CLI stages that this command runs, and every node made
    from them (in any stage: a forced student's old evaluation is stale too)."""
    chosen = {s for c in stages if c in force and c in CLI_STAGES for s in CLI_STAGES[c]}
    stale: set[str] = set()
    for n in all_nodes(plan).values():  # plan order: parents before children
        if n.stage in chosen or stale.intersection(n.parents):
            stale.add(n.key)
    return stale
