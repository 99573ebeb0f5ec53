"""Deterministic synthetic e-commerce clickstream with planted personas.

Real clickstreams cannot ship with the project and carry no ground truth, so segmenters and
recommenders are developed against this generator instead. It plants two kinds of structure:

* **Personas** (:data:`PERSONAS`): each user follows one behaviour profile with its own session
  rate, session length and pace, device mix, category affinity, price-tier taste and funnel rates,
  so clustering per-user features can recover them. The truth goes to ``personas`` only, never
  into the events.
* **Personal taste**: favourite categories, a preferred product style per category and two short
  lists of products a user keeps returning to (one to browse, one to buy), on top of Zipf
  popularity within each category. Users who share a style co-consume the same products, so
  collaborative filtering beats a global popularity baseline on later views and purchases.

Visitors with a ``user_id`` are the ``n_users`` registered users; about 3% more visitors are
anonymous-only (never logged in). They behave like a persona too but have no ``user_id``, so they
are absent from ``personas``. Registered users also browse logged out in about 10% of sessions
(``user_id`` is None, the stable ``anonymous_id`` cookie is set); every registered user has at
least one logged-in session, so ``personas.user_id`` equals the set of user ids in the events.

Everything is vectorized with numpy (one loop over session steps, each step over all live
sessions at once): a million events take a few seconds. The same seed gives identical frames.

This module assembles and writes the frames; the world's definitions live in
:mod:`features.synthetic.specs`, the catalogue and visitors in
:mod:`features.synthetic.population` and the session simulator in
:mod:`features.synthetic.sessions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.schema import DEVICE_TYPES, EVENT_ARROW_SCHEMA, EVENT_COLUMNS, EVENT_TYPES
from features.synthetic.consent_choices import consent_records
from features.synthetic.off_persona import noise_visitors, off_persona_sessions
from features.synthetic.population import make_catalogue, make_visitors, pad_ids
from features.synthetic.sessions import (
    event_pages,
    event_products,
    event_properties,
    event_times,
    make_sessions,
    search_queries,
    walk_sessions,
)
from features.synthetic.specs import (
    CATEGORIES,
    COUNTRIES,
    NOISE_PERSONA,
    PAGES,
    PRICE_TIERS,
    SEARCH,
    Difficulty,
    persona_tables,
)

__all__ = [
    "DEFAULT_START",
    "event_id_prefix",
    "GeneratedData",
    "generate_clickstream",
    "write_generated",
]

logger = logging.getLogger(__name__)

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class GeneratedData:
    """A generated clickstream, its ground-truth personas and the product catalogue."""

    events: pd.DataFrame  # columns features.schema.EVENT_COLUMNS, sorted by timestamp
    personas: pd.DataFrame  # user_id, persona (registered users only)
    catalogue: pd.DataFrame  # product_id, category, price, price_tier
    #: consent choices (features.synthetic.consent_choices): most consent, some refuse
    consent: pd.DataFrame | None = None


def _optional(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` as an object array, None where ``index`` is -1."""
    out = np.full(len(index), None, dtype=object)
    out[index >= 0] = table[index[index >= 0]]
    return out


def generate_clickstream(
    n_users: int,
    days: int,
    seed: int,
    start: datetime | None = None,
    difficulty: Difficulty | None = None,
) -> GeneratedData:
    """Generate a clickstream of ``n_users`` registered users (plus ~3% anonymous-only visitors)
    over ``days`` days from ``start``: about 3.7 events per user per day, sorted by timestamp.

    ``start`` defaults to 2026-01-01 00:00 UTC so that the output depends on the arguments only.
    The same arguments give identical frames. Event ids carry seed and size
    (:func:`event_id_prefix`): data sets of other arguments never share one. ``difficulty``
    (default: five well-separated personas, no off-persona session, no noise user) plants
    overlapping personas, off-persona sessions and noise users (truth label ``noise``).
    """
    if n_users < 1 or days < 1 or seed < 0:
        raise ValueError(f"need n_users >= 1, days >= 1, seed >= 0; got {n_users}, {days}, {seed}")
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None:
        raise ValueError(f"start {start!r} has no time zone; give an aware datetime such as UTC")
    # One stream per stage, so a change in one stage does not reshuffle the others.
    difficulty = Difficulty() if difficulty is None else difficulty
    # The tenth stream is the difficulty's own: the first nine stay those of the plain data.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(10)]
    tables = persona_tables(difficulty.specs)
    cat = make_catalogue(n_users, rngs[0])
    vis = make_visitors(n_users, seed, rngs[1], cat, tables)
    noise = np.zeros(len(vis.persona), dtype=bool)
    if not difficulty.is_plain:
        vis, noise = noise_visitors(rngs[9], vis, n_users, difficulty)
    sessions = make_sessions(rngs[2], vis, n_users, days, tables)
    if not difficulty.is_plain:
        sessions = off_persona_sessions(rngs[9], sessions, noise, difficulty, tables)
    e_sess, state = walk_sessions(rngs[3], sessions.persona, tables)
    ts_ms, start_ms = event_times(rngs[4], sessions, vis, e_sess, days, tables)
    product, quantity = event_products(rngs[5], cat, vis, sessions, e_sess, state, tables)
    page = event_pages(rngs[6], e_sess, state)
    is_search = state == SEARCH
    q_cat, queries = search_queries(rngs[7], vis, sessions, e_sess[is_search], tables)
    properties = event_properties(rngs[8], e_sess, state)

    category = np.where(product >= 0, cat.category[product], -1)
    category[is_search] = q_cat
    on_category_page = page == 1
    category[on_category_page] = sessions.focus[e_sess[on_category_page]]
    query = np.full(len(state), None, dtype=object)
    query[is_search] = queries
    e_vis = sessions.visitor[e_sess]
    user_id = vis.user_id[e_vis]
    user_id[~sessions.logged_in[e_sess]] = None
    session_rank = np.empty(len(start_ms), dtype=int)
    session_rank[np.argsort(start_ms, kind="stable")] = np.arange(len(start_ms))
    product_ids = pad_ids("p", len(cat.category), 4)

    order = np.argsort(ts_ms, kind="stable")
    e_sess, e_vis, state = e_sess[order], e_vis[order], state[order]
    product, quantity = product[order], quantity[order]
    columns = {
        "event_id": pad_ids(event_id_prefix(seed, n_users, days), len(order), 7),
        "event_type": np.array(EVENT_TYPES, dtype=object)[state],
        "timestamp": pd.to_datetime(ts_ms[order] * 1_000_000 + _epoch_ns(start), utc=True),
        "user_id": user_id[order],
        "anonymous_id": vis.anonymous_id[e_vis],
        "session_id": pad_ids("s", len(start_ms), 6)[session_rank[e_sess]],
        "device_type": np.array(DEVICE_TYPES, dtype=object)[sessions.device[e_sess]],
        "country": np.array([c[0] for c in COUNTRIES], dtype=object)[vis.country[e_vis]],
        "product_id": _optional(product_ids, product),
        "category": _optional(np.array(CATEGORIES, dtype=object), category[order]),
        "price": np.where(product >= 0, cat.price[product], np.nan),
        "quantity": pd.arrays.IntegerArray(quantity, quantity == 0),
        "query": query[order],
        "page": np.array(PAGES, dtype=object)[page[order]],
        "properties": properties[order],
    }
    events = pd.DataFrame({name: columns[name] for name in EVENT_COLUMNS})
    personas = pd.DataFrame(
        {
            "user_id": vis.user_id[:n_users],
            "persona": np.where(
                noise[:n_users],
                NOISE_PERSONA,
                np.array([spec.name for spec in difficulty.specs], dtype=object)[
                    vis.persona[:n_users]
                ],
            ).astype(object),
        }
    )
    catalogue = pd.DataFrame(
        {
            "product_id": product_ids,
            "category": np.array(CATEGORIES, dtype=object)[cat.category],
            "price": cat.price,
            "price_tier": np.array(PRICE_TIERS, dtype=object)[cat.tier],
        }
    )
    logger.info(
        "generated %d events in %d sessions of %d users", len(events), len(start_ms), n_users
    )
    consent = consent_records(events, seed)
    return GeneratedData(events=events, personas=personas, catalogue=catalogue, consent=consent)


def event_id_prefix(seed: int, n_users: int, days: int) -> str:
    """``g<seed>-<users>x<days>-e``: generated event ids carry the data set's seed and size, so
    two generated data sets imported into one workspace share no id (``g7-2000x30-e0000001``)."""
    return f"g{seed}-{n_users}x{days}-e"


def _epoch_ns(moment: datetime) -> int:
    """Epoch nanoseconds of an aware datetime."""
    return int(pd.Timestamp(moment).value)


def write_generated(data: GeneratedData, out_dir: Path) -> dict[str, Path]:
    """Write ``events.parquet`` (in the event log's Arrow schema), ``personas.csv``,
    ``catalogue.csv`` and, when the data has them, the consent choices ``consent.csv`` (the
    format of ``tailor consent import``) to ``out_dir`` (created if missing).

    Returns the paths keyed by ``events``, ``personas``, ``catalogue`` (and ``consent``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "events": out_dir / "events.parquet",
        "personas": out_dir / "personas.csv",
        "catalogue": out_dir / "catalogue.csv",
    }
    table = pa.Table.from_pandas(data.events, schema=EVENT_ARROW_SCHEMA, preserve_index=False)
    pq.write_table(table, paths["events"])
    data.personas.to_csv(paths["personas"], index=False)
    data.catalogue.to_csv(paths["catalogue"], index=False)
    if data.consent is not None:
        paths["consent"] = out_dir / "consent.csv"
        data.consent.to_csv(paths["consent"], index=False)
    return paths
