"""Content-addressed artifact store with a SQLite lineage index.

An artifact is a directory ``<root>/artifacts/<stage>-<key>/``. Its key is the hash of its stage, its
config and its parents' keys, so re-running a stage with the same inputs finds the finished artifact
and skips the work. Writes go to a temporary directory that is renamed into place with ``os.replace``
only when the stage finished: a killed stage leaves nothing that looks finished.

``lineage.sqlite`` records who made what from what: stage, config, parents, seed, model, time, duration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    key TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    name TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    parents TEXT NOT NULL,
    seed INTEGER,
    model TEXT,
    path TEXT NOT NULL,
    created REAL NOT NULL,
    duration_s REAL NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
"""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_obj(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def artifact_key(stage: str, config: Any, parents: list[str] | tuple[str, ...] = ()) -> str:
    """Key of an artifact: hash of the stage name, its config and its parents' keys (order-insensitive)."""
    return hash_obj({"stage": stage, "config": config, "parents": sorted(parents)})


@dataclass(frozen=True)
class Record:
    key: str
    stage: str
    name: str
    config_hash: str
    config: dict
    parents: list[str]
    seed: int | None
    model: str | None
    path: str
    created: float
    duration_s: float
    extra: dict


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def usable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a writable directory (created if missing), or a one-line UserError that says why not."""
    from .errors import UserError

    if not str(path).strip():
        raise UserError(f"{what} is empty: name a directory")
    p = Path(path).expanduser()
    if p.resolve() == Path(p.resolve().anchor):
        raise UserError(f"{what} {p} is the filesystem root: name a directory of its own")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} {p} is a file, not a directory") from None
    except OSError as e:
        raise UserError(f"{what} {p}: cannot create it ({e.strerror or e})") from None
    if not p.is_dir():
        raise UserError(f"{what} {p} is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{what} {p} is not writable")
    return p


def usable_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a file that can be written (its directory created if missing), or a one-line UserError."""
    from .errors import UserError

    if not str(path).strip():
        raise UserError(f"{what} is empty: name a file")
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{what} {p} is a directory: name a file")
    usable_dir(p.parent, f"{what}'s directory")
    return p


class Store:
    """Artifacts of one run directory (or of the shared model cache) and their lineage."""

    def __init__(self, root: str | os.PathLike, what: str = "--out"):
        self.root = usable_dir(root, what)
        (self.root / "artifacts").mkdir(exist_ok=True)
        self.db_path = self.root / "lineage.sqlite"
        try:
            with self._db() as db:
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            from .errors import UserError

            raise UserError(f"{self.db_path} is not a readable lineage index ({e}): move it away to start the "
                            "index afresh") from None
        self._clean_partials()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            with con:
                yield con
        finally:
            con.close()

    def _clean_partials(self) -> None:
        for p in (self.root / "artifacts").glob(".tmp-*"):
            # left by a killed stage; the writer (pid and start time) is part of the name, so a live writer is never
            # touched, and a dead writer's directory is cleaned even when its pid now belongs to another process
            if _writer_alive(p.name.split("-")[-1]):
                continue
            shutil.rmtree(p, ignore_errors=True)

    def path(self, stage: str, key: str) -> Path:
        return self.root / "artifacts" / f"{stage}-{key}"

    @contextlib.contextmanager
    def claimed(self, items: list[tuple[str, str]]) -> Iterator[None]:
        """Hold the write locks of artifacts ``(stage, key)`` for the block: one writer per artifact, across
        processes and runs sharing this store. Locks are taken in one global order, so two claimants never wait on
        each other in a cycle; a caller re-checks ``exists`` inside the block (another writer may have finished)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process locks
            yield
            return
        files = []
        try:
            for stage, key in sorted(set(items)):
                f = open(self.root / "artifacts" / f".lock-{stage}-{key}", "a")  # noqa: SIM115 - held until the end
                files.append(f)
                fcntl.flock(f, fcntl.LOCK_EX)
            yield
        finally:
            for f in reversed(files):
                f.close()  # closing releases the lock

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / ".done").exists()

    def damage(self, stage: str, key: str) -> str | None:
        """Why a finished artifact cannot be trusted (a file missing, cut short or changed since it was written), or
        None when it is intact. Cheap: sizes and modification times, and a file's hash only when its time moved."""
        d = self.path(stage, key)
        try:
            files = json.loads((d / ".done").read_text()).get("files")
        except (OSError, ValueError, AttributeError):
            return "its completion record is unreadable"
        if not isinstance(files, dict):
            return None  # written before manifests: nothing to check against
        for rel, (size, mtime_ns, digest) in files.items():
            f = d / rel
            try:
                st = f.stat()
            except OSError:
                return f"{rel} is missing"
            if st.st_size != size:
                return f"{rel} has {st.st_size} bytes, {size} were written"
            if st.st_mtime_ns != mtime_ns and _file_hash(f) != digest:
                return f"{rel} was changed after it was written"
        return None

    @contextlib.contextmanager
    def writing(
        self,
        stage: str,
        key: str,
        *,
        name: str,
        config: Any,
        parents: list[str] | tuple[str, ...] = (),
        seed: int | None = None,
        model: str | None = None,
        extra_seconds: float = 0.0,
    ) -> Iterator[tuple[Path, dict]]:
        """Yield ``(tmpdir, extra)``; on success the directory is moved into place and recorded.

        ``extra`` is a dict the stage may fill (e.g. timings, counts); it is stored in the lineage index. The
        recorded duration is the block's plus ``extra_seconds`` (this artifact's share of work done before it).
        """
        final = self.path(stage, key)
        tmp = self.root / "artifacts" / f".tmp-{stage}-{key}-{_writer_tag(os.getpid())}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        extra: dict = {}
        t0 = time.time()
        try:
            yield tmp, extra
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        duration = time.time() - t0 + extra_seconds
        # the manifest: what each file was when written, so a later load can tell it was changed or cut short
        (tmp / ".done").write_text(canonical_json({"key": key, "stage": stage, "files": _manifest(tmp)}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.record(stage, key, name=name, config=config, parents=parents, seed=seed, model=model,
                    duration_s=duration, extra=extra)

    def record(self, stage: str, key: str, *, name: str, config: Any, parents=(), seed=None, model=None,
               duration_s: float = 0.0, extra: dict | None = None, path: Path | None = None) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, stage, name, hash_obj(config), canonical_json(config), canonical_json(sorted(parents)),
                 seed, model, str(path or self.path(stage, key)), time.time(), duration_s,
                 canonical_json(extra or {})),
            )

    def remove(self, stage: str, key: str) -> None:
        shutil.rmtree(self.path(stage, key), ignore_errors=True)
        with self._db() as db:
            db.execute("DELETE FROM artifacts WHERE key = ? AND stage = ?", (key, stage))

    def records(self, stage: str | None = None) -> list[Record]:
        q = "SELECT * FROM artifacts" + (" WHERE stage = ?" if stage else "") + " ORDER BY created"
        with self._db() as db:
            rows = db.execute(q, (stage,) if stage else ()).fetchall()
        return [_record(r) for r in rows]

    def get(self, key: str) -> Record | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM artifacts WHERE key = ?", (key,)).fetchone()
        return _record(row) if row else None


def _record(r: tuple) -> Record:
    return Record(key=r[0], stage=r[1], name=r[2], config_hash=r[3], config=json.loads(r[4]),
                  parents=json.loads(r[5]), seed=r[6], model=r[7], path=r[8], created=r[9],
                  duration_s=r[10], extra=json.loads(r[11]))


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_sha256(files: list[Path], cache: Path) -> list[str]:
    """The sha256 of each file, each hashed once: remembered under ``cache`` by its absolute path, size and mtime,
    so a checkpoint is hashed again only when it changes (a 7B model takes a minute to hash)."""
    out = []
    for f in files:
        f = f.resolve()
        st = f.stat()
        memo = cache / "sha256" / f"{hashlib.sha256(str(f).encode()).hexdigest()[:24]}.json"
        try:
            old = json.loads(memo.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns and old.get("path") == str(f):
            out.append(old["sha256"])
            continue
        digest = _file_hash(f)
        with contextlib.suppress(OSError):  # a read-only cache only costs the next hash
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(memo, json.dumps({"path": str(f), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                           "sha256": digest}))
        out.append(digest)
    return out


def _manifest(root: Path) -> dict[str, list]:
    """{relative path: [size, mtime_ns, sha256]} of every file under ``root`` but ``.done``."""
    out = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.name != ".done":
            st = f.stat()
            out[str(f.relative_to(root))] = [st.st_size, st.st_mtime_ns, _file_hash(f)]
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None where that is unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the parenthesized command name


def _host() -> str:
    """This machine, as it appears in temp directory names (a short hash of the host name)."""
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _writer_tag(pid: int) -> str:
    """pid.start.host: the writer of a temp directory, so that no other process, nor another machine sharing the
    store's file system, takes it for a dead writer's."""
    start = _start_time(pid)
    return f"{pid}.{start or 0}.h{_host()}"


def _writer_alive(tag: str) -> bool:
    """Is the process that wrote a temp directory named with ``tag`` still running (and not this process)? A
    writer on another host is taken as alive: this machine cannot tell, and must not remove its work."""
    pid, start, host = (tag.split(".") + ["", ""])[:3]
    if host.startswith("h") and host != f"h{_host()}":
        return True
    if not pid.isdigit() or int(pid) == os.getpid() or not _pid_alive(int(pid)):
        return False
    return start in ("", "0") or _start_time(int(pid)) in (None, start)
