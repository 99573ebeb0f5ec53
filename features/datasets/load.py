"""Real public data sets, fetched offline from PyPI wheels and loaded into one shape.

Only package registries are reachable from Tailor's build machines, so the data sets come out of
wheels that ship them: MovieLens-100K from ``recbole==1.2.1`` (RecBole "atomic files") and CDNOW
from ``lifetimes==0.11.3``. :func:`fetch` runs ``pip download`` for the wheel (never installs it),
copies the data files into ``<raw_dir>/<name>/`` and leaves them there as a cache. The original
GroupLens files (``u.data``, ``u.user``, ``u.item``) load too, through
:func:`load_movielens_grouplens`; copied into ``<raw_dir>/movielens-100k/`` they stand in for the
download. Both MovieLens formats give the same ids (users ``"1".."943"``, items ``"1".."1682"``)
and identical interactions.

Malformed input raises :class:`DatasetFormatError` naming the file, the line and the reason; a
failed download raises :class:`DatasetFetchError` with pip's output and how to supply the files
by hand.

This module is the entry point (:func:`load`, :func:`movielens_file_order`); fetching lives in
:mod:`features.datasets.fetch`, the parsers in :mod:`features.datasets.movielens` and
:mod:`features.datasets.cdnow` (on the shared :mod:`features.datasets.text` helpers) and the
result type and errors in :mod:`features.datasets.types`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.datasets.cdnow import CDNOW_FILE, load_cdnow
from features.datasets.fetch import fetch
from features.datasets.movielens import (
    GROUPLENS_FILES,
    load_movielens_grouplens,
    load_movielens_recbole,
)
from features.datasets.types import (
    DatasetFormatError,
    RatingsDataset,
)

__all__ = [
    "load",
    "movielens_file_order",
]


def load(name: str, raw_dir: Path) -> RatingsDataset:
    """Fetch data set ``name`` if it is not cached yet, then load it.

    For MovieLens, GroupLens files in the cache folder (supplied by hand) are read in preference
    to the wheel's RecBole files; both give the same frames.
    """
    folder = fetch(name, raw_dir)
    if name == "cdnow":
        return load_cdnow(folder / CDNOW_FILE)
    if all((folder / f).is_file() for f in GROUPLENS_FILES):
        return load_movielens_grouplens(folder)  # files the user supplied win over the wheel's
    return load_movielens_recbole(folder)


def movielens_file_order(raw_dir: Path) -> pd.DataFrame:
    """MovieLens-100K interactions in the source file's row order (``u.data`` order).

    :func:`load` sorts by (user, time, item); protocols that draw one random number per row in
    file order, like the Microsoft Recommenders stratified split, need the original order.
    """
    dataset = load("movielens-100k", raw_dir)
    folder = Path(raw_dir) / "movielens-100k"
    grouplens = folder / "u.data"
    if grouplens.exists():
        keys = pd.read_csv(grouplens, sep="\t", header=None, usecols=[0, 1], dtype=str)
    else:
        keys = pd.read_csv(folder / "ml-100k.inter", sep="\t", usecols=[0, 1], dtype=str)
    keys.columns = ["user_id", "item_id"]
    indexed = dataset.interactions.set_index(["user_id", "item_id"])
    if not indexed.index.is_unique or len(keys) != len(indexed):
        raise DatasetFormatError(f"{folder}: cannot restore file order (duplicate or missing rows)")
    ordered = indexed.loc[pd.MultiIndex.from_frame(keys)].reset_index()
    return ordered.loc[:, list(dataset.interactions.columns)]
