"""``sublearn serve``: any sublearn model behind an OpenAI-compatible HTTP API.

``build_app`` registers the models, the file store and the job manager; ``serve`` runs it with uvicorn;
``Background`` runs it on a thread (tests, benchmarks). fastapi/uvicorn are imported only here.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from .registry import Registry, parse_spec_list

__all__ = ["build_app", "serve", "Background", "free_port"]


def build_app(specs: list[str], config: str | None = None, state_dir: str | Path | None = None, limits=None,
              faults=None, max_batch: int = 64, api_key: str | None = None):
    """The FastAPI app serving ``specs`` (model specs; ``name=PATH`` names one). ``config``: an experiment TOML
    whose embedded-model overrides define the served ``tiny`` etc. and whose ``students.recipe`` is the trainer's
    base recipe (lr × learning_rate_multiplier, LoRA rank and modules). ``api_key``: every route but ``/health``
    then needs ``Authorization: Bearer <api_key>``."""
    from ..backends.hf_train import Recipe
    from ..backends.tiny.build import cache_root
    from .app import create_app
    from .jobs import Files, Jobs

    specs, embedded = parse_spec_list(specs, config)
    recipe = Recipe(target="tokens", adapter="lora", lora_rank=1, lr=3e-2, steps=None, epochs=3, batch_size=32)
    if config:
        from ..config import load_experiment

        recipe = load_experiment(config).students.recipe.model_copy(update={"target": "tokens"})
    registry = Registry(max_batch=max_batch)
    for s in specs:
        registry.add_spec(s, embedded)
    state = Path(state_dir) if state_dir else cache_root() / "serve"
    files = Files(state)
    jobs = Jobs(state, files, registry, recipe)
    return create_app(registry, jobs, files, limits, faults, api_key=api_key)


def serve(app, host: str = "127.0.0.1", port: int = 8000, idle_timeout: float = 5.0) -> None:
    """Run ``app`` with uvicorn; a kept-alive connection idle for ``idle_timeout`` seconds is closed."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2,
                timeout_keep_alive=max(1, round(idle_timeout)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Background:
    """Run an app with uvicorn on a thread; ``url`` is its OpenAI base URL. A context manager."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, idle_timeout: float = 5.0):
        import uvicorn

        self.app, self.port = app, port or free_port()
        self.url = f"http://{host}:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=1,
                                                    timeout_keep_alive=max(1, round(idle_timeout))))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Background:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("sublearn serve did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.registry.close()
