"""The one module ids flow through.

External ids arrive as text (user ids, anonymous device ids, product ids). The person key used by
features, Feast and serving is the user id when known, else ``anon:<anonymous_id>``. Identity
stitching and keyed pseudonyms will be added here, so every caller gets them at once.
"""

from __future__ import annotations

import pandas as pd

ANON_PREFIX = "anon:"


def person_key(user_id: str | None, anonymous_id: str | None) -> str:
    """The entity key of one person; raises when both ids are missing."""
    if user_id:
        return str(user_id)
    if anonymous_id:
        return ANON_PREFIX + str(anonymous_id)
    raise ValueError("one of user_id or anonymous_id is required")


def person_keys(events: pd.DataFrame) -> pd.Series:
    """Vectorized :func:`person_key` over an events frame (``user_id``, ``anonymous_id``).

    Returns an object Series of str aligned with ``events`` (name ``user_id``); a blank id counts
    as missing, and a row with neither id raises ``ValueError`` with the count and the first row.
    """
    user = events["user_id"].astype(object)
    anon = events["anonymous_id"].astype(object)
    has_user = user.notna() & user.ne("")
    has_anon = anon.notna() & anon.ne("")
    missing = ~has_user & ~has_anon
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} events have neither user_id nor anonymous_id"
            f" (first at index {events.index[missing.to_numpy()][0]!r})"
        )
    key = user.where(has_user, ANON_PREFIX + anon.where(has_anon, "").astype(str))
    return key.astype(str).astype(object).rename("user_id")
