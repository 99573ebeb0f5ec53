"""``experiments/<name>.yaml``: what ``tailor tune`` searches, on which data, judged how.

A spec names the data set, the Feast feature service, the evaluation protocol, the model with its
fixed parameters, the search space, the metric and its direction, the trial budget and the
pruner. The file name (without ``.yaml``) is the MLflow experiment and the Optuna study name.

Everything is checked on load (a pydantic model, unknown keys forbidden), so a typo fails before
any trial runs: an unknown key, a wrong type, an empty search space, a search parameter the model
does not have, a bound of the wrong type or a condition on an unknown parameter each raise
`ConfigError` naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from features.yaml_files import FileModel, Invalid, read_yaml, validate
from models.errors import ConfigError
from models.registry import MODELS, make_config, param_types
from training import lineage
from training.protocols import PROTOCOLS

#: Named data sets; any other value must be an interactions file
#: (``user_id,item_id[,rating][,timestamp]``, CSV or Parquet).
NAMED_DATASETS = ("movielens-100k", "generated")
#: Ranking metrics a study can optimize (``<name>_at_<k>``, as
#: `models.ranking_metrics.ranking_report`).
METRICS = ("ndcg", "precision", "recall", "map", "hit_rate", "mrr", "coverage")


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


class _Param(FileModel):
    """One ``search_space`` entry as written (checked against the model by the spec)."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None
    when: dict[str, Any] = {}


Name = Annotated[str, StringConstraints(min_length=1)]


class _SpecFile(FileModel):
    """The file's keys; the cross-key checks (metric and k, search space and model) run once
    every key is valid on its own."""

    model: str
    search_space: dict[str, _Param]
    dataset: str = "movielens-100k"
    feature_service: Name = "user_profile_v1"
    protocol: Literal[PROTOCOLS] = "msr"
    params: dict[str, Any] = {}
    metric: str = "ndcg_at_10"
    direction: Literal["maximize", "minimize"] = "maximize"
    k: Annotated[int, Field(ge=1)] = 10
    trials: Annotated[int, Field(ge=1)] = 20
    timeout: Annotated[float, Field(gt=0)] | None = None  # seconds; null: no limit
    pruner: Literal["none", "median", "hyperband"] = "median"
    seed: Annotated[int, Field(ge=0)] = 42
    validation_splits: Annotated[int, Field(ge=1)] = 1
    #: Default: ``tailor-recommender`` for the workspace's events (``generated``), else data set +
    #: model (``movielens-100k-ease``): the shop's recommender holds only workspace models.
    registered_model: str = ""
    description: str = ""

    _space: tuple[SearchParam, ...] = PrivateAttr(default=())

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model not in MODELS:
            raise Invalid(f"unknown model; allowed: {', '.join(MODELS)}")
        return model

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, dataset: str, info: ValidationInfo) -> str:
        return _check_dataset(dataset, (info.context or {}).get("path"))

    @field_validator("feature_service")
    @classmethod
    def _not_blank(cls, name: str) -> str:
        if not name.strip():
            raise Invalid("expected a non-empty name")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> _SpecFile:
        try:
            make_config(self.model, self.params)
        except (ValueError, TypeError) as exc:
            raise Invalid(str(exc), "params", self.params) from None
        if self.validation_splits > 1 and self.protocol != "msr":
            raise Invalid(
                f"protocol {self.protocol!r} has one validation part; only 'msr' draws several "
                "(allowed here: 1)",
                "validation_splits",
                self.validation_splits,
            )
        metric_name, _, metric_k = self.metric.rpartition("_at_")
        if metric_name not in METRICS or metric_k != str(self.k):
            allowed = ", ".join(f"{m}_at_{self.k}" for m in METRICS)
            raise Invalid(f"allowed (with k={self.k}): {allowed}", "metric", self.metric)
        self._space = _check_space(self.model, self.params, self.search_space)
        return self


class ExperimentSpec(_SpecFile):
    """A validated tuning spec: the file's keys (defaults in `_SpecFile`) with the search space
    checked against the model; ``name`` is the file stem (experiment and study name)."""

    search_space: tuple[SearchParam, ...] = ()  # type: ignore[assignment]
    name: str = ""
    path: Path | None = None

    @property
    def search_names(self) -> list[str]:
        return [p.name for p in self.search_space]


def load_experiment_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a tuning spec; a `ConfigError` names the file."""
    path = Path(path)
    loaded, _ = read_yaml(path, ConfigError, "tuning spec")
    return parse_experiment_spec(loaded if loaded is not None else {}, path.stem, path)


def parse_experiment_spec(values: Any, name: str, path: Path | None = None) -> ExperimentSpec:
    """Validate an already-parsed mapping (the YAML document) as spec ``name``; a relative
    ``dataset`` file is looked up beside ``path`` too."""
    origin = str(path) if path is not None else name
    checked = validate(_SpecFile, values, ConfigError, origin, context={"path": path})
    label = checked.dataset if checked.dataset in NAMED_DATASETS else Path(checked.dataset).name
    default = lineage.registered_model_name(label, checked.model)
    registered = checked.registered_model.strip() or default
    if registered == lineage.SHOP_MODEL and label not in lineage.WORKSPACE_DATASETS:
        raise ConfigError(
            f"{origin}: key 'registered_model', value {checked.registered_model!r}: "
            f"{lineage.SHOP_MODEL} holds only models trained on the workspace (dataset: "
            f"generated), this spec trains on {label!r}; leave registered_model out (it becomes "
            f"{default!r}) or name another model"
        )
    fields = {key: getattr(checked, key) for key in _SpecFile.model_fields}
    fields.update(
        search_space=checked._space,
        params=dict(checked.params),
        registered_model=registered,
        name=name,
        path=path,
    )
    return ExperimentSpec.model_construct(**fields)


def _check_dataset(dataset: str, path: Path | None) -> str:
    if dataset in NAMED_DATASETS:
        return dataset
    if dataset == "cdnow":
        raise Invalid(
            "CDNOW records purchases without products (every row points at one "
            "pseudo item), so there is nothing to recommend; allowed: "
            f"{', '.join(NAMED_DATASETS)} or an interactions file"
        )
    candidates = [Path(dataset)]
    if path is not None and not Path(dataset).is_absolute():
        candidates.append(path.parent / dataset)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    raise Invalid(
        f"neither a named data set nor an existing file; allowed: "
        f"{', '.join(NAMED_DATASETS)} or a path to an interactions file "
        "(user_id,item_id[,rating][,timestamp], CSV or Parquet)"
    )


def _check_space(model: str, fixed: dict[str, Any], space: dict[str, _Param]) -> tuple:
    model_params = param_types(model)
    if not space:
        raise Invalid(
            f"empty; name at least one parameter of {model}: {', '.join(model_params)}",
            "search_space",
            {},
        )
    parsed: list[SearchParam] = []
    for name, raw in space.items():
        where = ("search_space", name)
        if name not in model_params:
            raise Invalid(
                f"{model} has no parameter {name!r}; allowed: {', '.join(model_params)}", where
            )
        if name in fixed:
            raise Invalid(
                f"also fixed in params ({name}={fixed[name]!r}); a parameter is either fixed "
                "or searched",
                where,
            )
        param = _check_param(model, fixed, name, raw, where)
        _check_conditions(param, parsed, where)
        parsed.append(param)
    return tuple(parsed)


def _check_value(model: str, fixed: dict[str, Any], name: str, value: Any, where: tuple) -> Any:
    """``value`` as model ``name``'s config would store it, or Invalid at ``where``."""
    try:
        config = make_config(model, {**fixed, name: value})
    except (ValueError, TypeError) as exc:
        raise Invalid(f"not a valid {model} {name}: {exc}", where, value) from None
    return getattr(config, name)


def _check_param(
    model: str, fixed: dict[str, Any], name: str, raw: _Param, where: tuple
) -> SearchParam:
    numeric_keys = {"low": raw.low, "high": raw.high, "step": raw.step}
    if raw.type == "categorical":
        extra = [k for k, v in numeric_keys.items() if v is not None] + (["log"] * raw.log)
        if extra:
            raise Invalid(
                "not used by a categorical parameter; allowed: choices, when",
                (*where, extra[0]),
                getattr(raw, extra[0]),
            )
        if not raw.choices:
            raise Invalid("expected a non-empty list", (*where, "choices"), raw.choices)
        for i, value in enumerate(raw.choices):
            _check_value(model, fixed, name, value, (*where, "choices", i))
        return SearchParam(
            name=name, type="categorical", choices=tuple(raw.choices), when=_when(raw.when)
        )
    if raw.choices is not None:
        raise Invalid(
            f"only for type categorical; a {raw.type} parameter takes low, high, log, step",
            (*where, "choices"),
            raw.choices,
        )
    for key in ("low", "high"):
        if numeric_keys[key] is None:
            raise Invalid(f"required for a {raw.type} parameter", (*where, key))
    low, high, step = raw.low, raw.high, raw.step
    if raw.type == "int":
        for key, value in numeric_keys.items():
            if value is not None and not float(value).is_integer():
                raise Invalid("expected an integer for type int", (*where, key), value)
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise Invalid(f"expected finite low < high, got low={low!r}, high={high!r}", where)
    if raw.log and low <= 0:
        raise Invalid("a log scale needs low > 0", (*where, "low"), low)
    if raw.log and step is not None:
        raise Invalid("step and log cannot be combined", (*where, "step"), step)
    if step is not None and not step > 0:
        raise Invalid("expected step > 0", (*where, "step"), step)
    for key, value in (("low", low), ("high", high)):
        _check_value(model, fixed, name, value, (*where, key))
    return SearchParam(
        name=name, type=raw.type, low=low, high=high, log=raw.log, step=step, when=_when(raw.when)
    )


def _when(when: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        str(name): tuple(values) if isinstance(values, list) else (values,)
        for name, values in when.items()
    }


def _check_conditions(param: SearchParam, earlier: list[SearchParam], where: tuple) -> None:
    by_name = {p.name: p for p in earlier}
    for other, values in param.when.items():
        key = (*where, "when", other)
        if other not in by_name:
            raise Invalid(
                f"a condition must name a categorical parameter listed before {param.name}; "
                f"allowed: "
                f"{', '.join(p.name for p in earlier if p.type == 'categorical') or 'none'}",
                key,
            )
        target = by_name[other]
        if target.type != "categorical":
            raise Invalid(f"{other} is {target.type}; conditions need a categorical parameter", key)
        unknown = [v for v in values if v not in target.choices]
        if unknown:
            raise Invalid(f"not one of {other}'s choices {list(target.choices)}", key, unknown[0])
