"""Configuration in three layers: dataclass defaults → YAML spec → ``--set key=value``.

Unknown keys and wrong types are errors that name the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from features.yaml_files import read_yaml
from models.errors import ConfigError, SpecError

C = TypeVar("C")


@dataclass(frozen=True)
class TrainConfig:
    """What ``tailor train`` does. ``params`` are the model's own config fields."""

    model: str = "ease"
    params: dict[str, Any] = field(default_factory=dict)
    baseline: str = "popularity"
    test_days: int = 7
    k: int = 10
    feature_service: str = "user_profile_v1"
    registered_model: str = "tailor-recommender"
    experiment: str = "tailor-train"
    alias: str = "champion"
    register: bool = True
    seed: int = 42


def _allowed(cls: type) -> str:
    hints = typing.get_type_hints(cls)
    return ", ".join(f"{f.name}: {_type_name(hints[f.name])}" for f in dataclasses.fields(cls))


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(v) for v in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (often text from ``--set``) to ``tp`` or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            allowed_text = ", ".join(map(repr, allowed))
            raise ConfigError(f"{key}={value!r}: allowed values are {allowed_text}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={value!r}: expected a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={value!r}: expected text")
    if origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key}={value!r}: expected a mapping")
    return value


def from_mapping(cls: type[C], values: Any, *, prefix: str = "") -> C:
    """Build ``cls`` from a mapping, checking every key and type; every error names the key, the
    value and the allowed keys (with their types), and a missing required key says so."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(values, dict):
        raise ConfigError(f"{where}={values!r}: expected a mapping; allowed keys: {_allowed(cls)}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            shown = prefix + str(key)
            raise ConfigError(f"unknown key {shown!r} (value {value!r}); allowed: {_allowed(cls)}")
        kwargs[key] = coerce(value, hints[key], prefix + str(key))
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise ConfigError(
            f"missing key {prefix + missing[0]!r}; required: {', '.join(required)}; "
            f"allowed: {_allowed(cls)}"
        )
    return cls(**kwargs)


def parse_sets(sets: list[str]) -> dict[str, str]:
    """``["a=1", "params.l2=200"]`` → ``{"a": "1", "params.l2": "200"}``."""
    parsed = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def yaml_value(key: str, text: str) -> Any:
    """``--set key=text``'s value read as YAML (``200`` → int, ``true`` → bool, ``[1, 2]`` →
    list); text that is not valid YAML is a `ConfigError` naming the key."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(
            f"--set {key}={text!r}: not a valid value; quote text or write a number, "
            "true/false or a list like [1, 2]"
        ) from None


def load_train_config(spec: Path | None = None, sets: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML spec, then ``--set`` overrides (``params.NAME=V`` for the model)."""
    values: dict[str, Any] = {}
    if spec is not None:
        loaded = read_yaml(spec, "", "", SpecError, "spec file")[0] or {}
        if not isinstance(loaded, dict):
            raise SpecError(f"{spec}: expected a mapping at the top level")
        values.update(loaded)
    for key, value in parse_sets(sets or []).items():
        if key.startswith("params."):
            params = dict(values.get("params") or {})
            params[key.removeprefix("params.")] = yaml_value(key, value)
            values["params"] = params
        else:
            values[key] = value
    config = from_mapping(TrainConfig, values)
    check_models(config)
    return config


def check_models(config: TrainConfig) -> None:
    """The model and baseline names and the model's parameters, checked against the registry
    without importing the other models (or MLflow and Feast): a typo fails in a second."""
    from models.registry import MODELS, make_config

    for key in ("model", "baseline"):
        name = getattr(config, key)
        if name not in MODELS:
            raise ConfigError(f"{key}={name!r}: unknown model; allowed: {', '.join(MODELS)}")
    try:
        make_config(config.model, config.params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"params: {exc}") from None
