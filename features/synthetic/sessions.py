"""The synthetic session simulator: sessions per visitor and every event's attributes.

Given the catalogue and visitors of :mod:`features.synthetic.population`, draws sessions (device,
focus, login, start time), walks each session through the funnel and fills in per-event times,
products, quantities, pages, search queries and properties, all as index arrays that
:mod:`features.synthetic.generate` turns into the event frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from features.synthetic.population import Catalogue, Visitors, pick_rows, sample_products
from features.synthetic.specs import (
    BROWSE_LIST,
    BROWSE_LIST_SHARE,
    BUY,
    BUY_LIST,
    BUY_LIST_SHARE,
    CART,
    CATEGORY_SPECS,
    COUNTRIES,
    DEAL_PREFIXES,
    DIURNAL,
    END_AFTER_PURCHASE,
    LOGGED_OUT_SESSION_SHARE,
    MAIN_DEVICE_SHARE,
    MAX_SESSION_EVENTS,
    PAGE,
    PAYMENTS,
    REFERRER_SHARES,
    REFERRERS,
    REMOVE,
    SEARCH,
    SESSION_FOCUS_SHARE,
    VIEW,
)


def walk_sessions(
    rng: np.random.Generator, persona: np.ndarray, tables: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Event types of every session by a persona-specific walk over the funnel.

    Returns ``(event_session, event_state)``, both (n_events,), grouped by session in step order.
    A cart is "open" after add_to_cart until its purchase or removal; purchase and
    remove_from_cart only happen while it is open, and add_to_cart only right after a view.
    """
    n = len(persona)
    states = np.full((n, MAX_SESSION_EVENTS), -1, dtype=np.int8)
    states[:, 0] = pick_rows(rng, tables["first_mix"][persona])
    active, cur, open_cart = np.arange(n), states[:, 0].astype(int), np.zeros(n, dtype=bool)
    for step in range(1, MAX_SESSION_EVENTS):
        if active.size == 0:
            break
        per = persona[active]
        u = rng.random((4, active.size))
        end = u[0] < np.where(cur == BUY, END_AFTER_PURCHASE, tables["end_prob"][per])
        nxt = pick_rows(rng, tables["browse_mix"][per])  # PAGE, VIEW, SEARCH are 0, 1, 2
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
class Sessions:
    """Per-session arrays (n_sessions,), grouped by visitor."""

    visitor: np.ndarray
    persona: np.ndarray
    device: np.ndarray  # index into features.schema.DEVICE_TYPES
    focus: np.ndarray  # the category a session is mostly about
    logged_in: np.ndarray
    start_ms: np.ndarray  # ms after the window start


def make_sessions(
    rng: np.random.Generator, vis: Visitors, n_users: int, days: int, tables: dict[str, np.ndarray]
) -> Sessions:
    """A Poisson number of sessions per visitor (at least one) with device, focus and login;
    starts follow a diurnal cycle in the visitor's local time."""
    rate = tables["sessions_per_day"][vis.persona] * vis.activity * days
    counts = np.maximum(1, rng.poisson(rate))
    visitor = np.repeat(np.arange(len(rate)), counts)
    persona = vis.persona[visitor]
    n = len(visitor)
    other_device = pick_rows(rng, tables["device_mix"][persona])
    device = np.where(rng.random(n) < MAIN_DEVICE_SHARE, vis.main_device[visitor], other_device)
    focus = pick_rows(rng, vis.category_weights[visitor])
    logged_in = (rng.random(n) >= LOGGED_OUT_SESSION_SHARE) & (visitor < n_users)
    logged_in[(np.cumsum(counts) - counts)[:n_users]] = True  # every user logs in at least once
    day = rng.integers(0, days, n)
    hour = rng.choice(24, n, p=np.array(DIURNAL) / sum(DIURNAL))
    local_ms = (hour * 3600 + rng.integers(0, 3600, n)) * 1000 + rng.integers(0, 1000, n)
    utc_offset_ms = np.array([c[2] for c in COUNTRIES])[vis.country[visitor]] * 3_600_000
    start_ms = (day * 86_400_000 + local_ms - utc_offset_ms) % (days * 86_400_000)
    return Sessions(visitor, persona, device, focus, logged_in, start_ms)


def event_times(
    rng: np.random.Generator,
    sessions: Sessions,
    vis: Visitors,
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


def event_products(
    rng: np.random.Generator,
    cat: Catalogue,
    vis: Visitors,
    sessions: Sessions,
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
    fresh = pick_rows(rng, vis.category_weights[v_vis])
    v_cat = np.where(rng.random(len(v_sess)) < SESSION_FOCUS_SHARE, sessions.focus[v_sess], fresh)
    tier_pref = np.where(
        v_intent[:, None], tables["buy_tiers"][v_persona], tables["view_tiers"][v_persona]
    )
    sampled = sample_products(rng, cat, v_cat, tier_pref, vis.style[v_vis, v_cat])
    browse_pick = vis.browse_list[v_vis, rng.integers(0, BROWSE_LIST, len(v_vis))]
    buy_pick = vis.buy_list[v_vis, rng.integers(0, BUY_LIST, len(v_vis))]
    use_list = rng.random(len(v_vis)) < np.where(v_intent, BUY_LIST_SHARE, BROWSE_LIST_SHARE)
    product = np.full(len(state), -1)
    product[is_view] = np.where(use_list, np.where(v_intent, buy_pick, browse_pick), sampled)
    product[is_cart] = product[pos[is_cart] - 1]
    last_cart = np.maximum.accumulate(np.where(is_cart, pos, -1))
    product[closes] = product[last_cart[closes]]
    extra = np.array([spec[3] for spec in CATEGORY_SPECS.values()])
    quantity = np.zeros(len(state), dtype=np.int64)
    quantity[is_cart] = 1 + rng.poisson(extra[cat.category[product[is_cart]]])
    quantity[closes] = quantity[last_cart[closes]]
    return product, quantity


def event_pages(rng: np.random.Generator, e_sess: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Page index into PAGES: sessions land on home; page views show the cart while one is open
    and the checkout right before a purchase."""
    pos = np.arange(len(state))
    first = np.r_[True, e_sess[1:] != e_sess[:-1]]
    last_cart = np.maximum.accumulate(np.where(state == CART, pos, -1))
    last_close = np.maximum.accumulate(np.where((state == BUY) | (state == REMOVE), pos, -1))
    cart_open = (last_cart > last_close) & (last_cart >= np.flatnonzero(first)[e_sess])
    page = np.array([0, 2, 3, 2, 4, 5])[state]  # by event type, see PAGES
    is_page = state == PAGE
    page[is_page & (rng.random(len(state)) < 0.55)] = 1
    page[is_page & cart_open & (rng.random(len(state)) < 0.35)] = 4
    page[is_page & np.r_[state[1:] == BUY, False]] = 5
    page[is_page & first] = 0
    return page


def search_queries(
    rng: np.random.Generator,
    vis: Visitors,
    sessions: Sessions,
    s_sess: np.ndarray,
    tables: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Category and query text of each search (sessions ``s_sess``): a category name or term,
    often with a deal prefix for bargain hunters."""
    s_vis, s_persona = sessions.visitor[s_sess], sessions.persona[s_sess]
    fresh = pick_rows(rng, vis.category_weights[s_vis])
    q_cat = np.where(rng.random(len(s_sess)) < SESSION_FOCUS_SHARE, sessions.focus[s_sess], fresh)
    terms = [(name, *spec[4]) for name, spec in CATEGORY_SPECS.items()]
    plain = [term for row in terms for term in row]
    queries = np.array(plain + [f"{p} {t}" for p in DEAL_PREFIXES for t in plain], dtype=object)
    prefix = np.where(
        rng.random(len(s_sess)) < tables["deal_query_share"][s_persona],
        1 + rng.integers(0, len(DEAL_PREFIXES), len(s_sess)),
        0,
    )
    term = rng.integers(0, len(terms[0]), len(s_sess))
    return q_cat, queries[(prefix * len(plain) + q_cat * len(terms[0]) + term)]


def event_properties(rng: np.random.Generator, e_sess: np.ndarray, state: np.ndarray) -> np.ndarray:
    """JSON object strings (or None): the referrer on each session's first event, the result count
    on searches and the payment method on purchases."""
    n = len(state)
    first = np.r_[True, e_sess[1:] != e_sess[:-1]]
    is_search, is_buy = state == SEARCH, state == BUY
    referrer = rng.choice(len(REFERRERS), n, p=REFERRER_SHARES)
    results = np.minimum(rng.poisson(24, n), 99)
    table = np.array(
        [json.dumps({"referrer": r}) for r in REFERRERS]
        + [json.dumps({"results": k}) for k in range(100)]
        + [json.dumps({"referrer": r, "results": k}) for r in REFERRERS for k in range(100)]
        + [json.dumps({"payment": p}) for p in PAYMENTS],
        dtype=object,
    )
    n_ref = len(REFERRERS)
    code = np.full(n, -1)
    code[first] = referrer[first]
    code[is_search] = n_ref + results[is_search]
    both = first & is_search
    code[both] = n_ref + 100 + referrer[both] * 100 + results[both]
    code[is_buy] = n_ref + 100 + n_ref * 100 + rng.integers(0, len(PAYMENTS), is_buy.sum())
    properties = np.full(n, None, dtype=object)
    properties[code >= 0] = table[code[code >= 0]]
    return properties
