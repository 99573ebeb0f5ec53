"""THE consent check: every consent decision in Tailor is made here (issue #12).

:meth:`ConsentCheck.decide` answers "may Tailor use ``purpose`` for this person?" for one person
(on every request), :meth:`ConsentCheck.decide_many` for many (segment runs),
:meth:`ConsentCheck.allowed_rows` for the rows of a frame at each row's own time (training sets,
point in time) and :meth:`ConsentCheck.state` gives the whole picture (``GET /consent``).

**Resolution.** A key (a user id, or ``anon:<anonymous_id>``) is resolved to the person's
canonical key through the identity graph, and the records of every key of that person count:
a choice made on an anonymous device follows the person after stitching.

**Clock skew.** For each key, records are taken in the order they were stored; a record whose
client timestamp is earlier than the time of the key's current record (its client timestamp,
else its server time) is stored but overrides nothing.

**Merges.** Per purpose, each key of the person has its latest choice. When the most recent of
these was recorded *after* the person's last merge, it wins (the person chose again as one
person). Otherwise the choices were made apart, before the merge: if they disagree the
restrictive one wins (``false``), until the person chooses again.

**Regimes.** ``necessary`` is always allowed. Opt-in (EU/EEA, UK, the default): allowed only
after a ``true`` choice on the current ``policy_version``; a choice on an older version counts
as no choice (the person must see the banner again). Opt-out (US): allowed until refused;
``gpc=True`` (``Sec-GPC: 1``) refuses ``marketing``. The regime comes from ``country`` (the
request's), else the country recorded with the person's latest record, else the policy default.

**Point in time.** ``as_of`` answers from the records stored (server time) up to then; a choice
made on an older policy version counts (it was valid when made). Identity is resolved as of now.

**Cost.** One canonical-key look-up (cached by the graph) and one indexed query per decision; no
cache of consent itself, so a withdrawal written by any process counts on the very next check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from features.consent.ledger import ConsentError, ConsentLedger, ConsentRecord
from features.consent.policy import GPC_PURPOSE, NECESSARY, OPT_IN, OPT_OUT, ConsentPolicy

#: ``ConsentDecision.code`` values.
ALWAYS, GIVEN, NOT_GIVEN, REFUSED, GPC, UNTIL_REFUSED = (
    "always",
    "given",
    "not_given",
    "refused",
    "gpc",
    "until_refused",
)


@dataclass(frozen=True)
class Choice:
    """A person's effective choice for one purpose: the value, when and on which policy."""

    value: bool
    recorded_at: datetime
    policy_version: str
    record_id: int
    combined: bool = False  # True when choices made apart disagreed and false won


@dataclass(frozen=True)
class ConsentDecision:
    """The answer of the check for one person and purpose.

    ``reason``: one line for people (``"personalization not given"``, ``"marketing refused"``,
    ``"marketing refused by Sec-GPC"``, ``"analytics given"``, ``"analytics allowed until
    refused"``, ``"necessary is always on"``); ``code``: the same as one of :data:`ALWAYS`,
    :data:`GIVEN`, :data:`NOT_GIVEN`, :data:`REFUSED`, :data:`GPC`, :data:`UNTIL_REFUSED`.
    """

    allowed: bool
    purpose: str
    reason: str
    code: str
    regime: str
    person: str
    needs_banner: bool
    policy_version: str
    choice: Choice | None = None


@dataclass(frozen=True)
class ConsentState:
    """Everything about one person's consent (``GET /consent``): a decision per purpose, the
    regime, the current policy version, whether the banner must be shown, and the history."""

    person: str
    regime: str
    policy_version: str
    needs_banner: bool
    decisions: dict[str, ConsentDecision]
    history: list[ConsentRecord] = field(default_factory=list)

    def allowed(self, purpose: str) -> bool:
        return self.decisions[purpose].allowed


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def key_choices(records: list[ConsentRecord], as_of: datetime | None = None) -> dict[str, Choice]:
    """``{purpose: latest choice}`` of the records of ONE key (in stored order), with the
    clock-skew rule: a record whose client time is before the current record's time is
    skipped. ``as_of`` keeps only records stored up to then."""
    current: ConsentRecord | None = None
    choices: dict[str, Choice] = {}
    for record in records:
        if as_of is not None and record.recorded_at > as_of:
            break  # stored order is server-time order
        if current is not None and record.client_ts is not None and record.client_ts < current.time:
            continue  # stored, but older than the current choice: it overrides nothing
        current = record
        for purpose, value in record.purposes.items():
            choices[purpose] = Choice(value, record.recorded_at, record.policy_version, record.id)
    return choices


def person_choices(
    records: list[ConsentRecord], merge_times: list[datetime], as_of: datetime | None = None
) -> dict[str, Choice]:
    """``{purpose: effective choice}`` of a person from the records of all their keys and the
    times their keys were merged (see the module docstring, "Merges")."""
    by_key: dict[str, list[ConsentRecord]] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record)
    per_key = [key_choices(rows, as_of) for rows in by_key.values()]
    if len(per_key) == 1:
        return per_key[0]
    merges = [t for t in merge_times if as_of is None or t <= as_of]
    merged_at = merges[-1] if merges else None
    out: dict[str, Choice] = {}
    for purpose in {p for choices in per_key for p in choices}:
        found = [choices[purpose] for choices in per_key if purpose in choices]
        latest = max(found, key=lambda c: (c.recorded_at, c.record_id))
        if len(found) == 1 or (merged_at is not None and latest.recorded_at > merged_at):
            out[purpose] = latest
        elif all(c.value == latest.value for c in found):
            out[purpose] = latest
        else:
            out[purpose] = Choice(
                False, latest.recorded_at, latest.policy_version, latest.record_id, combined=True
            )
    return out


def latest_country(records: list[ConsentRecord], as_of: datetime | None = None) -> str | None:
    for record in reversed(records):
        if record.country and (as_of is None or record.recorded_at <= as_of):
            return record.country
    return None


class ConsentCheck:
    """The one consent check over a :class:`ConsentLedger` (see the module docstring)."""

    def __init__(self, ledger: ConsentLedger) -> None:
        self.ledger = ledger

    @property
    def policy(self) -> ConsentPolicy:
        return self.ledger.policy

    @classmethod
    def for_workspace(cls, ws, policy: ConsentPolicy | None = None) -> ConsentCheck:
        return cls(ConsentLedger.for_workspace(ws, policy))

    # -- one person -----------------------------------------------------------------------------
    def decide(
        self,
        key: str,
        purpose: str,
        *,
        country: str | None = None,
        gpc: bool = False,
        as_of: datetime | None = None,
    ) -> ConsentDecision:
        """May ``purpose`` be used for the person of ``key`` (a person key: a user id or
        ``anon:<anonymous_id>``, any of the person's keys)? Raises :class:`ConsentError` for
        an unknown purpose, :class:`~features.consent.ledger.LedgerUnavailable` when the
        ledger cannot be read (callers fail closed)."""
        self._check_purpose(purpose)
        root = self.ledger.graph.canonical(key)
        records = self.ledger.records_of([root])[root]
        return self._state(root, records, country, gpc, _aware(as_of), only=purpose).decisions[
            purpose
        ]

    def state(
        self,
        key: str,
        *,
        country: str | None = None,
        gpc: bool = False,
        as_of: datetime | None = None,
    ) -> ConsentState:
        """Every purpose's decision for the person of ``key``, with their history."""
        root = self.ledger.graph.canonical(key)
        records = self.ledger.records_of([root])[root]
        return self._state(root, records, country, gpc, _aware(as_of))

    def _state(
        self,
        root: str,
        records: list[ConsentRecord],
        country: str | None,
        gpc: bool,
        as_of: datetime | None,
        merge_times: list[datetime] | None = None,
        only: str | None = None,
    ) -> ConsentState:
        """The state of ``root`` from its ``records``; ``only``: decide that purpose alone (one
        check on every request: the others are not needed)."""
        policy = self.policy
        if merge_times is None:
            keys = {record.key for record in records}
            merge_times = self.ledger.merge_times(sorted(keys)) if len(keys) > 1 else []
        choices = person_choices(records, merge_times, as_of)
        regime = policy.regime(country or latest_country(records, as_of))
        version = policy.policy_version
        needs_banner = any(
            purpose not in choices or choices[purpose].policy_version != version
            for purpose in policy.optional_purposes
        )
        decisions = {
            purpose: self._decide(root, purpose, choices.get(purpose), regime, gpc, as_of)
            for purpose in ((only,) if only is not None else policy.purposes)
        }
        decisions = {
            p: _with(d, needs_banner=needs_banner, version=version) for p, d in decisions.items()
        }
        kept = [r for r in records if as_of is None or r.recorded_at <= as_of]
        return ConsentState(root, regime, version, needs_banner, decisions, kept)

    def _decide(
        self,
        root: str,
        purpose: str,
        choice: Choice | None,
        regime: str,
        gpc: bool,
        as_of: datetime | None,
    ) -> ConsentDecision:
        def answer(allowed: bool, code: str, reason: str) -> ConsentDecision:
            return ConsentDecision(allowed, purpose, reason, code, regime, root, False, "", choice)

        if purpose == NECESSARY:
            return answer(True, ALWAYS, f"{NECESSARY} is always on")
        if regime == OPT_OUT:
            if gpc and purpose == GPC_PURPOSE:
                return answer(False, GPC, f"{purpose} refused by Sec-GPC")
            if choice is None:
                return answer(True, UNTIL_REFUSED, f"{purpose} allowed until refused")
            if choice.value:
                return answer(True, GIVEN, f"{purpose} given")
            return answer(False, REFUSED, f"{purpose} refused")
        assert regime == OPT_IN
        if choice is not None and as_of is None:
            if choice.policy_version != self.policy.policy_version:
                choice = None  # chosen on an older policy: ask again, nothing until then
        if choice is None:
            return answer(False, NOT_GIVEN, f"{purpose} not given")
        if choice.value:
            return answer(True, GIVEN, f"{purpose} given")
        return answer(False, REFUSED, f"{purpose} refused")

    def _check_purpose(self, purpose: str) -> None:
        if purpose not in self.policy.purposes:
            allowed = ", ".join(self.policy.purposes)
            raise ConsentError("purpose", f"unknown purpose {purpose!r}; allowed: {allowed}")

    # -- many people ----------------------------------------------------------------------------
    def decide_many(
        self,
        keys: Iterable[str],
        purpose: str,
        *,
        country: str | Mapping[str, str | None] | None = None,
        as_of: datetime | None = None,
    ) -> dict[str, ConsentDecision]:
        """``{key: decision}`` for many person keys (segment runs, clustering inputs): one
        canonical look-up for all, one query per 500 people. ``country``: one for all, or per
        key (a mapping), or None (each person's recorded country, else the default regime)."""
        self._check_purpose(purpose)
        keys = list(dict.fromkeys(keys))
        canonical = self.ledger.graph.canonical_many(keys)
        records = self.ledger.records_of(canonical.values())
        out = {}
        for key in keys:
            root = canonical[key]
            where = country.get(key) if isinstance(country, Mapping) else country
            state = self._state(root, records[root], where, False, _aware(as_of), only=purpose)
            out[key] = state.decisions[purpose]
        return out

    def allowed_rows(
        self,
        frame: pd.DataFrame,
        purpose: str,
        *,
        key_column: str = "user_id",
        time_column: str = "event_timestamp",
        country: str | None = None,
    ) -> pd.Series:
        """A boolean Series aligned with ``frame``: was ``purpose`` allowed for the row's
        person (``key_column``, person keys) at the row's time (``time_column``, point in
        time)? Used to drop people from training sets as of each label's timestamp. The
        decision of each person is replayed at every change (a record stored, a merge) and
        rows are matched to the latest change at or before their time."""
        self._check_purpose(purpose)
        if frame.empty:
            return pd.Series([], index=frame.index, dtype=bool)
        keys = frame[key_column].astype(str)
        times = pd.to_datetime(frame[time_column], utc=True)
        people = pd.unique(keys.to_numpy()).tolist()
        canonical = self.ledger.graph.canonical_many(people)
        records = self.ledger.records_of(canonical.values())
        allowed = np.zeros(len(frame), dtype=bool)
        stamps = times.to_numpy(dtype="datetime64[ns]")
        for key, positions in keys.reset_index(drop=True).groupby(keys.to_numpy()).indices.items():
            root = canonical[key]
            changes, answers = self._timeline(root, records[root], purpose, country)
            cuts = np.array([pd.Timestamp(c).tz_convert(None) for c in changes], "datetime64[ns]")
            where = np.searchsorted(cuts, stamps[positions], side="right")
            allowed[positions] = np.asarray(answers, dtype=bool)[where]
        return pd.Series(allowed, index=frame.index, dtype=bool)

    def default_allowed(self, purpose: str) -> bool:
        """The answer for a person without any record in the default regime (the answer of
        :meth:`timeline` before a person's first row, and for people it does not list)."""
        self._check_purpose(purpose)
        return self._decide("", purpose, None, self.policy.default_regime, False, None).allowed

    def timeline(self) -> pd.DataFrame:
        """The whole ledger as decisions in time: the source of the consent feature view.

        One row per person (canonical key, column ``consent_key``) and change (a record
        stored, or a merge of two of their keys that hold records), ``event_timestamp`` the
        change's time, and one boolean column per purpose: the decision from then on, as
        :meth:`decide` answers with ``as_of`` (each person's recorded country picks the
        regime). Before a person's first row, and for people not listed, every purpose is
        :meth:`default_allowed`. Identity is resolved as of now."""
        purposes = list(self.policy.purposes)
        records = self.ledger.all_records()
        canonical = self.ledger.graph.canonical_many({record.key for record in records})
        by_root: dict[str, list[ConsentRecord]] = {}
        for record in records:  # stored order within each person
            by_root.setdefault(canonical[record.key], []).append(record)
        rows = []
        for root, kept in by_root.items():
            keys = {record.key for record in kept}
            merges = self.ledger.merge_times(sorted(keys)) if len(keys) > 1 else []
            for at in sorted({record.recorded_at for record in kept} | set(merges)):
                state = self._state(root, kept, None, False, at, merges)
                rows.append((root, at, *(state.decisions[p].allowed for p in purposes)))
        frame = pd.DataFrame(rows, columns=["consent_key", "event_timestamp", *purposes])
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        return frame.astype({p: bool for p in purposes})

    def _timeline(
        self, root: str, records: list[ConsentRecord], purpose: str, country: str | None
    ) -> tuple[list[datetime], list[bool]]:
        """``(change times, answers)``: ``answers[i]`` holds before ``changes[i]`` (and the
        last one after every change)."""
        keys = {record.key for record in records}
        merges = self.ledger.merge_times(sorted(keys)) if len(keys) > 1 else []
        changes = sorted({r.recorded_at for r in records} | set(merges))
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        answers = [
            self._state(root, records, country, False, at, merges, only=purpose)
            .decisions[purpose]
            .allowed
            for at in [epoch, *changes]
        ]
        return changes, answers


def _with(decision: ConsentDecision, *, needs_banner: bool, version: str) -> ConsentDecision:
    return ConsentDecision(
        decision.allowed,
        decision.purpose,
        decision.reason,
        decision.code,
        decision.regime,
        decision.person,
        needs_banner,
        version,
        decision.choice,
    )
