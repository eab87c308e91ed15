"""One configuration model per service: YAML file < NIMBUS_* environment < flags.

Each service declares a dataclass; nested dataclasses are YAML sections and
`NIMBUS_<SECTION>_<FIELD>` variables; a list of sections is a YAML list in the file and a YAML
(or JSON) flow list in its variable. Values are coerced to the field's type and every problem
is reported at start in one message naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
ENV_PREFIX = "NIMBUS_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


def _coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or value == "":
            return None
        return _coerce(value, options[0], key, source)
    if origin is list:
        (item,) = typing.get_args(kind)
        if isinstance(value, str) and dataclasses.is_dataclass(item):
            # A list of sections from the environment: written as YAML (or JSON) flow style.
            try:
                value = yaml.safe_load(value) or []
            except yaml.YAMLError:
                raise ConfigError(f"{key} ({source}): expected a YAML list of sections") from None
        elif isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key} ({source}): expected a list, got {value!r}")
        if dataclasses.is_dataclass(item):
            return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return [_coerce(v, item, key, source) for v in value]
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        # A section inside a list (e.g. one upstream of proxy.upstreams).
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} ({source}): expected a section, got {value!r}")
        section = kind()
        _apply(section, value, f"{key}.", source)
        return section
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} ({source}): expected true or false, got {value!r}")
    if kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} ({source}): expected a number, got {value!r}") from None
    if kind is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{key} ({source}): expected a string, got {value!r}")
        return str(value)
    return value


def _apply(obj: Any, values: Mapping[str, Any], prefix: str, source: str) -> None:
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in dataclasses.fields(obj)}
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            raise ConfigError(f"{prefix}{raw_key} ({source}): unknown setting")
        kind = hints[key]
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}{raw_key} ({source}): expected a section")
            _apply(current, value, f"{prefix}{key}.", source)
        else:
            setattr(obj, key, _coerce(value, kind, f"{prefix}{key}", source))


def _env_values(obj: Any, env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        name = f"{prefix}{f.name.upper()}"
        current = getattr(obj, f.name)
        if dataclasses.is_dataclass(current):
            nested = _env_values(current, env, f"{name}_")
            if nested:
                found[f.name] = nested
        elif name in env:
            found[f.name] = env[name]
    return found


def load(
    cls: type[T],
    file: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from its defaults, then the file, the environment and the flags."""
    config = cls()
    if file:
        path = Path(file)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {file} must hold a mapping of settings")
        _apply(config, loaded, "", str(file))
    _apply(
        config,
        _env_values(config, os.environ if env is None else env, ENV_PREFIX),
        "",
        "environment",
    )
    if flags:
        _apply(config, {k: v for k, v in flags.items() if v is not None}, "", "flags")
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def split_hostport(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
