"""The Python API: run an experiment and get its results as an object (``sublearn.run``, ``sublearn.Results``).

    import sublearn
    res = sublearn.run("examples/owl-tiny.toml", "runs/owl", overrides=["seeds=[0, 1]"])
    res.verdict                              # the report's first line
    res.mean("same-init")                    # seed mean of the first metric (P(target))
    res.per_seed("same-init")                # {seed: value}
    res.comparison("same-init", "control")   # difference, seed-level CI, exact p, seeds won
    res.paths["report_html"]                 # report.md, report.html, results.json, charts

Re-running skips finished work, as the CLI does; ``Results.load(RUN)`` reads a finished run without running
anything. Everything comes from the run's ``results.json`` (docs/results.md), so the API and the report never differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

__all__ = ["Results", "run"]


@dataclass(frozen=True)
class Results:
    """One run's results: conditions with per-seed values, comparisons paired by seed, the verdict, and paths."""

    out: Path
    data: dict = field(repr=False)

    @classmethod
    def load(cls, out: str | Path) -> Results:
        p = Path(out) / "results.json"
        if not p.is_file():
            raise UserError(f"{out}: no results.json (run the experiment, or `sublearn report`, first)")
        return cls(Path(out), json.loads(p.read_text()))

    @property
    def verdict(self) -> str:
        return self.data["verdict"]

    @property
    def metrics(self) -> list[str]:
        """Metric short names, the verdict's first (e.g. ["prob", "rate"])."""
        return list(self.data["metrics"])

    @property
    def conditions(self) -> list[str]:
        return list(self.data["conditions"])

    @property
    def seeds(self) -> list[int]:
        return list(self.data["seeds"])

    def _metric(self, metric: str | None) -> str:
        m = metric or self.metrics[0]
        if m not in self.data["metrics"]:
            raise UserError(f"no metric {m!r}; this run has {', '.join(self.metrics)}")
        return m

    def _condition(self, c: str) -> dict:
        if c not in self.data["conditions"]:
            raise UserError(f"no condition {c!r}; this run has {', '.join(self.conditions)}")
        return self.data["conditions"][c]

    def per_seed(self, condition: str, metric: str | None = None) -> dict[int, float]:
        """{seed: value} of one condition (the unit of every claim)."""
        return {int(s): v for s, v in self._condition(condition)[self._metric(metric)]["per_seed"].items()}

    def mean(self, condition: str, metric: str | None = None) -> float:
        return self._condition(condition)[self._metric(metric)]["mean"]

    def ci(self, condition: str, metric: str | None = None) -> tuple[float, float]:
        """The seed-level 95% t-interval of the condition's mean."""
        lo, hi = self._condition(condition)[self._metric(metric)]["ci"]
        return lo, hi

    def comparison(self, a: str, b: str, metric: str | None = None) -> dict:
        """a against b, paired by seed: diff, ci, p_value (exact sign-flip), wins, n_seeds, per_seed."""
        m = self._metric(metric)
        for c in self.data["comparisons"]:
            if c["a"] == a and c["b"] == b and c["metric"] == m:
                return c
        have = sorted({f"{c['a']} vs {c['b']}" for c in self.data["comparisons"]})
        raise UserError(f"no comparison {a} vs {b} ({m}); this run has: {', '.join(have)}")

    @property
    def paths(self) -> dict[str, Path | list[Path]]:
        """results.json, report.md, report.html and the charts of the run."""
        return {"results": self.out / "results.json", "report_md": self.out / "report.md",
                "report_html": self.out / "report.html", "charts": sorted(self.out.glob("*.png"))}

    def section(self, name: str) -> dict | None:
        """An optional section of results.json: "dilution", "chain", "fanout" (None when the run has none)."""
        return self.data.get(name)


def run(config: str | Path | object, out: str | Path, overrides: list[str] | tuple[str, ...] = (),
        stages: tuple[str, ...] = ("generate", "filter", "finetune", "evaluate", "report"),
        force: tuple[str, ...] = (), track: str | None = None, track_uri: str | None = None,
        executor: str = "local", address: str | None = None, approve_cost: bool = False) -> Results:
    """Run an experiment (a TOML path, a run directory, or an ``ExperimentConfig``) into ``out``; ``overrides`` are
    ``--set`` strings ("trait.target=eagle"). Finished work is reused. ``track`` ("mlflow", "trackio") logs the
    finished run to that tracker at ``track_uri`` (docs/tracking.md). ``executor``: "local" (``model.workers``
    processes) or "ray" at ``address`` (docs/sweep.md). ``approve_cost``: backend openai, let billed fine-tuning
    start (the CLI asks instead). Returns the run's :class:`Results`."""
    from .config import ExperimentConfig, load_experiment
    from .pipeline import run as run_pipeline
    from .pipeline.executors import make_executor
    from .runtime import Settings

    if isinstance(config, ExperimentConfig):
        if overrides:
            raise UserError("overrides apply to a config file; change an ExperimentConfig with model_copy")
        cfg = config
    else:
        cfg = load_experiment(str(config), list(overrides))
    if "report" not in stages:
        raise UserError("sublearn.run returns results: keep the report stage (use the pipeline for partial runs)")
    tracker = None
    if track:
        from .report.track import make_tracker

        tracker = make_tracker(track, track_uri)
    ex = make_executor(executor, workers=cfg.model.workers, address=address)
    ex.check()
    res = run_pipeline(cfg, out, stages=stages, force=force, executor=ex,
                       settings=Settings.from_config(cfg, approved=approve_cost))
    if tracker:
        from loguru import logger

        from .pipeline.plan import make_plan
        from .report.track import log_run

        logger.info(f"tracked: {log_run(tracker, Path(out), make_plan(cfg), res, cfg)}")
    return Results.load(out)
