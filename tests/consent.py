"""Consent records for tests (issue #12): person features are read only with consent."""

from __future__ import annotations

from datetime import datetime

from features.consent.ledger import ConsentLedger
from features.identity.keys import ANON_PREFIX
from features.workspace import Workspace

EVERYTHING = {"analytics": True, "personalization": True, "marketing": True}


def grant(
    ws: Workspace,
    *keys: str,
    purposes: dict[str, bool] | None = None,
    at: datetime | None = None,
) -> None:
    """Record a banner choice (default: every purpose given) for each person key (a user id or
    ``anon:<id>``) in ``ws``'s ledger, at ``at`` (default now)."""
    ledger = ConsentLedger.for_workspace(ws)
    rows = []
    for key in keys:
        ids = {"anonymous_id": key[len(ANON_PREFIX) :]} if key.startswith(ANON_PREFIX) else {}
        rows.append(
            ledger.row(
                user_id=None if ids else key,
                **ids,
                purposes=purposes or EVERYTHING,
                source="banner",
                recorded_at=at,
            )
        )
    ledger.append_many(rows)
