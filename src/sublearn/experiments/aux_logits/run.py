"""Run the experiment (and its optional sweep) into a run directory: one store artifact per experiment,
so re-running skips finished work; results.json, report.md and PNGs at the top of the run directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from loguru import logger

from ...store import Store, artifact_key, write_atomic
from .config import AuxLogitsConfig, resolve_knob
from .data import Dataset, load_digits, load_mnist

STAGE = "aux-logits"


def load_data(cfg: AuxLogitsConfig) -> Dataset:
    if cfg.data.source == "mnist":
        return load_mnist(cfg.data.mnist_dir or "", cfg.data.max_train)
    return load_digits(cfg.data.test_fraction, cfg.data.split_seed)


def pick_device(device: str) -> str:
    import torch

    from ...errors import UserError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device available (torch.cuda.is_available() is False)")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: expected cpu, cuda or auto")
    return device


def experiment(store: Store, cfg: AuxLogitsConfig, data: Dataset, device: str, force: bool,
               done: set[str] | None = None) -> tuple[dict, str, bool]:
    """Raw per-model results of one experiment, from the store when already finished. Returns (raw, key, cached).

    ``done``: keys computed earlier in this invocation, which ``force`` does not redo again."""
    from .experiment import run_experiment

    cfg_dict = cfg.experiment_dict()
    key = artifact_key(STAGE, cfg_dict)
    done = set() if done is None else done
    if force and key not in done and store.exists(STAGE, key):
        store.remove(STAGE, key)
    if store.exists(STAGE, key):
        logger.info(f"{STAGE}-{key}: finished before, reusing")
        return json.loads((store.path(STAGE, key) / "raw.json").read_text()), key, True
    sizes = [data.n_features, *cfg.model.hidden, 10 + cfg.model.n_aux]
    with store.writing(STAGE, key, name=STAGE, config=cfg_dict, seed=cfg.seed, model=f"mlp{sizes}") as (tmp, extra):
        raw = run_experiment(cfg, data, device)
        raw["data"] = {"name": data.name, "n_train": len(data.y_train), "n_test": len(data.y_test),
                       "n_features": data.n_features}
        (tmp / "raw.json").write_text(json.dumps(raw))
        extra.update({"device": device, "timings_s": raw["timings_s"], "gflops_per_s": raw["gflops_per_s"]})
    done.add(key)
    return raw, key, False


def run(cfg: AuxLogitsConfig, out: str | Path, device: str = "auto", force: bool = False) -> dict[str, Any]:
    """The default experiment plus the config's sweep (if any); writes everything; returns results.json's dict."""
    from . import report

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        from ...errors import UserError

        raise UserError(f"--out {out}: exists and is not a directory")
    store = Store(out)
    dev = pick_device(device)
    t = time.perf_counter()
    data = load_data(cfg)
    t_data = time.perf_counter() - t
    logger.info(f"data {data.name}: {len(data.y_train)} train, {len(data.y_test)} test, {data.n_features} features; "
                f"device {dev}")
    done: set[str] = set()
    raw, key, cached = experiment(store, cfg, data, dev, force, done)
    summary = report.summarize_run(raw, cfg.dump())
    summary["artifact"] = f"{STAGE}-{key}"
    summary["cached"] = cached
    summary["criteria"] = report.criteria(summary)

    sweep = None
    if cfg.sweep.knob is not None:
        knob = resolve_knob(cfg.sweep.knob)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cfg.sweep.values)
        points = []
        for i, v in enumerate(cfg.sweep.values):
            pcfg = cfg.with_knob(knob, v)
            logger.info(f"sweep {knob}={v!r} ({i + 1}/{len(cfg.sweep.values)})")
            praw, pkey, pcached = experiment(store, pcfg, data, dev, force, done)
            ptab = report.conditions_table(praw)
            points.append({"value": v, "artifact": f"{STAGE}-{pkey}", "cached": pcached,
                           "init_cos": sum(praw["init_cos_student_vs_teacher"]) / praw["n_models"],
                           "conditions": {k: {kk: vv for kk, vv in d.items() if kk != "values"} for k, d in ptab.items()},
                           "timings_s": praw["timings_s"]})
        sweep = {"knob": knob, "values": list(cfg.sweep.values), "numeric": numeric,
                 "x": [float(v) for v in cfg.sweep.values] if numeric else list(range(len(cfg.sweep.values))),
                 "points": points}
        summary["sweep"] = sweep

    t = time.perf_counter()
    files = report.plots(summary, out, sweep)
    summary["timings_s"] = {**summary["timings_s"], "data_load": t_data}
    summary["run_wall_s"] = time.perf_counter() - t0
    summary["figures"] = files
    write_atomic(out / "config.json", json.dumps(cfg.dump(), indent=2))
    write_atomic(out / "report.md", report.render_markdown(summary, sweep, files))
    summary["timings_s"]["report"] = time.perf_counter() - t
    summary["run_wall_s"] = time.perf_counter() - t0
    write_atomic(out / "results.json", json.dumps(summary, indent=2))
    return summary
