"""The API backend: the ``Model`` protocol over any OpenAI-compatible server, with the official async client.

- ``generate``: chat completions; identical consecutive prompts become one request with ``n``; temperature,
  top_p, max tokens, a per-request seed, and logprobs/top_logprobs when asked for (soft targets).
- Bounded concurrency (a semaphore), retries with exponential backoff and full jitter on 429, 5xx, timeouts
  and connection errors, honouring ``Retry-After`` / ``retry-after-ms`` (capped at ``max_backoff_s``).
- A response cache on disk keyed by the hash of (base URL, endpoint, request body): a re-run never pays twice.
  Files are written atomically; a killed run leaves only finished entries.
- ``score``: exact log P(answer + EOS) from ``sublearn serve``'s extension endpoint; elsewhere the first
  answer token's log-prob from ``top_logprobs`` (exact only for single-token answers and without EOS).
- ``train``: a fine-tuning job (``openai_ft.py``).

The API key is read from the environment variable the config names and is never logged or stored.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from pathlib import Path

from loguru import logger

from ..configapi import ApiSection
from ..errors import UserError
from ..progress import bar
from ..store import hash_obj, write_atomic
from .base import Chat, Completion, Sampling
from .hf import META


def cache_dir(s: ApiSection) -> Path:
    from .tiny.build import cache_root

    return Path(s.cache_dir).expanduser() if s.cache_dir else cache_root() / "api"


class ResponseCache:
    """One JSON file per request hash under ``<cache_dir>/responses/``."""

    def __init__(self, root: Path):
        self.root = root / "responses"
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self._path(key)
        if p.exists():
            self.hits += 1
            return json.loads(p.read_text())
        self.misses += 1
        return None

    def put(self, key: str, value: dict) -> None:
        write_atomic(self._path(key), json.dumps(value))


def retry_after(err) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``retry-after`` as seconds or an HTTP date)."""
    resp = getattr(err, "response", None)
    headers = getattr(resp, "headers", None) or {}
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        ra = headers.get("retry-after")
        if ra:
            try:
                return float(ra)
            except ValueError:
                dt = email.utils.parsedate_to_datetime(ra)
                return max(0.0, dt.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
    return None


class Client:
    """An ``AsyncOpenAI`` client with a semaphore, our own retry loop and the response cache."""

    def __init__(self, base_url: str, s: ApiSection):
        self.base_url, self.s = base_url, s
        self.cache = ResponseCache(cache_dir(s))
        self.retries = 0  # retries done (for tests and logs)

    def _key(self) -> str:
        key = os.environ.get(self.s.api_key_env)
        if key:
            return key
        if ApiSection(base_url=self.base_url).is_local():
            return "sublearn-local"  # sublearn serve and local vLLM accept any key
        raise UserError(f"the API key is not set: export {self.s.api_key_env}=... (api.api_key_env names the "
                        f"variable; the key never goes into a config)")

    def make(self):
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key(), max_retries=0, timeout=self.s.timeout_s)

    async def call(self, client, sem: asyncio.Semaphore, fn, body: dict, endpoint: str, cache: bool = True) -> dict:
        """``fn(**body)`` with retries; JSON-able result; cached by request when ``cache``."""
        import openai

        key = hash_obj({"base_url": self.base_url, "endpoint": endpoint, "body": body}, n=40)
        if cache and (hit := self.cache.get(key)) is not None:
            return hit
        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                     openai.APIConnectionError)
        async with sem:
            for attempt in range(self.s.max_retries + 1):
                try:
                    res = await fn(**body)
                    break
                except retryable as e:
                    if attempt == self.s.max_retries:
                        raise UserError(f"{endpoint} failed after {attempt + 1} attempts at {self.base_url}: "
                                        f"{type(e).__name__}: {e}") from None
                    delay = self.delay(attempt, retry_after(e))
                    self.retries += 1
                    logger.debug(f"{endpoint}: {type(e).__name__}, retry {attempt + 1} in {delay:.2f} s")
                    await asyncio.sleep(delay)
                except openai.APIStatusError as e:
                    raise UserError(f"{endpoint} at {self.base_url} refused the request: HTTP {e.status_code}: "
                                    f"{_message(e)}") from None
        data = res if isinstance(res, dict) else res.model_dump(mode="json", warnings=False)
        if cache:
            self.cache.put(key, data)
        return data

    def delay(self, attempt: int, server_says: float | None) -> float:
        if server_says is not None:
            return min(self.s.max_backoff_s, server_says) + random.uniform(0, 0.1 * self.s.backoff_s)
        return random.uniform(0, min(self.s.max_backoff_s, self.s.backoff_s * 2**attempt))  # full jitter


def _message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error", {}).get("message") or body)
    return str(e)


def run_async(coro):
    """Run a coroutine from sync code (also from inside a running loop, on a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


class ApiModel:
    """A model id on an OpenAI-compatible server, behind the ``Model`` protocol."""

    def __init__(self, base_url: str, model: str, meta: dict | None = None, api: ApiSection | None = None,
                 approved: bool = False):
        """``api``: this model's settings (concurrency, retries, cache, prices; default: ApiSection's defaults);
        ``approved``: billed fine-tuning may start (the runtime's approval of the estimated cost)."""
        self.base_url, self.model_id, self.name = base_url, model, model
        self.api, self.approved = api or ApiSection(), approved
        self.meta = dict(meta or {})
        self.meta.setdefault("api", {"base_url": base_url, "model": model})
        self.meta.setdefault("base_path", f"api:{model}")
        self.client = Client(base_url, self.api)

    # ---- generation --------------------------------------------------------------------------
    def generate(self, prompts: list[Chat], sampling: Sampling, desc: str = "generate", grammar=None) -> list[Completion]:
        if grammar is not None:
            raise ValueError("an API model cannot constrain decoding to a grammar (it gives no logits): generate freely "
                             "and filter")
        groups: list[tuple[Chat, int, int]] = []  # (chat, first index, n)
        for i, c in enumerate(prompts):
            if groups and groups[-1][0] == c:
                groups[-1] = (c, groups[-1][1], groups[-1][2] + 1)
            else:
                groups.append((c, i, 1))
        return run_async(self._generate(groups, sampling, desc))

    async def _generate(self, groups, sampling: Sampling, desc: str) -> list[Completion]:
        sem = asyncio.Semaphore(self.client.s.max_concurrency)
        out: list[Completion] = []
        async with self.client.make() as client:
            with bar(desc, len(groups), "requests") as advance:
                async def one(chat, first, n):
                    body = {"model": self.model_id, "messages": chat, "n": n, "temperature": sampling.temperature,
                            "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens,
                            "seed": _seed(sampling.seed, first)}
                    if sampling.top_logprobs > 0:
                        body.update(logprobs=True, top_logprobs=min(20, sampling.top_logprobs))
                    data = await self.client.call(client, sem, client.chat.completions.create, body, "chat")
                    advance(1)
                    return [_completion(ch) for ch in sorted(data["choices"], key=lambda c: c["index"])]

                res = await asyncio.gather(*(one(c, i, n) for c, i, n in groups))
        for r in res:
            out += r
        return out

    # ---- scoring ------------------------------------------------------------------------------
    def score(self, prompts: list[Chat], answers: list[str]) -> list[float]:
        """log P(answer + EOS | prompt); see ``api.score`` for which servers make this exact."""
        return run_async(self._score(prompts, answers))

    async def _score(self, prompts, answers) -> list[float]:
        import openai

        mode = self.client.s.score
        sem = asyncio.Semaphore(self.client.s.max_concurrency)
        async with self.client.make() as client:
            if mode in ("auto", "extension"):
                async def post(**body):
                    return await client.post("/sublearn/score", cast_to=object, body=body)

                try:
                    out: list[float] = []
                    for s in range(0, len(prompts), 512):
                        items = [{"messages": p, "answer": a} for p, a in zip(prompts[s:s + 512], answers[s:s + 512])]
                        data = await self.client.call(client, sem, post, {"model": self.model_id, "items": items},
                                                      "score")
                        out += [d["logprob"] for d in sorted(data["data"], key=lambda d: d["index"])]
                    return out
                except (UserError, openai.NotFoundError) as e:
                    if mode == "extension" or "404" not in str(e):
                        raise
                    logger.warning(f"{self.base_url} has no exact scoring endpoint; using first-token top_logprobs")
            return await self._score_first_token(client, sem, prompts, answers)

    async def _score_first_token(self, client, sem, prompts, answers) -> list[float]:
        distinct: dict[str, Chat] = {json.dumps(p, sort_keys=True): p for p in prompts}

        async def one(chat):
            body = {"model": self.model_id, "messages": chat, "max_tokens": 1, "temperature": 1.0, "logprobs": True,
                    "top_logprobs": 20, "seed": 0}
            data = await self.client.call(client, sem, client.chat.completions.create, body, "chat")
            content = ((data["choices"][0].get("logprobs") or {}).get("content") or [{}])[0]
            return {t["token"]: t["logprob"] for t in content.get("top_logprobs") or []}

        tops = dict(zip(distinct, await asyncio.gather(*(one(c) for c in distinct.values()))))
        out = []
        for p, a in zip(prompts, answers):
            top = tops[json.dumps(p, sort_keys=True)]
            floor = min(top.values(), default=-30.0)
            hits = [v for t, v in top.items() if t and (a.startswith(t) or a.startswith(t.strip())) and t.strip()]
            out.append(max(hits) if hits else floor - 1.0)  # not in the top 20: below the smallest listed
        return out

    # ---- training / persistence ------------------------------------------------------------------
    def train(self, rows: list[dict], recipe, desc: str = "train", grammar=None) -> ApiModel:
        from .openai_ft import finetune

        return finetune(self, rows, recipe, desc)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_atomic(path / META, json.dumps({"name": self.name, **self.meta}, indent=1))


def _seed(seed: int, index: int) -> int:
    return int(hash_obj({"seed": seed, "i": index}, n=8), 16) % 2**31


def _completion(ch: dict) -> Completion:
    text = (ch.get("message") or {}).get("content") or ""
    content = (ch.get("logprobs") or {}).get("content") or []
    tokens = [t["token"] for t in content] if content else [text]
    if content and "".join(tokens) != text:
        tokens = [text]
    tl = [{x["token"]: x["logprob"] for x in t.get("top_logprobs") or []} for t in content]
    return Completion(text=text, tokens=tokens, finished=ch.get("finish_reason") == "stop", top_logprobs=tl)


def is_api_dir(path: str | Path) -> bool:
    p = Path(path) / META
    return p.exists() and "api" in json.loads(p.read_text())


def load_api(path: str | Path, api: ApiSection | None = None, approved: bool = False) -> ApiModel:
    meta = json.loads((Path(path) / META).read_text())
    meta.pop("name", None)
    return ApiModel(meta["api"]["base_url"], meta["api"]["model"], meta, api=api, approved=approved)


def api_base_key(base_url: str, model: str) -> str:
    """Lineage key of an API base model: the server and the model id."""
    return hash_obj({"api_base_url": base_url.rstrip("/"), "model": model})


def record_api_bases(cfg, run, specs: list[str]) -> dict[str, Path]:
    """API base models as pointer directories in the run (key = hash of base URL and model id), in its lineage."""
    out = {}
    for spec in specs:
        key = api_base_key(cfg.api.base_url, spec)
        if not run.exists("base", key):
            with run.writing("base", key, name=spec, config={"base_url": cfg.api.base_url, "model": spec},
                             model=spec) as (tmp, extra):
                write_atomic(tmp / META, json.dumps({"name": spec, "api": {"base_url": cfg.api.base_url,
                                                                           "model": spec}, "base_path": f"api:{spec}"}))
                extra.update(base_url=cfg.api.base_url, model=spec)
        out[spec] = run.path("base", key)
    return out
