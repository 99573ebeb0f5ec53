"""Micro-segments: small, named user lists defined by navigation-pattern rules in YAML.

A rule holds when every one of its conditions holds for a person. A condition counts the
person's sessions whose sequence (of ``page``, ``category`` or ``event_type``) contains a
pattern, gaps allowed, as in :mod:`models.prefixspan`, and optionally does not contain another,
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
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from features.consent.check import ConsentCheck
from features.consent.feature_reads import PERSONALIZATION
from features.eventlog import EventLog
from features.identity.keys import ANON_PREFIX
from features.workspace import Workspace
from features.yaml_files import Count, FileModel, Invalid, read_yaml, unique_names, validate
from models.errors import SpecError
from models.prefixspan import SequenceIndex
from training.patterns import BY_FIELDS, session_sequences

logger = logging.getLogger(__name__)

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
    #: people of the log left out for want of ``personalization`` consent (issue #12)
    left_out: int = 0


# -- loading and validation ---------------------------------------------------------------------
def _names(value: Any) -> Any:
    """A pattern: one name or a non-empty list of names."""
    return [value] if isinstance(value, str) else value


def _not_blank(names: tuple[str, ...]) -> tuple[str, ...]:
    for i, name in enumerate(names):
        if not name.strip():
            raise Invalid("expected a non-empty list of names", (i,), name)
    return names


Names = Annotated[
    tuple[str, ...], BeforeValidator(_names), Field(min_length=1), AfterValidator(_not_blank)
]


class _Condition(FileModel):
    by: Literal[BY_FIELDS]
    pattern: Names
    without: Names = ()
    min_sessions: Count | None = None
    max_sessions: Count | None = None

    @model_validator(mode="after")
    def _bounded(self) -> _Condition:
        low, high = self.min_sessions, self.max_sessions
        if low is None and high is None:
            raise Invalid("give min_sessions, max_sessions or both", "min_sessions", None)
        if low is not None and high is not None and low > high:
            raise Invalid(f"above max_sessions {high}", "min_sessions", low)
        return self


class _Rule(FileModel):
    name: str
    description: str = ""
    when: Annotated[tuple[_Condition, ...], Field(min_length=1)]
    window_days: Annotated[int, Field(ge=1)] | None = None
    identified_only: StrictBool = False

    @field_validator("name")
    @classmethod
    def _snake_case(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise Invalid("expected lower-case letters, digits and _, starting with a letter")
        return name


class _RulesFile(FileModel):
    micro_segments: Annotated[tuple[_Rule, ...], Field(min_length=1)]

    @field_validator("micro_segments")
    @classmethod
    def _unique_names(cls, rules: tuple[_Rule, ...]) -> tuple[_Rule, ...]:
        return unique_names(rules)


def load_rules(path: Path | str) -> list[MicroSegmentRule]:
    """Read and validate a rules file (see the module docstring for the format)."""
    data, origin = read_yaml(path, RuleError, "micro-segment rules file")
    return parse_rules(data, source=origin)


def parse_rules(data: Any, source: str = "rules") -> list[MicroSegmentRule]:
    """Validate parsed YAML; every error names the file, the rule, the key path, the value and
    what is allowed."""
    document = validate(_RulesFile, data, RuleError, source, entries="micro_segments")
    return [
        MicroSegmentRule(
            name=rule.name,
            conditions=tuple(Condition(**cond.model_dump()) for cond in rule.when),
            description=rule.description,
            window_days=rule.window_days,
            identified_only=rule.identified_only,
        )
        for rule in document.micro_segments
    ]


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
    segments, left_out = consenting(evaluate(events, rules), ConsentCheck.for_workspace(ws))
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
    return MicroSegmentsResult(segments=segments, out=out, feast_table=table, left_out=left_out)


def consenting(segments: MicroSegments, check: ConsentCheck) -> tuple[MicroSegments, int]:
    """``segments`` without the people who lack ``personalization`` consent at the as-of time
    or now (issue #12): no membership, no snapshot row (so nothing of theirs reaches the CSV,
    the offline table or the online store), and how many people that left out."""
    people = segments.snapshot["user_id"].astype(str).tolist()
    as_of = segments.as_of.to_pydatetime()
    then = check.decide_many(people, PERSONALIZATION, as_of=as_of)
    now = check.decide_many(people, PERSONALIZATION)
    kept = {person for person in people if then[person].allowed and now[person].allowed}
    members = segments.members[segments.members["user_id"].isin(kept)].reset_index(drop=True)
    snapshot = segments.snapshot[segments.snapshot["user_id"].isin(kept)].reset_index(drop=True)
    counts = members.groupby("micro_segment").size()
    kept_segments = MicroSegments(
        members=members,
        snapshot=snapshot,
        counts={name: int(counts.get(name, 0)) for name in segments.counts},
        as_of=segments.as_of,
    )
    return kept_segments, len(people) - len(kept)
