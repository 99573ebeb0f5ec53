"""What a tuning study fits and scores: the nested splits and their evaluation sets.

The outer split is the protocol's; trials fit on an inner train part and are scored on a
validation part carved from the outer train part (`tuning_splits`), so choosing never sees the
outer test part. Kept apart from `training.tune.study` because nothing here needs Optuna; trials are
fitted and scored by `training.evaluate.fit_and_score`, as every other evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.workspace import Workspace
from models.registry import SEQUENTIAL
from training.benchmark import load_frame, ordered, side_features, with_features
from training.protocols import (
    EvalSet,
    Split,
    msr_split,
    protocol_split,
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
    full = protocol_split(frame, protocol)
    if protocol == "msr":
        return msr_split(full.train, ratio=0.75, seed=inner_seed), full
    if protocol == "temporal":
        return temporal_global_split(full.train, test_fraction=0.2), full
    # recbole and leave-last-out have a validation part of their own
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
