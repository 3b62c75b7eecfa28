"""Render a config as commented TOML (every field's description as a comment)."""

from __future__ import annotations

import json

from pydantic import BaseModel


def _val(v) -> str:
    if v is None:
        return '""  # unset'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="json")
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_val(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def to_toml(model: BaseModel, prefix: str = "") -> str:
    scalars, sections = [], []
    for name, field in type(model).model_fields.items():
        v = getattr(model, name)
        if isinstance(v, BaseModel):
            sections.append(f"\n[{prefix}{name}]  # {field.description}\n" + to_toml(v, f"{prefix}{name}."))
        elif v is None:
            scalars.append(f"# {name} =   # {field.description} (unset)")
        else:
            scalars.append(f"{name} = {_val(v)}  # {field.description}")
    return "\n".join(scalars) + "".join(sections)
