"""The navigation-patterns job and micro-segments on a small generated workspace (issue #6).

Supports and rule lists are checked against direct pandas computations; the micro-segment
feature is read back online from a real Feast store in a temp folder.
"""

from __future__ import annotations

import re

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from features import store
from features.consent.files import import_csv
from features.consent.ledger import ConsentLedger
from features.eventlog import EventLog
from features.synthetic.generate import generate_clickstream
from features.workspace import Workspace
from models.prefixspan import PatternConfig
from training.patterns import SEPARATOR, run_patterns, session_sequences
from training.segments.micro import (
    RuleError,
    evaluate,
    load_rules,
    parse_rules,
    run_micro_segments,
)

ELECTRONICS_RULE = {
    "name": "reengage_electronics",
    "description": "Browsed electronics in 3+ sessions, never purchased.",
    "identified_only": True,
    "when": [
        {"by": "category", "pattern": ["electronics"], "min_sessions": 3},
        {"by": "event_type", "pattern": ["purchase"], "max_sessions": 0},
    ],
}
ABANDON_RULE = {
    "name": "cart_abandoners",
    "window_days": 7,
    "when": [
        {
            "by": "event_type",
            "pattern": ["add_to_cart"],
            "without": ["purchase"],
            "min_sessions": 2,
        }
    ],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = Workspace(home=tmp_path_factory.mktemp("patterns")).ensure()
    generated = generate_clickstream(n_users=150, days=21, seed=5)
    EventLog(ws.event_log_dir).append(generated.events)
    generated.consent.to_csv(ws.home / "consent.csv", index=False)
    import_csv(ConsentLedger.for_workspace(ws), ws.home / "consent.csv")  # issue #12
    return ws, generated


@pytest.fixture(scope="module")
def events(workspace):
    ws, _ = workspace
    return EventLog(ws.event_log_dir).read()


def session_owner(events: pd.DataFrame) -> pd.Series:
    """Person of each session, straight from pandas: first user id, else anon:<cookie>."""
    first = events.groupby("session_id").agg(
        user=("user_id", "first"), anon=("anonymous_id", "first")
    )
    return first["user"].where(first["user"].notna(), "anon:" + first["anon"])


def sessions_with(events: pd.DataFrame, column: str, value: str) -> pd.Series:
    return events.loc[events[column] == value, "session_id"].drop_duplicates()


# -- sessions → sequences ----------------------------------------------------------------------
def test_session_sequences_keep_time_order_skip_missing_and_find_the_person():
    t = pd.Timestamp("2026-01-01", tz="UTC")
    events = pd.DataFrame(
        {
            "session_id": ["s2", "s1", "s1", "s1", "s2", "s1", "s3"],
            "timestamp": [t + pd.Timedelta(minutes=m) for m in range(7)],
            "user_id": [None, None, "u1", "u1", None, "u1", None],
            "anonymous_id": ["c9", "c1", "c1", "c1", "c9", "c1", "c3"],
            "category": ["books", "toys", None, "toys", "home", "books", None],
        }
    )
    found = session_sequences(events, "category")
    assert list(found.session_ids) == ["s1", "s2"]  # s3 has no category at all
    assert found.sequences == [["toys", "toys", "books"], ["books", "home"]]
    assert list(found.user_ids) == ["u1", "anon:c9"]  # logs in mid-session: the user wins
    collapsed = session_sequences(events, "category", collapse_repeats=True)
    assert collapsed.sequences[0] == ["toys", "books"]
    assert len(session_sequences(events, "category", keep_empty=True)) == 3
    with pytest.raises(ValueError, match="unknown sequence field 'pages'"):
        session_sequences(events, "pages")


# -- the job -----------------------------------------------------------------------------------
def test_run_patterns_supports_match_pandas_and_the_table_is_logged(workspace, events, tmp_path):
    ws, _ = workspace
    out = tmp_path / "patterns.csv"
    result = run_patterns(
        ws, PatternConfig(min_support=0.05, max_length=3), "page", out=out, track=True
    )
    table = pd.read_csv(out)
    assert list(table.columns) == ["pattern", "length", "support", "support_fraction", "sessions"]
    assert len(table) == result.n_patterns > 0 and table["length"].max() <= 3
    assert result.n_sessions == events["session_id"].nunique()  # every session has a page
    support = dict(zip(table["pattern"], table["support"], strict=True))
    for page in ("home", "product", "cart"):
        assert support[page] == sessions_with(events, "page", page).size
    # home > cart: sessions with a cart page after a home page, counted directly
    first_home = events[events["page"] == "home"].groupby("session_id")["timestamp"].min()
    last_cart = events[events["page"] == "cart"].groupby("session_id")["timestamp"].max()
    both = pd.concat([first_home, last_cart], axis=1, join="inner")
    assert support[f"home{SEPARATOR}cart"] == int((both.iloc[:, 0] < both.iloc[:, 1]).sum())
    assert (table["support"] >= 0.05 * result.n_sessions).all()

    mlflow.set_tracking_uri(ws.mlflow_uri)
    run = mlflow.get_run(result.run_id)
    assert run.data.params["by"] == "page" and run.data.params["max_length"] == "3"
    assert run.data.metrics["n_patterns"] == result.n_patterns
    artifacts = mlflow.MlflowClient().list_artifacts(result.run_id, "patterns")
    assert [a.path for a in artifacts] == ["patterns/patterns.csv"]


def test_per_segment_patterns_count_each_segments_sessions(workspace, events, tmp_path):
    ws, generated = workspace
    mapping = dict(zip(generated.personas["user_id"], generated.personas["persona"], strict=True))
    result = run_patterns(
        ws,
        PatternConfig(min_support=0.1, max_length=2),
        "event_type",
        out=tmp_path / "per-segment.csv",
        segments=mapping,
        track=False,
    )
    table = result.table
    assert set(table["segment"]) == set(mapping.values())
    owners = session_owner(events)
    assert result.unassigned_sessions == int((~owners.isin(list(mapping))).sum())
    segment = "frequent_buyer"
    theirs = owners[owners.map(mapping) == segment].index
    rows = table[table["segment"] == segment].set_index("pattern")
    bought = sessions_with(events, "event_type", "purchase")
    assert rows.loc["purchase", "support"] == bought.isin(theirs).sum()
    assert (rows["sessions"] == len(theirs)).all()


# -- micro-segments ----------------------------------------------------------------------------
def test_micro_segment_lists_match_a_direct_pandas_computation(events):
    rules = parse_rules({"micro_segments": [ELECTRONICS_RULE, ABANDON_RULE]})
    found = evaluate(events, rules)
    members = found.members.groupby("micro_segment")["user_id"].apply(set).to_dict()

    owners = session_owner(events)
    electronics = owners[sessions_with(events, "category", "electronics")].value_counts()
    buyers = set(owners[sessions_with(events, "event_type", "purchase")])
    expected = {
        user
        for user, n in electronics.items()
        if n >= 3 and user not in buyers and not user.startswith("anon:")
    }
    assert expected and members["reengage_electronics"] == expected

    as_of = events["timestamp"].max()
    recent = events[events["timestamp"] > as_of - pd.Timedelta(days=7)]
    carted = set(sessions_with(recent, "event_type", "add_to_cart"))
    paid = set(sessions_with(recent, "event_type", "purchase"))
    abandoned = owners[sorted(carted - paid)].value_counts()
    assert members["cart_abandoners"] == set(abandoned[abandoned >= 2].index)

    snapshot = found.snapshot.set_index("user_id")
    assert set(snapshot.index) == set(owners)  # every person, members or not
    assert (snapshot["event_timestamp"] == as_of).all()
    some = sorted(expected)[0]
    assert "reengage_electronics" in snapshot.loc[some, "micro_segments"]


def test_micro_segments_are_written_and_readable_online_from_feast(workspace, tmp_path):
    ws, _ = workspace
    rules = load_rules("experiments/micro_segments.yaml")
    out = tmp_path / "micro.csv"
    result = run_micro_segments(ws, rules, out, feast=True)
    written = pd.read_csv(out)
    assert list(written.columns) == ["user_id", "micro_segment"]
    pd.testing.assert_frame_equal(written, result.segments.members, check_dtype=False)
    member = written.loc[written["micro_segment"] == "reengage_electronics", "user_id"].iloc[0]
    outsider = sorted(set(result.segments.snapshot["user_id"]) - set(written["user_id"]))[0]

    fs = store.feature_store(ws)
    assert store.MICRO_SEGMENT_VIEW in {v.name for v in fs.list_feature_views()}
    rows = store.online_features(
        fs,
        [{"user_id": member}, {"user_id": outsider}, {"user_id": "nobody"}],
        service=store.MICRO_SEGMENT_SERVICE,
    )
    expected = sorted(written.loc[written["user_id"] == member, "micro_segment"])
    assert rows[0]["micro_segments"] == expected
    assert rows[0]["n_micro_segments"] == len(expected)
    assert rows[1]["micro_segments"] == [] and rows[1]["n_micro_segments"] == 0
    assert rows[2]["micro_segments"] is None

    # a second run at the same as-of replaces its rows instead of duplicating them
    run_micro_segments(ws, rules, out, feast=True)
    table = pd.read_parquet(result.feast_table)
    assert len(table) == len(result.segments.snapshot)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"colour": "red"},
            "rule 'reengage_electronics', key 'colour', value 'red': unknown key; allowed: name",
        ),
        (
            {"window_days": 0},
            "rule 'reengage_electronics', key 'window_days', value 0: expected an integer >= 1",
        ),
        ({"identified_only": "yes"}, "key 'identified_only', value 'yes': expected a boolean"),
        (
            {"name": "Re-engage"},
            "rule 'Re-engage', key 'name', value 'Re-engage': expected lower-case",
        ),
        (
            {"when": []},
            "rule 'reengage_electronics', key 'when', value []: expected a non-empty list",
        ),
        (
            {"when": [{"by": "pages", "pattern": ["x"], "min_sessions": 1}]},
            "key 'when[0].by', value 'pages': not one of 'page', 'category' or 'event_type'",
        ),
        (
            {"when": [{"by": "page", "pattern": ["x"], "min_sessions": -1}]},
            "key 'when[0].min_sessions', value -1: expected an integer >= 0",
        ),
        (
            {"when": [{"by": "page", "pattern": [], "min_sessions": 1}]},
            "key 'when[0].pattern', value []: expected a non-empty list",
        ),
        (
            {"when": [{"by": "page", "pattern": ["x"], "min_sesions": 1}]},
            "key 'when[0].min_sesions', value 1: unknown key; allowed: by",
        ),
        (
            {"when": [{"by": "page", "pattern": ["x"]}]},
            "key 'when[0].min_sessions', value None: give min_sessions, max_sessions or both",
        ),
        (
            {"when": [{"by": "page", "pattern": ["x"], "min_sessions": 3, "max_sessions": 1}]},
            "key 'when[0].min_sessions', value 3: above max_sessions 1",
        ),
    ],
)
def test_bad_rules_name_the_rule_and_the_key(change, message):
    with pytest.raises(RuleError, match=re.escape(message)):
        parse_rules({"micro_segments": [{**ELECTRONICS_RULE, **change}]})


def test_rule_file_level_errors(tmp_path):
    with pytest.raises(
        RuleError, match=r"rule 'reengage_electronics', key 'name', .*earlier rule \(#1\)"
    ):
        parse_rules({"micro_segments": [ELECTRONICS_RULE, ELECTRONICS_RULE]})
    with pytest.raises(
        RuleError, match="key 'rules', value \\[\\]: unknown key; allowed: micro_segments"
    ):
        parse_rules({"micro_segments": [ELECTRONICS_RULE], "rules": []})
    with pytest.raises(RuleError, match="micro-segment rules file not found"):
        load_rules(tmp_path / "missing.yaml")
    assert [r.name for r in load_rules("experiments/micro_segments.yaml")] == [
        "reengage_electronics",
        "cart_abandoners",
        "search_then_buy",
    ]


def test_a_bad_rule_file_names_the_file_rule_key_value_and_allowed(tmp_path):
    """issue #10 (one shape): the micro-segment rule file is a pydantic model; its errors name
    the file, the rule, the key path, the value and the allowed values."""
    path = tmp_path / "micro.yaml"
    path.write_text(
        "micro_segments:\n  - name: browsers\n"
        "    when: [{by: category, pattern: [hats], min_sessions: 1}, {by: pages, pattern: [x]}]\n"
    )
    with pytest.raises(RuleError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(
        f"{path}: rule 'browsers', key 'when[1].by', value 'pages': not one of 'page', 'category'"
    )


# -- the commands ------------------------------------------------------------------------------
def test_cli_patterns_and_micro_segments(workspace, tmp_path):
    ws, generated = workspace
    home = ["--home", str(ws.home)]
    out = tmp_path / "cli.csv"
    result = CliRunner().invoke(
        app,
        ["patterns", "--by", "category", "--min-support", "20", "--max-length", "2"]
        + ["--closed", "--no-track", "--out", str(out), *home],
    )
    assert result.exit_code == 0, result.output
    assert "top closed patterns of category sequences" in result.output
    assert pd.read_csv(out)["support"].min() >= 20

    segments = tmp_path / "segments.csv"
    generated.personas.rename(columns={"persona": "segment_label"}).to_csv(segments, index=False)
    result = CliRunner().invoke(
        app,
        ["patterns", "--per-segment", str(segments), "--max-length", "2", "--no-track"]
        + ["--out", str(tmp_path / "seg.csv"), *home],
    )
    assert result.exit_code == 0, result.output
    assert "sessions without a segment" in result.output

    bad = CliRunner().invoke(app, ["patterns", "--min-support", "lots", "--out", str(out), *home])
    assert bad.exit_code != 0 and "neither a count" in bad.output

    lists = tmp_path / "lists.csv"
    result = CliRunner().invoke(
        app,
        ["micro-segments", "experiments/micro_segments.yaml", "--out", str(lists), "--no-feast"]
        + home,
    )
    assert result.exit_code == 0, result.output
    assert "reengage_electronics" in result.output and lists.exists()

    rules = tmp_path / "bad.yaml"
    rules.write_text("micro_segments:\n  - {name: x, when: [], colour: red}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["micro-segments", str(rules), "--out", str(lists), *home])
    shown = " ".join(result.output.split())
    assert result.exit_code == 1 and "rule 'x', key 'colour', value 'red': unknown key" in shown
