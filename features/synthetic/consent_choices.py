"""Consent records of a generated clickstream (issue #12): most people consent, some refuse,
some withdraw midway, so the demo shows both paths.

One banner choice per person at their first event (a registered user on their user id, an
anonymous visitor on their anonymous id), in their country; :data:`WITHDRAW_SHARE` of those who
consented withdraw ``personalization`` and ``marketing`` at a random moment of their activity.
The rows are in the CSV format of :mod:`features.consent.files` (``tailor consent import``).
A random stream of its own (seeded from the data set's seed), so the events do not change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Shares of people by first choice: everything, analytics only, nothing (the rest of 1).
ACCEPT_ALL_SHARE, ANALYTICS_ONLY_SHARE = 0.80, 0.12
#: Share of people who accepted everything and later withdraw personalization and marketing.
WITHDRAW_SHARE = 0.08
COLUMNS = ("user_id", "anonymous_id", "analytics", "personalization", "marketing", "source",
           "timestamp", "recorded_at", "country")  # fmt: skip


def consent_records(events: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The consent rows of the people in ``events`` (columns :data:`COLUMNS`, by time)."""
    rng = np.random.default_rng([seed, 12])
    registered = events["user_id"].notna()
    person = events["user_id"].where(registered, "anon:" + events["anonymous_id"].astype(str))
    frame = pd.DataFrame(
        {"person": person, "timestamp": events["timestamp"], "country": events["country"]}
    )
    spans = frame.groupby("person", sort=True).agg(
        first=("timestamp", "min"), last=("timestamp", "max"), country=("country", "first")
    )
    draw = rng.random(len(spans))
    everything = draw < ACCEPT_ALL_SHARE
    analytics_only = (draw >= ACCEPT_ALL_SHARE) & (draw < ACCEPT_ALL_SHARE + ANALYTICS_ONLY_SHARE)
    withdraw = everything & (rng.random(len(spans)) < WITHDRAW_SHARE)
    moment = rng.random(len(spans))
    rows = []
    for i, (key, span) in enumerate(spans.iterrows()):
        ids = (None, key[5:]) if key.startswith("anon:") else (key, None)
        chosen = span["first"] - pd.Timedelta(seconds=1)
        value = "true" if everything[i] else "false"
        analytics = "true" if everything[i] or analytics_only[i] else "false"
        country = span["country"] if isinstance(span["country"], str) else ""
        rows.append((*ids, analytics, value, value, "banner", chosen, chosen, country))
        if withdraw[i]:
            later = span["first"] + (span["last"] - span["first"]) * moment[i]
            rows.append((*ids, "", "false", "false", "banner", later, later, country))
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in ("timestamp", "recorded_at"):
        out[column] = pd.to_datetime(out[column], utc=True).map(lambda t: t.isoformat())
    return out.sort_values("recorded_at", kind="stable").reset_index(drop=True)
