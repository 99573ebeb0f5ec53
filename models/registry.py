"""The explicit model registry: name -> (config class, model class), and building by name.

Adding a model means adding one entry (a loader) to `MODELS`; the contract test suite then
covers it. Each entry imports its model's module on first use, so naming a model or checking
one model's parameters (``tailor train --set params.l2=...``) does not import torch for the
neural models.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from models.base import Recommender
from models.storage import read_saved_meta

Entry = tuple[type, type[Recommender]]


def _popularity() -> Entry:
    from models.popularity import Popularity, PopularityConfig

    return PopularityConfig, Popularity


def _ease() -> Entry:
    from models.ease import EASE, EASEConfig

    return EASEConfig, EASE


def _user_ease() -> Entry:
    from models.ease import UserEASE, UserEASEConfig

    return UserEASEConfig, UserEASE


def _user_knn() -> Entry:
    from models.knn import UserKNN
    from models.knn_similarity import UserKNNConfig

    return UserKNNConfig, UserKNN


def _item_knn() -> Entry:
    from models.knn import ItemKNN
    from models.knn_similarity import ItemKNNConfig

    return ItemKNNConfig, ItemKNN


def _ials() -> Entry:
    from models.als import IALS, IALSConfig

    return IALSConfig, IALS


def _bpr() -> Entry:
    from models.bpr import BPR, BPRConfig

    return BPRConfig, BPR


def _ncf() -> Entry:
    from models.ncf import NCF, NCFConfig

    return NCFConfig, NCF


def _two_tower() -> Entry:
    from models.two_tower import TwoTower, TwoTowerConfig

    return TwoTowerConfig, TwoTower


def _sasrec() -> Entry:
    from models.sasrec import SASRec, SASRecConfig

    return SASRecConfig, SASRec


class _Registry(Mapping[str, Entry]):
    """A read-only ``name -> (config class, model class)`` mapping that calls an entry's loader
    the first time the entry is read; names, ``in`` and ``len`` import nothing."""

    def __init__(self, loaders: dict[str, Callable[[], Entry]]) -> None:
        self._loaders = loaders
        self._loaded: dict[str, Entry] = {}

    def __getitem__(self, name: str) -> Entry:
        if name not in self._loaded:
            self._loaded[name] = self._loaders[name]()
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


MODELS: Mapping[str, Entry] = _Registry(
    {
        "popularity": _popularity,
        "ease": _ease,
        "user_ease": _user_ease,
        "user_knn": _user_knn,
        "item_knn": _item_knn,
        "ials": _ials,
        "bpr": _bpr,
        "ncf": _ncf,
        "two_tower": _two_tower,
        "sasrec": _sasrec,
    }
)

#: Models that read the order of a history from the matrix values (positions 1..n by time);
#: build their inputs with ``models.sasrec.sequence_matrix``.
SEQUENTIAL = frozenset({"sasrec"})


def _lookup(name: str) -> tuple[type, type[Recommender]]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(value) for value in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def param_types(name: str) -> dict[str, Any]:
    """Parameter name -> type hint for model ``name``'s config, in field order."""
    config_class, _ = _lookup(name)
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class) if f.init}


def _describe(name: str) -> str:
    return ", ".join(f"{key}: {_type_name(hint)}" for key, hint in param_types(name).items())


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(matches, value): ``value`` checked against ``hint``; ints are accepted as floats."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        matches = any(type(value) is type(a) and value == a for a in allowed)
        return matches, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            matches, coerced = _coerce(value, arg)
            if matches:
                return True, coerced
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # hints we cannot check (e.g. parametrized generics) pass through


def make_config(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """Model ``name``'s config: dataclass defaults overridden by ``params``.

    Raises ``ValueError`` for an unknown model, an unknown parameter or a value of the wrong
    type, naming the offending key and the allowed ``key: type`` pairs.
    """
    config_class, _ = _lookup(name)
    types_by_key = param_types(name)
    values: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if key not in types_by_key:
            raise ValueError(
                f"{name}: unknown parameter {key!r}; allowed parameters: {_describe(name)}"
            )
        matches, coerced = _coerce(value, types_by_key[key])
        if not matches:
            raise ValueError(
                f"{name}: parameter {key!r} must be {_type_name(types_by_key[key])}, "
                f"got {type(value).__name__} {value!r}; allowed parameters: {_describe(name)}"
            )
        values[key] = coerced
    return config_class(**values)


def build(name: str, params: Mapping[str, Any] | None = None) -> Recommender:
    """An unfitted model ``name`` with its config built from ``params`` (see `make_config`)."""
    _, model_class = _lookup(name)
    return model_class(make_config(name, params))


def load_model(directory: str | Path) -> Recommender:
    """Load any registered model saved with `Recommender.save`, by the name in config.json."""
    meta = read_saved_meta(directory)
    _, model_class = _lookup(meta["model"])
    return model_class.load(directory)
