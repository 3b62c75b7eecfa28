"""Plug-ins: registries of carriers, traits, scorers and ban lists, and loading a user's own modules.

A plug-in is a small class registered under a name. Carriers and traits are frozen config models themselves (their
fields are the parameters a config gives them, their methods what the pipeline asks of them), so a config names a
plug-in with ``kind = "numbers"`` plus its parameters, and still serializes and hashes. A user's module registers
more with the same decorators; sublearn imports it from a config's ``plugins = ["my_module"]`` (a module name
importable from the working directory, or a ``.py`` file) or from an installed package's entry point in the group
``sublearn.plugins``. See docs/plugins.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field

from .configbase import Frozen

T = TypeVar("T")
ENTRY_POINT_GROUP = "sublearn.plugins"


class Registry(Generic[T]):
    """Named plug-ins of one kind (``carrier``, ``trait``, ``scorer``, ``ban list``, ``tracker``, ``executor``)."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@CARRIERS.register()`` on a class whose ``kind`` default is its name, or with a name."""

        def add(obj: T) -> T:
            key = name or _kind_of(obj)
            old = self._items.get(key)
            if old is not None and _qualname(old) != _qualname(obj):
                raise ValueError(f"{self.what} {key!r} is registered twice ({_qualname(old)} and {_qualname(obj)})")
            self._items[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            _builtins()
            load_entry_points()
        if name not in self._items:
            raise ValueError(f"unknown {self.what} {name!r}; known: {', '.join(self.names())} (a plug-in module "
                             "registers more: plugins = [\"my_module\"])")
        return self._items[name]

    def names(self) -> list[str]:
        _builtins()
        load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


def _kind_of(cls) -> str:
    field = getattr(cls, "model_fields", {}).get("kind")
    if field is None or not isinstance(field.default, str):
        raise ValueError(f"{cls!r}: register it with a name, or give it a `kind` field whose default is its name")
    return field.default


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Plugin(Frozen):
    """Base of a configurable plug-in: ``kind`` names it; ``REVISION`` is bumped when its code starts computing
    something else from the same parameters (it is part of every artifact key the plug-in's output reaches)."""

    REVISION: ClassVar[int] = 1
    kind: str = Field(description="the registered name of this plug-in")

    def key_dump(self) -> dict:
        out = super().key_dump()
        return out | ({"revision": self.REVISION} if self.REVISION != 1 else {})


def validate_plugin(registry: Registry, value: Any, default_kind: str):
    """A config value (a dict with ``kind``, or a plug-in instance) as the registered plug-in's own model."""
    if isinstance(value, Plugin):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"expected a table with kind = one of {', '.join(registry.names())}")
    kind = value.get("kind", default_kind)
    cls = registry.get(kind)
    return cls.model_validate({**value, "kind": kind})


_loaded_entry_points = False


def load_entry_points() -> None:
    """Import every installed package's ``sublearn.plugins`` entry point (once per process)."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # a broken third-party plug-in names itself, it does not crash sublearn
            raise ValueError(f"plug-in entry point {ep.name} ({ep.value}) failed to load: {e}") from None


def load_modules(names: tuple[str, ...] | list[str]) -> None:
    """Import a config's ``plugins``: module names (the working directory is searched too) or ``.py`` files."""
    for name in names:
        if name.endswith(".py") or "/" in name:
            path = Path(name).expanduser().resolve()
            if not path.is_file():
                raise ValueError(f"plug-in file not found: {name}")
            mod_name = f"sublearn_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
            if mod_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            except Exception as e:
                del sys.modules[mod_name]
                raise ValueError(f"plug-in {name}: {type(e).__name__}: {e}") from None
            continue
        if str(Path.cwd()) not in sys.path:
            sys.path.append(str(Path.cwd()))
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            raise ValueError(f"plug-in module {name!r} not found ({e}); it must be importable from the working "
                             "directory or the environment, or name a .py file") from None
        except Exception as e:
            raise ValueError(f"plug-in module {name!r}: {type(e).__name__}: {e}") from None


CARRIERS: Registry = Registry("carrier")
TRAITS: Registry = Registry("trait")
SCORERS: Registry = Registry("scorer")
BAN_LISTS: Registry = Registry("ban list")
TRACKERS: Registry = Registry("tracker")  # --track: where a finished run is logged (report/track.py)
EXECUTORS: Registry = Registry("executor")  # --executor: what runs the job graph (pipeline/executors.py)


def _builtins() -> None:
    """Register sublearn's own plug-ins (imported on first lookup: each module registers itself)."""
    from .backends import ray_exec, trackers  # noqa: F401
    from .carriers import code, numbers, reasoning  # noqa: F401
    from .evaluate import judge, scorers  # noqa: F401
    from .filter import banlists  # noqa: F401
    from .pipeline import executors  # noqa: F401
    from .traits import misalignment, preference  # noqa: F401
