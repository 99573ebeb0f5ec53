"""Real-time personas: a small state per person folded from their events, scored by YAML rules.

Pure Python and pandas (no Feast), so the same :func:`fold` runs on ``/events`` for the events a
call appended (``serving/persona_updates.py``) and over the whole event log for the offline persona
table (:func:`persona_table`, written by ``tailor features build``).

**State** (:class:`PersonaState`): counts of events, sessions and sessions started on a phone,
product views / add-to-carts / purchases by price tier, searches and deal searches, views per
category, the current session and ``as_of``. Every count is a sum over events, so the state does
not depend on the order events arrive in (the only order-dependent part, the current session, is
bookkeeping); a session is counted once while its id is among the last :data:`RECENT_SESSIONS`
sessions. Duplicates are the ingestion's job: only events the event log accepted are folded.
``as_of`` strictly increases with every fold that adds events (the newest event time, or the
previous ``as_of`` plus 1 µs for late events), because online stores that keep the newest row
(Redis) would otherwise drop an update whose events are older than the stored ones.

**Price tier** of an event: fixed per-category cuts in the YAML file (budget: price <= the
category's 25th percentile item price; high-end: price > its 75th percentile; mid between; no
tier without a price or for a category not listed). Fixed cuts rather than cuts computed from
prices seen so far because the online fold then needs no catalogue read and gives exactly the
offline fold's tiers; the shipped cuts are the generated catalogue's quartiles, the same cuts as
the item feature ``price_tier``, and :func:`price_cuts` recomputes them from a real event log.

**Rules** (``features/personas.yaml``, ``$TAILOR_PERSONAS`` to override; loaded and validated
by :mod:`features.persona_rules`): each rule has a ``name``, a ``description``, a ``when``
(``{field: {min: n, max: n}}`` on state fields: minimum observations), a ``score`` and a
``threshold`` in (0, 1]. A score is ``{share: F, over: G}``
(F / G, 0 when G is 0), ``{saturate: F, at: n}`` (min(1, F / n)), ``{all: [...]}`` (the lowest)
or ``{any: [...]}`` (the highest); F and G are a state field or a list of fields (summed).
The person's personas are the rules whose ``when`` holds and whose score reaches the threshold,
best score first (file order on ties), and their label joins the names with :data:`SEPARATOR`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd

from features.identity.keys import person_keys

#: Joins several persona names into one label (persona names may contain commas).
SEPARATOR = " + "
#: Session ids remembered per person, so a session seen again is not counted twice.
RECENT_SESSIONS = 50
#: Categories whose view counts the state keeps (the most viewed ones).
MAX_CATEGORIES = 20
#: Columns of the offline persona table and of a push (the ``user_personas`` view's source).
PERSONA_COLUMNS = (
    "user_id",
    "event_timestamp",
    "created",
    "persona",
    "persona_score",
    "persona_state",
)
PERSONA_FEATURES: dict[str, tuple[str, str]] = {
    "persona": ("string", f"The person's personas, best first, joined by {SEPARATOR!r}."),
    "persona_score": ("float64", "Score in [0, 1] of the best persona (0 when none)."),
    "persona_state": ("string", "JSON of the folded event state the personas are scored on."),
}
_ONE_MICROSECOND = pd.Timedelta(microseconds=1)
_FUNNEL = {"product_view": "views", "add_to_cart": "carts", "purchase": "purchases"}
_EVENT_FIELDS = ("event_id", "timestamp", "event_type", "session_id", "device_type")
_EVENT_FIELDS += ("category", "price", "query")


@dataclass(frozen=True)
class PersonaState:
    """What the persona rules see about one person; JSON-serializable."""

    events: int = 0
    sessions: int = 0
    mobile_sessions: int = 0
    views: int = 0
    views_budget: int = 0
    views_high_end: int = 0
    views_tiered: int = 0
    carts: int = 0
    carts_budget: int = 0
    carts_high_end: int = 0
    carts_tiered: int = 0
    purchases: int = 0
    purchases_budget: int = 0
    purchases_high_end: int = 0
    purchases_tiered: int = 0
    searches: int = 0
    deal_searches: int = 0
    session_id: str = ""
    as_of: str = ""  # ISO time of the latest fold that added events ("" before any)
    recent_sessions: tuple[str, ...] = ()
    categories: dict[str, int] = field(default_factory=dict)  # product views per category

    def values(self) -> dict[str, int]:
        """Counts by name, with the derived ``buys*`` (cart adds plus purchases)."""
        out = {name: getattr(self, name) for name in COUNT_FIELDS}
        for suffix in ("", "_budget", "_high_end", "_tiered"):
            out[f"buys{suffix}"] = out[f"carts{suffix}"] + out[f"purchases{suffix}"]
        return out

    def to_json(self) -> str:
        # built from the fields directly: dataclasses.asdict deep-copies every value, a third of
        # a consumer batch's persona update (the JSON text is the same)
        state = {name: getattr(self, name) for name in _STATE_NAMES}
        return json.dumps(state, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> PersonaState:
        """A stored state; an empty or missing one is the empty state."""
        if not text:
            return cls()
        data = json.loads(text)
        # fields dropped since are ignored
        data = {k: v for k, v in data.items() if k in _STATE_NAMES}
        data["recent_sessions"] = tuple(data.get("recent_sessions", ()))
        return cls(**data)


_STATE_NAMES = frozenset(f.name for f in fields(PersonaState))
COUNT_FIELDS = tuple(f.name for f in fields(PersonaState) if f.type in ("int", int))
#: Every field a rule may read: the counts and the derived ``buys*``.
STATE_FIELDS = (*COUNT_FIELDS, "buys", "buys_budget", "buys_high_end", "buys_tiered")


@dataclass(frozen=True)
class PersonaRule:
    name: str
    score: tuple  # ("share", of, over) | ("saturate", of, at) | ("all"|"any", (terms...))
    threshold: float
    when: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)
    description: str = ""

    def evaluate(self, values: Mapping[str, int]) -> float | None:
        """The score, or None when ``when`` does not hold."""
        for name, (low, high) in self.when.items():
            if (low is not None and values[name] < low) or (
                high is not None and values[name] > high
            ):
                return None
        return round(_score(self.score, values), 4)


def _score(term: tuple, values: Mapping[str, int]) -> float:
    kind = term[0]
    if kind == "share":
        over = sum(values[n] for n in term[2])
        return min(1.0, sum(values[n] for n in term[1]) / over) if over else 0.0
    if kind == "saturate":
        return min(1.0, sum(values[n] for n in term[1]) / term[2])
    scores = [_score(t, values) for t in term[1]]
    return min(scores) if kind == "all" else max(scores)


@dataclass(frozen=True)
class PersonaConfig:
    """The price cuts, the deal words and the persona rules of one file."""

    rules: tuple[PersonaRule, ...]
    price_tiers: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    deal_words: frozenset[str] = frozenset()
    origin: str = "<memory>"

    def tier(self, category: str, price: float | None) -> str:
        """``budget``, ``mid``, ``high_end``, or ``""`` (no price, or no cuts for the category)."""
        cuts = self.price_tiers.get(category)
        if cuts is None or price is None:
            return ""
        return "budget" if price <= cuts[0] else ("high_end" if price > cuts[1] else "mid")

    def is_deal(self, query: str) -> bool:
        return any(word in self.deal_words for word in re.findall(r"\w+", query.lower()))

    def assess(self, state: PersonaState) -> list[tuple[str, float]]:
        """``(name, score)`` of every persona the state has, best first."""
        values = state.values()
        scored = [(rule.name, rule.evaluate(values), rule.threshold) for rule in self.rules]
        found = [(name, s) for name, s, threshold in scored if s is not None and s >= threshold]
        return sorted(found, key=lambda pair: -pair[1])  # stable: file order on ties

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)


def label(personas: Iterable[tuple[str, float]]) -> str:
    """The combined label of assessed personas ('' when none)."""
    return SEPARATOR.join(name for name, _ in personas)


def split_label(text: str | None) -> tuple[str, ...]:
    """The persona names in a stored label (best first)."""
    return tuple(text.split(SEPARATOR)) if text else ()


# ----------------------------------------------------------------------------- folding


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value)


def _number(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _records(events: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[tuple]:
    """Events as tuples of :data:`_EVENT_FIELDS`, in (timestamp, event_id) order."""
    frame = events if isinstance(events, pd.DataFrame) else pd.DataFrame.from_records(events)
    if frame.empty:
        return []
    frame = frame.reindex(columns=list(_EVENT_FIELDS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.sort_values(["timestamp", "event_id"], kind="stable")
    return list(frame.itertuples(index=False, name=None))


def fold(
    state: PersonaState, events: pd.DataFrame | Iterable[Mapping[str, Any]], config: PersonaConfig
) -> PersonaState:
    """``state`` after ``events`` (any order; folded in timestamp, event_id order)."""
    return _fold_records(state, _records(events), config)


def fold_people(
    states: Mapping[str, PersonaState],
    events: pd.DataFrame,
    people: Iterable[str],
    config: PersonaConfig,
) -> dict[str, PersonaState]:
    """Each person's state after their events, where ``people`` names each row's person and
    ``states`` the states before (missing: empty). The same as :func:`fold` per person, in one
    sort and one pass over the frame: a consumer batch of 500 events of 500 people costs
    ~500 small frames otherwise (~2.5 ms each, most of the batch's time)."""
    if events.empty:
        return {}
    frame = events.reindex(columns=list(_EVENT_FIELDS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame.insert(0, "_person", list(people))
    frame = frame.sort_values(["timestamp", "event_id"], kind="stable")
    by_person: dict[str, list[tuple]] = {}
    for person, *record in frame.itertuples(index=False, name=None):
        by_person.setdefault(person, []).append(tuple(record))
    return {
        person: _fold_records(states.get(person, PersonaState()), records, config)
        for person, records in by_person.items()
    }


def _fold_records(state: PersonaState, records: list[tuple], config: PersonaConfig) -> PersonaState:
    if not records:
        return state
    counts = {name: getattr(state, name) for name in COUNT_FIELDS}
    recent = list(state.recent_sessions)
    categories = dict(state.categories)
    session_id = state.session_id
    for _, _, event_type, session, device, category, price, query in records:
        counts["events"] += 1
        session = _text(session)
        if session:
            if session not in recent:
                counts["sessions"] += 1
                counts["mobile_sessions"] += _text(device) == "mobile"
                recent = [*recent, session][-RECENT_SESSIONS:]
            session_id = session
        funnel = _FUNNEL.get(event_type)
        if funnel is not None:
            counts[funnel] += 1
            category = _text(category)
            tier = config.tier(category, _number(price))
            if tier:
                counts[f"{funnel}_tiered"] += 1
                if tier != "mid":
                    counts[f"{funnel}_{tier}"] += 1
            if funnel == "views" and category:
                categories[category] = categories.get(category, 0) + 1
        elif event_type == "search":
            counts["searches"] += 1
            counts["deal_searches"] += config.is_deal(_text(query))
    if len(categories) > MAX_CATEGORIES:
        kept = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CATEGORIES]
        categories = dict(kept)
    newest = max(record[1] for record in records)
    if state.as_of:
        newest = max(newest, pd.Timestamp(state.as_of) + _ONE_MICROSECOND)
    return PersonaState(
        **counts,
        session_id=session_id,
        as_of=newest.isoformat(),
        recent_sessions=tuple(recent),
        categories=dict(sorted(categories.items())),
    )


def state_row(person: str, state: PersonaState, config: PersonaConfig) -> dict[str, Any]:
    """One row of :data:`PERSONA_COLUMNS` for a person's state (a push or an offline row)."""
    found = config.assess(state)
    stamp = pd.Timestamp(state.as_of)
    return {
        "user_id": person,
        "event_timestamp": stamp,
        "created": stamp,
        "persona": label(found),
        "persona_score": found[0][1] if found else 0.0,
        "persona_state": state.to_json(),
    }


def persona_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of :data:`PERSONA_COLUMNS` as a typed frame (empty rows give the empty table)."""
    frame = pd.DataFrame.from_records(rows, columns=list(PERSONA_COLUMNS))
    for column in ("event_timestamp", "created"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[ns, UTC]")
    return frame.astype(
        {"user_id": object, "persona": object, "persona_score": "float64", "persona_state": object}
    )


def persona_table(
    events: pd.DataFrame,
    config: PersonaConfig,
    resolve: Callable[[pd.DataFrame], pd.Series] = person_keys,
) -> pd.DataFrame:
    """The offline persona table: the same :func:`fold` over the event log, one row per person
    each time their session changes and at their last event (so point-in-time joins see the
    persona a person had at any moment). People are ``resolve``'s keys (default: person keys;
    with the identity graph, canonical keys, so a login's anonymous history counts for the
    user)."""
    if events.empty:
        return persona_frame([])
    frame = events.assign(person=resolve(events).to_numpy())
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.sort_values(["person", "timestamp", "event_id"], kind="stable")
    people = frame["person"].to_numpy()
    records = list(frame.reindex(columns=list(_EVENT_FIELDS)).itertuples(index=False, name=None))
    rows: list[dict[str, Any]] = []
    start, state = 0, PersonaState()
    for i in range(len(records)):
        last = i + 1 == len(records)
        if last or people[i + 1] != people[i] or records[i + 1][3] != records[i][3]:
            state = _fold_records(state, records[start : i + 1], config)
            rows.append(state_row(people[i], state, config))
            start = i + 1
            if last or people[i + 1] != people[i]:
                state = PersonaState()
    return persona_frame(rows)


def price_cuts(events: pd.DataFrame) -> dict[str, list[float]]:
    """Per category, ``[q25, q75]`` of item prices (each item's latest price) in ``events``:
    the values to put under ``price_tiers`` for a real catalogue."""
    priced = events.dropna(subset=["product_id", "price", "category"])
    items = priced.sort_values("timestamp").groupby("product_id").last()
    quartiles = items.groupby("category")["price"].quantile([0.25, 0.75]).unstack()
    return {
        str(category): [round(float(row[0.25]), 2), round(float(row[0.75]), 2)]
        for category, row in quartiles.iterrows()
    }
