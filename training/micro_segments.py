"""Micro-segments: small, named user lists defined by navigation-pattern rules in YAML.

A rule holds when every one of its conditions holds for a person. A condition counts the
person's sessions whose sequence (of ``page``, ``category`` or ``event_type``) contains a
pattern, gaps allowed, as in :mod:`models.patterns`, and optionally does not contain another,
and bounds that count::

    micro_segments:
      - name: reengage_electronics
        description: Browsed electronics in at least 3 sessions and never purchased.
        identified_only: true            # registered users only (a re-engagement list)
        window_days: 60                  # only sessions of the last 60 days (default: all)
        when:
          - {by: category, pattern: [electronics], min_sessions: 3}
          - {by: event_type, pattern: [purchase], max_sessions: 0}

The result is a ``user_id,micro_segment`` list and, for Feast, one row per person of the log
with the sorted names of the rules the person matches (``user_micro_segments`` view).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.eventlog import EventLog
from features.ids import ANON_PREFIX
from features.workspace import Workspace
from models.errors import SpecError
from models.patterns import SequenceIndex
from training.patterns import BY_FIELDS, session_sequences

logger = logging.getLogger(__name__)

RULE_KEYS = ("name", "description", "when", "window_days", "identified_only")
CONDITION_KEYS = ("by", "pattern", "without", "min_sessions", "max_sessions")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
EVENT_COLUMNS = ("session_id", "timestamp", "user_id", "anonymous_id", *BY_FIELDS)


class RuleError(SpecError):
    """A micro-segment rule file that cannot be used; the message names the rule and key."""


@dataclass(frozen=True)
class Condition:
    by: str
    pattern: tuple[str, ...]
    without: tuple[str, ...] = ()
    min_sessions: int | None = None
    max_sessions: int | None = None


@dataclass(frozen=True)
class MicroSegmentRule:
    name: str
    conditions: tuple[Condition, ...]
    description: str = ""
    window_days: int | None = None
    identified_only: bool = False


@dataclass(frozen=True)
class MicroSegments:
    """``members``: one ``user_id, micro_segment`` row per membership. ``snapshot``: one row per
    person of the log in the ``user_micro_segments`` table layout. ``counts``: members per rule."""

    members: pd.DataFrame
    snapshot: pd.DataFrame
    counts: dict[str, int]
    as_of: pd.Timestamp


@dataclass(frozen=True)
class MicroSegmentsResult:
    segments: MicroSegments
    out: Path
    feast_table: Path | None


# -- loading and validation ---------------------------------------------------------------------
def load_rules(path: Path | str) -> list[MicroSegmentRule]:
    """Read and validate a rules file (see the module docstring for the format)."""
    path = Path(path)
    if not path.exists():
        raise RuleError(f"rules file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RuleError(f"{path} is not valid YAML: {exc}") from None
    return parse_rules(data, source=str(path))


def parse_rules(data: Any, source: str = "rules") -> list[MicroSegmentRule]:
    """Validate parsed YAML; every error names the rule (and condition) and the key at fault."""
    if not isinstance(data, dict) or "micro_segments" not in data:
        raise RuleError(f"{source}: expected a mapping with a 'micro_segments' list")
    unknown = sorted(set(data) - {"micro_segments"})
    if unknown:
        raise RuleError(f"{source}: unknown top-level key {unknown[0]!r}; allowed: micro_segments")
    items = data["micro_segments"]
    if not isinstance(items, list) or not items:
        raise RuleError(f"{source}: 'micro_segments' must be a non-empty list of rules")
    rules: list[MicroSegmentRule] = []
    for number, item in enumerate(items, start=1):
        rule = _parse_rule(item, number)
        if any(r.name == rule.name for r in rules):
            raise RuleError(f"rule {rule.name!r} (#{number}): key 'name': the name is used twice")
        rules.append(rule)
    return rules


def _parse_rule(item: Any, number: int) -> MicroSegmentRule:
    if not isinstance(item, dict):
        raise RuleError(f"rule #{number}: expected a mapping with keys {', '.join(RULE_KEYS)}")
    name = item.get("name")
    where = f"rule {name!r} (#{number})" if isinstance(name, str) else f"rule #{number}"
    for key in item:
        if key not in RULE_KEYS:
            raise RuleError(f"{where}: unknown key {key!r}; allowed: {', '.join(RULE_KEYS)}")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise RuleError(
            f"{where}: key 'name': {name!r} must be lower-case letters, digits and _, "
            "starting with a letter"
        )
    description = item.get("description", "")
    if not isinstance(description, str):
        raise RuleError(f"{where}: key 'description': {description!r} is not text")
    window = item.get("window_days")
    if window is not None and (not _is_int(window) or window < 1):
        raise RuleError(f"{where}: key 'window_days': {window!r} must be an integer >= 1")
    identified = item.get("identified_only", False)
    if not isinstance(identified, bool):
        raise RuleError(f"{where}: key 'identified_only': {identified!r} must be true or false")
    when = item.get("when")
    if not isinstance(when, list) or not when:
        raise RuleError(f"{where}: key 'when': expected a non-empty list of conditions")
    conditions = tuple(
        _parse_condition(cond, f"{where}, when[{i}]") for i, cond in enumerate(when, start=1)
    )
    return MicroSegmentRule(
        name=name,
        conditions=conditions,
        description=description,
        window_days=window,
        identified_only=identified,
    )


def _parse_condition(cond: Any, where: str) -> Condition:
    if not isinstance(cond, dict):
        raise RuleError(f"{where}: expected a mapping with keys {', '.join(CONDITION_KEYS)}")
    for key in cond:
        if key not in CONDITION_KEYS:
            raise RuleError(f"{where}: unknown key {key!r}; allowed: {', '.join(CONDITION_KEYS)}")
    by = cond.get("by")
    if by not in BY_FIELDS:
        raise RuleError(f"{where}: key 'by': {by!r} is not one of {', '.join(BY_FIELDS)}")
    pattern = _tokens(cond.get("pattern"), where, "pattern", required=True)
    without = _tokens(cond.get("without"), where, "without", required=False)
    bounds = {}
    for key in ("min_sessions", "max_sessions"):
        value = cond.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            raise RuleError(f"{where}: key {key!r}: {value!r} must be an integer >= 0")
        bounds[key] = value
    if bounds["min_sessions"] is None and bounds["max_sessions"] is None:
        raise RuleError(f"{where}: key 'min_sessions': give min_sessions, max_sessions or both")
    if None not in bounds.values() and bounds["min_sessions"] > bounds["max_sessions"]:
        raise RuleError(
            f"{where}: key 'min_sessions': {bounds['min_sessions']} > max_sessions "
            f"{bounds['max_sessions']}"
        )
    return Condition(by=by, pattern=pattern, without=without, **bounds)


def _tokens(value: Any, where: str, key: str, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(t, str) and t.strip() for t in value)
    ):
        raise RuleError(f"{where}: key {key!r}: {value!r} must be a non-empty list of names")
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- evaluation ---------------------------------------------------------------------------------
def evaluate(
    events: pd.DataFrame,
    rules: list[MicroSegmentRule],
    as_of: pd.Timestamp | None = None,
    created: pd.Timestamp | None = None,
) -> MicroSegments:
    """Apply ``rules`` to ``events`` (columns :data:`EVENT_COLUMNS`, in time order).

    ``as_of`` (default: the latest event) ends every rule's window and stamps the snapshot;
    events after it are ignored. Every person with a session in the log gets a snapshot row,
    with an empty list when no rule holds, so a person who left a segment leaves it online too.
    """
    if events.empty:
        raise ValueError("there are no events to evaluate the micro-segment rules on")
    as_of = pd.Timestamp(events["timestamp"].max() if as_of is None else as_of)
    events = events[events["timestamp"] <= as_of]
    everyone = session_sequences(events, "event_type", keep_empty=True)
    people = np.unique(everyone.user_ids.astype(str))
    cache: dict[tuple[str, int | None], tuple[np.ndarray, SequenceIndex]] = {}
    members: dict[str, np.ndarray] = {}
    for rule in rules:
        holds = np.ones(len(people), dtype=bool)
        if rule.identified_only:
            holds &= ~np.char.startswith(people.astype(str), ANON_PREFIX)
        for cond in rule.conditions:
            key = (cond.by, rule.window_days)
            if key not in cache:
                cache[key] = _index(events, cond.by, rule.window_days, as_of)
            owners, index = cache[key]
            matched = index.contains(cond.pattern)
            if cond.without:
                matched &= ~index.contains(cond.without)
            per_person = pd.Series(matched).groupby(owners).sum()
            counts = per_person.reindex(people, fill_value=0).to_numpy()
            if cond.min_sessions is not None:
                holds &= counts >= cond.min_sessions
            if cond.max_sessions is not None:
                holds &= counts <= cond.max_sessions
        members[rule.name] = people[holds]
        logger.info("micro-segment %s: %d members", rule.name, holds.sum())
    rows = [(user, name) for name, users in members.items() for user in users.tolist()]
    member_frame = pd.DataFrame(rows, columns=["user_id", "micro_segment"])
    return MicroSegments(
        members=member_frame,
        snapshot=_snapshot(people, members, as_of, created),
        counts={name: len(users) for name, users in members.items()},
        as_of=as_of,
    )


def _index(
    events: pd.DataFrame, by: str, window_days: int | None, as_of: pd.Timestamp
) -> tuple[np.ndarray, SequenceIndex]:
    """Session owners and the sequence index of the sessions in a rule's window."""
    if window_days is not None:
        events = events[events["timestamp"] > as_of - pd.Timedelta(days=window_days)]
    if events.empty:
        return np.array([], dtype=object), SequenceIndex([])
    sessions = session_sequences(events, by, keep_empty=True)
    return sessions.user_ids.astype(str), SequenceIndex(sessions.sequences)


def _snapshot(
    people: np.ndarray,
    members: dict[str, np.ndarray],
    as_of: pd.Timestamp,
    created: pd.Timestamp | None,
) -> pd.DataFrame:
    names_of: dict[str, list[str]] = {user: [] for user in people.tolist()}
    for name in sorted(members):
        for user in members[name].tolist():
            names_of[user].append(name)
    lists = [names_of[user] for user in people.tolist()]
    created = pd.Timestamp.now(tz="UTC") if created is None else pd.Timestamp(created)
    return pd.DataFrame(
        {
            "user_id": people.astype(object),
            "event_timestamp": pd.Series([as_of] * len(people), dtype="datetime64[ns, UTC]"),
            "created": pd.Series([created] * len(people), dtype="datetime64[ns, UTC]"),
            "micro_segments": pd.Series(lists, dtype=object),
            "n_micro_segments": np.fromiter((len(x) for x in lists), dtype=np.int64),
        }
    )


def run_micro_segments(
    ws: Workspace,
    rules: list[MicroSegmentRule] | Path | str,
    out: Path,
    feast: bool = True,
) -> MicroSegmentsResult:
    """Evaluate the rules on the workspace's event log, write ``user_id,micro_segment`` to
    ``out`` (CSV) and, with ``feast``, add the snapshot to the ``user_micro_segments`` table,
    register the view and load the snapshot into the online store."""
    if not isinstance(rules, list):
        rules = load_rules(rules)
    events = EventLog(ws.event_log_dir).read(columns=list(EVENT_COLUMNS))
    if events.empty:
        raise ValueError(f"the event log at {ws.event_log_dir} is empty: import events first")
    segments = evaluate(events, rules)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    segments.members.to_csv(out, index=False)
    table = None
    if feast:
        from features import store

        table = store.write_micro_segments(ws, segments.snapshot)
        fs = store.apply_micro_segments(ws)
        moment = segments.as_of.to_pydatetime()
        store.materialize_micro_segments(ws, moment, moment, store=fs)
    return MicroSegmentsResult(segments=segments, out=out, feast_table=table)
