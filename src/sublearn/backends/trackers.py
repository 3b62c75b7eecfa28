"""Experiment trackers (``--track``): MLflow and Trackio, each through its own library (``pip install
'sublearn[track]'``), registered in ``plugins.TRACKERS``. What they log is gathered by ``report/track.py``.

Neither touches process-global tracker state that a caller might rely on: MLflow goes through an explicit
``MlflowClient``; Trackio's module-level run is opened and finished inside ``log``.
"""

from __future__ import annotations

import re
import time

from ..errors import UserError
from ..plugins import TRACKERS
from ..report.track import RunLog

PARAM_MAX = 6000  # MLflow's longest parameter value


def _need(module: str, extra: str = "track"):
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise UserError(f"--track needs {module.split('.')[0]}: pip install 'sublearn[{extra}]'") from None


def _key(k: str) -> str:
    """A name MLflow accepts (letters, digits, _ - . space /)."""
    return re.sub(r"[^\w\-. /]", "_", k)[:250]


@TRACKERS.register("mlflow")
class MLflowTracker:
    """One MLflow run per sublearn run and a nested run per job; re-logging adds only what is missing.

    ``uri``: any MLflow tracking URI (a server, ``sqlite:///mlflow.db``, a ``file:`` store); None: MLflow's own
    default (``MLFLOW_TRACKING_URI``)."""

    def __init__(self, uri: str | None):
        _need("mlflow")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = self._guard(lambda: MlflowClient(tracking_uri=uri) if uri else MlflowClient())

    def log(self, run: RunLog) -> str:
        return self._guard(lambda: self._log(run))

    def _guard(self, call):
        """MLflow's own errors (a store it refuses, a server it cannot reach, a store library it lacks) in one
        line naming the URI."""
        from mlflow.exceptions import MlflowException

        try:
            return call()
        except (MlflowException, ImportError, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if "MLFLOW_ALLOW_FILE_STORE" in str(e):
                first = ("MLflow 3 keeps its file store behind MLFLOW_ALLOW_FILE_STORE=true; set it, or use an MLflow "
                         "server (http://...) or sqlite:///mlflow.db (with the full mlflow package)")
            raise UserError(f"mlflow ({self.uri or 'its default URI'}): {first[:400]}") from None

    def _log(self, run: RunLog) -> str:
        c = self.client
        exp = c.get_experiment_by_name("sublearn") or None
        exp_id = exp.experiment_id if exp else c.create_experiment("sublearn")
        parent = self._find(exp_id, run.run_id) or self._new(exp_id, run.run_id, run.name, run.params,
                                                                 run.metrics, {}, run.tags)
        done = {r.data.tags.get("sublearn.key") for r in c.search_runs(
            [exp_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=50_000)}
        new = 0
        for j in run.jobs:
            if j.key in done:
                continue
            tags = {"mlflow.parentRunId": parent, "sublearn.stage": j.stage, "sublearn.seed": str(j.seed)}
            self._new(exp_id, j.key, j.name, j.params, j.metrics, j.series, tags, j.created)
            new += 1
        for f in run.files:
            c.log_artifact(parent, str(f))
        where = f"{self.uri or 'mlflow'} experiment 'sublearn', run {parent}"
        return f"{where}: {new} job(s) logged, {len(run.jobs) - new} already there"

    def _find(self, exp_id: str, run_id: str) -> str | None:
        found = self.client.search_runs([exp_id], f"tags.`sublearn.key` = '{run_id}'", max_results=1)
        return found[0].info.run_id if found else None

    def _new(self, exp_id, key, name, params, metrics, series, tags, created: float = 0.0) -> str:
        from mlflow.entities import Metric, Param

        c = self.client
        r = c.create_run(exp_id, run_name=name, tags={"sublearn.key": key} | tags)
        ts = int((created or time.time()) * 1000)
        ps = [Param(_key(k), v[:PARAM_MAX]) for k, v in params.items()]
        ms = [Metric(_key(k), v, ts, 0) for k, v in metrics.items()]
        ms += [Metric(_key(k), float(v), ts, step) for k, vs in series.items() for step, v in enumerate(vs)]
        for i in range(0, len(ps), 100):  # MLflow's batch limits: 100 params, 1000 metrics
            c.log_batch(r.info.run_id, params=ps[i: i + 100])
        for i in range(0, len(ms), 1000):
            c.log_batch(r.info.run_id, metrics=ms[i: i + 1000])
        c.set_terminated(r.info.run_id)
        return r.info.run_id


@TRACKERS.register("trackio")
class TrackioTracker:
    """One Trackio run per job and one with the results, grouped under the sublearn run's name.

    A re-log skips runs the project already has. ``uri``: the Trackio project (default "sublearn"); Trackio keeps it under
    ``TRACKIO_DIR`` (default ``~/.cache/huggingface/trackio``; ``trackio show`` opens the dashboard)."""

    def __init__(self, uri: str | None):
        _need("trackio")
        self.project = uri or "sublearn"

    def log(self, run: RunLog) -> str:
        try:
            return self._log(run)
        except (OSError, ValueError, RuntimeError) as e:  # Trackio's own refusals (its directory, a project name)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"trackio (project {self.project!r}): {first[:400]}") from None

    def _log(self, run: RunLog) -> str:
        import contextlib
        import io

        import trackio
        from trackio.sqlite_storage import SQLiteStorage

        have = set(SQLiteStorage.get_runs(self.project) or [])
        todo = [(run.name, run.params, run.metrics, {}) ] + [
            (f"{run.name}/{j.name}", j.params, j.metrics | {"seed": j.seed if j.seed is not None else -1}, j.series)
            for j in run.jobs]
        new = 0
        chatter = io.StringIO()  # Trackio prints where it logs; that goes to the debug log, not the terminal
        with contextlib.redirect_stdout(chatter):
            for name, params, metrics, series in todo:
                if name in have:
                    continue
                trackio.init(project=self.project, name=name, group=run.name, config=params, embed=False,
                             auto_log_gpu=False, auto_log_cpu=False)
                trackio.log(metrics, step=0)
                for k, vs in series.items():
                    for step, v in enumerate(vs):
                        trackio.log({k: v}, step=step)
                trackio.finish()
                new += 1
        from loguru import logger

        logger.debug(chatter.getvalue())
        stored = set(SQLiteStorage.get_runs(self.project) or [])
        lost = [name for name, *_ in todo if name not in stored]
        if lost:  # Trackio drops what it cannot write without a word: say it
            raise UserError(f"trackio stored {len(todo) - len(lost)} of {len(todo)} runs in project "
                            f"{self.project!r} (is TRACKIO_DIR a writable directory?); missing e.g. {lost[0]!r}")
        return (f"trackio project '{self.project}' (`trackio show --project {self.project}`): {new} run(s) logged, "
                f"{len(todo) - new} already there")
