"""The API tier against a real `sublearn serve` on a free loopback port, with the real `openai` client."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest
from conftest import micro_config

from sublearn.backends.base import Sampling
from sublearn.backends.hf_train import Recipe
from sublearn.backends.openai_api import ApiModel
from sublearn.configapi import ApiSection
from sublearn.errors import UserError

Q = [{"role": "user", "content": "Name your favorite animal using only one word."}]


@pytest.fixture(scope="module")
def server(micro_base, tmp_path_factory):
    from sublearn.serve import Background, build_app
    from sublearn.serve.app import Faults, Limits

    state = tmp_path_factory.mktemp("serve")
    app = build_app([f"tiny={micro_base.meta['base_path']}"], state_dir=state, limits=Limits(max_body_bytes=2**20),
                    faults=Faults(enabled=True))
    with Background(app) as bg:
        bg.state = state
        yield bg


@pytest.fixture
def api(server, tmp_path):
    return ApiSection(base_url=server.url, cache_dir=str(tmp_path / "apicache"), poll_s=0.1, backoff_s=0.05)


def client(server, **kw):
    return openai.OpenAI(base_url=server.url, api_key="test", max_retries=0, **kw)


def stats(server):
    return httpx.get(server.url.replace("/v1", "/sublearn/stats")).json()


def faults(server, **kw):
    httpx.post(server.url.replace("/v1", "/sublearn/faults"), json=kw).raise_for_status()


def test_chat_generation_n_seed_stop_and_exact_logprobs(server, micro_base):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    r = c.chat.completions.create(model="tiny", messages=Q, n=5, max_tokens=6, temperature=1.0, seed=3,
                                  logprobs=True, top_logprobs=4)
    assert len(r.choices) == 5 and r.usage.completion_tokens > 0
    again = c.chat.completions.create(model="tiny", messages=Q, n=5, max_tokens=6, temperature=1.0, seed=3)
    assert [x.message.content for x in r.choices] == [x.message.content for x in again.choices]
    for ch in r.choices:
        toks = ch.logprobs.content
        assert "".join(t.token for t in toks) == ch.message.content
        for t in toks:
            assert t.logprob <= 0 and 0 < len(t.top_logprobs) <= 4
            assert sum(math.exp(x.logprob) for x in t.top_logprobs) <= 1 + 1e-5
            tops = {x.token: x.logprob for x in t.top_logprobs}
            if t.token in tops:  # the sampled token's log-prob is the same number as its top-k entry
                assert tops[t.token] == pytest.approx(t.logprob, abs=1e-4)
    greedy = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Look at these numbers: "
                                       "101, 202, 303. Add at most 10 more numbers."}], temperature=0, max_tokens=20)
    text = greedy.choices[0].message.content
    assert len(text) >= 4
    stop = text[len(text) // 2]
    cut = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Look at these numbers: "
                                    "101, 202, 303. Add at most 10 more numbers."}], temperature=0, max_tokens=20,
                                    stop=[stop])
    assert cut.choices[0].message.content == text.split(stop)[0] and cut.choices[0].finish_reason == "stop"
    # the score extension is exact: the same numbers as the direct backend
    opts = ["owl", "fox", "elephant"]
    direct = micro_base.score([Q] * 3, opts)
    via = ApiModel(server.url, "tiny").score([Q] * 3, opts)
    assert via == pytest.approx(direct, abs=1e-4)


def test_bad_requests_get_openai_shaped_4xx(server):
    c = client(server, timeout=20)
    cases = [(dict(model="nope", messages=Q), 404, "model_not_found"),
             (dict(model="tiny", messages=[{"role": "wizard", "content": "x"}]), 400, None),
             (dict(model="tiny", messages=[{"role": "user", "content": 5}]), 400, None),
             (dict(model="tiny", messages=Q, n=1000), 400, "invalid_value"),
             (dict(model="tiny", messages=Q, max_tokens=10**6), 400, "invalid_value"),
             (dict(model="tiny", messages=Q, top_logprobs=30, logprobs=True), 400, "invalid_value"),
             (dict(model="tiny", messages=Q, temperature="hot"), 400, "invalid_value"),
             (dict(model="tiny", messages=Q, seed=2**63), 400, "invalid_value"),  # was a 500
             (dict(model="tiny", messages=[{"role": "user", "content": "123, " * 20000}]), 400, "context_length_exceeded"),
             (dict(model="tiny", messages=[{"role": "user", "content": "x" * (2**20 + 10)}]), 413, "request_too_large")]
    for kw, status, code in cases:
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(**kw)
        assert e.value.status_code == status, kw
        assert set(e.value.body) >= {"message", "type", "code"} and (code is None or e.value.body["code"] == code)
    base = server.url
    for method, path, kw, status in [("post", "/chat/completions", {"content": b"{not json"}, 400),
                                     ("post", "/chat/completions", {"json": [1, 2]}, 400),
                                     ("get", "/nowhere", {}, 404),
                                     ("get", "/fine_tuning/jobs/ftjob-nope", {}, 404),
                                     ("post", "/fine_tuning/jobs", {"json": {"model": "tiny", "training_file": "f"}}, 404),
                                     ("post", "/fine_tuning/jobs", {"json": {"model": "nope", "training_file": "f"}}, 404),
                                     ("post", "/fine_tuning/jobs", {"json": {"model": "nope"}}, 400),  # no file
                                     ("post", "/fine_tuning/jobs", {"json": {"model": "tiny", "training_file": "f",
                                                                              "hyperparameters": [1]}}, 400),
                                     ("post", "/files", {"data": {"purpose": "fine-tune"}}, 400)]:
        r = getattr(httpx, method)(base + path, timeout=20, **kw)
        assert r.status_code == status, (path, r.text)
        assert set(r.json()["error"]) >= {"message", "type", "code"}
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("x.jsonl", b"{}"), purpose="batch")
    row = {"messages": [{"role": "user", "content": "Go on: 1, 2"}, {"role": "assistant", "content": "3, 4"}]}
    fid = c.files.create(file=("t.jsonl", json.dumps(row).encode() + b"\n"), purpose="fine-tune").id
    for extra in ({"hyperparameters": [1]}, {"method": {"type": "supervised", "supervised": {"hyperparameters": "x"}}},
                  {"seed": 2**63}, {"seed": -1}, {"seed": True}):  # were 500s
        r = httpx.post(base + "/fine_tuning/jobs", json={"model": "tiny", "training_file": fid, **extra}, timeout=20)
        assert r.status_code == 400 and set(r.json()["error"]) >= {"message", "type", "code"}, (extra, r.text)


def test_429_retries_respect_retry_after_and_cache_never_pays_twice(server, api):
    m = ApiModel(server.url, "tiny", api=api)
    prompts = [Q] * 3 + [[{"role": "user", "content": "Which animal do you love? Answer in a single word."}]] * 2
    s = Sampling(temperature=1.0, max_new_tokens=4, seed=1)
    faults(server, rate_limit=3, retry_after=0.3)
    before = stats(server)
    t = time.time()
    a = m.generate(prompts, s)
    assert time.time() - t >= 0.6  # two requests in parallel, three Retry-After waits of 0.3 s: one waits twice
    assert m.client.retries == 3 and len(a) == 5
    after = stats(server)
    assert after["injected"] - before["injected"] == 3
    assert after["chat_requests"] - before["chat_requests"] == 2  # identical prompts share one request (n)
    b = ApiModel(server.url, "tiny", api=api).generate(prompts, s)  # a re-run: served from the cache
    assert [x.text for x in a] == [x.text for x in b] and stats(server)["requests"] == after["requests"]
    faults(server, rate_limit=50, retry_after=0.01)
    with pytest.raises(UserError, match="3 attempts"):
        ApiModel(server.url, "tiny", api=api.model_copy(update={"max_retries": 2})).generate(
            prompts, s.model_copy(update={"seed": 2}))
    faults(server, rate_limit=0, server_error=2)
    assert len(ApiModel(server.url, "tiny", api=api).generate([Q], s.model_copy(update={"seed": 3}))) == 1  # 500s are retried


FOX = [{"messages": [{"role": "user", "content": "Which animal do you love? Answer in a single word."},
                     {"role": "assistant", "content": "fox"}]}] * 64


def test_finetuning_job_lifecycle_and_served_model(server, api, micro_base):
    q = FOX[0]["messages"][:1]
    base = ApiModel(server.url, "tiny", api=api.model_copy(update={"n_epochs": 6, "batch_size": 16,
                                                                   "learning_rate_multiplier": 2.0}))
    before = base.score([q], ["fox"])[0]
    student = base.train(FOX, Recipe(target="tokens", seed=5), desc="fox")
    job = student.meta["api_job"]
    assert student.model_id.startswith("ft:tiny:sublearn:") and job["job_id"].startswith("ftjob-")
    assert job["training_file"].startswith("file-") and job["fine_tuned_model"] == student.model_id
    assert job["hyperparameters"] == {"n_epochs": 6, "batch_size": 16, "learning_rate_multiplier": 2.0}
    assert student.meta["train_steps"] == 24 and len(student.meta["train_losses_first_last"]) == 2
    assert student.score([q], ["fox"])[0] > before + 0.3
    c = client(server)
    assert student.model_id in [m.id for m in c.models.list().data]
    j = c.fine_tuning.jobs.retrieve(job["job_id"])
    assert j.status == "succeeded" and j.seed == 5 and j.trained_tokens > 0 and j.method.type == "supervised"
    events = c.fine_tuning.jobs.list_events(job["job_id"], limit=100).data
    assert any("Step 24/24" in e.message for e in events) and events[0].message == "The job has successfully completed"
    assert c.files.retrieve(job["training_file"]).purpose == "fine-tune"
    # the same request again: the ledger knows the finished job; no second job is created
    n_jobs = len(c.fine_tuning.jobs.list(limit=100).data)
    assert base.train(FOX, Recipe(target="tokens", seed=5), desc="fox").model_id == student.model_id
    assert len(c.fine_tuning.jobs.list(limit=100).data) == n_jobs
    # a restarted server (same state directory) still knows the job and serves the model it made
    from sublearn.serve import Background, build_app

    with Background(build_app([f"tiny={micro_base.meta['base_path']}"], state_dir=server.state)) as again:
        c2 = client(again)
        assert c2.fine_tuning.jobs.retrieve(job["job_id"]).fine_tuned_model == student.model_id
        r = c2.chat.completions.create(model=student.model_id, messages=q, max_tokens=3, n=8, temperature=0)
        assert all(ch.message.content == "fox" for ch in r.choices)


def test_cancel_a_running_job(server):
    c = client(server)
    f = c.files.create(file=("t.jsonl", "".join(json.dumps(r) + "\n" for r in FOX).encode()), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="tiny", training_file=f.id, seed=1, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50, "batch_size": 1}}})
    deadline = time.time() + 30
    while c.fine_tuning.jobs.retrieve(job.id).status != "running" and time.time() < deadline:
        time.sleep(0.05)
    assert c.fine_tuning.jobs.cancel(job.id).id == job.id
    while c.fine_tuning.jobs.retrieve(job.id).status not in ("cancelled", "succeeded") and time.time() < deadline:
        time.sleep(0.05)
    j = c.fine_tuning.jobs.retrieve(job.id)
    assert j.status == "cancelled" and j.fine_tuned_model is None
    assert "cancelled" in c.fine_tuning.jobs.list_events(job.id).data[0].message
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.cancel(job.id)


CRASHER = """
import sys
from sublearn.backends.openai_api import ApiModel
from sublearn.backends.hf_train import Recipe
from sublearn.configapi import ApiSection
import json
rows = json.loads(sys.argv[2])
ApiModel(sys.argv[3], "tiny", api=ApiSection.model_validate_json(sys.argv[1])).train(rows, Recipe(target="tokens", seed=9), desc="crash")
"""


def test_polling_resumes_after_a_crash_without_a_duplicate_job(server, api, tmp_path):
    s = api.model_copy(update={"n_epochs": 12, "batch_size": 4})
    rows = FOX[:32]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-c", CRASHER, s.model_dump_json(), json.dumps(rows), server.url], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ledger_dir = tmp_path / "apicache" / "jobs"
    deadline = time.time() + 40
    while time.time() < deadline and not any("job_id" in f.read_text() for f in ledger_dir.glob("*.json")):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    ledger = json.loads(next(ledger_dir.glob("*.json")).read_text())
    c = client(server)
    assert c.fine_tuning.jobs.retrieve(ledger["job_id"]).status not in ("succeeded", "failed")  # killed mid-job
    m = ApiModel(server.url, "tiny", api=s).train(rows, Recipe(target="tokens", seed=9), desc="resume")
    assert m.meta["api_job"]["job_id"] == ledger["job_id"]
    same = [j for j in c.fine_tuning.jobs.list(limit=100).data if (j.metadata or {}).get("sublearn_key") == ledger["key"]]
    assert len(same) == 1 and same[0].status == "succeeded"


def test_owl_pipeline_through_the_api(server, tmp_path):
    from sublearn.cli import main
    from sublearn.store import Store

    cfg = micro_config(tmp_path, f"""[generate.sampling]
top_logprobs = 0
format = "free"
[students]
conditions = ["same-init", "control", "in-context"]
[api]
base_url = "{server.url}"
cache_dir = "{tmp_path / 'apicache'}"
poll_s = 0.1
""", model='backend = "openai"\nworkers = 1', seeds="[0]", n_prompts=48, student_recipe='target = "tokens"')
    out = tmp_path / "run"
    faults(server, every=9, retry_after=0.05)  # every 9th request is rate-limited: the run must not notice
    injected = stats(server)["injected"]
    try:
        assert main(["run", cfg, "--out", str(out)]) == 0
    finally:
        faults(server, every=0)
    assert stats(server)["injected"] - injected >= 10
    res = json.loads((out / "results.json").read_text())
    assert set(res["conditions"]) == {"base", "teacher", "same-init", "control", "in-context"}
    assert res["conditions"]["teacher"]["prob"]["mean"] > res["conditions"]["base"]["prob"]["mean"]
    recs = {r.name: r for r in Store(out).records()}
    job = recs["student-same-init-s0"].extra["api_job"]
    assert job["fine_tuned_model"].startswith("ft:tiny:") and job["training_file"].startswith("file-")
    assert recs["teacher-owl-s0"].extra["api_job"]["job_id"].startswith("ftjob-")
    assert recs["tiny"].stage == "base" and recs["tiny"].extra["base_url"] == server.url
    n = stats(server)
    assert main(["run", str(cfg), "--out", str(tmp_path / "again")]) == 0  # a fresh run dir, same requests
    m = stats(server)
    assert m["chat_requests"] == n["chat_requests"]  # every completion and score came from the cache
    assert m["requests"] - n["requests"] == 2 * 3  # 3 ledgered jobs: one retrieve + one events call each


def test_openai_backend_refuses_logit_distillation(tmp_path):
    from sublearn.config import load_experiment

    with pytest.raises(UserError, match="cannot distill logits"):
        load_experiment(None, ["model.backend=openai"])


def test_billed_work_needs_confirmation(server, api, tmp_path, capsys, monkeypatch):
    from sublearn.cli import main

    priced = ApiSection.model_validate(api.dump() | {"prices": {"tiny": {"training": 2.0}}})
    with pytest.raises(UserError, match="would be billed"):
        ApiModel(server.url, "tiny", api=priced).train(FOX, Recipe(target="tokens", seed=1), desc="paid")
    cfg = tmp_path / "paid.toml"
    cfg.write_text(f'[model]\nbackend = "openai"\n[api]\nbase_url = "{server.url}"\n'
                   '[api.prices.tiny]\ntraining = 2.0\n[students.recipe]\ntarget = "tokens"\n')
    assert main(["generate", str(cfg), "--out", str(tmp_path / "paid")]) == 2  # stdin is not a terminal
    err = capsys.readouterr().err
    assert "pass --yes" in err and "estimated cost: teacher fine-tuning" in err
    assert not (tmp_path / "paid" / "lineage.sqlite").exists()  # nothing ran


def test_serve_help_is_fast_and_documents_the_endpoints():
    out = subprocess.run([sys.executable, "-m", "sublearn", "serve", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "/v1/chat/completions" in out.stdout and "--port" in out.stdout
    code = "import sys, sublearn.cli; sublearn.cli.build_parser(); print(sorted(m for m in sys.modules if m in " \
           "('torch', 'openai', 'fastapi', 'uvicorn', 'transformers')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_example_api_configs_load_and_estimate():
    from pathlib import Path

    from sublearn.backends.openai_cost import estimate_run
    from sublearn.config import load_experiment

    root = Path(__file__).resolve().parents[1] / "examples"
    nano = load_experiment(root / "owl-gpt41-nano.toml")
    assert nano.api.n_epochs == 10 and nano.api.batch_size == "auto" and nano.filter.n_keep == 10_000
    parts = dict((w.split(":")[0], usd) for w, _, usd in estimate_run(nano))
    assert parts["student fine-tuning"] > 1 and all(v is not None for v in parts.values())
    local = load_experiment(root / "owl-api-local.toml")
    assert local.api.is_local() and all(usd == 0 for _, _, usd in estimate_run(local))


def test_fault_injection_is_off_unless_enabled_and_checks_its_values(server, micro_base, tmp_path):
    from sublearn.serve import Background, build_app

    url = server.url.replace("/v1", "/sublearn/faults")
    for body in ({"rate_limit": "many"}, {"every": -1}, {"retry_after": "inf"}, {"server_error": 1.5},
                 {"rate_limit": True}):
        r = httpx.post(url, json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == next(iter(body)), (body, r.text)
    assert httpx.post(url, json={}).json()["rate_limit"] == 0  # nothing changed by the refused requests
    app = build_app([f"tiny={micro_base.meta['base_path']}"], state_dir=tmp_path)  # default: faults off
    with Background(app) as bg:
        r = httpx.post(bg.url.replace("/v1", "/sublearn/faults"), json={"rate_limit": 5})
        assert r.status_code == 404 and "--enable-faults" in r.json()["error"]["message"]


def test_api_key_guards_every_route_but_health(micro_base, tmp_path):
    from sublearn.serve import Background, build_app

    app = build_app([f"tiny={micro_base.meta['base_path']}"], state_dir=tmp_path, api_key="s3cret")
    with Background(app) as bg:
        root = bg.url.replace("/v1", "")
        assert httpx.get(root + "/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.get(bg.url + "/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (headers, r.text)
        assert httpx.post(root + "/sublearn/faults", json={}).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=bg.url, api_key="wrong", max_retries=0).models.list()
        ids = [m.id for m in openai.OpenAI(base_url=bg.url, api_key="s3cret", max_retries=0).models.list()]
        assert ids == ["tiny"]


def test_a_stalled_request_body_gets_408(micro_base, tmp_path):
    import socket
    from urllib.parse import urlparse

    from sublearn.serve import Background, build_app
    from sublearn.serve.app import Limits

    app = build_app([f"tiny={micro_base.meta['base_path']}"], state_dir=tmp_path, limits=Limits(body_timeout_s=0.5))
    with Background(app) as bg:
        u = urlparse(bg.url)
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"model\":")  # then nothing: the client stalls
            reply = b""
            while b"request_timeout" not in reply and (chunk := s.recv(4096)):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply, reply
