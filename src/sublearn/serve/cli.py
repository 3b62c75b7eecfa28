"""The ``sublearn serve`` subcommand (parser and command; fastapi/uvicorn load only when it runs)."""

from __future__ import annotations

import argparse
import os

DESCRIPTION = """Serve sublearn models over an OpenAI-compatible HTTP API: /v1/models, /v1/chat/completions
(n, temperature, top_p, max_tokens, logprobs, top_logprobs, stop, seed), /v1/files and /v1/fine_tuning/jobs
(retrieve, events, cancel) that train with sublearn's own trainer (LoRA), and /v1/sublearn/score (exact
log-probs). Fine-tuned models (ft:BASE:SUFFIX:ID) are served as soon as their job succeeds. Any API key is
accepted unless --api-key is given; bind to loopback unless you mean to share the models."""

EPILOG = """examples:
  sublearn serve tiny tiny-gpt2                       # the embedded models on http://127.0.0.1:8000/v1
  sublearn serve student=runs/owl/artifacts/finetune-KEY/model --port 8001
  sublearn serve tiny tiny-gpt2 --config examples/owl-api-local.toml   # that config's models and trainer recipe
  python -c "import openai; c = openai.OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='x');
             print(c.chat.completions.create(model='tiny', messages=[{'role': 'user', 'content': 'hi'}]))\""""


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API (chat, logprobs, fine-tuning)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model spec: tiny, tiny-gpt2, an HF checkpoint dir, a run's teacher/student model dir; "
                        "NAME=SPEC serves it under the id NAME")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--config", help="experiment TOML: its embedded-model overrides and students.recipe (the "
                                    "trainer's base recipe)")
    p.add_argument("--state", help="directory for uploaded files, jobs and fine-tuned models "
                                   "(default $SUBLEARN_CACHE/serve)")
    p.add_argument("--max-batch", type=int, default=64, help="most sequences generated in one batched pass")
    p.add_argument("--max-n", type=int, default=128, help="largest n (choices) per chat request")
    p.add_argument("--max-body-mb", type=float, default=32, help="largest request body in MiB (413 above)")
    p.add_argument("--rate-limit-every", type=int, default=0, metavar="K",
                   help="answer every K-th /v1 request with 429 (to exercise clients' retries; 0 = off)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="answer 408 when a request body stalls this many seconds (default 30)")
    p.add_argument("--idle-timeout", type=float, default=5.0, metavar="S",
                   help="close a kept-alive connection idle this many seconds (default 5)")
    p.add_argument("--api-key", default=os.environ.get("SUBLEARN_SERVE_API_KEY"), metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every route but /health (default: "
                        "$SUBLEARN_SERVE_API_KEY; none = open to any local process)")
    p.add_argument("--enable-faults", action="store_true",
                   help="allow POST /sublearn/faults to inject 429s and 500s (for client tests; off by default)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from loguru import logger

    from ..errors import UserError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UserError(f"sublearn serve needs the 'api' extra ({e.name} is missing): "
                        "pip install 'sublearn[api]'") from None
    from . import build_app, serve
    from .app import Faults, Limits

    if args.threads:
        from ..models import set_threads

        set_threads(args.threads)
    for flag, v in (("--body-timeout", args.body_timeout), ("--idle-timeout", args.idle_timeout),
                    ("--max-body-mb", args.max_body_mb)):
        if not 0 < v < 1e6:
            raise UserError(f"{flag} must be a positive number of {'MiB' if 'mb' in flag else 'seconds'}")
    limits = Limits(max_body_bytes=int(args.max_body_mb * 2**20), max_n=args.max_n,
                    body_timeout_s=args.body_timeout)
    faults = Faults(enabled=args.enable_faults, every=args.rate_limit_every)
    app = build_app(args.models, args.config, args.state, limits, faults, max_batch=args.max_batch,
                    api_key=args.api_key)
    logger.info(f"serving {', '.join(app.state.registry.models)} on http://{args.host}:{args.port}/v1")
    serve(app, args.host, args.port, idle_timeout=args.idle_timeout)
    return 0
