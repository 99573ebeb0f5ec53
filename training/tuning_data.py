"""What a tuning study fits and scores: the nested splits and their evaluation sets.

The outer split is the protocol's; trials fit on an inner train part and are scored on a
validation part carved from the outer train part (`tuning_splits`), so choosing never sees the
outer test part. Kept apart from `training.tune` because nothing here needs Optuna.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.workspace import Workspace
from models.base import Recommender
from models.registry import SEQUENTIAL, build
from training.benchmark import load_frame, ordered, side_features, with_features
from training.metrics import ranking_report
from training.protocols import (
    EvalSet,
    Split,
    leave_last_out,
    msr_split,
    recbole_split,
    temporal_global_split,
    to_eval,
)
from training.spec import ExperimentSpec

#: Seed of the inner split (``msr``): another seed than the outer split's 42.
INNER_SEED = 7


@dataclass(frozen=True)
class TuneData:
    """``validation``: inner train → validation part (for choosing). ``test``: outer train
    (train + validation) → test part (scored once). Frames are the rows behind them.
    ``more_validation``: the other inner splits of a spec with ``validation_splits > 1`` (seeds
    ``INNER_SEED + 1, ...``); a trial's value is then the mean over all of them."""

    frame: pd.DataFrame
    validation: EvalSet
    test: EvalSet
    outer_train: pd.DataFrame
    outer_test: pd.DataFrame
    item_categories: np.ndarray
    more_validation: tuple[EvalSet, ...] = ()


def tuning_splits(
    frame: pd.DataFrame, protocol: str, inner_seed: int = INNER_SEED
) -> tuple[Split, Split]:
    """``(inner, outer)``: the inner split's ``test`` part is the validation part and its
    rows are all in the outer split's ``train`` part; the outer ``test`` part is never in inner.
    ``inner_seed`` draws another inner split (``msr`` only; the others have one)."""
    if protocol == "msr":
        outer = msr_split(frame, ratio=0.75, seed=42)
        return msr_split(outer.train, ratio=0.75, seed=inner_seed), outer
    if protocol == "temporal":
        outer = temporal_global_split(frame, test_fraction=0.2)
        return temporal_global_split(outer.train, test_fraction=0.2), outer
    if protocol == "recbole":
        full = recbole_split(frame, ratios=(0.8, 0.1, 0.1))
    elif protocol == "leave-last-out":
        full = leave_last_out(frame, n_valid=1)
    else:
        raise ValueError(
            f"unknown protocol {protocol!r}; allowed: msr, recbole, temporal, leave-last-out"
        )
    inner = Split(train=full.train, test=full.valid, name=full.name, params=full.params)
    outer_train = pd.concat([full.train, full.valid]).sort_index()
    outer = Split(train=outer_train, test=full.test, name=full.name, params=full.params)
    return inner, outer


def prepare_data(spec: ExperimentSpec, ws: Workspace) -> TuneData:
    frame = load_frame(spec.dataset, ws)
    inner, outer = tuning_splits(frame, spec.protocol)
    weight_col = "weight" if "weight" in frame.columns else None
    inners = [inner] + [
        tuning_splits(frame, spec.protocol, INNER_SEED + i)[0]
        for i in range(1, spec.validation_splits)
    ]
    validations = [to_eval(split, weight_col=weight_col) for split in inners]
    test = to_eval(outer, weight_col=weight_col)
    if spec.dataset == "movielens-100k":
        # Attributes known before the split (demographics, genres), as in `tailor benchmark`.
        users, items = side_features(spec.dataset, ws)
        validations = [with_features(v, users, items) for v in validations]
        test = with_features(test, users, items)
        genres = items["genres"].reindex(list(test.train.items.ids)).fillna("")
        categories = np.array([g.split("|")[0] or "unknown" for g in genres], dtype=object)
    elif "category" in frame.columns:
        latest = outer.train.groupby("item_id")["category"].last()
        categories = np.array(
            [str(latest.get(i) or "unknown") for i in test.train.items.ids], dtype=object
        )
    else:
        categories = np.full(test.train.n_items, "unknown", dtype=object)
    if spec.model in SEQUENTIAL:
        validations = [
            ordered(v, split.train) for v, split in zip(validations, inners, strict=True)
        ]
        test = ordered(test, outer.train)
    return TuneData(
        frame=frame,
        validation=validations[0],
        test=test,
        outer_train=outer.train,
        outer_test=outer.test,
        item_categories=categories,
        more_validation=tuple(validations[1:]),
    )


def fit_and_score(
    name: str,
    params: dict[str, Any],
    evalset: EvalSet,
    k: int,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
) -> tuple[Recommender, dict[str, float]]:
    """Fit model ``name`` on ``evalset.train`` and rank k unseen items for its test users."""
    model = build(name, params)
    started = time.perf_counter()
    model.fit(evalset.train, callback=callback)
    fit_seconds = time.perf_counter() - started
    users = evalset.test_users
    recommended, _ = model.recommend(users, evalset.train.matrix[users], k=k, exclude_seen=True)
    report = ranking_report(recommended, evalset.relevant, evalset.train.n_items, k)
    return model, {**report, "fit_seconds": fit_seconds}
