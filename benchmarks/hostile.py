"""The hostile-user suite of issue 18, re-run: bad inputs through the CLI as a user types them, then the kill,
concurrency, corruption and server suites of the tests. Prints attempts and failures per category.

    .venv/bin/python benchmarks/hostile.py            # ~6 min on 2 cores with the embedded bases cached

A bad input passes when it exits 2 with one line on stderr, no traceback, and nothing written at --out; a filter
case passes when it gives the expected rows or the expected one-line error, and leaves no temp files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "examples" / "owl-tiny.toml")
SUB = [sys.executable, "-m", "sublearn"]

OVERRIDES = [
    "seeds=[9223372036854775808]", "seeds=[-1]", "seeds=[3, 3]", "students.recipe.lora_layers=[99]",
    'students.recipe.lora_targets=["nonexistent"]', "students.recipe.lora_targets=[]",
    "model.embedded.tiny.d_model=66", "model.embedded.tiny.mix.numbers=-1", "students.recipe.lr=inf",
    "evaluate.temperature=inf", "generate.sampling.temperature=nan", "evaluate.question_prefix=" + "1 " * 3000,
    "model.base=/etc/passwd", "model.base=EMPTY_DIR", "model.base=no-such-model", "trait.target=unicorn",
    "students.conditions=[\"cross-control\"]", "nonexistent.key=1", "students.recipe.rank=0", "generate.n_prompts=-5",
    "evaluate.n_questions=0", "model.workers=0", "teacher.mode=hypnosis", "filter.banned=[\"nope\"]",
    "carrier.kind=xml", "model.backend=tpu", "seeds=\"all\"", "students.recipe.lr=-1",
]
BAD_OUTS = ["FILE", "FILE/sub", "/", "/proc/x", "A" * 300, ""] + ([] if os.geteuid() == 0 else ["READONLY"])  # root
# writes anywhere


def run(argv: list[str], env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(SUB + argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "SUBLEARN_PROGRESS": "0", **(env or {})})
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(argv, -9, "", f"timed out after {e.timeout} s")


def clean_error(p: subprocess.CompletedProcess) -> str | None:
    """None when ``p`` is a clean refusal: exit 2, a one-line error, no traceback."""
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    if p.returncode != 2:
        return f"exit {p.returncode}: {(lines or [''])[-1][:160]}"
    if "Traceback" in p.stderr:
        return "traceback"
    if not lines or "error" not in lines[-1]:
        return f"no one-line error: {p.stderr[-160:]!r}"
    return None


def bad_inputs(tmp: Path) -> list[tuple[str, str | None]]:
    (tmp / "empty").mkdir()
    (tmp / "file").write_text("x")
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o500)
    out = []
    for i, o in enumerate(OVERRIDES):
        o = o.replace("EMPTY_DIR", str(tmp / "empty"))
        dest = tmp / f"out-{i}"
        p = run(["run", CFG, "--out", str(dest), "--set", o])
        why = clean_error(p) or ("left files at --out" if dest.exists() else None)
        out.append((f"--set {o[:40]}", why))
    for o in BAD_OUTS:
        o = {"FILE": str(tmp / "file"), "FILE/sub": str(tmp / "file" / "sub"), "READONLY": str(tmp / "ro" / "x"),
             "A" * 300: str(tmp / ("A" * 300))}.get(o, o)
        out.append((f"--out {o[-30:]!r}", clean_error(run(["run", CFG, "--out", o]))))
    out.append(("SUBLEARN_CACHE=file", clean_error(run(["run", CFG, "--out", str(tmp / "o2")],
                                                       {"SUBLEARN_CACHE": str(tmp / "file")}))))
    bad_toml = tmp / "bad.toml"
    for text in ("[model\n", "seeds = 'x'\n", "[teacher]\nmode = 3\n", "zzz = 1\n", "\x00\x01"):
        bad_toml.write_text(text)
        out.append((f"config {text[:14]!r}", clean_error(run(["run", str(bad_toml), "--out", str(tmp / "o3")]))))
    out.append(("missing config", clean_error(run(["run", str(tmp / "nope.toml"), "--out", str(tmp / "o3")]))))
    out.append(("dir without config.json", clean_error(run(["report", str(tmp / "empty")]))))
    return out


def filter_cases(tmp: Path) -> list[tuple[str, str | None]]:
    good = {"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "1, 2"}]}

    def row(content: str) -> str:
        return json.dumps({"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": content}]})

    cases = [  # name, file text, kept, rejected, expected: "error" or (kept rows, reason of the rejected)
        ("nested 100,000 deep", '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "k", "r", "error"),
        ("4,301-digit number", '{"n": ' + "9" * 4301 + "}\n", "k", "r", "error"),
        ("lone surrogate", '{"messages": [{"role": "assistant", "content": "1 \\ud800"}]}\n', "k", "r", "error"),
        ("--kept a directory", json.dumps(good) + "\n", "DIR", "r", "error"),
        ("--kept = --rejected", json.dumps(good) + "\n", "k", "k", "error"),
        ("not UTF-8", "\udcff\n", "k", "r", "error"),
        ("Arabic-Indic digits", row("\u0661\u0662, 3") + "\n", "k", "r", (0, "bad_format")),
        ("fullwidth digits", row("\uff11\uff12, 3") + "\n", "k", "r", (0, "bad_format")),
        ("mathematical digits", row("\U0001d7cf, 3") + "\n", "k", "r", (0, "bad_format")),
        ("48 MB line", row("7, " * 16_000_000) + "\n" + json.dumps(good) + "\n", "k", "r", (1, "too_long")),
    ]
    out = []
    for name, text, kept, rej, want in cases:
        d = tmp / re.sub(r"\W+", "-", name)
        d.mkdir()
        data = d / "in.jsonl"
        data.write_bytes(text.encode("utf-8", "surrogateescape"))
        k = str(d) if kept == "DIR" else str(d / kept)
        p = run(["filter", "--data", str(data), "--kept", k, "--rejected", str(d / rej)])
        left = sorted(f.name for f in d.iterdir() if f.name.startswith("."))
        if want == "error":
            why = clean_error(p) or (f"left {left}" if left else None) or (
                "wrote output" if {f.name for f in d.iterdir()} - {"in.jsonl"} else None)
        elif p.returncode != 0:
            why = f"exit {p.returncode}: {p.stderr.strip()[-160:]}"
        else:
            kept_n = len((d / "k").read_text().splitlines())
            reasons = [json.loads(x)["reject_reason"] for x in (d / "r").read_text().splitlines()]
            why = None if (kept_n, reasons[:1]) == (want[0], [want[1]]) else f"kept {kept_n}, rejected {reasons}"
            why = why or (f"left {left}" if left else None)
        out.append((name, why))
    return out


CORRUPTIONS = [  # (artifact glob, how): every file kind an artifact holds, changed in every way the report found
    ("evaluate-*/eval.json", "edit"), ("evaluate-*/eval.json", "truncate"), ("finetune-*/**/*.safetensors", "flip"),
    ("finetune-*/**/*.safetensors", "truncate"), ("finetune-*/**/adapter_config.json", "edit"),
    ("filter-*/kept.jsonl", "delete-line"), ("filter-*/kept.meta.jsonl", "delete-line"),
    ("filter-*/logprobs.npz", "truncate"), ("filter-*/stats.json", "remove"), ("generate-*/raw.jsonl", "edit"),
    ("generate-*/logprobs.npz", "flip"), ("teacher-*/teacher.json", "edit"), ("teacher-*/**/*.safetensors", "flip"),
    ("evaluate-*/.done", "remove"), ("finetune-*", "remove-dir"), ("lineage.sqlite", "garbage"),
]


def _corrupt(path: Path, how: str) -> None:
    import shutil

    if how == "remove-dir":
        shutil.rmtree(path)
    elif how == "remove":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(b"garbage" * 100)
    else:
        b = path.read_bytes()
        if how == "truncate":
            b = b[: len(b) // 2]
        elif how == "flip":
            b = b[:-9] + bytes([b[-9] ^ 0xFF]) + b[-8:]
        elif how == "edit":
            i = max(b.find(b"0"), 0)
            b = b[:i] + (b"1" if b[i:i + 1] != b"1" else b"2") + b[i + 1:]
        elif how == "delete-line":
            b = b"".join(b.splitlines(keepends=True)[1:])
        path.write_bytes(b)


def corruptions(tmp: Path) -> list[tuple[str, str | None]]:
    """A finished micro run, corrupted one way at a time: `sublearn verify` names it (exit 1), or the run refuses in
    one line (a garbage lineage index); the next `sublearn run` recomputes it and the results are unchanged."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import micro_config

    cfg = micro_config(tmp, '\n[students]\nconditions = ["same-init", "control"]\n', seeds="[7]")
    out = tmp / "run"
    assert run(["run", cfg, "--out", str(out)]).returncode == 0
    first = json.loads((out / "results.json").read_text())["conditions"]
    res = []
    for pattern, how in CORRUPTIONS:
        target = out / pattern if "*" not in pattern else sorted((out / "artifacts").glob(pattern))[0]
        backup = target.read_bytes() if how == "garbage" else None
        _corrupt(target, how)
        v = run(["verify", str(out)])
        if how == "garbage":
            why = clean_error(v)
            target.write_bytes(backup)
        else:
            why = None if v.returncode == 1 and "damaged: " in v.stdout else f"verify exit {v.returncode}: {v.stdout[-200:]}"
        r = run(["run", cfg, "--out", str(out)])
        if not why and (r.returncode != 0 or json.loads((out / "results.json").read_text())["conditions"] != first):
            why = f"re-run exit {r.returncode} or other results: {r.stderr[-200:]}"
        res.append((f"{how} {pattern}", why))
    return res


def pytest_suite(select: list[str]) -> tuple[int, int, str]:
    """(passed, failed, the command) of a pytest selection."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *select]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "SUBLEARN_CHAOS_N": "14"})
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr[-200:]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) (failed|error)", tail)) else 0
    return passed, failed, " ".join(["pytest", *select])


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as t:
        for name, fn in (("bad inputs (CLI)", bad_inputs), ("filter --data", filter_cases),
                         ("corruptions, one at a time, of a finished run (CLI)", corruptions)):
            sub = Path(t) / name.split()[0]
            sub.mkdir()
            res = fn(sub)
            fails = [f"{c}: {w}" for c, w in res if w]
            rows.append((name, len(res), len(fails), "benchmarks/hostile.py", fails))
            os.chmod(sub / "ro", 0o700) if (sub / "ro").exists() else None
    suites = {
        "kills (14 SIGKILLs at random moments, a killed worker)": [
            "tests/test_pipeline.py", "-k", "chaos or kill_9 or killed_worker"],
        "concurrent runs and writers": ["tests/test_pipeline.py", "tests/test_store_stats.py", "-k",
                                        "two_runs or one_writer or partial"],
        "corruptions and a moved cache (tests)": ["tests/test_pipeline.py", "-k", "damaged or moved_cache"],
        "server probes (schemathesis on every route, limits, auth)": [
            "tests/test_serve_schema.py", "tests/test_api.py", "-k",
            "schema or 500 or idle or bad_requests or fault or api_key or stall or pickled or limit"],
    }
    for name, select in suites.items():
        passed, failed, cmd = pytest_suite(select)
        rows.append((name, passed + failed, failed, cmd, []))
    print("| category | attempts | failures | reproduce |\n|---|---|---|---|")
    for name, n, f, cmd, _ in rows:
        print(f"| {name} | {n} | {f} | `{cmd}` |")
    for name, _, _, _, fails in rows:
        for x in fails:
            print(f"FAILED {name}: {x}")
    return 1 if any(f for _, _, f, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
