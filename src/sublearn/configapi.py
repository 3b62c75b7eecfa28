"""The ``[api]`` config section: how ``model.backend = "openai"`` reaches an OpenAI-compatible server.

The API key itself is never in a config: ``api_key_env`` names the environment variable that holds it.
Prices are per 1M tokens and only feed the cost estimate shown before anything is billed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .configbase import Frozen


class Price(Frozen):
    """USD per 1M tokens."""

    training: float = Field(0.0, ge=0, description="fine-tuning: per 1M training tokens (tokens × epochs)")
    input: float = Field(0.0, ge=0, description="inference: per 1M prompt tokens")
    output: float = Field(0.0, ge=0, description="inference: per 1M completion tokens")


class ApiSection(Frozen):
    base_url: str = Field("https://api.openai.com/v1", description="OpenAI-compatible base URL (OpenAI, vLLM, "
                                                                    "`sublearn serve` on http://127.0.0.1:8000/v1)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (never the key)")
    max_concurrency: int = Field(8, ge=1, le=512, description="requests in flight at once per worker process")
    max_retries: int = Field(6, ge=0, description="retries of a request on 429, 5xx, timeouts and connection errors")
    backoff_s: float = Field(0.5, gt=0, description="first retry delay; doubles per retry, full jitter")
    max_backoff_s: float = Field(60.0, gt=0, description="longest single retry delay (also caps Retry-After)")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    cache_dir: str | None = Field(None, description="response cache and job ledger (default $SUBLEARN_CACHE/api)")
    score: Literal["auto", "extension", "first_token"] = Field(
        "auto", description="P(answer): sublearn serve's exact /v1/sublearn/score, or first-token top_logprobs "
                            "(exact only for single-token answers, EOS not included); auto tries the first")
    n_epochs: int | float | Literal["auto", "recipe"] = Field(
        "recipe", description="fine-tuning epochs: a number, 'auto' (server decides) or 'recipe' (from the "
                              "stage's recipe: epochs, or steps as fractional epochs, which only sublearn serve takes)")
    batch_size: int | Literal["auto", "recipe"] = Field("recipe", description="fine-tuning batch size ('recipe': "
                                                                              "the stage recipe's)")
    learning_rate_multiplier: float | Literal["auto"] = Field("auto", description="fine-tuning lr multiplier")
    suffix: str = Field("sublearn", description="suffix of fine-tuned model names")
    poll_s: float = Field(5.0, gt=0, description="seconds between fine-tuning job status polls")
    prices: dict[str, Price] = Field(default_factory=dict, description="USD per 1M tokens by model id (a "
                                     "fine-tuned id is priced as 'ft:BASE' if listed, else as its base)")

    def train_dump(self) -> dict:
        """The fields that change a fine-tuned model (part of teacher/student keys with backend openai)."""
        return {k: getattr(self, k) for k in ("base_url", "n_epochs", "batch_size", "learning_rate_multiplier",
                                              "suffix")}

    def price(self, model: str) -> Price | None:
        if model in self.prices:
            return self.prices[model]
        if model.startswith("ft:"):
            base = model.split(":")[1]
            return self.prices.get(f"ft:{base}") or self.prices.get(base)
        return None

    def is_local(self) -> bool:
        from urllib.parse import urlparse

        return (urlparse(self.base_url).hostname or "") in ("127.0.0.1", "localhost", "::1")
