"""Events as the collectors publish them (JSON bodies in the event schema), for broker tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from features.eventlog import EventLog


def event_messages(count: int, prefix: str = "e") -> list[tuple[str, bytes]]:
    """``count`` distinct valid events as ``(event_id, body)``, spread over a few users."""
    start = datetime.now(UTC) - timedelta(hours=1)
    messages = []
    for i in range(count):
        event_id = f"{prefix}{i:06d}"
        event = {
            "event_id": event_id,
            "event_type": "product_view",
            "timestamp": (start + timedelta(milliseconds=i)).isoformat(),
            "user_id": f"u{i % 97}",
            "session_id": f"s{i % 211}",
            "product_id": f"p{i % 301}",
            "category": f"c{i % 7}",
            "price": float(1 + i % 50),
        }
        messages.append((event_id, json.dumps(event).encode()))
    return messages


def log_ids(log: EventLog) -> list[str]:
    """Every row's event_id in the log, duplicates included (read from the Parquet parts)."""
    return EventLog(log.root).read(columns=["event_id"])["event_id"].tolist()
