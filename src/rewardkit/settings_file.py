"""Typed settings from a YAML file, keyword fields (CLI flags) and `key=value` overrides, in that order.

One reader for every config rewardkit takes (training, the over-optimization lab): each is a pydantic model
with extra="forbid", and every problem becomes a RewardkitError naming the file and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rewardkit.errors import RewardkitError

Settings = TypeVar("Settings", bound=BaseModel)


def load_settings(settings_cls: type[Settings], path: str | os.PathLike | None = None,
                  overrides: list[str] | None = None, /, **fields: Any) -> Settings:
    """`settings_cls` from the YAML file at `path` (optional), then `fields` that are not None, then `key=value`
    overrides (dotted keys such as `lora.r=8`; values parsed as YAML: `lr=1e-4`, `lora=null`)."""
    raw: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    path = Path(path) if path is not None else None
    raw.update({k: v for k, v in fields.items() if v is not None})
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RewardkitError(f"--set {item!r}: expected key=value")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
    try:
        return settings_cls(**raw)
    except ValidationError as e:
        raise RewardkitError(validation_message(e, path)) from None
    except RewardkitError as e:
        raise RewardkitError(f"config: {e}") from None


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RewardkitError(f"config file {path} not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RewardkitError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(loaded, dict):
        raise RewardkitError(f"{path}: expected a mapping of field: value")
    return loaded


def validation_message(error: ValidationError, path: Path | None) -> str:
    where = f"{path}: " if path else "config: "
    lines = []
    for e in error.errors():
        field = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"field '{field}': {msg}" if field != "config" else msg)
    return where + "; ".join(lines)


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RewardkitError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value
