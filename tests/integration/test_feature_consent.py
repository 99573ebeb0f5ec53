"""Issue #12, enforcement point 2: consent on the real Feast store in a temp folder.

Every feature service carries a purpose; online reads of person features answer people without
it as missing; a service without a purpose cannot be read; historical retrieval (training sets)
is filtered point in time through the consent feature view; segment runs leave people out.
"""

from __future__ import annotations

from datetime import UTC, datetime

import mlflow
import numpy as np
import pandas as pd
import pytest
from feast import FeatureService
from mlflow.tracking import MlflowClient

from feature_repo import definitions
from features import store
from features.consent.check import ConsentCheck
from features.consent.feature_reads import PURPOSE_TAG, ServiceWithoutPurpose
from features.consent.policy import load_policy
from features.eventlog import EventLog
from features.identity.graph import IdentityGraph
from features.workspace import Workspace
from tests.consent import grant
from tests.integration.test_feast_store import T0, _tables
from training.data import interaction_frame
from training.pipeline import consented_interactions
from training.segments.micro import MicroSegmentRule, consenting, evaluate

pytestmark = pytest.mark.integration

BEFORE = (T0 - pd.Timedelta(days=30)).to_pydatetime()
WITHDRAWN = (T0 + pd.Timedelta(days=5)).to_pydatetime()
REFUSE = {"analytics": True, "personalization": False, "marketing": False}


@pytest.fixture()
def consent_ws(tmp_path) -> Workspace:
    """u1 consents at T0-30d and withdraws personalization at T0+5d; u2 refuses; u3 never
    chose (opt-in default: nothing); materialized up to T0+11d."""
    ws = Workspace(home=tmp_path).ensure()
    store.write_tables(ws, _tables())
    fs = store.apply(ws)
    store.materialize(
        ws,
        (T0 - pd.Timedelta(days=1)).to_pydatetime(),
        (T0 + pd.Timedelta(days=11)).to_pydatetime(),
        store=fs,
    )
    grant(ws, "u1", at=BEFORE)
    grant(ws, "u1", purposes={"personalization": False}, at=WITHDRAWN)
    grant(ws, "u2", purposes=REFUSE, at=BEFORE)
    return ws


def _read(fs, *people: str) -> list[dict]:
    return store.online_features(fs, [{"user_id": p, "device_type": "mobile"} for p in people])


def test_every_declared_feature_service_carries_a_purpose_of_the_policy():
    """Person services need personalization; the item service is necessary (issue #12)."""
    policy = load_policy()
    services = [
        obj
        for obj in [
            *definitions.OBJECTS,
            *definitions.SEGMENT_OBJECTS,
            *definitions.MICRO_SEGMENT_OBJECTS,
        ]
        if isinstance(obj, FeatureService)
    ]
    purposes = {service.name: service.tags.get(PURPOSE_TAG) for service in services}
    assert purposes == {
        store.USER_SERVICE: "personalization",
        "item_profile_v1": "necessary",
        store.PERSONA_SERVICE: "personalization",
        store.SEGMENT_SERVICE: "personalization",
        store.MICRO_SEGMENT_SERVICE: "personalization",
    }
    assert set(purposes.values()) <= set(policy.purposes)


def test_online_read_answers_people_without_consent_as_missing(consent_ws):
    """issue #12: a refusal or no choice (opt-in) gives no person feature, not even the
    request-context ones computed on the stored profile; withdrawal counts on the next read."""
    fs = store.feature_store(consent_ws)
    grant(consent_ws, "u1", at=datetime.now(UTC))  # consents again after the T0+5d withdrawal
    u1, u2, u3 = _read(fs, "u1", "u2", "u3")
    assert u1["sessions_30d"] == 99 and u1["last_category"] == "toys"
    for refused in (u2, u3):
        assert set(refused) == set(u1)
        assert {k: v for k, v in refused.items() if v is not None} == {
            "user_id": refused["user_id"]
        }
    assert u2["user_id"] == "u2" and u3["user_id"] == "u3"

    (alone,) = _read(fs, "u1")  # the one-person path (every request)
    assert alone["sessions_30d"] == 99
    grant(consent_ws, "u1", purposes=REFUSE)
    (after,) = _read(fs, "u1")
    assert after["sessions_30d"] is None and after["last_category"] is None


def test_item_features_are_necessary_and_read_without_any_consent(consent_ws):
    fs = store.feature_store(consent_ws)
    (row,) = store.online_features(fs, [{"item_id": "p1"}], "item_profile_v1")
    assert row["views_30d"] == 7


def test_a_service_without_purpose_tag_cannot_be_read(consent_ws):
    """issue #12: an untagged service is refused online and offline, naming the service."""
    fs = store.feature_store(consent_ws)
    user_features = fs.get_feature_view("user_features")
    untagged = FeatureService(name="untagged_v1", features=[user_features])
    odd = FeatureService(name="odd_v1", features=[user_features], tags={PURPOSE_TAG: "sales"})
    fs.apply([untagged, odd])
    with pytest.raises(ServiceWithoutPurpose, match="feature_service='untagged_v1' has no"):
        store.online_features(fs, [{"user_id": "u1"}], "untagged_v1")
    labels = pd.DataFrame({"user_id": ["u1"], "event_timestamp": [T0 + pd.Timedelta(days=1)]})
    with pytest.raises(ServiceWithoutPurpose, match="untagged_v1"):
        store.historical_features(consent_ws, labels, "untagged_v1", store=fs)
    with pytest.raises(ServiceWithoutPurpose, match="'sales' is not a purpose"):
        store.online_features(fs, [{"user_id": "u1"}], "odd_v1")


def test_training_set_is_filtered_point_in_time(consent_ws):
    """issue #12: u1's labels before the withdrawal stay, those after it go; u2 (refused) and
    u3 (never asked, opt-in) are in no row; consent given on an anonymous id counts for the
    user it was later linked to."""
    grant(consent_ws, "anon:c5", at=BEFORE)
    IdentityGraph.for_workspace(consent_ws).link("c5", "u5", source="test")
    at = [T0 + pd.Timedelta(days=d) for d in (1, 4, 6, 9)]
    labels = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u2", "u3", "u5"],
            "event_timestamp": [*at, at[0], at[0], at[0]],
            "device_type": "mobile",
        }
    )
    joined, drops = store.consented_historical_features(consent_ws, labels)
    kept = list(zip(joined["user_id"], joined["event_timestamp"], strict=True))
    assert kept == [("u1", at[0]), ("u1", at[1]), ("u5", at[0])]
    assert joined["sessions_30d"].tolist()[:2] == [1, 1]
    assert "consent_personalization" not in joined and "consent_key" not in joined
    assert (drops.rows, drops.rows_dropped, drops.people, drops.people_dropped) == (7, 4, 4, 2)

    # the consent view's join gives what the one check answers row by row
    allowed, _ = store.consented_as_of(consent_ws, labels, "personalization")
    check = ConsentCheck.for_workspace(consent_ws)
    expected = check.allowed_rows(labels, "personalization")
    assert allowed.tolist() == expected.tolist() == [1, 1, 0, 0, 0, 0, 1]


def test_consent_view_agrees_with_the_check_on_generated_interactions(trained_workspace, tmp_path):
    """Every interaction of the generated data (consents, refusals, withdrawals midway): the
    Feast point-in-time join and ConsentCheck.allowed_rows agree, and training logged what
    consent left out."""
    ws = trained_workspace.ws
    resolve = IdentityGraph.for_workspace(ws).canonical_keys
    frame = interaction_frame(EventLog(ws.event_log_dir).read(), resolve)
    kept, drops = consented_interactions(ws, frame)
    labels = frame.rename(columns={"timestamp": "event_timestamp"})
    expected = ConsentCheck.for_workspace(ws).allowed_rows(labels, "personalization")
    assert len(kept) == int(expected.sum()) and 0 < drops.rows_dropped < len(frame)
    pd.testing.assert_frame_equal(kept, frame[expected.to_numpy()].reset_index(drop=True))
    # withdrawn midway: some rows kept (before), some dropped (after)
    per_person = pd.DataFrame({"user_id": frame["user_id"], "ok": expected.to_numpy()})
    mixed = per_person.groupby("user_id")["ok"].agg(lambda s: 0 < s.sum() < len(s))
    assert mixed.any()

    mlflow.set_tracking_uri(ws.mlflow_uri)
    run = MlflowClient(tracking_uri=ws.mlflow_uri).get_run(trained_workspace.result.run_id)
    assert run.data.metrics["consent_interactions_rows_dropped"] == drops.rows_dropped
    assert run.data.metrics["consent_interactions_people_dropped"] == drops.people_dropped
    assert run.data.metrics["consent_feature_people_dropped"] >= 1


def test_micro_segments_leave_out_people_without_personalization(tmp_path):
    """issue #12: people without personalization (now or at the as-of) get no membership and
    no snapshot row."""
    ws = Workspace(home=tmp_path).ensure()
    at = pd.Timestamp("2026-03-01 10:00", tz="UTC")
    events = pd.DataFrame(
        {
            "session_id": ["s1", "s2", "s3"],
            "timestamp": [at, at, at],
            "user_id": ["a", "b", "c"],
            "anonymous_id": ["x", "y", "z"],
            "page": "/p",
            "category": "books",
            "event_type": "product_view",
        }
    )
    rule = MicroSegmentRule(name="readers", conditions=(), description="everyone")
    found = evaluate(events, [rule])
    assert found.counts == {"readers": 3}
    grant(ws, "a", "b", at=(at - pd.Timedelta(days=1)).to_pydatetime())
    grant(ws, "b", purposes=REFUSE)  # withdrew after the as-of: left out now
    kept, left_out = consenting(found, ConsentCheck.for_workspace(ws))
    assert left_out == 2
    assert kept.members["user_id"].tolist() == ["a"] and kept.counts == {"readers": 1}
    assert kept.snapshot["user_id"].tolist() == ["a"]
    assert np.array_equal(kept.snapshot["n_micro_segments"].to_numpy(), [1])
