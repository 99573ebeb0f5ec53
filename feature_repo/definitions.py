"""Tailor's Feast declarations: entities → sources → views → on-demand → services.

Declarations only. Feature names, types and descriptions come from the pure transforms in
``features/`` so the offline tables and these schemas cannot drift apart. File paths are relative
to the workspace's Feast folder (``$TAILOR_HOME/feast``).
"""

from datetime import timedelta

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Bool, Float64, Int64, String

from features.consent.feature_reads import CONSENT_FIELD_PREFIX, CONSENT_KEY, PURPOSE_TAG
from features.consent.policy import PURPOSES
from features.context import ACTIVITY_FEATURES, CONTEXT_FEATURES
from features.feature_specs import ITEM_FEATURES, SEGMENT_FEATURES, USER_FEATURES
from features.personas import PERSONA_FEATURES

_TYPES = {"int64": Int64, "float64": Float64, "string": String}


def _fields(spec: dict[str, tuple[str, str]], describe: bool = True) -> list[Field]:
    # Feast compares an on-demand view's declared fields with the ones it infers, descriptions
    # included, so those are declared without one (describe=False).
    return [
        Field(name=name, dtype=_TYPES[dtype], description=description if describe else "")
        for name, (dtype, description) in spec.items()
    ]


# -- entities ------------------------------------------------------------------------------
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A person: user id when known, else 'anon:<anonymous_id>'.",
)
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="A product in the catalogue.",
)
consent_person = Entity(
    name="consent_person",
    join_keys=[CONSENT_KEY],
    value_type=ValueType.STRING,
    description="A person as the consent ledger knows them: the identity graph's canonical key.",
)

# -- sources -------------------------------------------------------------------------------
user_features_source = FileSource(
    name="user_features_source",
    path="data/user_features.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Weekly user feature snapshots computed from the event log.",
)
item_features_source = FileSource(
    name="item_features_source",
    path="data/item_features.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Weekly item feature snapshots computed from the event log.",
)
user_activity_batch = FileSource(
    name="user_activity_batch",
    path="data/user_activity.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="One row per identified event: the offline side of the activity push source.",
)
user_segments_source = FileSource(
    name="user_segments_source",
    path="data/user_segments.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Segment assignments written by `tailor segment`, one row per user and as-of.",
)
consent_ledger_source = FileSource(
    name="consent_ledger_source",
    path="data/consent_ledger.parquet",
    timestamp_field="event_timestamp",
    description="The consent ledger as decisions in time (features.consent.check.ConsentCheck."
    "timeline), rewritten from the ledger before every historical retrieval.",
)
user_activity_push = PushSource(
    name="user_activity_push",
    batch_source=user_activity_batch,
    description="Real-time user activity pushed on every collected event.",
)
user_personas_batch = FileSource(
    name="user_personas_batch",
    path="data/user_personas.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Persona states folded from the event log (`tailor features build`): the offline"
    " side of the persona push source, one row per person and session.",
)
user_persona_push = PushSource(
    name="user_persona_push",
    batch_source=user_personas_batch,
    description="Each person's persona state, pushed by /events after folding the new events.",
)
request_context = RequestSource(
    name="request_context",
    schema=[Field(name="device_type", dtype=String, description="Device of this request.")],
    description="Context known only when the request arrives.",
)

# -- feature views -------------------------------------------------------------------------
user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=timedelta(days=35),
    schema=_fields(USER_FEATURES),
    online=True,
    source=user_features_source,
    description="Behaviour over 7- and 30-day windows: sessions, funnel, RFM, affinities, device.",
    tags={"owner": "tailor", "refresh": "weekly"},
)
item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(days=35),
    schema=_fields(ITEM_FEATURES),
    online=True,
    source=item_features_source,
    description="Item popularity, conversion, price tier and category.",
    tags={"owner": "tailor", "refresh": "weekly"},
)
user_activity = FeatureView(
    name="user_activity",
    entities=[user],
    ttl=timedelta(days=30),
    schema=_fields(ACTIVITY_FEATURES),
    online=True,
    source=user_activity_push,
    description="The user's latest activity, updated in real time through the push source.",
    tags={"owner": "tailor", "refresh": "realtime"},
)
user_personas = FeatureView(
    name="user_personas",
    entities=[user],
    ttl=timedelta(days=90),
    schema=_fields(PERSONA_FEATURES),
    online=True,
    source=user_persona_push,
    description="Real-time personas (e.g. 'Mobile-First') and the event state they are scored on.",
    tags={"owner": "tailor", "refresh": "realtime"},
)

user_segments = FeatureView(
    name="user_segments",
    entities=[user],
    ttl=timedelta(days=120),
    schema=_fields(SEGMENT_FEATURES),
    online=True,
    source=user_segments_source,
    description="The user's behavioural segment (id and readable label) from `tailor segment`.",
    tags={"owner": "tailor", "refresh": "per segmentation run"},
)

# Offline only: online reads ask the ledger itself (features.store), never a copy of it. No TTL
# (0): a choice holds until the next one. A person without a row has the default regime's
# answer (ConsentCheck.default_allowed), which features.store fills in for the nulls.
user_consent = FeatureView(
    name="user_consent",
    entities=[consent_person],
    ttl=timedelta(0),
    schema=[
        Field(
            name=f"{CONSENT_FIELD_PREFIX}{purpose}",
            dtype=Bool,
            description=f"Whether {purpose} was allowed for the person from this time on.",
        )
        for purpose in PURPOSES
    ],
    online=False,
    source=consent_ledger_source,
    description="Each person's consent per purpose in time: the point-in-time join of a training"
    " set reads it as of each label's timestamp (issue #12).",
    tags={"owner": "tailor", "refresh": "before every historical retrieval"},
)


@on_demand_feature_view(
    sources=[user_features[["main_device"]], request_context],
    schema=_fields(CONTEXT_FEATURES, describe=False),
    description="Request context combined with the stored profile.",
)
def request_context_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast may rebuild this function from its source text, so the import lives inside it.
    from features.context import context_features

    return context_features(inputs)


# -- feature services: one per model input, the train/serve contract ------------------------
# Each carries the consent purpose its reads need (PURPOSE_TAG, issue #12): person services
# `personalization`; item services `necessary` (item features are catalogue aggregates about no
# one and serve non-personalized answers too). features.store refuses a service without one.
user_profile_v1 = FeatureService(
    name="user_profile_v1",
    features=[user_features, user_activity, user_personas, request_context_features],
    description="Everything serving knows about a user at request time.",
    tags={"contract": "recommender", PURPOSE_TAG: "personalization"},
)
item_profile_v1 = FeatureService(
    name="item_profile_v1",
    features=[item_features],
    description="Item side features for candidate filtering and re-ranking.",
    tags={"contract": "recommender", PURPOSE_TAG: "necessary"},
)
user_persona_v1 = FeatureService(
    name="user_persona_v1",
    features=[user_personas],
    description="The persona state alone: what /events reads before folding new events.",
    tags={"contract": "personas", PURPOSE_TAG: "personalization"},
)
user_segment_v1 = FeatureService(
    name="user_segment_v1",
    features=[user_segments],
    description="The user's segment: segment_id and segment_label (serving reads the label).",
    tags={"contract": "segmenter", PURPOSE_TAG: "personalization"},
)

OBJECTS = [
    user,
    item,
    consent_person,
    user_features_source,
    item_features_source,
    user_activity_batch,
    user_activity_push,
    user_personas_batch,
    user_persona_push,
    request_context,
    consent_ledger_source,
    user_features,
    item_features,
    user_activity,
    user_personas,
    user_consent,
    request_context_features,
    user_profile_v1,
    item_profile_v1,
    user_persona_v1,
]
# Registered by `tailor segment` (features.store.apply_segments) once its table exists, not by
# `tailor features apply`: Feast materializes every online view, and one without its Parquet
# file would make `tailor features materialize` fail in workspaces that never segmented.
SEGMENT_OBJECTS = [user_segments_source, user_segments, user_segment_v1]

# -- micro-segments: source → view → service, written by `tailor micro-segments` -------------
user_micro_segments_source = FileSource(
    name="user_micro_segments_source",
    path="data/user_micro_segments.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Memberships from `tailor micro-segments`, one row per user and as-of.",
)
user_micro_segments = FeatureView(
    name="user_micro_segments",
    entities=[user],
    ttl=timedelta(days=35),
    schema=[
        Field(
            name="micro_segments",
            dtype=Array(String),
            description="Names of the micro-segment rules the user matches, sorted (may be empty).",
        ),
        Field(
            name="n_micro_segments",
            dtype=Int64,
            description="Number of micro-segment rules the user matches.",
        ),
    ],
    online=True,
    source=user_micro_segments_source,
    description="Rule-based micro-segments (e.g. reengage_electronics) from navigation patterns.",
    tags={"owner": "tailor", "refresh": "per micro-segments run"},
)
user_micro_segments_v1 = FeatureService(
    name="user_micro_segments_v1",
    features=[user_micro_segments],
    description="The user's micro-segment memberships (re-engagement lists, targeting rules).",
    tags={"contract": "micro-segments", PURPOSE_TAG: "personalization"},
)
# Registered by `tailor micro-segments` (features.store.apply_micro_segments) once its table
# exists, not by `tailor features apply`, for the same reason as SEGMENT_OBJECTS.
MICRO_SEGMENT_OBJECTS = [user_micro_segments_source, user_micro_segments, user_micro_segments_v1]
