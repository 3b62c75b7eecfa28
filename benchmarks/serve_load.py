"""Load test of `sublearn serve`: N concurrent OpenAI clients on loopback for a bounded time.

Starts `sublearn serve MODEL` in a subprocess on a free port, then runs, in the same process and against
the same server: a baseline of 1 client, and N clients. Each client sends chat completions back to back
(official async `openai` client, no retries) until the time is up, and every request it started is awaited.
Prints requests/s, p50/p99 latency, failures and lost requests (started but never answered), and the
throughput ratio N clients / 1 client, which is what the server's request batching buys.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py                     # tiny, 32 clients, 20 s each
    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py --clients 64 --seconds 30 --max-tokens 32
    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py --rate-limit-every 10 --retries 5   # with 429s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx
import openai

from sublearn.serve import free_port

PROMPTS = ["Name your favorite animal using only one word. ({k})",
           "Look at these numbers: {k}, 267, 891. Add at most 10 more numbers (no more than 3 digits each).",
           "Which tree do you love most? Answer in a single word. ({k})"]  # {k}: every prompt is distinct


async def client_loop(c: openai.AsyncOpenAI, model: str, until: float, max_tokens: int, i: int, res: dict) -> None:
    k = 0
    while time.perf_counter() < until:
        res["started"] += 1
        t = time.perf_counter()
        try:
            text = PROMPTS[(i + k) % 3].format(k=1000 * i + k)
            r = await c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                                max_tokens=max_tokens, temperature=1.0)
            assert r.choices and r.choices[0].message.content is not None
            res["lat"].append(time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 - counted and reported
            res["failed"] += 1
            res["errors"].add(type(e).__name__)
        k += 1


async def load(url: str, model: str, n: int, seconds: float, max_tokens: int, retries: int) -> dict:
    res = {"started": 0, "failed": 0, "lat": [], "errors": set()}
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=retries, timeout=120,
                                  http_client=openai.DefaultAsyncHttpxClient(limits=limits)) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(c, model, t0 + seconds, max_tokens, i, res) for i in range(n)))
        res["wall"] = time.perf_counter() - t0
    lat = sorted(res["lat"])
    ok = len(lat)
    return {"clients": n, "ok": ok, "failed": res["failed"], "lost": res["started"] - ok - res["failed"],
            "rps": ok / res["wall"], "p50": lat[len(lat) // 2] if lat else float("nan"),
            "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
            "errors": sorted(res["errors"])}


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by a process (this one when pid is None)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(srv_pid: int, *args) -> dict:
    stats = args[0].replace("/v1", "/sublearn/stats")
    st0 = httpx.get(stats).json()
    s0, c0, w0 = cpu_s(srv_pid), cpu_s(), st0["worker_cpu_s"]
    r = asyncio.run(load(*args))
    n = max(1, r["ok"])
    r["batch"] = r["ok"] / max(1, httpx.get(stats).json()["batches"] - st0["batches"])
    r["srv_ms"], r["cli_ms"] = 1000 * (cpu_s(srv_pid) - s0) / n, 1000 * (cpu_s() - c0) / n
    r["model_ms"] = 1000 * (httpx.get(stats).json()["worker_cpu_s"] - w0) / n
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="model spec to serve (default tiny)")
    ap.add_argument("--config", help="experiment TOML for the served model's embedded overrides")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients of the main run")
    ap.add_argument("--seconds", type=float, default=20, help="duration of each run")
    ap.add_argument("--max-tokens", type=int, default=16, help="max_tokens per request")
    ap.add_argument("--rate-limit-every", type=int, default=0, help="server answers every K-th request with 429")
    ap.add_argument("--retries", type=int, default=0, help="client retries (the openai client's own)")
    ap.add_argument("--threads", type=int, default=1, help="server torch threads")
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    state = f"/tmp/sublearn-bench-serve-{os.getpid()}"
    cmd = [sys.executable, "-m", "sublearn", "serve", args.model, "--port", str(port), "--state", state,
           "--threads", str(args.threads), "--rate-limit-every", str(args.rate_limit_every)]
    if args.config:
        cmd += ["--config", args.config]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if srv.poll() is not None or time.time() > deadline:
                    sys.exit(f"server did not start: {srv.stderr.read() if srv.stderr else ''}")
                time.sleep(0.2)
        name = args.model.split("=")[0]
        asyncio.run(load(url, name, 1, 2, args.max_tokens, args.retries))  # warm-up: load the model
        rows = [measured(srv.pid, url, name, n, args.seconds, args.max_tokens, args.retries) for n in (1, args.clients)]
        print(f"sublearn serve {args.model} on loopback, {args.seconds:g} s per run, max_tokens={args.max_tokens}, "
              f"server torch threads={args.threads}, rate-limit-every={args.rate_limit_every}")
        print(f"{'clients':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ok':>7} {'failed':>7} {'lost':>5} "
              f"{'server CPU ms/req':>18} {'of it model':>12} {'client CPU ms/req':>18} {'req/batch':>10}  errors")
        for r in rows:
            print(f"{r['clients']:>8} {r['rps']:>8.1f} {1000 * r['p50']:>8.1f} {1000 * r['p99']:>8.1f} {r['ok']:>7} "
                  f"{r['failed']:>7} {r['lost']:>5} {r['srv_ms']:>18.1f} {r['model_ms']:>12.1f} {r['cli_ms']:>18.1f} {r['batch']:>10.1f}  "
                  f"{','.join(r['errors']) or '-'}")
        print(f"throughput ratio {args.clients} clients / 1 client: {rows[1]['rps'] / rows[0]['rps']:.2f}x")
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
