"""Configuration in three layers: dataclass defaults → YAML spec → ``--set key=value``.

:class:`TrainConfig` is a pydantic dataclass (unknown keys forbidden): the YAML spec is read by
:func:`features.yaml_files.read_yaml`, and the spec and the ``--set`` texts are validated by
pydantic's lax mode (``"25"`` → 25 for an int, ``"false"`` → False for a bool), so unknown keys and
wrong types are errors that name the file (or ``--set``), the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import field_validator
from pydantic.dataclasses import dataclass

from features.yaml_files import FILE_CONFIG, read_yaml, reject_bool_numbers, validate
from models.errors import ConfigError

C = TypeVar("C")


@dataclass(frozen=True, config=FILE_CONFIG)
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

    _no_bool_numbers = field_validator("*", mode="before")(reject_bool_numbers)


def parse_sets(sets: list[str]) -> dict[str, str]:
    """``["a=1", "params.l2=200"]`` → ``{"a": "1", "params.l2": "200"}``."""
    parsed = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def load_layers(
    cls: type[C],
    spec: Path | None,
    sets: list[str] | None,
    *,
    what: str = "spec",
    flat: tuple[str, ...] = (),
) -> C:
    """``cls`` from its defaults, then the YAML ``spec``, then ``--set key=value``; each layer is
    validated by ``cls`` (a pydantic model or dataclass), so an error names the layer (the file
    or ``--set``). ``params.NAME=V`` lands in the ``params`` mapping, with V read as YAML.
    ``flat`` names nested sections whose keys are written at the top level (the segment job's
    segmenter settings)."""
    values: dict[str, Any] = {}
    if spec is not None:
        loaded, origin = read_yaml(spec, ConfigError, what)
        if loaded is not None:
            validate(cls, _nest(cls, loaded, flat), ConfigError, origin, flat=flat)
            values.update(loaded)
    if sets:
        for key, value in parse_sets(sets).items():
            if key.startswith("params."):
                params = dict(values.get("params") or {})
                params[key.removeprefix("params.")] = yaml_value(key, value)
                values["params"] = params
            else:
                values[key] = value
    return validate(cls, _nest(cls, values, flat), ConfigError, "--set", flat=flat)


def _nest(cls: type, values: Any, flat: tuple[str, ...]) -> Any:
    """Move the top-level keys of each ``flat`` section into the section."""
    if not flat or not isinstance(values, dict):
        return values
    from features.yaml_files import section_keys

    values = dict(values)
    for section in flat:
        keys = section_keys(cls, section)
        moved = {k: values.pop(k) for k in list(values) if k in keys}
        if moved or section in values:
            given = values.get(section)
            values[section] = {**given, **moved} if isinstance(given, dict) else moved or given
    return values


def load_train_config(spec: Path | None = None, sets: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML spec, then ``--set`` overrides (``params.NAME=V`` for the model)."""
    config = load_layers(TrainConfig, spec, sets, what="train spec")
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


def yaml_value(key: str, text: str) -> Any:
    """``--set key=text``'s value read as YAML (``200`` → int, ``true`` → bool, ``[1, 2]`` →
    list); text that is not valid YAML is a `ConfigError` naming the key."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(
            f"--set {key}={text!r}: not a valid value; quote text or write a number, "
            "true/false or a list like [1, 2]"
        ) from None
