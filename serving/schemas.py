"""Request and response models of the scoring service (the public contract, OpenAPI included).

Plain pydantic, so the decisions in :mod:`serving.logic` are tested without BentoML. Unknown keys
are errors that name the key; ``device_type`` at the top level is the older flat form of
``context.device_type`` and still accepted.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from features.ids import person_key
from features.schema import DeviceType

MAX_K = 200
#: The most ids one request may exclude, and the most events one ``/events`` call may carry.
MAX_EXCLUDE = 1000
MAX_EVENTS = 1000


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

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    device_type: DeviceType | None = Field(default=None, description="Device of this request.")
    country: str | None = Field(
        default=None, min_length=2, max_length=2, description="ISO 3166-1 alpha-2 code."
    )
    page: str | None = Field(default=None, max_length=256, description="Page being viewed.")
    category: str | None = Field(default=None, max_length=256, description="Category in view.")

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.isascii() or not value.isalpha():
            raise ValueError(f"country {value!r} is not an ISO 3166-1 alpha-2 code such as 'US'")
        return value.upper()


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    user_id: str | None = Field(
        default=None, min_length=1, max_length=256, description="Authenticated user id."
    )
    anonymous_id: str | None = Field(
        default=None, min_length=1, max_length=256, description="Device or cookie id."
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items to return.")
    context: RequestContext = Field(default_factory=RequestContext)
    exclude: list[str] = Field(
        default_factory=list, max_length=MAX_EXCLUDE, description="Item ids never to return."
    )
    device_type: DeviceType | None = Field(
        default=None, description="Flat form of context.device_type (older clients)."
    )

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
        default=None, description="Why the answer fell back to popularity (store or model down)."
    )
    features: dict[str, Any] = Field(default_factory=dict, description="Features read online.")
    request_id: str


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    user_id: str = Field(min_length=1, max_length=256, description="Person key (user id).")


class SegmentResponse(_Answer):
    user_id: str
    segment_id: int | None = Field(default=None, description="Absent when not segmented.")
    segment_label: str | None = Field(default=None, description="Readable segment name.")
    source: str = Field(description="Where the answer came from (feature service, or why not).")
    request_id: str


class SimilarItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    item_id: str = Field(min_length=1, max_length=256, description="The item to match.")
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
    accepted: int = Field(description="New events appended to the event log.")
    duplicate: int = Field(description="Events whose event_id the log already had (skipped).")
    rejected: int = Field(description="Events that failed validation (see rejections).")
    pushed: int = Field(description="Real-time activity rows pushed to the online store.")
    personas: int = Field(default=0, description="People whose real-time persona was updated.")
    rejections: list[EventRejection] = Field(default_factory=list)
    degraded: str | None = Field(
        default=None, description="Why the online store was not updated, when it was not."
    )
