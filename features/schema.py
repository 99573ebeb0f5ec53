"""The event schema: the one contract every source, client and store uses.

One row per event. Validation is row by row with pydantic so that a bad row names its field and
reason and never stops the batch (see :mod:`features.ingest`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

#: ``identify`` (last, so generated data's indices into this tuple stay put) says the event's
#: ``anonymous_id`` is ``user_id``: ingestion links the two in the identity graph (issue #11).
EVENT_TYPES = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "identify",
)
DEVICE_TYPES = ("desktop", "mobile", "tablet", "other")
PRODUCT_EVENTS = frozenset({"product_view", "add_to_cart", "remove_from_cart", "purchase"})
QUANTITY_EVENTS = frozenset({"add_to_cart", "remove_from_cart", "purchase"})

EventType = Literal[
    "page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "purchase", "identify"
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
#: Longest id accepted (as for the ids of ``/recommend``).
MAX_ID_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: The largest integer the log's ``quantity`` column (int64) holds.
INT64_MAX = 2**63 - 1
# pandas' nanosecond timestamps end here; the log and the feature pipeline use them.
_PANDAS_MIN = datetime(1677, 9, 22, tzinfo=UTC)
_PANDAS_MAX = datetime(2262, 4, 11, tzinfo=UTC)


@dataclass(frozen=True)
class EventLimits:
    """The ranges an event must fall in, checked before anything is stored.

    A timestamp must lie in ``[earliest, now + max_future]`` (the clock is read once per batch,
    see :meth:`context`); a quantity may not exceed ``max_quantity``. The defaults accept any
    shop's history since 1990 and a client clock a day fast. Pass another instance through the
    ``limits`` keyword of :mod:`features.ingest` (``tailor data import --earliest``) to import
    older data; the bounds must stay inside what the log can store (pandas' 1677-2262, int64).
    """

    earliest: datetime = datetime(1990, 1, 1, tzinfo=UTC)
    max_future: timedelta = timedelta(days=1)
    max_quantity: int = 1_000_000

    def __post_init__(self) -> None:
        if self.earliest.tzinfo is None:
            raise ValueError(f"earliest {self.earliest!r} has no time zone; give UTC")
        if not _PANDAS_MIN < self.earliest < _PANDAS_MAX:
            raise ValueError(
                f"earliest {self.earliest.isoformat()} is outside the storable range "
                f"{_PANDAS_MIN.year + 1}..{_PANDAS_MAX.year - 1}"
            )
        if self.max_future < timedelta(0):
            raise ValueError(f"max_future {self.max_future} is negative")
        if not 1 <= self.max_quantity <= INT64_MAX:
            raise ValueError(f"max_quantity {self.max_quantity} is not in 1..{INT64_MAX}")

    def context(self, now: datetime | None = None) -> dict[str, Any]:
        """The validation context of one batch: ``Event.model_validate(raw, context=...)``."""
        now = datetime.now(UTC) if now is None else now
        latest = min(now + self.max_future, _PANDAS_MAX - timedelta(days=1))
        return {"earliest": self.earliest, "latest": latest, "max_quantity": self.max_quantity}


DEFAULT_LIMITS = EventLimits()


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
    price: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Price; finite, at least 0."
    )
    quantity: int | None = Field(
        default=None, ge=1, le=INT64_MAX, description="Units (at most EventLimits.max_quantity)."
    )
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
    def _timestamp(cls, value: Any, info: ValidationInfo) -> datetime:
        if value is None:
            raise ValueError("timestamp is required")
        parsed = parse_timestamp(value)
        context = info.context or {}
        # validated alone, not in a batch: the default window, the clock read for this event
        window = context if "earliest" in context else DEFAULT_LIMITS.context()
        if not window["earliest"] <= parsed <= window["latest"]:
            raise ValueError(
                f"timestamp {value!r} ({parsed.isoformat()}) is outside the accepted window "
                f"{window['earliest'].isoformat()} .. {window['latest'].isoformat()}"
            )
        return parsed

    @field_validator("event_id", "user_id", "anonymous_id", "session_id", "product_id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > MAX_ID_LENGTH:
            raise ValueError(f"id of {len(value)} characters; at most {MAX_ID_LENGTH} allowed")
        control = _CONTROL.search(value)
        if control:
            raise ValueError(
                f"id {value[:40]!r} holds the control character {control.group()!r} "
                f"at position {control.start()}"
            )
        return value

    @field_validator("quantity")
    @classmethod
    def _quantity(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = (info.context or {}).get("max_quantity", DEFAULT_LIMITS.max_quantity)
        if value is not None and value > limit:
            raise ValueError(f"quantity {value} is over the limit of {limit}")
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) != 2 or not value.isascii() or not value.isalpha():
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
        if self.event_type == "identify":
            if self.user_id is None or self.anonymous_id is None:
                raise ValueError("identify needs both user_id and anonymous_id (the pair to link)")
            if self.user_id == self.anonymous_id:
                raise ValueError("identify: user_id is the same as anonymous_id")
        return self

    def to_row(self) -> dict[str, Any]:
        """A flat dict in :data:`EVENT_COLUMNS` order, ready for the Parquet log."""
        row = self.model_dump()
        row["properties"] = None if self.properties is None else json.dumps(self.properties)
        return {column: row[column] for column in EVENT_COLUMNS}
