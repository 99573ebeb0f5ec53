"""Unit tests for the event contract (:class:`features.schema.Event`).

Each rule of the contract is one parametrized case that names the field the error must point at.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from features.schema import EVENT_COLUMNS, EVENT_TYPES, Event, parse_timestamp

TS_ISO = "2024-03-10T10:00:00Z"
TS_EPOCH_MS = 1710064800000  # 2024-03-10T10:00:00Z
INSTANT = datetime(2024, 3, 10, 10, 0, tzinfo=UTC)

# The smallest valid event of each type.
MINIMAL: dict[str, dict[str, Any]] = {
    "page_view": {},
    "product_view": {"product_id": "p1", "price": 9.5},
    "search": {"query": "red shoes"},
    "add_to_cart": {"product_id": "p1", "price": 9.5},
    "remove_from_cart": {"product_id": "p1", "price": 9.5},
    "purchase": {"product_id": "p1", "price": 9.5},
    "identify": {"anonymous_id": "cookieZ"},
}


def raw_event(event_type: str = "page_view", **overrides: Any) -> dict[str, Any]:
    """A valid raw event of ``event_type``; overrides replace fields, ``None`` drops one."""
    row: dict[str, Any] = {
        "event_id": "e1",
        "event_type": event_type,
        "timestamp": TS_ISO,
        "user_id": "u1",
        "session_id": "s1",
        "device_type": "mobile",
        **MINIMAL.get(event_type, {}),
    }
    row.update(overrides)
    return {key: value for key, value in row.items() if value is not None}


def error_places(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, message)`` for every error; field is '' for a cross-field (model) rule."""
    return [(".".join(str(part) for part in err["loc"]), err["msg"]) for err in exc.errors()]


def test_minimal_event_of_every_type_is_valid() -> None:
    assert set(MINIMAL) == set(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        event = Event.model_validate(raw_event(event_type))
        assert event.event_type == event_type


# (case id, raw event, field the error must name)
FIELD_RULES = [
    ("event_id missing", raw_event(event_id=None), "event_id"),
    ("event_id blank", raw_event(event_id="   "), "event_id"),
    ("event_type unknown", raw_event(event_type="click"), "event_type"),
    ("timestamp missing", raw_event(timestamp=None), "timestamp"),
    ("timestamp naive", raw_event(timestamp="2024-03-10T10:00:00"), "timestamp"),
    ("timestamp date only", raw_event(timestamp="2024-03-10"), "timestamp"),
    ("timestamp garbage", raw_event(timestamp="yesterday"), "timestamp"),
    ("timestamp bool", raw_event(timestamp=True), "timestamp"),
    ("session_id missing", raw_event(session_id=None), "session_id"),
    ("device_type unknown", raw_event(device_type="phone"), "device_type"),
    ("country alpha-3", raw_event(country="USA"), "country"),
    ("country one letter", raw_event(country="U"), "country"),
    ("country digits", raw_event(country="1A"), "country"),
    ("price negative", raw_event("purchase", price=-1), "price"),
    ("price not a number", raw_event("purchase", price="cheap"), "price"),
    ("quantity zero", raw_event("add_to_cart", quantity=0), "quantity"),
    ("quantity fractional", raw_event("purchase", quantity="1.5"), "quantity"),
    ("properties not JSON", raw_event(properties="{oops"), "properties"),
    ("properties not an object", raw_event(properties="[1, 2]"), "properties"),
    ("unknown column", raw_event(colour="red"), "colour"),
]


@pytest.mark.parametrize(
    ("raw", "field"), [case[1:] for case in FIELD_RULES], ids=[case[0] for case in FIELD_RULES]
)
def test_field_rule_rejects_and_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Event.model_validate(raw)
    assert [place for place, _ in error_places(info.value)] == [field]


# Cross-field rules are model-level errors: pydantic gives no location, so the message names it.
CROSS_FIELD_RULES = [
    ("no user_id nor anonymous_id", raw_event(user_id=None), "user_id or anonymous_id"),
    ("blank user_id and anonymous_id", raw_event(user_id="", anonymous_id=" "), "anonymous_id"),
    *[
        (f"{kind} without price", raw_event(kind, price=None), f"price is required for {kind}")
        for kind in ("product_view", "add_to_cart", "remove_from_cart", "purchase")
    ],
    *[
        (f"{kind} without product_id", raw_event(kind, product_id=None), "product_id is required")
        for kind in ("product_view", "add_to_cart", "remove_from_cart", "purchase")
    ],
    ("search without query", raw_event("search", query=None), "query is required for search"),
    ("search with blank query", raw_event("search", query="  "), "query is required for search"),
    ("identify without anonymous_id", raw_event("identify", anonymous_id=None), "needs both"),
    ("identify without user_id", raw_event("identify", user_id=None), "needs both"),
    (
        "identify of one id to itself",
        raw_event("identify", anonymous_id="u1"),
        "user_id is the same as anonymous_id",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"),
    [case[1:] for case in CROSS_FIELD_RULES],
    ids=[case[0] for case in CROSS_FIELD_RULES],
)
def test_cross_field_rule_rejects_and_names_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Event.model_validate(raw)
    places = error_places(info.value)
    assert len(places) == 1
    field, text = places[0]
    assert field == ""
    assert message in text


def test_anonymous_id_alone_is_enough() -> None:
    event = Event.model_validate(raw_event(user_id=None, anonymous_id="dev-1"))
    assert (event.user_id, event.anonymous_id) == (None, "dev-1")


@pytest.mark.parametrize(
    "timestamp",
    [
        TS_ISO,
        "2024-03-10T10:00:00+00:00",
        "2024-03-10T11:00:00+01:00",
        "2024-03-10T05:00:00-05:00",
        "2024-03-10T10:00:00.000Z",
        TS_EPOCH_MS,
        str(TS_EPOCH_MS),
        float(TS_EPOCH_MS),
        datetime(2024, 3, 10, 12, 0, tzinfo=timezone(timedelta(hours=2))),  # aware datetime
    ],
    ids=[
        "Z",
        "+00:00",
        "+01:00",
        "-05:00",
        "millis Z",
        "epoch int",
        "epoch str",
        "epoch float",
        "dt",
    ],
)
def test_iso_with_zone_and_epoch_ms_are_the_same_utc_instant(timestamp: Any) -> None:
    event = Event.model_validate(raw_event(timestamp=timestamp))
    assert event.timestamp == INSTANT
    assert event.timestamp.tzinfo == UTC


def test_epoch_ms_and_iso_agree_exactly() -> None:
    from_epoch = Event.model_validate(raw_event(timestamp=TS_EPOCH_MS)).timestamp
    from_iso = Event.model_validate(raw_event(timestamp="2024-03-10T05:00:00-05:00")).timestamp
    assert from_epoch == from_iso == INSTANT
    assert from_epoch.isoformat() == from_iso.isoformat() == "2024-03-10T10:00:00+00:00"


def test_naive_datetime_object_is_rejected() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse_timestamp(datetime(2024, 3, 10, 10, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("007", "007"), (" 007 ", "007"), (7, "7"), (7.0, "7"), ("1e3", "1e3")],
    ids=["leading zeros", "padded", "int", "integral float", "looks numeric"],
)
def test_ids_stay_text(value: Any, expected: str) -> None:
    event = Event.model_validate(
        raw_event(
            "purchase",
            event_id=value,
            user_id=value,
            anonymous_id=value,
            session_id=value,
            product_id=value,
        )
    )
    assert (event.event_id, event.user_id, event.anonymous_id) == (expected,) * 3
    assert (event.session_id, event.product_id) == (expected,) * 2


@pytest.mark.parametrize(("value", "expected"), [("us", "US"), ("De", "DE"), (" fr ", "FR")])
def test_country_is_upper_cased(value: str, expected: str) -> None:
    assert Event.model_validate(raw_event(country=value)).country == expected


def test_country_is_optional() -> None:
    assert Event.model_validate(raw_event(country="")).country is None


@pytest.mark.parametrize("event_type", ["add_to_cart", "remove_from_cart", "purchase"])
def test_quantity_defaults_to_one_for_cart_and_purchase(event_type: str) -> None:
    assert Event.model_validate(raw_event(event_type)).quantity == 1
    assert Event.model_validate(raw_event(event_type, quantity="3")).quantity == 3


@pytest.mark.parametrize("event_type", ["page_view", "product_view", "search"])
def test_quantity_has_no_default_outside_cart_and_purchase(event_type: str) -> None:
    assert Event.model_validate(raw_event(event_type)).quantity is None


def test_device_type_defaults_to_other() -> None:
    assert Event.model_validate(raw_event(device_type=None)).device_type == "other"


def test_blank_cells_are_missing_values() -> None:
    event = Event.model_validate(
        raw_event(country="", page=" ", category="", anonymous_id="", properties=float("nan"))
    )
    assert (event.country, event.page, event.category) == (None, None, None)
    assert (event.anonymous_id, event.properties) == (None, None)


def test_properties_json_text_is_parsed_and_stored_as_json() -> None:
    event = Event.model_validate(raw_event(properties='{"colour": "red", "size": 42}'))
    assert event.properties == {"colour": "red", "size": 42}
    assert json.loads(event.to_row()["properties"]) == {"colour": "red", "size": 42}


def test_to_row_has_log_columns_in_order() -> None:
    row = Event.model_validate(
        raw_event("search", country="nl", page="/search", properties={"a": 1})
    ).to_row()
    assert tuple(row) == EVENT_COLUMNS
    assert row["country"] == "NL"
    assert row["timestamp"] == INSTANT
    assert row["properties"] == '{"a": 1}'
    assert Event.model_validate(raw_event()).to_row()["properties"] is None


@pytest.mark.parametrize("timestamp", ["99999999999999999999", 10**20, float("inf")])
def test_out_of_range_epoch_is_a_validation_error(timestamp: Any) -> None:
    with pytest.raises(ValidationError) as info:
        Event.model_validate(raw_event(timestamp=timestamp))
    assert [place for place, _ in error_places(info.value)] == ["timestamp"]


@pytest.mark.parametrize("blank", ["", "  "], ids=["empty", "spaces"])
def test_blank_properties_is_missing(blank: str) -> None:
    assert Event.model_validate(raw_event(properties=blank)).properties is None


@pytest.mark.parametrize("blank", ["", None, float("nan")], ids=["empty", "null", "nan"])
def test_blank_device_type_defaults_to_other(blank: Any) -> None:
    raw = raw_event() | {"device_type": blank}
    assert Event.model_validate(raw).device_type == "other"
