"""Request bodies of ``sublearn serve`` as pydantic models: FastAPI validates every body against them before a
route runs (a mismatch is an OpenAI-shaped 400 naming the field), and they are the OpenAPI schema that
``tests/test_serve_schema.py`` fuzzes with schemathesis. Limits that depend on the server's settings (``--max-n``,
``--max-tokens``, the characters of a chat) are checked by the routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..configbase import SEED_MAX


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields sublearn ignores (user, metadata, ...)
    # integers are strict (true and 1.0 are not seeds or counts); floats accept integers


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]


class ChatRequest(_Body):
    model: str = Field(description="a served model id (GET /v1/models)")
    messages: list[Message] = Field(min_length=1)
    n: int | None = Field(None, ge=1, strict=True, description="choices (at most the server's --max-n)")
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20, strict=True)
    seed: int | None = Field(None, ge=0, le=SEED_MAX, strict=True)
    stop: str | list[str] | None = None
    stream: bool | None = None


class ScoreItem(BaseModel):
    messages: list[Message] = Field(min_length=1)
    answer: str


class ScoreRequest(_Body):
    model: str
    items: list[ScoreItem] = Field(min_length=1, max_length=4096)


class FaultsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_limit: int | None = Field(None, ge=0, lt=10**9, strict=True)
    server_error: int | None = Field(None, ge=0, lt=10**9, strict=True)
    every: int | None = Field(None, ge=0, lt=10**9, strict=True)
    retry_after: float | None = Field(None, ge=0, lt=1e9, allow_inf_nan=False)


class Hyperparameters(_Body):
    n_epochs: int | float | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None


class Supervised(BaseModel):
    hyperparameters: Hyperparameters | None = None


class Method(_Body):
    type: str
    supervised: Supervised | None = None


class FineTuneRequest(_Body):
    model: str
    training_file: str
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=SEED_MAX, strict=True)
    metadata: dict[str, str] | None = None


def plain(body: BaseModel) -> dict:
    """A validated body as the JSON dict the routes read (fields not sent stay absent)."""
    return body.model_dump(mode="json", exclude_unset=True)
