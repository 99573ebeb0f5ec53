"""The consent core (issue #12): policy file, append-only ledger, the one check.

Every ledger and check test runs on SQLite (the embedded default) and on PostgreSQL (the scale
profile; skipped locally without a server, failed in CI), each with its own table prefixes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from features import database
from features.consent.check import NOT_GIVEN, ConsentCheck
from features.consent.ledger import ConsentError, ConsentLedger, LedgerUnavailable
from features.consent.policy import (
    OPT_IN,
    OPT_OUT,
    PolicyError,
    load_policy,
    parse_policy,
    workspace_policy,
)
from features.identity.graph import IdentityGraph
from features.settings import DEFAULTS, Settings
from features.workspace import Workspace
from tests.services import require_postgres

POLICY = load_policy()
V = POLICY.policy_version
ALL = {"analytics": True, "personalization": True, "marketing": True}
NONE = {"analytics": False, "personalization": False, "marketing": False}


# -- the policy file ------------------------------------------------------------------------------
def test_packaged_policy_has_the_four_purposes_and_the_regime_table() -> None:
    assert list(POLICY.purposes) == ["necessary", "analytics", "personalization", "marketing"]
    assert all(p.description for p in POLICY.purposes.values())
    assert POLICY.regime("FR") == OPT_IN and POLICY.regime("gb") == OPT_IN
    assert POLICY.regime("NO") == OPT_IN  # quoted in YAML, else it reads as false
    assert POLICY.regime("US") == OPT_OUT
    assert POLICY.regime("BR") == OPT_IN and POLICY.regime(None) == OPT_IN  # the safe default


def _doc(**changes) -> dict:
    doc = {
        "policy_version": "v1",
        "purposes": {name: {"description": "x"} for name in POLICY.purposes},
        "regimes": {"opt-in": ["FR"], "opt-out": ["US"]},
    }
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "key 'colour'"),
        ({"purposes": {"necessary": {"description": "x"}}}, "missing purposes"),
        ({"regimes": {"opt-in": ["France"]}}, "ISO 3166-1 alpha-2"),
        ({"regimes": {"opt-in": ["US"], "opt-out": ["US"]}}, "already listed under opt-in"),
        ({"regimes": {"opt-never": ["US"]}}, "opt-never"),
    ],
)
def test_bad_policy_files_name_the_key(changes, message) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(_doc(**changes), "policy.yaml")


def test_a_workspace_overrides_the_policy(tmp_path) -> None:
    ws = Workspace(tmp_path)
    assert workspace_policy(ws).policy_version == V
    (tmp_path / "consent_policy.yaml").write_text(
        "policy_version: 7\npurposes: {necessary: {description: a}, analytics: {description: b},"
        " personalization: {description: c}, marketing: {description: d}}\n"
        "regimes: {opt-out: [FR]}\ndefault_regime: opt-out\n"
    )
    own = workspace_policy(ws)
    assert own.policy_version == "7" and own.regime("FR") == OPT_OUT
    other = tmp_path / "other.yaml"
    other.write_text("policy_version: x\n")
    with pytest.raises(PolicyError, match="purposes"):
        workspace_policy(Workspace(tmp_path, settings=Settings(consent_policy=other)))


# -- ledger and check on both databases -----------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tailor.db'}"
    require_postgres("consent ledger on the scale profile")
    return DEFAULTS.postgres_url


@pytest.fixture
def make_check(url):
    """``make_check(policy=POLICY)``: a check over this test's own tables."""
    prefix = f"c{uuid.uuid4().hex[:10]}_"
    made: list[ConsentLedger] = []

    def make(policy=POLICY) -> ConsentCheck:
        graph = IdentityGraph(database.engine(url), prefix=prefix + "id_")
        ledger = ConsentLedger(database.engine(url), policy, graph, prefix=prefix)
        made.append(ledger)
        return ConsentCheck(ledger)

    yield make
    for ledger in made[:1]:
        ledger.drop()
        ledger.graph.drop()


@pytest.fixture
def check(make_check) -> ConsentCheck:
    return make_check()


def test_opt_in_allows_nothing_but_necessary_until_a_choice(check: ConsentCheck) -> None:
    first = check.decide("u1", "personalization", country="FR")
    assert (first.allowed, first.reason, first.code) == (
        False,
        "personalization not given",
        NOT_GIVEN,
    )
    assert first.needs_banner and first.regime == OPT_IN
    assert check.decide("u1", "necessary", country="FR").allowed
    check.ledger.append(user_id="u1", purposes={"personalization": True}, source="banner")
    assert check.decide("u1", "personalization", country="FR").reason == "personalization given"
    assert not check.decide("u1", "marketing", country="FR").allowed
    assert check.state("u1", country="FR").needs_banner  # analytics, marketing still unchosen


def test_opt_out_allows_until_refused_and_gpc_refuses_marketing(check: ConsentCheck) -> None:
    decision = check.decide("u2", "marketing", country="US")
    assert decision.allowed and decision.reason == "marketing allowed until refused"
    gpc = check.decide("u2", "marketing", country="US", gpc=True)
    assert (gpc.allowed, gpc.reason) == (False, "marketing refused by Sec-GPC")
    assert check.decide("u2", "analytics", country="US", gpc=True).allowed  # GPC: marketing only
    assert not check.decide("u2", "marketing", country="FR", gpc=False).allowed
    check.ledger.append(user_id="u2", purposes={"analytics": False})
    assert check.decide("u2", "analytics", country="US").reason == "analytics refused"


def test_withdrawal_counts_on_the_very_next_check_even_from_another_ledger(make_check) -> None:
    service, operator = make_check(), make_check()
    service.ledger.append(anonymous_id="a1", purposes=ALL, source="banner")
    assert service.decide("anon:a1", "personalization", country="DE").allowed
    operator.ledger.append(anonymous_id="a1", purposes={"personalization": False}, source="api")
    assert not service.decide("anon:a1", "personalization", country="DE").allowed
    assert service.decide("anon:a1", "analytics", country="DE").allowed  # left untouched


def test_a_record_older_than_the_current_one_is_stored_but_does_not_override(check) -> None:
    now = datetime.now(UTC)
    check.ledger.append(user_id="u3", purposes=NONE, client_ts=now)
    late = check.ledger.append(user_id="u3", purposes=ALL, client_ts=now - timedelta(minutes=5))
    state = check.state("u3", country="FR")
    assert [r.id for r in state.history][-1] == late.id  # stored
    assert not state.allowed("personalization")  # but the earlier-timestamped choice lost
    check.ledger.append(user_id="u3", purposes=ALL, client_ts=now + timedelta(seconds=1))
    assert check.decide("u3", "personalization", country="FR").allowed


def test_anonymous_choices_follow_the_person_after_stitching(check: ConsentCheck) -> None:
    check.ledger.append(anonymous_id="dev1", purposes=ALL, source="banner")
    assert not check.decide("u4", "personalization", country="FR").allowed
    check.ledger.graph.link("dev1", "u4", source="test")
    decision = check.decide("u4", "personalization", country="FR")
    assert decision.allowed and decision.person == "u4"
    assert check.decide("anon:dev1", "personalization", country="FR").person == "u4"


def test_on_merge_disagreeing_earlier_choices_combine_restrictively_until_chosen_again(
    check,
) -> None:
    check.ledger.append(user_id="u5", purposes=NONE, source="banner")
    check.ledger.append(anonymous_id="dev5", purposes=ALL, source="banner")  # more recent
    check.ledger.append(anonymous_id="dev5b", purposes={"analytics": False}, source="banner")
    check.ledger.graph.link("dev5", "u5", source="test")
    check.ledger.graph.link("dev5b", "u5", source="test")
    state = check.state("u5", country="FR")
    # personalization: u5 false, dev5 true, both before the merge -> false wins
    assert (
        not state.allowed("personalization") and state.decisions["personalization"].choice.combined
    )
    assert not state.allowed("analytics")
    check.ledger.append(anonymous_id="dev5", purposes={"personalization": True}, source="banner")
    assert check.decide("u5", "personalization", country="FR").allowed  # chose again, after
    assert not check.decide("u5", "marketing", country="FR").allowed


def test_agreeing_choices_before_a_merge_stand(check: ConsentCheck) -> None:
    check.ledger.append(user_id="u6", purposes=ALL)
    check.ledger.append(anonymous_id="dev6", purposes=ALL)
    check.ledger.graph.link("dev6", "u6", source="test")
    assert check.decide("u6", "marketing", country="FR").allowed


def test_a_new_policy_version_asks_again_under_opt_in_only(make_check) -> None:
    old = make_check()
    old.ledger.append(user_id="u7", purposes=ALL, source="banner")
    assert not old.state("u7", country="FR").needs_banner
    new_policy = POLICY.model_copy(update={"policy_version": "2027-01-01"})
    new = make_check(new_policy)
    state = new.state("u7", country="FR")
    assert state.needs_banner and not state.allowed("personalization")
    assert state.decisions["personalization"].reason == "personalization not given"
    assert new.decide("u7", "personalization", country="US").allowed  # opt-out: still allowed
    new.ledger.append(user_id="u7", purposes={"personalization": False}, source="banner")
    assert not new.decide("u7", "personalization", country="US").allowed


def test_the_recorded_country_picks_the_regime_when_the_question_has_none(check) -> None:
    check.ledger.append(user_id="u8", purposes={"analytics": True}, country="us")
    assert check.decide("u8", "marketing").regime == OPT_OUT
    assert check.decide("u8", "marketing").allowed
    assert check.decide("u9", "marketing").regime == OPT_IN


def test_point_in_time_answers_from_what_was_stored_then(check: ConsentCheck) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    check.ledger.append(user_id="u10", purposes=ALL, recorded_at=t0, source="import")
    check.ledger.append(
        user_id="u10", purposes={"personalization": False}, recorded_at=t0 + timedelta(days=10)
    )
    at = check.decide("u10", "personalization", country="FR", as_of=t0 + timedelta(days=5))
    assert at.allowed
    assert not check.decide("u10", "personalization", country="FR").allowed
    assert not check.decide("u10", "personalization", as_of=t0 - timedelta(days=1)).allowed
    frame = pd.DataFrame(
        {
            "user_id": ["u10", "u10", "u10", "nobody"],
            "event_timestamp": [
                t0 - timedelta(days=1),
                t0 + timedelta(days=5),
                t0 + timedelta(days=11),
                t0 + timedelta(days=5),
            ],
        },
        index=[7, 8, 9, 10],
    )
    mask = check.allowed_rows(frame, "personalization", country="FR")
    assert mask.to_dict() == {7: False, 8: True, 9: False, 10: False}


def test_decide_many_resolves_everyone_at_once(check: ConsentCheck) -> None:
    check.ledger.append(user_id="m1", purposes=ALL)
    check.ledger.append(anonymous_id="d2", purposes=ALL)
    check.ledger.graph.link("d2", "m2", source="test")
    check.ledger.append(user_id="m3", purposes=NONE)
    decisions = check.decide_many(["m1", "m2", "m3", "m4"], "personalization", country="FR")
    assert {k: d.allowed for k, d in decisions.items()} == {
        "m1": True, "m2": True, "m3": False, "m4": False
    }  # fmt: skip
    us = check.decide_many(["m3", "m4"], "personalization", country={"m3": "US", "m4": "US"})
    assert {k: d.allowed for k, d in us.items()} == {"m3": False, "m4": True}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"purposes": ALL}, "user_id"),
        ({"user_id": "x", "anonymous_id": "y", "purposes": ALL}, "anonymous_id"),
        ({"user_id": "x", "purposes": {"ads": True}}, "purposes.ads"),
        ({"user_id": "x", "purposes": {"analytics": "yes"}}, "purposes.analytics"),
        ({"user_id": "x", "purposes": {"necessary": False}}, "purposes.necessary"),
        ({"user_id": "x", "purposes": {}}, "purposes"),
        ({"user_id": " x", "purposes": ALL}, "user_id"),
        ({"user_id": "x", "purposes": ALL, "source": "email"}, "source"),
        ({"user_id": "x", "purposes": ALL, "country": "France"}, "country"),
    ],
)
def test_bad_records_are_refused_naming_the_field(check, kwargs, field) -> None:
    with pytest.raises(ConsentError) as caught:
        check.ledger.append(**kwargs)
    assert caught.value.field == field
    assert check.ledger.counts()["records"] == 0


def test_unknown_purpose_in_a_question_names_the_field(check) -> None:
    with pytest.raises(ConsentError, match="purpose: unknown purpose 'ads'"):
        check.decide("u1", "ads")


def test_export_and_erase_cover_every_key_of_the_person(check: ConsentCheck) -> None:
    check.ledger.append(user_id="e1", purposes=ALL)
    check.ledger.append(anonymous_id="edev", purposes=NONE)
    check.ledger.append(user_id="other", purposes=ALL)
    check.ledger.graph.link("edev", "e1", source="test")
    exported = check.ledger.export("anon:edev")
    assert [r.get("user_id") or r.get("anonymous_id") for r in exported] == ["e1", "edev"]
    assert check.ledger.erase("e1") == 2
    assert check.ledger.export("e1") == []
    assert check.ledger.counts() == {"records": 1, "people": 1}


def test_an_unwritable_ledger_raises_ledger_unavailable(check: ConsentCheck) -> None:
    check.ledger.create()
    broken = ConsentLedger(
        sa.create_engine("sqlite:////nonexistent-dir/tailor.db"), POLICY, check.ledger.graph
    )
    with pytest.raises(LedgerUnavailable):
        broken.append(user_id="u1", purposes=ALL)
    with pytest.raises(LedgerUnavailable):
        ConsentCheck(broken).ledger.records_of(["u1"])


def test_training_rows_follow_the_merge_rule_in_time(check: ConsentCheck) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    check.ledger.append(user_id="p1", purposes=NONE, recorded_at=t0, source="import")
    check.ledger.append(anonymous_id="pd", purposes=ALL, recorded_at=t0 + timedelta(days=1))
    check.ledger.graph.link("pd", "p1", source="test")  # now: after both choices
    chosen_again = check.ledger.append(user_id="p1", purposes={"personalization": True})
    frame = pd.DataFrame(
        {
            "user_id": ["p1", "anon:pd", "p1"],
            "event_timestamp": [
                t0 + timedelta(hours=12),  # only p1's refusal stored then
                t0 + timedelta(days=2),  # both stored, disagreeing, before the merge: false
                chosen_again.recorded_at + timedelta(seconds=1),  # chose again after the merge
            ],
        }
    )
    assert check.allowed_rows(frame, "personalization", country="FR").tolist() == [
        False,
        False,
        True,
    ]
