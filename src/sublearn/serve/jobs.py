"""Files and fine-tuning jobs of ``sublearn serve``: OpenAI-shaped objects, sublearn's own trainer behind them.

Uploaded files and job records live in the server's state directory (JSON written atomically), so a
restarted server still lists them and still serves the models its finished jobs made. Jobs run one at a
time on a background thread with ``hf_train.train``; ``cancel`` stops a running job at its next step.
The OpenAI hyperparameters map onto a base ``Recipe`` (LoRA by default): ``n_epochs`` -> epochs (steps
unset; fractional epochs are accepted here, OpenAI wants an integer), ``batch_size`` -> batch size,
``learning_rate_multiplier`` -> lr × multiplier, the job's ``seed`` -> data-order and adapter-init seed.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from pathlib import Path

from loguru import logger

from ..configbase import SEED_MAX
from ..store import write_atomic

TERMINAL = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """An OpenAI-shaped error: HTTP status, message, type, code."""

    def __init__(self, status: int, message: str, code: str | None = None, type_: str = "invalid_request_error",
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


class _Cancelled(Exception):
    pass


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class Files:
    """``/v1/files``: JSONL uploads kept on disk."""

    def __init__(self, root: Path):
        self.root = root / "files"
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, filename: str, purpose: str, data: bytes) -> dict:
        fid = _new_id("file")
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        write_atomic(self.root / f"{fid}.data", data)
        write_atomic(self.root / f"{fid}.json", json.dumps(obj))
        return obj

    def get(self, fid: str) -> dict:
        p = self.root / f"{fid}.json"
        if "/" in fid or not p.exists():
            raise ApiError(404, f"No such File object: {fid}", "file_not_found", param="file_id")
        return json.loads(p.read_text())

    def content(self, fid: str) -> bytes:
        self.get(fid)
        return (self.root / f"{fid}.data").read_bytes()

    def list(self) -> list[dict]:
        return sorted((json.loads(p.read_text()) for p in self.root.glob("*.json")), key=lambda o: -o["created_at"])


def parse_rows(data: bytes) -> list[dict]:
    """Training rows of an uploaded JSONL, or an ApiError naming the first bad line."""
    rows = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ApiError(400, f"training file line {n}: not valid JSON", "invalid_training_file") from None
        msgs = row.get("messages") if isinstance(row, dict) else None
        if (not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                               and m.get("role") in ("system", "user", "assistant")
                                                               for m in msgs) or msgs[-1]["role"] != "assistant"):
            raise ApiError(400, f"training file line {n}: expected {{'messages': [...]}} ending with an assistant "
                                "message", "invalid_training_file")
        rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]})
    if not rows:
        raise ApiError(400, "training file has no examples", "invalid_training_file")
    return rows


class Jobs:
    """``/v1/fine_tuning/jobs``: queue, background trainer, events, cancel, persistence."""

    def __init__(self, root: Path, files: Files, registry, recipe):
        self.root = root / "jobs"
        self.models_dir = root / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self.files, self.registry, self.recipe = files, registry, recipe
        self.jobs: dict[str, dict] = {}
        self.events: dict[str, list[dict]] = {}
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        self._q: queue.Queue[str | None] = queue.Queue()
        self._load()
        threading.Thread(target=self._loop, name="sublearn-serve-trainer", daemon=True).start()

    # ---- persistence -----------------------------------------------------------------------------
    def _load(self) -> None:
        for p in sorted(self.root.glob("*.json")):
            rec = json.loads(p.read_text())
            job, events = rec["job"], rec["events"]
            if job["status"] not in TERMINAL:  # the server stopped while it ran: say so, never hang
                job["status"] = "failed"
                job["error"] = {"code": "server_restarted", "message": "the server restarted during this job",
                                "param": None}
            self.jobs[job["id"]], self.events[job["id"]] = job, events
            if job["status"] == "succeeded" and (self.models_dir / job["id"]).exists():
                self.registry.add(job["fine_tuned_model"], self.models_dir / job["id"], owned_by="user")

    def _save(self, jid: str) -> None:
        write_atomic(self.root / f"{jid}.json", json.dumps({"job": self.jobs[jid], "events": self.events[jid]}))

    def _event(self, jid: str, message: str, level: str = "info", data: dict | None = None) -> None:
        with self._lock:
            ev = {"id": _new_id("ftevent"), "object": "fine_tuning.job.event", "created_at": int(time.time()),
                  "level": level, "message": message, "data": data or {}, "type": "metrics" if data else "message"}
            self.events[jid].append(ev)
            self._save(jid)

    def _set(self, jid: str, **fields) -> None:
        with self._lock:
            self.jobs[jid].update(fields)
            self._save(jid)

    # ---- API -------------------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        model, fid = body.get("model"), body.get("training_file")
        if not isinstance(model, str) or model not in self.registry.models:
            raise ApiError(404 if isinstance(model, str) else 400, f"The model `{model}` does not exist or you do "
                           "not have access to it.", "model_not_found", param="model")
        if not isinstance(fid, str):
            raise ApiError(400, "training_file is required", "invalid_request_error", param="training_file")
        self.files.get(fid)
        method = body.get("method") or {"type": "supervised", "supervised": {"hyperparameters": body.get(
            "hyperparameters") or {}}}
        if not isinstance(method, dict) or method.get("type") != "supervised":
            raise ApiError(400, "only method.type 'supervised' is supported by sublearn serve", "unsupported_method",
                           param="method")
        supervised = method.get("supervised") or {}
        hp = supervised.get("hyperparameters") or {} if isinstance(supervised, dict) else None
        if not isinstance(hp, dict):
            raise ApiError(400, "hyperparameters must be an object", "invalid_value", param="hyperparameters")
        hp = dict(hp)
        recipe_update = self._hyperparameters(hp)
        seed = body.get("seed")
        if seed is None:
            seed = secrets.randbelow(2**31)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
            raise ApiError(400, f"seed must be an integer 0..{SEED_MAX}", param="seed")
        suffix = body.get("suffix") or "sublearn"
        meta = body.get("metadata")
        if meta is not None and not (isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                    for k, v in meta.items())):
            raise ApiError(400, "metadata must be an object of string values", param="metadata")
        if not isinstance(suffix, str) or len(suffix) > 64 or ":" in suffix:
            raise ApiError(400, "suffix must be a string of at most 64 characters without ':'", param="suffix")
        jid = _new_id("ftjob")
        job = {"object": "fine_tuning.job", "id": jid, "model": model, "created_at": int(time.time()),
               "finished_at": None, "fine_tuned_model": None, "organization_id": "org-sublearn", "result_files": [],
               "status": "validating_files", "validation_file": body.get("validation_file"), "training_file": fid,
               "hyperparameters": {k: hp.get(k, "auto") for k in ("n_epochs", "batch_size",
                                                                  "learning_rate_multiplier")},
               "trained_tokens": None, "error": None, "seed": seed, "estimated_finish": None, "integrations": [],
               "metadata": body.get("metadata"), "user_provided_suffix": suffix,
               "method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}
        with self._lock:
            self.jobs[jid], self.events[jid] = job, []
            self._save(jid)
        self._event(jid, f"Created fine-tuning job: {jid}")
        job["_recipe"] = recipe_update
        self._q.put(jid)
        return self.public(jid)

    def _hyperparameters(self, hp: dict) -> dict:
        up: dict = {}
        n, b, m = hp.get("n_epochs", "auto"), hp.get("batch_size", "auto"), hp.get("learning_rate_multiplier", "auto")
        if n != "auto":
            if not isinstance(n, int | float) or isinstance(n, bool) or not 0 < n <= 50:
                raise ApiError(400, "n_epochs must be 'auto' or a number in (0, 50]", param="n_epochs")
            up.update(epochs=float(n), steps=None)
        if b != "auto":
            if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 256:
                raise ApiError(400, "batch_size must be 'auto' or an integer in [1, 256]", param="batch_size")
            up["batch_size"] = b
        if m != "auto":
            if not isinstance(m, int | float) or isinstance(m, bool) or not 0 < m <= 100:
                raise ApiError(400, "learning_rate_multiplier must be 'auto' or a number in (0, 100]",
                               param="learning_rate_multiplier")
            up["lr"] = self.recipe.lr * m
        return up

    def get(self, jid: str) -> dict:
        if jid not in self.jobs:
            raise ApiError(404, f"No such fine-tuning job: {jid}", "fine_tuning_job_not_found", param="fine_tuning_job_id")
        return self.jobs[jid]

    def public(self, jid: str) -> dict:
        return {k: v for k, v in self.get(jid).items() if not k.startswith("_")}

    def list(self, after: str | None, limit: int, metadata: dict | None) -> dict:
        jobs = sorted(self.jobs.values(), key=lambda j: (-j["created_at"], j["id"]))
        if metadata:
            jobs = [j for j in jobs if all((j.get("metadata") or {}).get(k) == v for k, v in metadata.items())]
        if after:
            ids = [j["id"] for j in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        page = jobs[:limit]
        return {"object": "list", "data": [self.public(j["id"]) for j in page], "has_more": len(jobs) > limit}

    def list_events(self, jid: str, after: str | None, limit: int) -> dict:
        self.get(jid)
        evs = list(reversed(self.events[jid]))  # newest first, like OpenAI
        if after:
            ids = [e["id"] for e in evs]
            evs = evs[ids.index(after) + 1:] if after in ids else []
        return {"object": "list", "data": evs[:limit], "has_more": len(evs) > limit}

    def cancel(self, jid: str) -> dict:
        job = self.get(jid)
        if job["status"] in TERMINAL:
            raise ApiError(400, f"Job {jid} has already {job['status']}", "invalid_job_state")
        self._cancel.add(jid)
        if job["status"] != "running":  # not started: cancelled at once; a running job stops at its next step
            self._set(jid, status="cancelled", finished_at=int(time.time()))
            self._event(jid, "Fine-tuning job cancelled")
        return self.public(jid)

    # ---- the trainer thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            jid = self._q.get()
            if jid is None:
                return
            try:
                self._train(jid)
            except _Cancelled:
                self._set(jid, status="cancelled", finished_at=int(time.time()))
                self._event(jid, "Fine-tuning job cancelled")
            except Exception as e:  # noqa: BLE001 - a failed job reports why, the server lives on
                logger.exception(f"serve: job {jid} failed")
                self._set(jid, status="failed", finished_at=int(time.time()),
                          error={"code": "training_failed", "message": str(e), "param": None})
                self._event(jid, f"Fine-tuning job failed: {e}", level="error")

    def _train(self, jid: str) -> None:
        from ..backends import hf_train
        from ..backends.hf import _ids

        job = self.jobs[jid]
        if jid in self._cancel or job["status"] == "cancelled":
            return
        rows = parse_rows(self.files.content(job["training_file"]))
        self._set(jid, status="queued")
        recipe = self.recipe.model_copy(update={"target": "tokens", "seed": job["seed"], "adapter_seed": job["seed"],
                                                **job.get("_recipe", {})})
        base = self.registry.get(job["model"])
        self._set(jid, status="running")
        self._event(jid, f"Fine-tuning job started: {len(rows)} examples, {recipe.adapter} adapter")
        every = [1]

        def on_step(step: int, total: int, loss: float) -> None:
            if jid in self._cancel:
                raise _Cancelled()
            if step == 1:
                every[0] = max(1, total // 20)
            if step % every[0] == 0 or step == total:
                self._event(jid, f"Step {step}/{total}: training loss={loss:.4f}",
                            data={"step": step, "total_steps": total, "train_loss": loss})

        model = hf_train.train(base, rows, recipe, desc=f"serve {jid}", on_step=on_step)
        model.meta["base_path"] = base.meta["base_path"]
        out = self.models_dir / jid
        tmp = self.models_dir / f".tmp-{jid}"
        model.save(tmp)
        tmp.rename(out)
        tokens = sum(len(_ids(base.tok.apply_chat_template(r["messages"], tokenize=True))) for r in rows)
        trained = int(tokens * model.meta["train_steps"] * recipe.batch_size / len(rows))
        name = f"ft:{job['model']}:{job['user_provided_suffix']}:{jid.split('-', 1)[1][:8]}"
        self.registry.add(name, out, owned_by="user")
        self._set(jid, status="succeeded", fine_tuned_model=name, finished_at=int(time.time()), trained_tokens=trained)
        self._event(jid, f"New fine-tuned model created: {name}")
        self._event(jid, "The job has successfully completed")
