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
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.schema import DEVICE_TYPES, EVENT_ARROW_SCHEMA, EVENT_COLUMNS, EVENT_TYPES

logger = logging.getLogger(__name__)

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
PRICE_TIERS = ("budget", "mid", "premium", "luxury")
TIER_CUTS = (0.3, 0.6, 0.85)  # per-category price quantiles between the tiers

# category: (share of catalogue, median price, log-sd of price, extra quantity mean, search terms)
_CATEGORY_SPECS: dict[str, tuple[float, float, float, float, tuple[str, ...]]] = {
    "electronics": (0.14, 180.0, 0.9, 0.05, ("headphones", "laptop", "usb charger", "4k tv")),
    "fashion": (0.16, 45.0, 0.8, 0.15, ("sneakers", "winter jacket", "dress", "handbag")),
    "home": (0.13, 60.0, 0.8, 0.2, ("sofa cushion", "lamp", "bed sheets", "coffee maker")),
    "beauty": (0.10, 25.0, 0.7, 0.4, ("face cream", "perfume", "lipstick", "shampoo")),
    "sports": (0.09, 50.0, 0.8, 0.15, ("running shoes", "yoga mat", "dumbbells", "bike helmet")),
    "books": (0.10, 15.0, 0.4, 0.1, ("novel", "cookbook", "biography", "kids book")),
    "toys": (0.08, 25.0, 0.7, 0.2, ("lego", "board game", "puzzle", "plush toy")),
    "grocery": (0.10, 6.0, 0.6, 1.2, ("coffee beans", "olive oil", "pasta", "snacks")),
    "garden": (0.05, 40.0, 0.8, 0.3, ("plant pot", "hose", "seeds", "garden chair")),
    "automotive": (0.05, 55.0, 0.9, 0.1, ("car wax", "dash cam", "wiper blades", "tyre pump")),
}
CATEGORIES = tuple(_CATEGORY_SPECS)
_DEAL_PREFIXES = ("cheap", "discount", "sale", "best deal")

# country, share of visitors, UTC offset in hours (for the diurnal cycle in local time)
_COUNTRIES = (
    ("US", 0.30, -5), ("GB", 0.12, 0), ("DE", 0.10, 1), ("FR", 0.08, 1), ("ES", 0.05, 1),
    ("IT", 0.05, 1), ("NL", 0.04, 1), ("CA", 0.06, -5), ("AU", 0.04, 10), ("SE", 0.03, 1),
    ("PL", 0.03, 1), ("JP", 0.04, 9), ("BR", 0.03, -3), ("IN", 0.03, 5),
)  # fmt: skip
# relative session starts per local hour 0..23: quiet nights, a lunch bump, an evening peak
_DIURNAL = (1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.6, 2.8, 3.0,
            3.4, 3.2, 2.9, 2.8, 2.9, 3.2, 3.8, 4.5, 4.8, 4.2, 3.0, 1.8)  # fmt: skip
_REFERRERS = ("direct", "search_engine", "email", "social", "ads")
_REFERRER_SHARES = (0.4, 0.3, 0.1, 0.1, 0.1)
_PAYMENTS = ("card", "paypal", "apple_pay", "gift_card")
_PAGES = ("home", "category", "product", "search", "cart", "checkout")

ANONYMOUS_VISITOR_SHARE = 0.03  # of all visitors, never logged in
LOGGED_OUT_SESSION_SHARE = 0.09  # of registered users' sessions; ~10% of all sessions overall
MAX_SESSION_EVENTS = 50
END_AFTER_PURCHASE = 0.5  # chance a session ends right after a purchase
MAIN_DEVICE_SHARE = 0.85  # sessions on the user's main device; the rest follow the persona mix
N_STYLES = 4  # latent product styles per category; users prefer one per category
STYLE_BONUS = 2.0  # log-weight of a product in the user's preferred style
OWN_STYLE_SHARE = 0.7  # share of categories where a user's style is their global style
N_CANDIDATES = 8  # popularity-drawn candidates per product pick (sampling-importance-resampling)
ZIPF_EXPONENT = 0.9
BROWSE_LIST, BUY_LIST = 8, 4  # products a user keeps returning to, per user
BROWSE_LIST_SHARE, BUY_LIST_SHARE = 0.3, 0.5  # views drawn from those lists
SESSION_FOCUS_SHARE = 0.8  # product events in the session's focus category
ANCHOR_BOOST = 50.0  # Gumbel-key boost that makes a persona's anchor category a sure favourite

PAGE, VIEW, SEARCH, CART, REMOVE, BUY = range(6)  # indices into features.schema.EVENT_TYPES


@dataclass(frozen=True)
class PersonaSpec:
    """One behaviour profile. Rates are per step of a session walk; tiers follow PRICE_TIERS."""

    name: str
    share: float  # of registered users
    sessions_per_day: float
    end_prob: float  # chance the session ends after each event (sets session length)
    gap_median_s: float  # median seconds between events (sets session duration)
    browse_mix: tuple[float, float, float]  # next page_view / product_view / search weights
    cart_prob: float  # product_view -> add_to_cart
    purchase_prob: float  # purchase of the open cart item, per step
    remove_prob: float  # remove_from_cart of the open cart item, per step
    device_mix: tuple[float, float, float, float]  # desktop, mobile, tablet, other
    affinity: dict[str, float]  # category weights; unnamed categories weigh 1
    view_tiers: tuple[float, float, float, float]  # log-preference when browsing
    buy_tiers: tuple[float, float, float, float]  # log-preference when carting and buying
    deal_query_share: float = 0.0  # searches with a "cheap"/"sale" prefix
    anchor_category: str | None = None  # always among the user's favourites


PERSONA_SPECS: tuple[PersonaSpec, ...] = (
    PersonaSpec(
        name="frequent_buyer", share=0.20, sessions_per_day=0.7, end_prob=0.09, gap_median_s=40.0,
        browse_mix=(0.25, 0.6, 0.15), cart_prob=0.3, purchase_prob=0.5, remove_prob=0.05,
        device_mix=(0.75, 0.18, 0.05, 0.02),
        affinity={"grocery": 5, "home": 3, "beauty": 3, "fashion": 2, "books": 2},
        view_tiers=(0.0, 0.3, 0.0, -0.5), buy_tiers=(0.0, 0.3, 0.0, -0.5),
    ),
    PersonaSpec(
        name="mobile_casual_browser", share=0.25, sessions_per_day=0.5, end_prob=0.3,
        gap_median_s=20.0, browse_mix=(0.45, 0.5, 0.05), cart_prob=0.04, purchase_prob=0.3,
        remove_prob=0.05, device_mix=(0.04, 0.9, 0.05, 0.01),
        affinity={"fashion": 6, "beauty": 4, "sports": 3, "toys": 2},
        view_tiers=(0.0, 0.0, 0.0, 0.0), buy_tiers=(0.3, 0.3, 0.0, -0.5),
    ),
    PersonaSpec(
        name="electronics_window_shopper", share=0.18, sessions_per_day=0.3, end_prob=0.06,
        gap_median_s=100.0, browse_mix=(0.15, 0.7, 0.15), cart_prob=0.25, purchase_prob=0.005,
        remove_prob=0.12, device_mix=(0.55, 0.3, 0.13, 0.02),
        affinity={"electronics": 40, "automotive": 2}, anchor_category="electronics",
        view_tiers=(-0.5, 0.0, 0.5, 0.5), buy_tiers=(-0.5, 0.0, 0.5, 0.5),
    ),
    PersonaSpec(
        name="luxury_browser_budget_buyer", share=0.17, sessions_per_day=0.25, end_prob=0.1,
        gap_median_s=75.0, browse_mix=(0.2, 0.7, 0.1), cart_prob=0.12, purchase_prob=0.4,
        remove_prob=0.05, device_mix=(0.3, 0.55, 0.13, 0.02),
        affinity={"fashion": 8, "beauty": 5, "home": 4},
        view_tiers=(-3.0, -1.0, 1.5, 2.5), buy_tiers=(3.0, 0.0, -2.0, -4.0),
    ),
    PersonaSpec(
        name="bargain_hunter", share=0.20, sessions_per_day=0.35, end_prob=0.08, gap_median_s=45.0,
        browse_mix=(0.15, 0.45, 0.4), cart_prob=0.18, purchase_prob=0.45, remove_prob=0.05,
        device_mix=(0.45, 0.45, 0.08, 0.02),
        affinity={"grocery": 5, "home": 4, "toys": 3, "books": 3, "garden": 2},
        view_tiers=(2.0, 0.5, -1.0, -3.0), buy_tiers=(3.0, 0.0, -2.0, -4.0), deal_query_share=0.6,
    ),
)  # fmt: skip
PERSONAS: tuple[str, ...] = tuple(spec.name for spec in PERSONA_SPECS)


@dataclass(frozen=True)
class GeneratedData:
    """A generated clickstream, its ground-truth personas and the product catalogue."""

    events: pd.DataFrame  # columns features.schema.EVENT_COLUMNS, sorted by timestamp
    personas: pd.DataFrame  # user_id, persona (registered users only)
    catalogue: pd.DataFrame  # product_id, category, price, price_tier


@dataclass(frozen=True)
class _Catalogue:
    """Per-product arrays indexed by product index (id ``p{index + 1}``)."""

    category: np.ndarray  # (n_products,) category index
    price: np.ndarray  # (n_products,) float
    tier: np.ndarray  # (n_products,) index into PRICE_TIERS
    style: np.ndarray  # (n_products,) latent style in [0, N_STYLES)
    by_category: np.ndarray  # (n_products,) product indices grouped by category
    popularity_cdf: np.ndarray  # (n_products,) category index + cumulative share in category


def _pad_ids(prefix: str, n: int, min_width: int) -> np.ndarray:
    """``prefix`` + 1-based zero-padded counters as an object array, e.g. u00001."""
    width = max(min_width, len(str(n)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)], dtype=object)


def _pick_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row, drawn with probability proportional to ``weights`` (n, k)."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(cdf)) * cdf[:, -1]
    return np.minimum((u[:, None] >= cdf).sum(axis=1), weights.shape[1] - 1)


def _quota(rng: np.random.Generator, shares: np.ndarray, n: int) -> np.ndarray:
    """Exactly proportional labels (largest remainder) in random order, for stable group sizes."""
    exact = shares / shares.sum() * n
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: n - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(len(shares)), counts))


def _make_catalogue(n_users: int, rng: np.random.Generator) -> _Catalogue:
    """Products per category with lognormal prices, quantile tiers, styles and Zipf popularity."""
    n_products = int(np.clip(n_users // 5, 200, 2000))
    specs = list(_CATEGORY_SPECS.values())
    counts = np.maximum(12, np.round(np.array([s[0] for s in specs]) * n_products).astype(int))
    counts[np.argmax(counts)] += n_products - counts.sum()
    category = np.repeat(np.arange(len(specs)), counts)
    median, sigma = (np.array([s[i] for s in specs])[category] for i in (1, 2))
    raw = median * np.exp(sigma * rng.standard_normal(n_products))
    price = np.round(np.where(raw >= 10, np.floor(raw) + 0.99, np.floor(raw * 10) / 10 + 0.09), 2)
    # Tiers by price cut-offs rather than ranks, so that equal prices share a tier.
    cuts = np.array([np.quantile(price[category == c], TIER_CUTS) for c in range(len(specs))])
    tier = (price[:, None] > cuts[category]).sum(axis=1)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    pop_rank = np.empty(n_products, dtype=int)
    pop_rank[np.lexsort((rng.random(n_products), category))] = np.arange(n_products) - starts
    popularity = (pop_rank + 1.0) ** -ZIPF_EXPONENT
    style = rng.integers(0, N_STYLES, n_products)
    # Shuffle so that product ids do not follow categories.
    order = rng.permutation(n_products)
    category, price, tier, style, popularity = (
        a[order] for a in (category, price, tier, style, popularity)
    )
    by_category = np.argsort(category, kind="stable")
    cum = np.cumsum(popularity[by_category])
    ends = np.cumsum(counts) - 1
    before = np.repeat(np.concatenate([[0.0], cum[ends[:-1]]]), counts)
    total = np.repeat(cum[ends], counts) - before
    cdf = (cum - before) / total + category[by_category]
    cdf[ends] = np.arange(len(counts)) + 1.0  # exact upper edges keep draws in their category
    return _Catalogue(category, price, tier, style, by_category, cdf)


def _sample_products(
    rng: np.random.Generator,
    cat: _Catalogue,
    category: np.ndarray,
    tier_pref: np.ndarray,
    style_pref: np.ndarray,
) -> np.ndarray:
    """One product per row: drawn by popularity within ``category`` (n,), then re-weighted by the
    tier log-preference ``tier_pref`` (n, 4) and the preferred style ``style_pref`` (n,)."""
    u = category[:, None] + rng.random((len(category), N_CANDIDATES))
    pos = np.minimum(np.searchsorted(cat.popularity_cdf, u, side="right"), len(cat.category) - 1)
    cand = cat.by_category[pos]
    score = np.take_along_axis(tier_pref, cat.tier[cand], axis=1)
    score += STYLE_BONUS * (cat.style[cand] == style_pref[:, None])
    score += rng.gumbel(size=cand.shape)
    return cand[np.arange(len(cand)), np.argmax(score, axis=1)]


@dataclass(frozen=True)
class _Visitors:
    """Per-visitor arrays; the first ``n_users`` visitors are registered, the rest anonymous."""

    persona: np.ndarray
    user_id: np.ndarray  # object: str, or None for anonymous-only visitors
    anonymous_id: np.ndarray  # object str
    country: np.ndarray  # index into _COUNTRIES
    main_device: np.ndarray
    category_weights: np.ndarray  # (n, n_categories)
    style: np.ndarray  # (n, n_categories) preferred style per category
    activity: np.ndarray  # session-rate multiplier
    pace: np.ndarray  # gap multiplier
    browse_list: np.ndarray  # (n, BROWSE_LIST) product indices
    buy_list: np.ndarray  # (n, BUY_LIST) product indices


def _make_visitors(
    n_users: int,
    seed: int,
    rng: np.random.Generator,
    cat: _Catalogue,
    tables: dict[str, np.ndarray],
) -> _Visitors:
    """Registered users and anonymous-only visitors with persona, place, device and taste."""
    shares = np.array([s.share for s in PERSONA_SPECS])
    n_anon = max(1, round(n_users * ANONYMOUS_VISITOR_SHARE / (1 - ANONYMOUS_VISITOR_SHARE)))
    n = n_users + n_anon
    persona = np.concatenate(
        [_quota(rng, shares, n_users), rng.choice(len(shares), n_anon, p=shares)]
    )
    user_id = np.concatenate([_pad_ids("u", n_users, 5), np.full(n_anon, None, dtype=object)])
    # An odd multiplier is a bijection modulo 2**48, so cookies are unique and look random.
    salt = np.uint64(seed * 0x2545F4914F6CDD1D % 2**48)
    mask = np.uint64(2**48 - 1)
    mixed = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + salt) & mask
    anonymous_id = np.array([f"anon-{int(x):012x}" for x in mixed], dtype=object)
    country = rng.choice(len(_COUNTRIES), n, p=[c[1] for c in _COUNTRIES])
    main_device = _pick_rows(rng, tables["device_mix"][persona])
    affinity = tables["affinity"][persona]
    # 2-3 favourite categories by Gumbel top-k on the persona affinity.
    key = np.log(affinity) + rng.gumbel(size=affinity.shape) + tables["anchor"][persona]
    n_fav = rng.integers(2, 4, n)
    rank = np.argsort(np.argsort(-key, axis=1), axis=1)
    favourite = (rank < n_fav[:, None]) / n_fav[:, None]
    category_weights = 0.5 * affinity + 0.5 * favourite
    own = rng.integers(0, N_STYLES, n)[:, None]
    drawn = rng.integers(0, N_STYLES, affinity.shape)
    style = np.where(rng.random(affinity.shape) < OWN_STYLE_SHARE, own, drawn)
    lists = []
    for size, tiers in ((BROWSE_LIST, tables["view_tiers"]), (BUY_LIST, tables["buy_tiers"])):
        owner = np.repeat(np.arange(n), size)
        category = _pick_rows(rng, category_weights[owner])
        picks = _sample_products(rng, cat, category, tiers[persona[owner]], style[owner, category])
        lists.append(picks.reshape(n, size))
    return _Visitors(
        persona=persona,
        user_id=user_id,
        anonymous_id=anonymous_id,
        country=country,
        main_device=main_device,
        category_weights=category_weights,
        style=style,
        activity=np.exp(0.25 * rng.standard_normal(n)),
        pace=np.exp(0.2 * rng.standard_normal(n)),
        browse_list=lists[0],
        buy_list=lists[1],
    )


def _persona_tables() -> dict[str, np.ndarray]:
    """Persona parameters as arrays indexed by persona index (rows) for vectorized lookups."""

    def col(field: str) -> np.ndarray:
        return np.array([getattr(s, field) for s in PERSONA_SPECS], dtype=float)

    affinity = np.array([[s.affinity.get(c, 1.0) for c in CATEGORIES] for s in PERSONA_SPECS])
    anchor = np.array(
        [[ANCHOR_BOOST * (c == s.anchor_category) for c in CATEGORIES] for s in PERSONA_SPECS]
    )
    browse = col("browse_mix")
    first = browse.copy()
    first[:, 0] += browse.sum(axis=1)  # sessions mostly land on a page (home) first
    fields = ("sessions_per_day", "end_prob", "gap_median_s", "cart_prob", "purchase_prob")
    return {
        **{f: col(f) for f in (*fields, "remove_prob", "deal_query_share")},
        "device_mix": col("device_mix"),
        "view_tiers": col("view_tiers"),
        "buy_tiers": col("buy_tiers"),
        "affinity": affinity / affinity.sum(axis=1, keepdims=True),
        "anchor": anchor,
        "browse_mix": browse,
        "first_mix": first,
    }


def _walk_sessions(
    rng: np.random.Generator, persona: np.ndarray, tables: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Event types of every session by a persona-specific walk over the funnel.

    Returns ``(event_session, event_state)``, both (n_events,), grouped by session in step order.
    A cart is "open" after add_to_cart until its purchase or removal; purchase and
    remove_from_cart only happen while it is open, and add_to_cart only right after a view.
    """
    n = len(persona)
    states = np.full((n, MAX_SESSION_EVENTS), -1, dtype=np.int8)
    states[:, 0] = _pick_rows(rng, tables["first_mix"][persona])
    active, cur, open_cart = np.arange(n), states[:, 0].astype(int), np.zeros(n, dtype=bool)
    for step in range(1, MAX_SESSION_EVENTS):
        if active.size == 0:
            break
        per = persona[active]
        u = rng.random((4, active.size))
        end = u[0] < np.where(cur == BUY, END_AFTER_PURCHASE, tables["end_prob"][per])
        nxt = _pick_rows(rng, tables["browse_mix"][per])  # PAGE, VIEW, SEARCH are 0, 1, 2
        is_open = open_cart[active]
        cart = (cur == VIEW) & (u[2] < tables["cart_prob"][per])
        buy = ~cart & is_open & (u[3] < tables["purchase_prob"][per])
        remove = ~cart & is_open & (u[3] >= 1.0 - tables["remove_prob"][per])
        nxt = np.select([cart, buy, remove], [CART, BUY, REMOVE], nxt)
        active, cur = active[~end], nxt[~end]
        states[active, step] = cur
        open_cart[active] = (cur == CART) | (open_cart[active] & (cur != BUY) & (cur != REMOVE))
    lengths = (states >= 0).sum(axis=1)
    return np.repeat(np.arange(n), lengths), states[states >= 0].astype(int)


@dataclass(frozen=True)
class _Sessions:
    """Per-session arrays (n_sessions,), grouped by visitor."""

    visitor: np.ndarray
    persona: np.ndarray
    device: np.ndarray  # index into features.schema.DEVICE_TYPES
    focus: np.ndarray  # the category a session is mostly about
    logged_in: np.ndarray
    start_ms: np.ndarray  # ms after the window start


def _make_sessions(
    rng: np.random.Generator, vis: _Visitors, n_users: int, days: int, tables: dict[str, np.ndarray]
) -> _Sessions:
    """A Poisson number of sessions per visitor (at least one) with device, focus and login;
    starts follow a diurnal cycle in the visitor's local time."""
    rate = tables["sessions_per_day"][vis.persona] * vis.activity * days
    counts = np.maximum(1, rng.poisson(rate))
    visitor = np.repeat(np.arange(len(rate)), counts)
    persona = vis.persona[visitor]
    n = len(visitor)
    other_device = _pick_rows(rng, tables["device_mix"][persona])
    device = np.where(rng.random(n) < MAIN_DEVICE_SHARE, vis.main_device[visitor], other_device)
    focus = _pick_rows(rng, vis.category_weights[visitor])
    logged_in = (rng.random(n) >= LOGGED_OUT_SESSION_SHARE) & (visitor < n_users)
    logged_in[(np.cumsum(counts) - counts)[:n_users]] = True  # every user logs in at least once
    day = rng.integers(0, days, n)
    hour = rng.choice(24, n, p=np.array(_DIURNAL) / sum(_DIURNAL))
    local_ms = (hour * 3600 + rng.integers(0, 3600, n)) * 1000 + rng.integers(0, 1000, n)
    utc_offset_ms = np.array([c[2] for c in _COUNTRIES])[vis.country[visitor]] * 3_600_000
    start_ms = (day * 86_400_000 + local_ms - utc_offset_ms) % (days * 86_400_000)
    return _Sessions(visitor, persona, device, focus, logged_in, start_ms)


def _event_times(
    rng: np.random.Generator,
    sessions: _Sessions,
    vis: _Visitors,
    e_sess: np.ndarray,
    days: int,
    tables: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-event ms after the window start, events a persona-paced gap apart, and the session
    starts moved back where needed so that every session ends inside the window."""
    n = len(e_sess)
    first = np.r_[True, e_sess[1:] != e_sess[:-1]]
    first_pos = np.flatnonzero(first)
    median_s = tables["gap_median_s"][sessions.persona[e_sess]] * vis.pace[sessions.visitor[e_sess]]
    gap_ms = np.clip(np.round(median_s * np.exp(0.6 * rng.normal(size=n)) * 1000), 2000, 1_200_000)
    cum = np.cumsum(np.where(first, 0, gap_ms).astype(np.int64))
    offset = cum - cum[first_pos][e_sess]
    duration = offset[np.r_[first_pos[1:], n] - 1]
    start_ms = np.minimum(sessions.start_ms, days * 86_400_000 - 1 - duration)
    return start_ms[e_sess] + offset, start_ms


def _event_products(
    rng: np.random.Generator,
    cat: _Catalogue,
    vis: _Visitors,
    sessions: _Sessions,
    e_sess: np.ndarray,
    state: np.ndarray,
    tables: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Product index (-1 for none) and quantity (0 for none) per event.

    Views come from the user's lists or are drawn from taste; a view right before add_to_cart
    uses the buying tier taste. add_to_cart takes the viewed product, purchase and
    remove_from_cart the open cart product (the latest add_to_cart of the session).
    """
    pos = np.arange(len(state))
    is_view, is_cart = state == VIEW, state == CART
    closes = (state == BUY) | (state == REMOVE)
    intent = is_view[:-1] & is_cart[1:]
    v_sess = e_sess[is_view]
    v_vis, v_persona = sessions.visitor[v_sess], sessions.persona[v_sess]
    v_intent = np.r_[intent, False][is_view]
    fresh = _pick_rows(rng, vis.category_weights[v_vis])
    v_cat = np.where(rng.random(len(v_sess)) < SESSION_FOCUS_SHARE, sessions.focus[v_sess], fresh)
    tier_pref = np.where(
        v_intent[:, None], tables["buy_tiers"][v_persona], tables["view_tiers"][v_persona]
    )
    sampled = _sample_products(rng, cat, v_cat, tier_pref, vis.style[v_vis, v_cat])
    browse_pick = vis.browse_list[v_vis, rng.integers(0, BROWSE_LIST, len(v_vis))]
    buy_pick = vis.buy_list[v_vis, rng.integers(0, BUY_LIST, len(v_vis))]
    use_list = rng.random(len(v_vis)) < np.where(v_intent, BUY_LIST_SHARE, BROWSE_LIST_SHARE)
    product = np.full(len(state), -1)
    product[is_view] = np.where(use_list, np.where(v_intent, buy_pick, browse_pick), sampled)
    product[is_cart] = product[pos[is_cart] - 1]
    last_cart = np.maximum.accumulate(np.where(is_cart, pos, -1))
    product[closes] = product[last_cart[closes]]
    extra = np.array([spec[3] for spec in _CATEGORY_SPECS.values()])
    quantity = np.zeros(len(state), dtype=np.int64)
    quantity[is_cart] = 1 + rng.poisson(extra[cat.category[product[is_cart]]])
    quantity[closes] = quantity[last_cart[closes]]
    return product, quantity


def _event_pages(rng: np.random.Generator, e_sess: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Page index into _PAGES: sessions land on home; page views show the cart while one is open
    and the checkout right before a purchase."""
    pos = np.arange(len(state))
    first = np.r_[True, e_sess[1:] != e_sess[:-1]]
    last_cart = np.maximum.accumulate(np.where(state == CART, pos, -1))
    last_close = np.maximum.accumulate(np.where((state == BUY) | (state == REMOVE), pos, -1))
    cart_open = (last_cart > last_close) & (last_cart >= np.flatnonzero(first)[e_sess])
    page = np.array([0, 2, 3, 2, 4, 5])[state]  # by event type, see _PAGES
    is_page = state == PAGE
    page[is_page & (rng.random(len(state)) < 0.55)] = 1
    page[is_page & cart_open & (rng.random(len(state)) < 0.35)] = 4
    page[is_page & np.r_[state[1:] == BUY, False]] = 5
    page[is_page & first] = 0
    return page


def _search_queries(
    rng: np.random.Generator,
    vis: _Visitors,
    sessions: _Sessions,
    s_sess: np.ndarray,
    tables: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Category and query text of each search (sessions ``s_sess``): a category name or term,
    often with a deal prefix for bargain hunters."""
    s_vis, s_persona = sessions.visitor[s_sess], sessions.persona[s_sess]
    fresh = _pick_rows(rng, vis.category_weights[s_vis])
    q_cat = np.where(rng.random(len(s_sess)) < SESSION_FOCUS_SHARE, sessions.focus[s_sess], fresh)
    terms = [(name, *spec[4]) for name, spec in _CATEGORY_SPECS.items()]
    plain = [term for row in terms for term in row]
    queries = np.array(plain + [f"{p} {t}" for p in _DEAL_PREFIXES for t in plain], dtype=object)
    prefix = np.where(
        rng.random(len(s_sess)) < tables["deal_query_share"][s_persona],
        1 + rng.integers(0, len(_DEAL_PREFIXES), len(s_sess)),
        0,
    )
    term = rng.integers(0, len(terms[0]), len(s_sess))
    return q_cat, queries[(prefix * len(plain) + q_cat * len(terms[0]) + term)]


def _event_properties(
    rng: np.random.Generator, e_sess: np.ndarray, state: np.ndarray
) -> np.ndarray:
    """JSON object strings (or None): the referrer on each session's first event, the result count
    on searches and the payment method on purchases."""
    n = len(state)
    first = np.r_[True, e_sess[1:] != e_sess[:-1]]
    is_search, is_buy = state == SEARCH, state == BUY
    referrer = rng.choice(len(_REFERRERS), n, p=_REFERRER_SHARES)
    results = np.minimum(rng.poisson(24, n), 99)
    table = np.array(
        [json.dumps({"referrer": r}) for r in _REFERRERS]
        + [json.dumps({"results": k}) for k in range(100)]
        + [json.dumps({"referrer": r, "results": k}) for r in _REFERRERS for k in range(100)]
        + [json.dumps({"payment": p}) for p in _PAYMENTS],
        dtype=object,
    )
    n_ref = len(_REFERRERS)
    code = np.full(n, -1)
    code[first] = referrer[first]
    code[is_search] = n_ref + results[is_search]
    both = first & is_search
    code[both] = n_ref + 100 + referrer[both] * 100 + results[both]
    code[is_buy] = n_ref + 100 + n_ref * 100 + rng.integers(0, len(_PAYMENTS), is_buy.sum())
    properties = np.full(n, None, dtype=object)
    properties[code >= 0] = table[code[code >= 0]]
    return properties


def _optional(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` as an object array, None where ``index`` is -1."""
    out = np.full(len(index), None, dtype=object)
    out[index >= 0] = table[index[index >= 0]]
    return out


def generate_clickstream(
    n_users: int, days: int, seed: int, start: datetime | None = None
) -> GeneratedData:
    """Generate a clickstream of ``n_users`` registered users (plus ~3% anonymous-only visitors)
    over ``days`` days from ``start``: about 3.7 events per user per day, sorted by timestamp.

    ``start`` defaults to 2026-01-01 00:00 UTC so that the output depends on the arguments only.
    The same arguments give identical frames.
    """
    if n_users < 1 or days < 1 or seed < 0:
        raise ValueError(f"need n_users >= 1, days >= 1, seed >= 0; got {n_users}, {days}, {seed}")
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None:
        raise ValueError(f"start {start!r} has no time zone; give an aware datetime such as UTC")
    # One stream per stage, so a change in one stage does not reshuffle the others.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(9)]
    tables = _persona_tables()
    cat = _make_catalogue(n_users, rngs[0])
    vis = _make_visitors(n_users, seed, rngs[1], cat, tables)
    sessions = _make_sessions(rngs[2], vis, n_users, days, tables)
    e_sess, state = _walk_sessions(rngs[3], sessions.persona, tables)
    ts_ms, start_ms = _event_times(rngs[4], sessions, vis, e_sess, days, tables)
    product, quantity = _event_products(rngs[5], cat, vis, sessions, e_sess, state, tables)
    page = _event_pages(rngs[6], e_sess, state)
    is_search = state == SEARCH
    q_cat, queries = _search_queries(rngs[7], vis, sessions, e_sess[is_search], tables)
    properties = _event_properties(rngs[8], e_sess, state)

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
    product_ids = _pad_ids("p", len(cat.category), 4)

    order = np.argsort(ts_ms, kind="stable")
    e_sess, e_vis, state = e_sess[order], e_vis[order], state[order]
    product, quantity = product[order], quantity[order]
    columns = {
        "event_id": _pad_ids("e", len(order), 7),
        "event_type": np.array(EVENT_TYPES, dtype=object)[state],
        "timestamp": pd.to_datetime(ts_ms[order] * 1_000_000 + _epoch_ns(start), utc=True),
        "user_id": user_id[order],
        "anonymous_id": vis.anonymous_id[e_vis],
        "session_id": _pad_ids("s", len(start_ms), 6)[session_rank[e_sess]],
        "device_type": np.array(DEVICE_TYPES, dtype=object)[sessions.device[e_sess]],
        "country": np.array([c[0] for c in _COUNTRIES], dtype=object)[vis.country[e_vis]],
        "product_id": _optional(product_ids, product),
        "category": _optional(np.array(CATEGORIES, dtype=object), category[order]),
        "price": np.where(product >= 0, cat.price[product], np.nan),
        "quantity": pd.arrays.IntegerArray(quantity, quantity == 0),
        "query": query[order],
        "page": np.array(_PAGES, dtype=object)[page[order]],
        "properties": properties[order],
    }
    events = pd.DataFrame({name: columns[name] for name in EVENT_COLUMNS})
    personas = pd.DataFrame(
        {
            "user_id": vis.user_id[:n_users],
            "persona": np.array(PERSONAS, dtype=object)[vis.persona[:n_users]],
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
    return GeneratedData(events=events, personas=personas, catalogue=catalogue)


def _epoch_ns(moment: datetime) -> int:
    """Epoch nanoseconds of an aware datetime."""
    return int(pd.Timestamp(moment).value)


def write_generated(data: GeneratedData, out_dir: Path) -> dict[str, Path]:
    """Write ``events.parquet`` (in the event log's Arrow schema), ``personas.csv`` and
    ``catalogue.csv`` to ``out_dir`` (created if missing).

    Returns the three paths keyed by ``events``, ``personas`` and ``catalogue``.
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
    return paths
