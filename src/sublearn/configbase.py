"""Shared machinery of every config: frozen pydantic models, TOML loading, ``--set`` overrides, hashing.

Configs hold only data (names of registered filters/traits/models plus parameters), so every config
serializes to JSON and hashes; the hash is part of every artifact key.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UserError
from .store import hash_obj

SEED_MAX = 2**32 - 1  # every seed a config takes: what NumPy and every RNG here accept

T = TypeVar("T", bound="Frozen")
ANY = object()  # KEY_OMIT: leave the field out of keys whatever its value


class Frozen(BaseModel):
    """Base of all config sections: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)
    # fields left out of artifact keys: at the given value (a field added later, at the value that computes what was
    # computed before it existed: old keys stay valid), or always (ANY: a field that never changes the bytes)
    KEY_OMIT: ClassVar[dict[str, Any]] = {}

    def dump(self) -> dict:
        return self.model_dump(mode="json")

    def key_dump(self) -> dict:
        """What an artifact key hashes: ``dump()``, without fields at their ``KEY_OMIT`` value."""
        out = {}
        for name, value in self:
            if name in self.KEY_OMIT and (self.KEY_OMIT[name] is ANY or value == self.KEY_OMIT[name]):
                continue
            out[name] = value.key_dump() if isinstance(value, Frozen) else self.model_dump(mode="json",
                                                                                             include={name})[name]
        return out

    def hash(self) -> str:
        return hash_obj(self.dump())


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as a TOML value, falling back to a bare string (``eagle``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``section.key=value`` overrides to a nested dict (a copy)."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. trait.target=eagle")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise UserError(f"--set {item!r}: empty key")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: {p} is not a section")
        node[parts[-1]] = parse_value(value.strip())
    return data


def format_validation_error(err: ValidationError, source: str) -> str:
    msgs = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            msgs.append(f"unknown key '{loc}'")
        else:
            msgs.append((f"'{loc}': " if e["loc"] else "") + e['msg'].removeprefix('Value error, ') + (f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""))
    return f"{source}: " + "; ".join(msgs)


def read_toml(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError(f"config file not found: {p}")
    if p.is_dir():
        if (p / "config.json").is_file():  # a run directory: the resolved config it ran with
            try:
                return json.loads((p / "config.json").read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UserError(f"{p / 'config.json'}: not a readable config (invalid JSON)") from None
        raise UserError(f"config path is a directory without a config.json, expected a TOML file or a run "
                        f"directory: {p}")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: invalid TOML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a text file") from None


def build(cls: type[T], data: dict, source: str) -> T:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(e, source)) from None


# Keys that say the same thing another way: a section that names the first (and not the second) drops the
# second's default. A recipe whose default trains for ``steps = 150`` trains by epochs once ``epochs = 3``
# is written, instead of the default steps silently overriding it.
SUPERSEDES = {"epochs": "steps"}


def dotted(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested table as {"a.b.c": leaf}: non-empty tables are followed, everything else (lists, scalars, {}) is a
    leaf. The flat form of a config that compare, trackers and sweep axes use."""
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            out |= dotted(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, recursively for dicts (lists and scalars are replaced)."""
    out = dict(base)
    for k, v in over.items():
        other_kind = isinstance(v, dict) and isinstance(out.get(k), dict) and v.get("kind", out[k].get("kind")) != \
            out[k].get("kind")  # a plug-in of another kind: its own parameters, not the default's
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and not other_kind else v
    for named, dropped in SUPERSEDES.items():
        if named in over and dropped not in over and dropped in out:
            out[dropped] = None
    return out


def load(cls: type[T], path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Load a config class from a TOML file (or defaults when ``path`` is None) plus ``--set`` overrides.

    A partial section keeps the defaults of the fields it does not name (the class defaults, including
    nested sections' own defaults: ``[teacher.recipe] lr = 0.1`` changes only the teacher's lr), except
    that naming ``epochs`` without ``steps`` clears the default ``steps`` (``SUPERSEDES``).
    """
    data = read_toml(path) if path is not None else {}
    if path is not None and Path(path).is_file() and isinstance(data.get("plugins"), list):
        # a plug-in file named in a TOML is found next to it, wherever the command runs (and in worker processes)
        here = Path(path).resolve().parent
        data["plugins"] = [str(here / x) if isinstance(x, str) and x.endswith(".py") and not Path(x).is_absolute()
                           else x for x in data["plugins"]]
    data = apply_overrides(data, overrides)
    # the field defaults as written (model_construct skips the class's own validators, which may resolve defaults
    # such as format = "auto" that depend on other fields)
    return build(cls, deep_merge(cls.model_construct().dump(), data), str(path) if path else "config")
