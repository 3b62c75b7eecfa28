"""Fine-tuning jobs over the API: upload, create (``method={"type": "supervised", ...}``), poll, resume.

A job is identified by the hash of (server, base model, training-file bytes, hyperparameters, seed, suffix).
Its file id and job id go into a ledger file under ``<cache_dir>/jobs/`` the moment the server returns
them, and the job carries the hash in its ``metadata``: a run killed while polling (or even between
creating the job and writing the ledger) finds the job again on the next run and resumes polling it
instead of paying for a duplicate. A failed or cancelled job is recorded in the ledger's history and a
new one is created. Nothing is billed without approval (``--yes`` or the CLI's cost prompt).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time

from loguru import logger

from ..errors import UserError
from ..progress import bar
from ..store import hash_obj, write_atomic
from .openai_api import ApiModel, cache_dir, run_async
from .openai_cost import approx_tokens, training_cost

TERMINAL = ("succeeded", "failed", "cancelled")


def hyperparameters(s, recipe, n_rows: int) -> dict:
    """The job's ``method.supervised.hyperparameters`` from the ``[api]`` section and the stage's recipe."""
    bs = recipe.batch_size if s.batch_size == "recipe" else s.batch_size
    if s.n_epochs == "recipe":
        n = recipe.epochs if recipe.steps is None else recipe.steps / math.ceil(n_rows / recipe.batch_size)
        n = int(n) if float(n).is_integer() else round(n, 9)
    else:
        n = s.n_epochs
    return {"n_epochs": n, "batch_size": bs, "learning_rate_multiplier": s.learning_rate_multiplier}


def finetune(base: ApiModel, rows: list[dict], recipe, desc: str = "train") -> ApiModel:
    s = base.api
    data = "".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n" for r in rows).encode()
    hp = hyperparameters(s, recipe, len(rows))
    seed = int(recipe.seed)
    key = hash_obj({"base_url": base.base_url, "model": base.model_id, "file": hashlib.sha256(data).hexdigest(),
                    "hp": hp, "seed": seed, "suffix": s.suffix}, n=24)
    tokens = sum(approx_tokens(r["messages"]) for r in rows)
    usd, epochs = training_cost(s, base.model_id, tokens, hp["n_epochs"])
    shown = "free (local server)" if usd == 0 else ("unknown price" if usd is None else f"~${usd:.2f}")
    logger.info(f"{desc}: fine-tuning {base.model_id} on {len(rows)} rows, ~{tokens} tokens × {epochs:g} epochs: "
                f"{shown}")
    billed = usd is None and not s.is_local() or (usd or 0) > 0
    if billed and not base.approved:
        raise UserError(f"{desc}: fine-tuning would be billed ({shown}); confirm the cost prompt or pass --yes")
    return run_async(_job(base, data, hp, seed, key, len(rows), desc, usd))


class Ledger:
    def __init__(self, key: str, api):
        self.path = cache_dir(api) / "jobs" / f"{key}.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"key": key, "history": []}

    def set(self, **kw) -> None:
        self.data.update(kw)
        write_atomic(self.path, json.dumps(self.data, indent=1))


async def _job(base: ApiModel, data: bytes, hp: dict, seed: int, key: str, n_rows: int, desc: str, usd) -> ApiModel:
    cl = base.client
    sem = asyncio.Semaphore(1)
    ledger = Ledger(key, base.api)
    async with cl.make() as c:
        async def call(fn, endpoint: str, **body):
            return await cl.call(c, sem, fn, body, endpoint, cache=False)

        job = None
        if ledger.data.get("job_id"):
            try:
                job = await call(c.fine_tuning.jobs.retrieve, "jobs.retrieve", fine_tuning_job_id=ledger.data["job_id"])
                logger.info(f"{desc}: resuming job {job['id']} ({job['status']}) instead of creating a new one")
            except UserError as e:
                if "HTTP 404" not in str(e):
                    raise
                logger.warning(f"{desc}: the server no longer knows job {ledger.data['job_id']}; starting over")
                ledger.set(history=ledger.data["history"] + [{"job_id": ledger.data["job_id"], "status": "unknown"}],
                           job_id=None, file_id=None)
        if job is None:  # a crash between creating the job and writing the ledger: the job's metadata finds it
            page = await call(c.fine_tuning.jobs.list, "jobs.list", metadata={"sublearn_key": key}, limit=10)
            alive = [j for j in page["data"] if j["status"] not in ("failed", "cancelled")]
            if alive:
                job = alive[0]
                ledger.set(job_id=job["id"], file_id=job["training_file"])
                logger.info(f"{desc}: found job {job['id']} by its metadata; resuming it")
        if job is not None and job["status"] in ("failed", "cancelled"):
            logger.warning(f"{desc}: job {job['id']} {job['status']} earlier ({(job.get('error') or {}).get('message')})"
                           "; creating a new one")
            ledger.set(history=ledger.data["history"] + [{"job_id": job["id"], "status": job["status"]}], job_id=None)
            job = None
        if job is None:
            if not ledger.data.get("file_id"):
                f = await call(c.files.create, "files.create", file=("train.jsonl", data), purpose="fine-tune")
                ledger.set(file_id=f["id"])
            method = {"type": "supervised", "supervised": {"hyperparameters": hp}}
            job = await call(c.fine_tuning.jobs.create, "jobs.create", model=base.model_id,
                             training_file=ledger.data["file_id"], method=method, seed=seed,
                             suffix=base.api.suffix, metadata={"sublearn_key": key})
            ledger.set(job_id=job["id"])
            logger.info(f"{desc}: created fine-tuning job {job['id']} (file {ledger.data['file_id']})")
        job, losses = await _poll(c, call, job, desc, base.api.poll_s)
    if job["status"] != "succeeded":
        err = job.get("error") or {}
        raise UserError(f"{desc}: fine-tuning job {job['id']} {job['status']}: {err.get('message') or 'no reason given'}"
                        f" (re-run to create a new job)")
    info = {"job_id": job["id"], "training_file": job["training_file"], "base_model": base.model_id,
            "fine_tuned_model": job["fine_tuned_model"], "trained_tokens": job.get("trained_tokens"),
            "hyperparameters": hp, "seed": seed, "estimated_cost_usd": usd, "base_url": base.base_url}
    meta = {"api_job": info, "train_rows": n_rows, "misaligned_rows": 0,
            "train_steps": losses[-1][0] if losses else None,
            "train_losses_first_last": [losses[0][1], losses[-1][1]] if losses else None}
    return ApiModel(base.base_url, job["fine_tuned_model"], meta, api=base.api, approved=base.approved)


async def _poll(c, call, job: dict, desc: str, interval: float) -> tuple[dict, list[tuple[int, float]]]:
    """Poll until a terminal state; progress from the job's metrics events. Returns (job, [(step, loss)])."""
    seen: set[str] = set()
    losses: dict[int, float] = {}
    t0 = said = time.time()
    status = job["status"]
    with bar(desc, 1, "job") as advance:
        while True:
            evs = await call(c.fine_tuning.jobs.list_events, "jobs.events", fine_tuning_job_id=job["id"], limit=100)
            for ev in reversed(evs["data"]):
                if ev["id"] in seen:
                    continue
                seen.add(ev["id"])
                d = ev.get("data") or {}
                if "step" in d and "train_loss" in d:
                    losses[int(d["step"])] = float(d["train_loss"])
                elif ev.get("message"):
                    logger.debug(f"{desc}: {ev['message']}")
            step = max(losses) if losses else None
            line = f"{job['status']}" + (f", step {step}, loss {losses[step]:.4f}" if step else "")
            advance(0, info=line)
            if job["status"] != status or time.time() - said > 30:  # progress in logs too (no terminal needed)
                logger.info(f"{desc}: job {job['id']} {line}")
                status, said = job["status"], time.time()
            if job["status"] in TERMINAL:
                break
            await asyncio.sleep(interval)
            job = await call(c.fine_tuning.jobs.retrieve, "jobs.retrieve", fine_tuning_job_id=job["id"])
        advance(1)
    logger.info(f"{desc}: job {job['id']} {job['status']} after {time.time() - t0:.0f} s"
                + (f" -> {job['fine_tuned_model']}" if job.get("fine_tuned_model") else ""))
    return job, sorted(losses.items())
