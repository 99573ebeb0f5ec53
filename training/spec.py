"""``experiments/<name>.yaml``: what ``tailor tune`` searches, on which data, judged how.

A spec names the data set, the Feast feature service, the evaluation protocol, the model with its
fixed parameters, the search space, the metric and its direction, the trial budget and the
pruner. The file name (without ``.yaml``) is the MLflow experiment and the Optuna study name.

Everything is checked on load, so a typo fails before any trial runs: an unknown key, a wrong
type, an empty search space, a search parameter the model does not have, a bound of the wrong
type or a condition on an unknown parameter each raise `ConfigError` naming the key, the value
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from features.yaml_files import read_yaml
from models.errors import ConfigError, SpecError
from models.registry import MODELS, make_config, param_types
from training.config import from_mapping

PROTOCOLS = ("msr", "recbole", "temporal", "leave-last-out")
#: Named data sets; any other value must be an interactions file
#: (``user_id,item_id[,rating][,timestamp]``, CSV or Parquet).
NAMED_DATASETS = ("movielens-100k", "generated")
#: Ranking metrics a study can optimize (``<name>_at_<k>``, as `training.metrics.ranking_report`).
METRICS = ("ndcg", "precision", "recall", "map", "hit_rate", "mrr", "coverage")
PARAM_TYPES = ("float", "int", "categorical")
PRUNERS = ("none", "median", "hyperband")


@dataclass(frozen=True)
class SearchParam:
    """One dimension of the search space.

    ``float`` / ``int``: ``low`` ≤ value ≤ ``high``, sampled on a log scale with ``log`` or on a
    grid of ``step``. ``categorical``: one of ``choices``. ``when``: sample this parameter only
    when every named (earlier, categorical) parameter took one of the listed values; otherwise the
    model keeps its fixed or default value.
    """

    name: str
    type: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def active(self, chosen: dict[str, Any]) -> bool:
        """Whether the conditions hold for the values ``chosen`` so far."""
        return all(name in chosen and chosen[name] in values for name, values in self.when.items())


@dataclass(frozen=True)
class _RawSpec:
    """The YAML's top level, before the cross-field checks (types as written in the file)."""

    model: str
    search_space: dict[str, Any]
    dataset: str = "movielens-100k"
    feature_service: str = "user_profile_v1"
    protocol: str = "msr"
    params: dict[str, Any] = field(default_factory=dict)
    metric: str = "ndcg_at_10"
    direction: Literal["maximize", "minimize"] = "maximize"
    k: int = 10
    trials: int = 20
    timeout: float | None = None
    pruner: Literal["none", "median", "hyperband"] = "median"
    seed: int = 42
    validation_splits: int = 1
    registered_model: str = "tailor-recommender"
    description: str = ""


@dataclass(frozen=True)
class ExperimentSpec(_RawSpec):
    """A validated tuning spec: the file's keys (defaults in `_RawSpec`) with the search space
    checked against the model; ``name`` is the file stem (experiment and study name)."""

    search_space: tuple[SearchParam, ...] = ()
    name: str = ""
    path: Path | None = None

    @property
    def search_names(self) -> list[str]:
        return [p.name for p in self.search_space]


@dataclass(frozen=True)
class _RawParam:
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None
    when: dict[str, Any] = field(default_factory=dict)


def load_experiment_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a tuning spec; raises `ConfigError` prefixed with the file name."""
    path = Path(path)
    loaded, _ = read_yaml(path, "", "", SpecError, "spec file")
    try:
        return parse_experiment_spec(loaded if loaded is not None else {}, path.stem, path)
    except ConfigError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_experiment_spec(values: Any, name: str, path: Path | None = None) -> ExperimentSpec:
    """Validate an already-parsed mapping (the YAML document) as spec ``name``."""
    raw = from_mapping(_RawSpec, values)
    if raw.model not in MODELS:
        raise ConfigError(f"model={raw.model!r}: unknown model; allowed: {', '.join(MODELS)}")
    try:
        make_config(raw.model, raw.params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"params={raw.params!r}: {exc}") from exc
    dataset = _check_dataset(raw.dataset, path)
    if raw.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={raw.protocol!r}: allowed values are {', '.join(PROTOCOLS)}")
    _check_positive("k", raw.k)
    _check_positive("trials", raw.trials)
    _check_positive("validation_splits", raw.validation_splits)
    if raw.validation_splits > 1 and raw.protocol != "msr":
        raise ConfigError(
            f"validation_splits={raw.validation_splits!r}: protocol {raw.protocol!r} has one "
            "validation part; only 'msr' draws several (allowed here: 1)"
        )
    if raw.timeout is not None and not raw.timeout > 0:
        raise ConfigError(f"timeout={raw.timeout!r}: expected seconds > 0 or null (no limit)")
    if raw.seed < 0:
        raise ConfigError(f"seed={raw.seed!r}: expected an integer >= 0")
    metric_name, _, metric_k = raw.metric.rpartition("_at_")
    if metric_name not in METRICS or metric_k != str(raw.k):
        allowed = ", ".join(f"{m}_at_{raw.k}" for m in METRICS)
        raise ConfigError(f"metric={raw.metric!r}: allowed values (with k={raw.k}) are {allowed}")
    for key in ("feature_service", "registered_model"):
        if not getattr(raw, key).strip():
            raise ConfigError(f"{key}={getattr(raw, key)!r}: expected a non-empty name")
    space = _check_space(raw.model, raw.params, raw.search_space)
    written = {f.name: getattr(raw, f.name) for f in dataclasses.fields(_RawSpec)}
    checked = {"search_space": space, "dataset": dataset, "params": dict(raw.params)}
    return ExperimentSpec(**{**written, **checked}, name=name, path=path)


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key}={value!r}: expected an integer >= 1")


def _check_dataset(dataset: str, path: Path | None) -> str:
    if dataset in NAMED_DATASETS:
        return dataset
    if dataset == "cdnow":
        raise ConfigError(
            "dataset='cdnow': CDNOW records purchases without products (every row points at one "
            "pseudo item), so there is nothing to recommend; allowed: "
            f"{', '.join(NAMED_DATASETS)} or an interactions file"
        )
    candidates = [Path(dataset)]
    if path is not None and not Path(dataset).is_absolute():
        candidates.append(path.parent / dataset)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    raise ConfigError(
        f"dataset={dataset!r}: neither a named data set nor an existing file; allowed: "
        f"{', '.join(NAMED_DATASETS)} or a path to an interactions file "
        "(user_id,item_id[,rating][,timestamp], CSV or Parquet)"
    )


def _check_space(model: str, fixed: dict[str, Any], space: dict[str, Any]) -> tuple:
    model_params = param_types(model)
    if not space:
        raise ConfigError(
            f"search_space={space!r}: empty; name at least one parameter of {model}: "
            f"{', '.join(model_params)}"
        )
    parsed: list[SearchParam] = []
    for name, body in space.items():
        prefix = f"search_space.{name}."
        if name not in model_params:
            raise ConfigError(
                f"search_space.{name}: {model} has no parameter {name!r}; allowed: "
                f"{', '.join(model_params)}"
            )
        if name in fixed:
            raise ConfigError(
                f"search_space.{name}: also fixed in params ({name}={fixed[name]!r}); "
                "a parameter is either fixed or searched"
            )
        raw = from_mapping(_RawParam, body, prefix=prefix)
        param = _check_param(model, fixed, name, raw, prefix)
        _check_conditions(param, parsed, prefix)
        parsed.append(param)
    return tuple(parsed)


def _check_value(model: str, fixed: dict[str, Any], name: str, value: Any, key: str) -> Any:
    """``value`` as model ``name``'s config would store it, or a ConfigError naming ``key``."""
    try:
        config = make_config(model, {**fixed, name: value})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key}={value!r}: not a valid {model} {name}: {exc}") from exc
    return getattr(config, name)


def _check_param(
    model: str, fixed: dict[str, Any], name: str, raw: _RawParam, prefix: str
) -> SearchParam:
    numeric_keys = {"low": raw.low, "high": raw.high, "step": raw.step}
    if raw.type == "categorical":
        extra = [k for k, v in numeric_keys.items() if v is not None] + (["log"] * raw.log)
        if extra:
            raise ConfigError(
                f"{prefix}{extra[0]}: not used by a categorical parameter; allowed: choices, when"
            )
        if not isinstance(raw.choices, list) or not raw.choices:
            raise ConfigError(f"{prefix}choices={raw.choices!r}: expected a non-empty list")
        for value in raw.choices:
            _check_value(model, fixed, name, value, f"{prefix}choices")
        return SearchParam(
            name=name, type="categorical", choices=tuple(raw.choices), when=_when(raw.when)
        )
    if raw.choices is not None:
        raise ConfigError(
            f"{prefix}choices={raw.choices!r}: only for type categorical; a {raw.type} "
            "parameter takes low, high, log, step"
        )
    for key in ("low", "high"):
        if numeric_keys[key] is None:
            raise ConfigError(f"{prefix}{key}: required for a {raw.type} parameter")
    low, high, step = raw.low, raw.high, raw.step
    if raw.type == "int":
        for key, value in numeric_keys.items():
            if value is not None and not float(value).is_integer():
                raise ConfigError(f"{prefix}{key}={value!r}: expected an integer for type int")
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"{prefix}low={low!r}, high={high!r}: expected finite low < high")
    if raw.log and low <= 0:
        raise ConfigError(f"{prefix}low={low!r}: a log scale needs low > 0")
    if raw.log and step is not None:
        raise ConfigError(f"{prefix}step={step!r}: step and log cannot be combined")
    if step is not None and not step > 0:
        raise ConfigError(f"{prefix}step={step!r}: expected step > 0")
    for key, value in (("low", low), ("high", high)):
        _check_value(model, fixed, name, value, prefix + key)
    return SearchParam(
        name=name, type=raw.type, low=low, high=high, log=raw.log, step=step, when=_when(raw.when)
    )


def _when(when: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        str(name): tuple(values) if isinstance(values, list) else (values,)
        for name, values in when.items()
    }


def _check_conditions(param: SearchParam, earlier: list[SearchParam], prefix: str) -> None:
    by_name = {p.name: p for p in earlier}
    for other, values in param.when.items():
        if other not in by_name:
            raise ConfigError(
                f"{prefix}when.{other}: a condition must name a categorical parameter listed "
                f"before {param.name}; allowed: "
                f"{', '.join(p.name for p in earlier if p.type == 'categorical') or 'none'}"
            )
        target = by_name[other]
        if target.type != "categorical":
            raise ConfigError(
                f"{prefix}when.{other}: {other} is {target.type}; conditions need a categorical "
                "parameter"
            )
        unknown = [v for v in values if v not in target.choices]
        if unknown:
            raise ConfigError(
                f"{prefix}when.{other}={unknown[0]!r}: not one of {other}'s choices "
                f"{list(target.choices)}"
            )
