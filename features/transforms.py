"""Point-in-time user and item features from the event log, as snapshots at given as-of times.

Each snapshot is one row per entity with ``event_timestamp`` (and ``created``) equal to the as-of
time ``T``, which is what a Feast feature view joins on. A row at ``T`` uses only events with
``timestamp < T`` (strictly before), so training never sees the future. A window of ``w`` days is
the half-open interval ``[T - w days, T)``: an event exactly ``w`` days old still counts.

Everything is vectorised: events are factorised to integer codes once and each snapshot is a few
``groupby`` calls over a timestamp-sorted slice; there are no per-user Python loops. Outputs are
dense (no NaN) because online stores and models need a value for every feature; where a feature
has no data the fill value is documented in its description.

This module is the entry point; the column declarations live in :mod:`features.feature_specs`,
the shared event preparation in :mod:`features.snapshots.core` and the per-entity snapshots in
:mod:`features.snapshots.users` and :mod:`features.snapshots.items`. All of them are plain pandas
and must not import Feast (see ``feature_repo/`` for declarations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from features.feature_specs import (
    ITEM_FEATURES,
    USER_FEATURES,
)
from features.identity.keys import person_keys
from features.snapshots.core import as_of_times, finish, prepare, utc_ns
from features.snapshots.items import item_snapshot
from features.snapshots.users import user_snapshot

__all__ = [
    "item_features",
    "person_key",
    "snapshot_times",
    "user_features",
]


def person_key(events: pd.DataFrame) -> pd.Series:
    """The user entity key per event; see :func:`features.identity.keys.person_keys`."""
    return person_keys(events)


def snapshot_times(events: pd.DataFrame, freq: str = "7D") -> list[pd.Timestamp]:
    """As-of times covering the log: every ``freq`` after the first event's UTC day, plus the end.

    Starts one ``freq`` after midnight of the first event day (that midnight itself would be an
    empty snapshot) and always ends with midnight after the last event day, so the final snapshot
    sees every event. Returns UTC timestamps (ns); ``[]`` for an empty log.
    """
    try:
        step = pd.to_timedelta(freq)
    except ValueError:
        raise ValueError(
            f"freq {freq!r} is not a fixed duration such as '1D', '7D' or '12h'"
        ) from None
    if step <= pd.Timedelta(0):
        raise ValueError(f"freq {freq!r} must be a positive duration")
    if events.empty:
        return []
    ts = pd.to_datetime(utc_ns(events["timestamp"]), utc=True)
    start = ts.min().floor("D")
    end = ts.max().floor("D") + pd.Timedelta(days=1)
    times = [t.as_unit("ns") for t in pd.date_range(start + step, end, freq=step)]
    if not times or times[-1] != end:
        times.append(end.as_unit("ns"))
    return times


def user_features(
    events: pd.DataFrame,
    as_of: Sequence[pd.Timestamp],
    resolve: Callable[[pd.DataFrame], pd.Series] | None = None,
) -> pd.DataFrame:
    """User feature snapshots: one row per (user, as-of) for users active in the last 30 days.

    Columns: ``user_id`` (see :func:`person_key`; ``resolve``'s key when given, e.g. the
    identity graph's canonical key), ``event_timestamp`` and ``created`` (both the
    as-of time, datetime64[ns, UTC]), then :data:`USER_FEATURES` in order with their dtypes.
    Rows are sorted by (event_timestamp, user_id).
    """
    prep = prepare(events, resolve)
    parts = [user_snapshot(prep, t) for t in as_of_times(as_of)]
    return finish(parts, "user_id", USER_FEATURES)


def item_features(events: pd.DataFrame, as_of: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """Item feature snapshots: one row per (item, as-of) for items with an event in the last 30d.

    Columns: ``item_id``, ``event_timestamp``, ``created``, then :data:`ITEM_FEATURES` in order.
    """
    prep = prepare(events)
    parts = [item_snapshot(prep, t) for t in as_of_times(as_of)]
    return finish(parts, "item_id", ITEM_FEATURES)
