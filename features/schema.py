"""The event schema: the one contract every source, client and store uses.

One row per event. Validation is row by row with pydantic so that a bad row names its field and
reason and never stops the batch (see :mod:`features.ingest`).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EVENT_TYPES = ("page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "purchase")
DEVICE_TYPES = ("desktop", "mobile", "tablet", "other")
PRODUCT_EVENTS = frozenset({"product_view", "add_to_cart", "remove_from_cart", "purchase"})
QUANTITY_EVENTS = frozenset({"add_to_cart", "remove_from_cart", "purchase"})

EventType = Literal[
    "page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "purchase"
]
DeviceType = Literal["desktop", "mobile", "tablet", "other"]

#: Column order of the event log; ``properties`` is stored as a JSON string.
EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "timestamp",
    "user_id",
    "anonymous_id",
    "session_id",
    "device_type",
    "country",
    "product_id",
    "category",
    "price",
    "quantity",
    "query",
    "page",
    "properties",
)

EVENT_ARROW_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("session_id", pa.string()),
        ("device_type", pa.string()),
        ("country", pa.string()),
        ("product_id", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("quantity", pa.int64()),
        ("query", pa.string()),
        ("page", pa.string()),
        ("properties", pa.string()),
    ]
)


_ID_FIELDS = frozenset({"event_id", "user_id", "anonymous_id", "session_id", "product_id"})


def _blank_to_none(value: Any) -> Any:
    """CSV and pandas give '' or NaN for a missing cell; treat both as missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _from_epoch_ms(millis: float, original: Any) -> datetime:
    try:
        return datetime.fromtimestamp(millis / 1000.0, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"timestamp {original!r} is out of range for epoch milliseconds") from None


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 with a zone, or epoch milliseconds, to an aware UTC datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp has no time zone; give ISO-8601 with a zone or epoch ms")
        return value.astimezone(UTC)
    if isinstance(value, bool):
        raise ValueError(f"timestamp {value!r} is neither ISO-8601 nor epoch milliseconds")
    if isinstance(value, int | float):
        return _from_epoch_ms(float(value), value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return _from_epoch_ms(int(text), value)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not ISO-8601 or epoch ms") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no time zone (add Z or +hh:mm)")
        return parsed.astimezone(UTC)
    raise ValueError(f"timestamp {value!r} is neither ISO-8601 nor epoch milliseconds")


class Event(BaseModel):
    """One behavioural event. Field docs are the public contract (README, OpenAPI)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_id: str = Field(min_length=1, description="Unique id; a repeated id is a duplicate.")
    event_type: EventType
    timestamp: datetime = Field(description="ISO-8601 with zone, or epoch ms; stored as UTC.")
    user_id: str | None = Field(default=None, description="Authenticated user id.")
    anonymous_id: str | None = Field(default=None, description="Device or cookie id.")
    session_id: str = Field(min_length=1)
    device_type: DeviceType = "other"
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2 code.")
    product_id: str | None = None
    category: str | None = None
    price: float | None = Field(default=None, ge=0)
    quantity: int | None = Field(default=None, ge=1)
    query: str | None = None
    page: str | None = None
    properties: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _clean_cells(cls, data: Any) -> Any:
        """One pass over the raw row (cheaper than a validator per field).

        CSV and pandas give '' or NaN for a missing cell: those are dropped so the field's
        default applies (``device_type`` → ``other``) or "Field required" names it. Numeric ids
        from CSV readers become text (``7.0`` → ``"7"``).
        """
        if not isinstance(data, dict):
            return data
        clean = {}
        for key, value in data.items():
            value = _blank_to_none(value)
            if value is None:
                continue
            if key in _ID_FIELDS and not isinstance(value, str | bool):
                if isinstance(value, float) and value.is_integer():
                    value = str(int(value))
                elif isinstance(value, int):
                    value = str(value)
            clean[key] = value
        return clean

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        if value is None:
            raise ValueError("timestamp is required")
        return parse_timestamp(value)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) != 2 or not value.isalpha():
            raise ValueError(f"country {value!r} is not an ISO 3166-1 alpha-2 code such as 'US'")
        return value.upper()

    @field_validator("properties", mode="before")
    @classmethod
    def _properties(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"properties is not a JSON object: {exc.msg}") from None
        return value

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Event:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("one of user_id or anonymous_id is required")
        if self.event_type in PRODUCT_EVENTS:
            if self.product_id is None:
                raise ValueError(f"product_id is required for {self.event_type}")
            if self.price is None:
                raise ValueError(f"price is required for {self.event_type}")
        if self.event_type in QUANTITY_EVENTS and self.quantity is None:
            self.quantity = 1
        if self.event_type == "search" and self.query is None:
            raise ValueError("query is required for search")
        return self

    def to_row(self) -> dict[str, Any]:
        """A flat dict in :data:`EVENT_COLUMNS` order, ready for the Parquet log."""
        row = self.model_dump()
        row["properties"] = None if self.properties is None else json.dumps(self.properties)
        return {column: row[column] for column in EVENT_COLUMNS}
