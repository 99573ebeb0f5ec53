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
    """Vectorized :func:`person_key` over an events frame (``user_id``, ``anonymous_id``)."""
    user = events["user_id"]
    anon = ANON_PREFIX + events["anonymous_id"].astype("string")
    keys = user.astype("string").where(user.notna() & (user.astype("string") != ""), anon)
    return keys.astype(object)
