"""The OpenAI-compatible HTTP app of ``sublearn serve`` (FastAPI).

Routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/files``, ``/v1/fine_tuning/jobs`` (+ retrieve, events,
cancel), the extension ``/v1/sublearn/score`` (exact log P(answer + EOS), which the chat API cannot give),
and ``/sublearn/faults`` (inject 429s / 500s for tests). Every error is OpenAI-shaped
(``{"error": {"message", "type", "code", "param"}}``); bad requests get 4xx, never a 500 or a hang.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ..configbase import SEED_MAX
from .jobs import ApiError, Files, Jobs
from .registry import Registry, finite
from .schemas import ChatRequest, FaultsRequest, FineTuneRequest, ScoreRequest, plain


@dataclass
class Limits:
    max_body_bytes: int = 32 * 2**20  # request bodies above this get 413
    max_n: int = 128  # choices per chat request
    max_tokens: int = 512  # generated tokens per choice
    max_messages_chars: int = 200_000  # total characters of a chat request's messages
    body_timeout_s: float = 30.0  # longest wait for the next piece of a request body (408 after)


@dataclass
class Faults:
    """Injected failures: the next ``rate_limit`` /v1 requests get 429 (``Retry-After: retry_after``), the next
    ``server_error`` get 500, and every ``every``-th request gets 429 (0 = off). ``/sublearn/faults`` changes them
    only when ``enabled`` (``sublearn serve --enable-faults``): otherwise any local process could fail every request."""

    enabled: bool = False
    rate_limit: int = 0
    server_error: int = 0
    retry_after: float = 0.1
    every: int = 0
    seen: int = 0
    injected: int = 0


class BodyLimit:
    """ASGI middleware: a body over the limit is answered 413 before the app sees it (chunked bodies too), and a body
    that stalls for ``timeout`` seconds between chunks is answered 408 (a stalled client cannot hold a request)."""

    def __init__(self, app, limit: int, timeout: float = 30.0):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(send, self.limit)
        chunks, size, more = [], 0, True
        while more:
            try:
                msg = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                return await _error(send, ApiError(408, f"the request body stalled for {self.timeout:g} s",
                                                   "request_timeout"))
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.limit:
                return await _too_large(send, self.limit)
        body, done = b"".join(chunks), [False]

        async def replay():
            if done[0]:
                return await receive()
            done[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def _too_large(send, limit: int) -> None:
    await _error(send, ApiError(413, f"request body exceeds the server's limit of {limit} bytes", "request_too_large"))


async def _error(send, e: ApiError) -> None:
    body = json.dumps(e.body()).encode()
    await send({"type": "http.response.start", "status": e.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(registry: Registry, jobs: Jobs, files: Files, limits: Limits | None = None,
               faults: Faults | None = None, api_key: str | None = None) -> FastAPI:
    limits, faults = limits or Limits(), faults or Faults()
    app = FastAPI(title="sublearn serve", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.faults, app.state.limits, app.state.registry = faults, limits, registry
    stats = {"requests": 0, "chat_requests": 0}
    app.state.stats = stats

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, e: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return JSONResponse(ApiError(e.status_code, str(e.detail), code).body(), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError):
        err = _first_error(e.errors())
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception):
        return JSONResponse(ApiError(500, f"internal error: {type(e).__name__}: {e}", "server_error",
                                     "server_error").body(), status_code=500)

    @app.middleware("http")
    async def _faults(request: Request, call_next):
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                e = ApiError(401, "Incorrect API key provided (sublearn serve was started with --api-key)",
                             "invalid_api_key")
                return JSONResponse(e.body(), status_code=e.status)
        if request.url.path.startswith("/v1/"):
            stats["requests"] += 1
            faults.seen += 1
            e = None
            if faults.rate_limit > 0 or (faults.every and faults.seen % faults.every == 0):
                faults.rate_limit = max(0, faults.rate_limit - 1)
                e = ApiError(429, "Rate limit reached (injected by sublearn serve)", "rate_limit_exceeded",
                             "requests", headers={"retry-after": f"{faults.retry_after:g}"})
            elif faults.server_error > 0:
                faults.server_error -= 1
                e = ApiError(500, "injected server error", "server_error", "server_error")
            if e is not None:
                faults.injected += 1
                return JSONResponse(e.body(), status_code=e.status, headers=e.headers)
        return await call_next(request)

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes, timeout=limits.body_timeout_s)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(registry.models)}

    @app.post("/sublearn/faults")
    async def set_faults(request: Request):
        if not faults.enabled:
            raise ApiError(404, "fault injection is off (start the server with --enable-faults)")
        from pydantic import ValidationError

        try:  # validated here, not by FastAPI, so that a server without --enable-faults answers 404 to any body
            new = plain(FaultsRequest.model_validate(await _json(request)))
        except ValidationError as e:
            raise _first_error(e.errors()) from None
        for k, v in new.items():
            setattr(faults, k, v)
        return {"rate_limit": faults.rate_limit, "server_error": faults.server_error, "every": faults.every,
                "retry_after": faults.retry_after, "injected": faults.injected}

    @app.get("/sublearn/stats")
    async def get_stats():
        return {**stats, "injected": faults.injected, "batches": registry.batches, "worker_cpu_s": registry.worker_cpu_s}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_obj(s) for s in registry.models.values()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id not in registry.models:
            raise _no_model(model_id)
        return _model_obj(registry.models[model_id])

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest):
        body = plain(request)
        stats["chat_requests"] += 1
        model, chat, n, params, seed, stop = _parse_chat(body, registry, limits)
        res = await registry.generate(model, [chat] * n, params, seed)
        return _chat_response(model, res, params, stop)

    @app.post("/v1/sublearn/score")
    async def score(request: ScoreRequest):
        body = plain(request)
        model = body.get("model")
        if not isinstance(model, str) or model not in registry.models:
            raise _no_model(model)
        items = body.get("items")
        if not isinstance(items, list) or not items or len(items) > 4096:
            raise ApiError(400, "items must be a non-empty list (at most 4096) of {messages, answer}", param="items")
        chats = [_messages(it.get("messages") if isinstance(it, dict) else None, limits) for it in items]
        answers = [it.get("answer") for it in items]
        if not all(isinstance(a, str) for a in answers):
            raise ApiError(400, "every item needs a string 'answer'", param="items")
        lps = await registry.score(model, chats, answers)
        return {"object": "list", "model": model, "data": [{"index": i, "logprob": finite(x)} for i, x in enumerate(lps)]}

    @app.post("/v1/files")
    async def upload(request: Request):
        try:
            form = await request.form()
        except Exception as e:  # noqa: BLE001 - malformed multipart is the client's fault
            raise ApiError(400, f"expected multipart/form-data with 'file' and 'purpose': {e}") from None
        f, purpose = form.get("file"), form.get("purpose")
        if f is None or isinstance(f, str):
            raise ApiError(400, "missing 'file'", param="file")
        if purpose != "fine-tune":
            raise ApiError(400, f"purpose must be 'fine-tune' (got {purpose!r})", param="purpose")
        return files.create(f.filename or "upload.jsonl", purpose, await f.read())

    @app.get("/v1/files")
    async def list_files():
        return {"object": "list", "data": files.list(), "has_more": False}

    @app.get("/v1/files/{fid}")
    async def get_file(fid: str):
        return files.get(fid)

    @app.get("/v1/files/{fid}/content")
    async def file_content(fid: str):
        return Response(files.content(fid), media_type="application/jsonl")

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(request: FineTuneRequest):
        return jobs.create(plain(request))

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(request: Request):
        q = request.query_params
        meta = {k[len("metadata["):-1]: v for k, v in q.items() if k.startswith("metadata[") and k.endswith("]")}
        return jobs.list(q.get("after"), _limit(q.get("limit")), meta or None)

    @app.get("/v1/fine_tuning/jobs/{jid}")
    async def get_job(jid: str):
        return jobs.public(jid)

    @app.get("/v1/fine_tuning/jobs/{jid}/events")
    async def job_events(jid: str, request: Request):
        return jobs.list_events(jid, request.query_params.get("after"), _limit(request.query_params.get("limit")))

    @app.post("/v1/fine_tuning/jobs/{jid}/cancel")
    async def cancel_job(jid: str):
        return jobs.cancel(jid)

    return app


def _first_error(errors) -> ApiError:
    """A pydantic validation error as an OpenAI-shaped 400 naming the field (``messages.0.role``)."""
    e = (list(errors) or [{}])[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    field = ".".join(loc) or "body"
    if e.get("type") == "json_invalid":
        return ApiError(400, "request body is not valid JSON")
    if e.get("type") == "model_attributes_type" or (not loc and e.get("type", "").endswith("_type")):
        return ApiError(400, "request body must be a JSON object")
    return ApiError(400, f"{field}: {e.get('msg', 'invalid value')}", "invalid_value", param=loc[0] if loc else None)


def _limit(x: str | None) -> int:
    try:
        return max(1, min(100, int(x))) if x else 20
    except ValueError:
        raise ApiError(400, "limit must be an integer", param="limit") from None


async def _json(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _no_model(model) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.", "model_not_found",
                    param="model")


def _model_obj(s) -> dict:
    return {"id": s.id, "object": "model", "created": s.created, "owned_by": s.owned_by}


def _messages(msgs, limits: Limits) -> list[dict]:
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    out, total = [], 0
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"messages[{i}]: expected {{role: system|user|assistant, content}}", param="messages")
        c = m.get("content")
        if isinstance(c, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in c):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported", param="messages")
            c = "".join(p["text"] for p in c)
        if not isinstance(c, str):
            raise ApiError(400, f"messages[{i}].content must be a string", param="messages")
        total += len(c)
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": c})
    if total > limits.max_messages_chars:
        raise ApiError(400, f"messages are too long ({total} characters; limit {limits.max_messages_chars})",
                       "context_length_exceeded", param="messages")
    return out


def _num(body: dict, key: str, default, lo: float, hi: float, integer: bool = False):
    v = body.get(key, default)
    if v is None:
        v = default
    ok = isinstance(v, int) if integer else isinstance(v, int | float)
    if not ok or isinstance(v, bool) or not lo <= v <= hi:
        raise ApiError(400, f"{key} must be {'an integer' if integer else 'a number'} in [{lo}, {hi}] (got {v!r})",
                       "invalid_value", param=key)
    return v


def _parse_chat(body: dict, registry: Registry, limits: Limits):
    model = body.get("model")
    if not isinstance(model, str) or model not in registry.models:
        raise _no_model(model)
    if body.get("stream"):
        raise ApiError(400, "stream=true is not supported by sublearn serve", "unsupported_parameter", param="stream")
    chat = _messages(body.get("messages"), limits)
    n = _num(body, "n", 1, 1, limits.max_n, integer=True)
    temperature = float(_num(body, "temperature", 1.0, 0, 2))
    top_p = float(_num(body, "top_p", 1.0, 1e-9, 1))
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _num({"max_tokens": mt}, "max_tokens", 16 if mt is None else mt, 1, limits.max_tokens, integer=True)
    if mt is None:
        max_tokens = min(64, limits.max_tokens)
    logprobs = bool(body.get("logprobs") or False)
    top = _num(body, "top_logprobs", 0, 0, 20, integer=True)
    if top and not logprobs:
        raise ApiError(400, "top_logprobs requires logprobs=true", "invalid_value", param="top_logprobs")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX):
        raise ApiError(400, f"seed must be an integer 0..{SEED_MAX}", "invalid_value", param="seed")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s
                                                                                      for s in stop)):
        raise ApiError(400, "stop must be a string or a list of at most 4 non-empty strings", param="stop")
    return model, chat, n, (temperature, top_p, max_tokens, top, logprobs), seed, stop or []


def _chat_response(model: str, res: list, params: tuple, stop: list[str]) -> dict:
    top_k, want = params[3], params[4]
    choices, p_tok, c_tok = [], 0, 0
    for i, (comp, chosen, n_prompt) in enumerate(res):
        text, tokens, finished = comp.text, list(comp.tokens), comp.finished
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:  # stop sequence: cut the text there, keep the tokens that end before it
            text, finished, keep, pos = text[:cut], True, 0, 0
            while keep < len(tokens) and pos + len(tokens[keep]) <= cut:
                pos += len(tokens[keep])
                keep += 1
            tokens = tokens[:keep]
        lp = None
        if want:
            lp = {"content": [{"token": t, "logprob": finite(chosen[j]), "bytes": list(t.encode()),
                               "top_logprobs": [{"token": k, "logprob": finite(v), "bytes": list(k.encode())}
                                                for k, v in sorted(comp.top_logprobs[j].items(), key=lambda kv: -kv[1])
                                                [:top_k]]} for j, t in enumerate(tokens)], "refusal": None}
        choices.append({"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": "stop" if finished else "length", "logprobs": lp})
        p_tok = n_prompt
        c_tok += len(comp.tokens) + int(comp.finished)
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": "sublearn", "choices": choices,
            "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}}
