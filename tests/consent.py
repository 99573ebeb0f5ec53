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


def allow_until_refused(ws: Workspace) -> None:
    """Give ``ws`` its own consent policy whose default regime is opt-out (the packaged policy
    otherwise): people without any record may be personalized until they refuse. For tests of
    the read and push mechanics, whose people have no consent record."""
    import yaml

    from features.consent.policy import WORKSPACE_FILE, load_policy

    policy = load_policy().model_dump(mode="json")
    policy["default_regime"] = "opt-out"
    ws.home.mkdir(parents=True, exist_ok=True)
    (ws.home / WORKSPACE_FILE).write_text(yaml.safe_dump(policy), encoding="utf-8")
