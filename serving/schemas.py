"""Request and response models of the scoring service (the public contract, OpenAPI included).

Plain pydantic, so the decisions in :mod:`serving.logic` are tested without BentoML. Unknown keys
are errors that name the key; ``device_type`` at the top level is the older flat form of
``context.device_type`` and still accepted.

What the OpenAPI document says is what is checked (issue #10 item 10): values are taken as sent
(no whitespace stripped before a length check), ids match :data:`ID_PATTERN`, a country matches
:data:`COUNTRY_PATTERN`, and a top-level optional field is left out rather than sent as ``null``
(BentoML's document declares those as plain types, so a ``null`` would contradict it).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from features.identity.keys import person_key
from features.schema import DeviceType

MAX_K = 200
#: The most ids one request may exclude, and the most events one ``/events`` call may carry.
MAX_EXCLUDE = 1000
MAX_EVENTS = 1000
#: An id: 1 to 256 characters, no control characters, no space at either end.
ID_PATTERN = r"^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$"
COUNTRY_PATTERN = r"^[A-Za-z]{2}$"

#: The ``degraded`` reasons an answer may carry: fixed public texts, never exception text (the
#: cause is in the service log).
STORE_UNAVAILABLE = "online store unavailable"
MODEL_FAILED = "model failed"
STORE_NOT_UPDATED = "online store not updated"
PERSONAS_NOT_UPDATED = "personas not updated (re-applied from the event log when the store is back)"


def _id_text(value: str) -> str:
    if not re.fullmatch(ID_PATTERN, value):
        raise ValueError("an id holds no control characters and no space at either end")
    return value


#: An id as the document declares it (the pattern) and as it is checked (with that message).
Id = Annotated[
    str,
    Field(min_length=1, max_length=256, json_schema_extra={"pattern": ID_PATTERN}),
    AfterValidator(_id_text),
]


def _not_null(value: Any, info: ValidationInfo) -> Any:
    if value is None:
        raise ValueError(f"{info.field_name} may be left out but not null")
    return value


class _Answer(BaseModel):
    """A response model that leaves out optional fields without a value.

    BentoML's OpenAPI document (3.0) declares ``str | None`` fields as plain strings, so a
    ``null`` would contradict it; an absent optional field does not.
    """

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class RequestContext(BaseModel):
    """What is known about the request itself (not the person)."""

    model_config = ConfigDict(extra="forbid")

    device_type: DeviceType | None = Field(default=None, description="Device of this request.")
    country: str | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="ISO 3166-1 alpha-2 code (either case).",
        json_schema_extra={"pattern": COUNTRY_PATTERN},  # checked by _country, with its message
    )
    page: str | None = Field(default=None, max_length=256, description="Page being viewed.")
    category: str | None = Field(default=None, max_length=256, description="Category in view.")

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(COUNTRY_PATTERN, value):
            raise ValueError(f"country {value!r} is not an ISO 3166-1 alpha-2 code such as 'US'")
        return value.upper()


#: A request the documented example shows; it succeeds for any model (an unknown person gets
#: the popular items of their context).
RECOMMEND_EXAMPLE = {
    "user_id": "u-1001",
    "k": 5,
    "context": {"country": "US", "device_type": "mobile", "category": "beauty"},
}


#: A /recommend request names a person: user_id, anonymous_id or both (JSON Schema).
PERSON_REQUIRED = [{"required": ["user_id"]}, {"required": ["anonymous_id"]}]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": PERSON_REQUIRED,
            "example": RECOMMEND_EXAMPLE,
        },
    )

    user_id: Id | None = Field(default=None, description="Authenticated user id (or anonymous_id).")
    anonymous_id: Id | None = Field(default=None, description="Device or cookie id (or user_id).")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items to return.")
    context: RequestContext = Field(default_factory=RequestContext)
    exclude: list[str] = Field(
        default_factory=list, max_length=MAX_EXCLUDE, description="Item ids never to return."
    )
    device_type: DeviceType | None = Field(
        default=None, description="Flat form of context.device_type (older clients)."
    )
    session_id: Id | None = Field(
        default=None,
        description="The visitor's live session; left out: the person's latest live session.",
    )

    _no_nulls = field_validator(
        "user_id", "anonymous_id", "device_type", "session_id", mode="before"
    )(_not_null)

    @model_validator(mode="after")
    def _person(self) -> RecommendRequest:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("one of user_id or anonymous_id is required")
        return self

    @property
    def person(self) -> str:
        """The person key: the user id, else ``anon:<anonymous_id>`` (as in the feature store)."""
        return person_key(self.user_id, self.anonymous_id)

    @property
    def device(self) -> str:
        """The request's device: ``context.device_type``, else the flat field, else ``other``."""
        return self.context.device_type or self.device_type or "other"


class RecommendedItem(_Answer):
    item_id: str
    score: float
    strategy: str = Field(description="Which model or candidate source produced this item.")
    rule: str | None = Field(default=None, description="The rule that chose that source.")


class RecommendResponse(_Answer):
    user_id: str = Field(description="The person key the answer is for.")
    items: list[RecommendedItem]
    model: str = Field(description="Registered model as name@version.")
    personalized: bool = Field(description="Whether the items depend on this person.")
    strategy: str = Field(description="The main candidate source of this answer.")
    segment: str | None = Field(default=None, description="The person's segment, when known.")
    persona: str | None = Field(
        default=None, description="The person's real-time personas (best first), when any."
    )
    persona_score: float | None = Field(
        default=None, description="Score in [0, 1] of the person's best persona, when any."
    )
    rules_fired: list[str] = Field(default_factory=list, description="Rules whose conditions held.")
    variant: dict[str, str] = Field(
        default_factory=dict, description="Content variant per slot (e.g. hero_banner)."
    )
    degraded: str | None = Field(
        default=None,
        description=(
            "Why the answer fell back to popularity: "
            f"'{STORE_UNAVAILABLE}' or '{MODEL_FAILED}' (details in the service log)."
        ),
    )
    features: dict[str, Any] = Field(default_factory=dict, description="Features read online.")
    consent: str | None = Field(
        default=None,
        description="Why the answer is not personalized by consent: 'personalization not given' "
        "(nothing of the person was read); absent when personalization is allowed.",
    )
    request_id: str


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id = Field(description="Person key (user id).")


class SegmentResponse(_Answer):
    user_id: str
    segment_id: int | None = Field(default=None, description="Absent when not segmented.")
    segment_label: str | None = Field(default=None, description="Readable segment name.")
    source: str = Field(description="Where the answer came from (feature service, or why not).")
    request_id: str


class SimilarItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: Id = Field(description="The item to match.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items to return.")


class SimilarItemsResponse(_Answer):
    item_id: str
    items: list[RecommendedItem]
    model: str = Field(description="Registered model as name@version.")
    request_id: str


class EventRejection(_Answer):
    row: int = Field(description="1-based position of the event in the request.")
    field: str = Field(description="The field at fault ('<row>' when it is the whole event).")
    reason: str


class EventsResponse(_Answer):
    """The answer of ``/events`` (and ``/collect``): 202 once the broker confirmed the events.

    Appending to the event log happens after the answer, in the consumer, so what only the log
    can tell (an event already stored, a conflict, the online store updated) is not in it: the
    consumer counts those in ``/metrics`` (``tailor_events_total{outcome=...}``) and
    ``tailor consume``, and quarantines conflicts as before (issue #11)."""

    accepted: int = Field(
        description="Events the broker confirmed: stored durably and appended to the event log "
        "by the consumer, once per event_id (an event_id already logged is skipped there)."
    )
    rejected: int = Field(description="Events that failed validation (see rejections).")
    suppressed: int = Field(
        default=0,
        description="Events of people without `analytics` consent (issue #12): not stored under "
        "any id. accepted + rejected + suppressed = the events sent.",
    )
    rejections: list[EventRejection] = Field(default_factory=list)


#: Traits one /identify may carry at most (accepted, not stored: see IdentifyRequest).
MAX_TRAITS = 100


class IdentifyRequest(BaseModel):
    """A login: ``anonymous_id`` (the device or cookie id the visitor had) is ``user_id``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"anonymous_id": "cookieZ", "user_id": "newuser77"}},
    )

    anonymous_id: Id = Field(description="The device or cookie id used before the login.")
    user_id: Id = Field(description="The authenticated user id it belongs to.")
    traits: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_TRAITS,
        description="What the site knows about the user (accepted for compatibility with "
        "analytics clients; not stored).",
    )


class IdentifyResponse(_Answer):
    canonical: str = Field(
        description="The person's canonical key: what /recommend and the feature store use."
    )
    aliases: list[str] = Field(description="Every person key of the person, canonical first.")
    merged: list[str] = Field(
        default_factory=list,
        description="Keys that joined the person in this call (empty when already linked).",
    )
    previous: list[str] = Field(
        default_factory=list, description="The canonical keys the merged keys had before."
    )
    merge_id: int | None = Field(default=None, description="The merge log's record, when new.")
    kind: str | None = Field(
        default=None, description="'link' (a device to a user) or 'user_merge' (two users)."
    )
    degraded: str | None = Field(
        default=None,
        description=f"Why the merged history is not in the online store yet: '{STORE_NOT_UPDATED}'"
        " (re-applied from the event log when the store is back).",
    )
    request_id: str
