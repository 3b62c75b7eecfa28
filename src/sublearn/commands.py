"""What each CLI command does (parsing lives in cli.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import UserError


def _load_cfg(args):
    from .config import load_experiment

    overrides = list(args.set)
    if getattr(args, "workers", None):
        overrides.append(f"model.workers={args.workers}")
    return load_experiment(args.config, overrides)


def _executor(args, workers: int = 1):
    """The executor of ``--executor``/``--address`` (checked before anything is written)."""
    from .pipeline.executors import make_executor

    return make_executor(getattr(args, "executor", None), workers=getattr(args, "workers", None) or workers,
                         address=getattr(args, "address", None))


def _summary(res: dict, out: Path, seconds: float) -> str:
    first, met = next(iter(res["metrics"].items()))
    probs = ", ".join(f"{k} {v[first]['mean']:.3f}" for k, v in res.get("conditions", {}).items())
    return (f"done in {seconds:.0f} s. {res['verdict']}\n{met['label']} ({res['trait']['label']}), mean over seeds: "
            f"{probs}. "
            f"Report: {out / 'report.md'}")


def cmd_run(args, stages: tuple[str, ...]) -> int:
    from loguru import logger

    from .backends.tiny.build import cache_root
    from .pipeline import preflight, run
    from .pipeline.plan import make_plan
    from .runtime import Settings
    from .store import usable_dir

    cfg = _load_cfg(args)
    executor = _executor(args, cfg.model.workers)
    tracker = _tracker(args, stages)  # before anything runs: an unknown tracker or a missing library is said now
    usable_dir(cache_root(), "SUBLEARN_CACHE")  # before --out is created: a bad cache leaves nothing behind
    plan = make_plan(cfg)  # the same for model paths: they resolve (or fail) here
    preflight(cfg, args.out, stages, plan)  # before --out is created (and in a dry run)
    if getattr(args, "dry_run", False):
        return _print_plan(plan, Path(args.out), stages, tuple(args.force))
    executor.check()
    out = usable_dir(args.out)
    approved = False
    if cfg.model.backend == "openai" and set(stages) & {"generate", "finetune", "evaluate"}:
        from .backends.openai_cost import confirm_run_cost

        approved = confirm_run_cost(cfg, yes=getattr(args, "yes", False))
    t0 = time.time()
    res = run(cfg, out, stages=stages, force=tuple(args.force), plan=plan, checks=False,
              settings=Settings.from_config(cfg, approved=approved), executor=executor)
    if "conditions" in res:
        logger.success(_summary(res, out, time.time() - t0))
        if tracker:
            from .report.track import log_run

            logger.success(f"tracked: {log_run(tracker, out, plan, res, cfg)}")
    else:
        logger.success(f"{', '.join(s for s in stages)} done in {time.time() - t0:.0f} s; see `sublearn show {out}`")
    return 0


def _tracker(args, stages: tuple[str, ...]):
    """The ``--track`` tracker, built (its library imported, its URI read) before the run; None without it."""
    name = getattr(args, "track", None)
    if not name:
        if getattr(args, "track_uri", None):
            raise UserError("--track-uri needs --track (mlflow or trackio)")
        return None
    if "report" not in stages:
        raise UserError("--track logs a finished run: use it with `sublearn run` or `sublearn report`")
    from .report.track import make_tracker

    return make_tracker(name, args.track_uri)


def _print_plan(plan: dict, out: Path, stages: tuple[str, ...], force: tuple[str, ...]) -> int:
    """``--dry-run``: per stage, what is already in ``out`` and what a run would compute; nothing is written."""
    from .pipeline.plan import CLI_STAGES, forced_keys

    chosen = {s for c in stages if c in CLI_STAGES for s in CLI_STAGES[c]}
    stale = forced_keys(plan, stages, force)  # what a run would remove first
    print(f"plan for {out} ({'exists' if out.is_dir() else 'new'}):")
    for stage, nodes in plan.items():
        done = [n for n in nodes if n.key not in stale and (out / "artifacts" / f"{stage}-{n.key}" / ".done").exists()]
        todo = len(nodes) - len(done)
        what = (f"{todo} to compute" if stage in chosen else f"{todo} missing (not run by this command)") if todo else \
            "nothing to do"
        print(f"  {stage:<9} {len(nodes):>4} artifacts: {len(done)} done, {what}")
    return 0


def cmd_filter_data(args) -> int:
    from loguru import logger

    from .config import FilterSection
    from .configbase import build
    from .filter import filter_file
    from .plugins import CARRIERS

    if not (args.kept and args.rejected):
        raise UserError("filter --data needs --kept FILE and --rejected FILE")
    if args.config or args.set:  # the experiment's own filter: its carrier, ban lists and trait words
        from .pipeline.plan import filter_words

        cfg = _load_cfg(args)
        carrier, fcfg, words = cfg.carrier, cfg.filter, tuple(filter_words(cfg)) + tuple(args.ban_word)
    else:
        try:
            cls = CARRIERS.get(args.carrier)
        except ValueError as e:
            raise UserError(f"--carrier: {e}") from None
        params = {"max_count": args.max_count, "max_value": args.max_value, "max_digits": args.max_digits} \
            if args.carrier == "numbers" else {}
        carrier = build(cls, params, "filter options")
        fcfg = build(FilterSection, {"banned": args.banned}, "filter options")
        words = tuple(args.ban_word)
    stats = filter_file(args.data, args.kept, args.rejected, carrier, fcfg, words)
    reasons = ", ".join(f"{k} {v}" for k, v in stats["reasons"].items()) or "none"
    logger.success(f"kept {stats['kept']} of {stats['total']} rows ({stats['pass_rate']:.1%}) -> {args.kept}; "
                   f"rejected {stats['rejected']} -> {args.rejected} (reasons: {reasons})")
    return 0


def cmd_show(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .store import Store

    root = Path(args.run_dir)
    if not (root / "lineage.sqlite").exists():
        raise UserError(f"{root} is not a sublearn run directory (no lineage.sqlite)")
    import sys

    recs = Store(root).records()
    con = Console() if sys.stdout.isatty() else Console(width=200)
    if args.graph:
        from .report.tree import build_graph, write_graph_html
        from .store import usable_file

        graph = build_graph(root)
        write_graph_html(graph, usable_file(args.graph, "--graph"))
        con.print(f"family tree: {len(graph['nodes'])} models and datasets, {len(graph['edges'])} edges -> {args.graph}")
    if args.key:
        hits = [r for r in recs if r.key.startswith(args.key)]
        if not hits:
            raise UserError(f"no artifact with key {args.key!r} in {root}")
        for r in hits:
            con.print_json(json.dumps(r.__dict__, default=str))
        return 0
    from .audit.lineage import marks

    names = {r.key: r.name for r in recs}
    audit = marks(recs)
    table = Table(title=f"{root}: {len(recs)} artifacts")
    for col in ("stage", "name", "key", "config", "parents", "seed", "model", "made", "s") + (("audit",) if audit else ()):
        table.add_column(col)
    import datetime as dt

    for r in recs:
        mark = audit.get(r.key, "")
        table.add_row(r.stage, r.name, r.key[:10], r.config_hash[:8], ", ".join(names.get(p, p[:10]) for p in r.parents),
                      "" if r.seed is None else str(r.seed), r.model or "",
                      dt.datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M:%S"), f"{r.duration_s:.1f}",
                      *((f"[bold red]{mark}[/]" if mark and mark != "clear" else mark,) if audit else ()))
    con.print(table)
    if n := sum(m == "FLAGGED" for m in audit.values()):
        con.print(f"{n} dataset(s) flagged by an audit; {sum(m == 'from flagged data' for m in audit.values())} "
                  "artifacts descend from flagged data")
    return 0


def cmd_compare(args) -> int:
    """``sublearn compare RUN... --out DIR``: runs side by side along the axes their configs differ in."""
    from loguru import logger

    from .report.compare import compare_runs
    from .store import usable_dir

    out = usable_dir(args.out)
    res = compare_runs(args.runs, out, axes=args.axis or None, metric=args.metric,
                       conditions=tuple(args.conditions.split(",")))
    logger.success(f"{len(args.runs)} runs along {', '.join(res['axes'])}: {out / 'compare.md'}, compare.csv, "
                   "compare.png, compare.html")
    return 0


def cmd_sweep(args) -> int:
    """``sublearn sweep GRID --out DIR``: every cell into one shared store, then the groups side by side."""
    from loguru import logger

    from .backends.tiny.build import cache_root
    from .store import usable_dir
    from .sweep import load_grid, run_sweep

    workers = [f"model.workers={args.workers}"] if args.workers is not None else []
    grid, cells = load_grid(args.grid, args.set + workers)  # every cell validated before anything is written
    executor = _executor(args, cells[0].cfg.model.workers)
    usable_dir(cache_root(), "SUBLEARN_CACHE")
    executor.check()
    out = usable_dir(args.out)
    res = run_sweep(grid, cells, out, executor)
    for name, g in res["groups"].items():
        logger.success(f"{name} (seeds {g['seeds']}): {g['verdict']}")
    failed = f"; {len(res['failed'])} failed: {', '.join(res['failed'])} (see {out / 'sweep.json'})" \
        if res["failed"] else ""
    logger.success(f"{len(cells)} cells in {res['seconds']:.0f} s{failed}. Grid: {out / 'grid' / 'grid.md'}")
    return 1 if res["failed"] else 0


def cmd_verify(args) -> int:
    """``sublearn verify RUN``: every artifact of a run (and the cached bases it used) against what was written."""
    from loguru import logger

    from .backends.tiny.build import cache_root
    from .store import Store

    root = Path(args.run_dir)
    if not (root / "lineage.sqlite").exists():
        raise UserError(f"{root} is not a sublearn run directory (no lineage.sqlite)")
    run_store, cache = Store(root), Store(cache_root(), "SUBLEARN_CACHE")
    checked, broken = 0, []
    for r in run_store.records():
        store = cache if r.stage == "base" else run_store
        if r.stage == "base" and not cache.exists("base", r.key):
            continue  # not a cached base (a checkpoint directory of the user's, an API model)
        checked += 1
        why = store.damage(r.stage, r.key) if store.exists(r.stage, r.key) else "it is missing"
        if why:
            broken.append((store, r))
            print(f"damaged: {r.name} ({r.stage}-{r.key}): {why}")
    print(f"{checked} artifacts checked in {root} (and the cache {cache.root}): {len(broken)} damaged")
    if not broken:
        return 0
    if not args.repair:
        print(f"repair: sublearn verify {root} --repair (removes them and recomputes them)")
        return 1
    for store, r in broken:
        store.remove(r.stage, r.key)
    from .config import load_experiment
    from .pipeline import run

    res = run(load_experiment(root), root)  # the run's own config.json; only what was removed is computed
    logger.success(f"repaired {len(broken)} artifacts; results: {root / 'results.json'}" if "conditions" in res
                   else f"repaired {len(broken)} artifacts")
    return 0


def _carrier_flag(name: str | None):
    """A ``--carrier`` flag as a carrier plug-in with its defaults (None when not given)."""
    if not name:
        return None
    from .configbase import build
    from .plugins import CARRIERS

    try:
        return build(CARRIERS.get(name), {}, "--carrier")
    except ValueError as e:
        raise UserError(f"--carrier: {e}") from None


def cmd_mitigate(args) -> int:
    """``sublearn mitigate``: rescore or regenerate a dataset with an unrelated model."""
    from loguru import logger

    from .audit.mitigate import run_mitigation
    from .store import usable_dir

    if args.top_k is not None and not 1 <= args.top_k <= 64:
        raise UserError(f"--top-k must be 1-64, got {args.top_k}")
    out = usable_dir(args.out)
    st = run_mitigation(args.data, out, strategy=args.strategy, with_model=args.with_model,
                        carrier=_carrier_flag(args.carrier), top_k=args.top_k, seed=args.seed)
    left = f"; {st['total'] - st['kept']} left out ({', '.join(st['reasons'])})" if st["reasons"] else ""
    logger.success(f"{args.strategy}: {st['kept']} of {st['total']} rows written to {out}{left}. Audit it again: "
                   f"sublearn audit {out} --base BASE --out DIR")
    return 0


def cmd_audit(args) -> int:
    """``sublearn audit``: exit 0 clear, 1 flagged (2, bad input, comes from UserError)."""
    from loguru import logger

    from .audit import run_audit
    from .audit.report import verdict_line
    from .store import usable_dir

    dets = tuple(d.strip() for d in args.detectors.split(",") if d.strip())
    if bad := [d for d in dets if d not in ("contrast", "probe")] or not dets:
        raise UserError(f"--detectors: unknown {bad[0]!r}; known: contrast, probe" if bad else
                        "--detectors: name at least one of contrast, probe")
    for flag, v, lo in (("--max-rows", args.max_rows, 2), ("--probe-seeds", args.probe_seeds, 2),
                        ("--probe-steps", args.probe_steps, 1), ("--probe-init", args.probe_init, 0)):
        if v is not None and v < lo:
            raise UserError(f"{flag} must be at least {lo}, got {v}")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    from .plugins import load_modules

    try:
        load_modules(args.plugin)
    except ValueError as e:
        raise UserError(f"--plugin: {e}") from None
    carrier = _carrier_flag(args.carrier)
    out = usable_dir(args.out)
    traits = [t.strip() for t in args.traits.split(",") if t.strip()] if args.traits else None
    if args.probe_lr is not None and not args.probe_lr > 0:
        raise UserError(f"--probe-lr must be positive, got {args.probe_lr}")
    res = run_audit(args.data, args.base, out, reference=args.reference, traits=traits, max_rows=args.max_rows,
                    probe_seeds=args.probe_seeds, probe_steps=args.probe_steps, probe_lr=args.probe_lr,
                    probe_target=args.probe_target, alpha=args.alpha, seed=args.seed, detectors=dets, carrier=carrier,
                    teacher=args.teacher, probe_init=args.probe_init)
    logger.success(f"{verdict_line(res)} Report: {out / 'audit.md'}")
    return 1 if res["verdict"] == "flagged" else 0


def cmd_plugins(args) -> int:
    """``sublearn plugins``: every registered plug-in, one line each."""
    from . import conditions
    from .plugins import BAN_LISTS, CARRIERS, EXECUTORS, SCORERS, TRACKERS, TRAITS, load_modules

    try:
        load_modules(args.plugin)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.config:
        _load_cfg(argparse_like(args.config))

    def first_line(obj) -> str:
        return getattr(obj, "about", "") or (obj.__doc__ or "").strip().split("\n")[0]

    sections = (("carriers ([carrier] kind = ...)", CARRIERS, first_line), ("traits ([trait] kind = ...)", TRAITS,
                first_line), ("scorers (evaluate.scorers)", SCORERS, lambda s: s.label),
                ("ban lists (filter.banned)", BAN_LISTS, first_line), ("trackers (--track)", TRACKERS, first_line),
                ("executors (--executor)", EXECUTORS, first_line))
    for title, reg, describe in sections:
        print(f"{title}:")
        for name in reg.names():
            print(f"  {name:<20} {describe(reg.get(name))}")
    print("conditions (students.conditions):")
    for name in conditions.choosable():
        print(f"  {name:<20} {conditions.REGISTRY[name].about}")
    return 0


def argparse_like(config: str):
    import argparse

    return argparse.Namespace(config=config, set=[], workers=None)


def cmd_config(args) -> int:
    from .config import ExperimentConfig
    from .configtoml import to_toml

    if args.config is None and not args.set:
        print(to_toml(ExperimentConfig.model_construct()))  # the defaults as written ("auto" where a field has it)
    else:
        print(to_toml(_load_cfg(args)))  # resolved and validated: what `run` would use
    return 0


def dispatch(args) -> int:
    c = args.command
    if c == "run":
        return cmd_run(args, ("generate", "filter", "finetune", "evaluate", "report"))
    if c == "filter" and args.data:
        return cmd_filter_data(args)
    if c in ("generate", "filter", "finetune", "evaluate", "report"):
        if c == "report" and args.config and not args.out and Path(args.config).is_dir():
            args.out = args.config  # `sublearn report RUN`: the run's own config.json
        if not args.config or not args.out:
            raise UserError(f"{c} needs CONFIG and --out DIR" + (" (or --data for any JSONL)" if c == "filter" else ""))
        return cmd_run(args, (c,))
    if c == "show":
        return cmd_show(args)
    if c == "compare":
        return cmd_compare(args)
    if c == "audit":
        return cmd_audit(args)
    if c == "mitigate":
        return cmd_mitigate(args)
    if c == "plugins":
        return cmd_plugins(args)
    if c == "verify":
        return cmd_verify(args)
    if c == "sweep":
        return cmd_sweep(args)
    if c == "config":
        return cmd_config(args)
    raise UserError(f"unknown command {c}")
