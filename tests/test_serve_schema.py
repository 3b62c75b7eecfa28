"""`sublearn serve` fuzzed from its own OpenAPI schema (schemathesis): no request body, path or query gives a 500,
and every error is OpenAI-shaped. The app serves a micro model with small limits, so valid chats are cheap."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(scope="module")
def app(micro_base, tmp_path_factory):
    from sublearn.serve import build_app
    from sublearn.serve.app import Faults, Limits

    return build_app([f"tiny={micro_base.meta['base_path']}"], state_dir=tmp_path_factory.mktemp("serve"),
                     limits=Limits(max_n=2, max_tokens=4, max_body_bytes=2**16), faults=Faults(enabled=True))


OPERATIONS = 16  # every route of the app


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_request_gets_a_500(app, mode):
    """Every operation of the schema, with bodies, paths and queries that fit it (positive) and that break it
    (negative: wrong types, missing fields, out-of-range values)."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) == OPERATIONS
    gen = schemathesis.GenerationMode.POSITIVE if mode == "positive" else schemathesis.GenerationMode.NEGATIVE
    seen = {}
    for op in ops:
        @given(case=op.as_strategy(generation_mode=gen))
        @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call()
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
            if response.status_code >= 400:
                assert {"message", "type", "code"} <= set(response.json()["error"]), response.text

        try:
            run()
        except Unsatisfiable:  # nothing to break (a route without parameters or body)
            assert mode == "negative"
    assert sum(seen.values()) >= 2 * OPERATIONS and any(s >= 400 for s in seen)


def test_the_schema_names_the_chat_fields(app):
    spec = app.openapi()
    chat = spec["components"]["schemas"]["ChatRequest"]["properties"]
    assert {"model", "messages", "n", "temperature", "seed", "stop", "logprobs"} <= set(chat)


def test_an_idle_connection_is_closed(app):
    """A client that keeps a connection open and says nothing is disconnected after the idle timeout."""
    import socket
    import time

    from sublearn.serve import Background

    with Background(app, idle_timeout=1) as bg:
        s = socket.create_connection(("127.0.0.1", bg.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        got = b""
        while not got.endswith(b"}"):  # the headers and the JSON body
            got += s.recv(4096)
        assert b"200 OK" in got
        t0 = time.time()
        assert s.recv(4096) == b""  # closed by the server, not by the 10 s socket timeout
        assert time.time() - t0 < 5
        s.close()


@pytest.mark.parametrize("flag", ["--idle-timeout", "--body-timeout", "--max-body-mb"])
def test_bad_timeouts_and_sizes_are_one_line(flag):
    import subprocess
    import sys

    for value in ("0", "-1", "nan"):
        p = subprocess.run([sys.executable, "-m", "sublearn", "serve", "tiny", flag, value], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 2 and flag in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
