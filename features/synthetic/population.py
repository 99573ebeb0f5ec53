"""The synthetic shop's population: the product catalogue and the visitors with their taste.

Draws a catalogue (prices, tiers, styles, Zipf popularity) and the registered and anonymous
visitors (persona, country, device, favourite categories, styles, product lists) for
:mod:`features.synthetic.generate`, plus the small vectorized sampling helpers the simulator shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic.specs import (
    ANONYMOUS_VISITOR_SHARE,
    BROWSE_LIST,
    BUY_LIST,
    CATEGORY_SPECS,
    COUNTRIES,
    N_CANDIDATES,
    N_STYLES,
    OWN_STYLE_SHARE,
    STYLE_BONUS,
    TIER_CUTS,
    ZIPF_EXPONENT,
)


@dataclass(frozen=True)
class Catalogue:
    """Per-product arrays indexed by product index (id ``p{index + 1}``)."""

    category: np.ndarray  # (n_products,) category index
    price: np.ndarray  # (n_products,) float
    tier: np.ndarray  # (n_products,) index into PRICE_TIERS
    style: np.ndarray  # (n_products,) latent style in [0, N_STYLES)
    by_category: np.ndarray  # (n_products,) product indices grouped by category
    popularity_cdf: np.ndarray  # (n_products,) category index + cumulative share in category


def pad_ids(prefix: str, n: int, min_width: int) -> np.ndarray:
    """``prefix`` + 1-based zero-padded counters as an object array, e.g. u00001."""
    width = max(min_width, len(str(n)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)], dtype=object)


def pick_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
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


def make_catalogue(n_users: int, rng: np.random.Generator) -> Catalogue:
    """Products per category with lognormal prices, quantile tiers, styles and Zipf popularity."""
    n_products = int(np.clip(n_users // 5, 200, 2000))
    specs = list(CATEGORY_SPECS.values())
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
    return Catalogue(category, price, tier, style, by_category, cdf)


def sample_products(
    rng: np.random.Generator,
    cat: Catalogue,
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
class Visitors:
    """Per-visitor arrays; the first ``n_users`` visitors are registered, the rest anonymous."""

    persona: np.ndarray
    user_id: np.ndarray  # object: str, or None for anonymous-only visitors
    anonymous_id: np.ndarray  # object str
    country: np.ndarray  # index into COUNTRIES
    main_device: np.ndarray
    category_weights: np.ndarray  # (n, n_categories)
    style: np.ndarray  # (n, n_categories) preferred style per category
    activity: np.ndarray  # session-rate multiplier
    pace: np.ndarray  # gap multiplier
    browse_list: np.ndarray  # (n, BROWSE_LIST) product indices
    buy_list: np.ndarray  # (n, BUY_LIST) product indices


def make_visitors(
    n_users: int,
    seed: int,
    rng: np.random.Generator,
    cat: Catalogue,
    tables: dict[str, np.ndarray],
) -> Visitors:
    """Registered users and anonymous-only visitors with persona, place, device and taste."""
    shares = tables["share"]
    n_anon = max(1, round(n_users * ANONYMOUS_VISITOR_SHARE / (1 - ANONYMOUS_VISITOR_SHARE)))
    n = n_users + n_anon
    persona = np.concatenate(
        [_quota(rng, shares, n_users), rng.choice(len(shares), n_anon, p=shares)]
    )
    user_id = np.concatenate([pad_ids("u", n_users, 5), np.full(n_anon, None, dtype=object)])
    # An odd multiplier is a bijection modulo 2**48, so cookies are unique and look random.
    salt = np.uint64(seed * 0x2545F4914F6CDD1D % 2**48)
    mask = np.uint64(2**48 - 1)
    mixed = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + salt) & mask
    anonymous_id = np.array([f"anon-{int(x):012x}" for x in mixed], dtype=object)
    country = rng.choice(len(COUNTRIES), n, p=[c[1] for c in COUNTRIES])
    main_device = pick_rows(rng, tables["device_mix"][persona])
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
        category = pick_rows(rng, category_weights[owner])
        picks = sample_products(rng, cat, category, tiers[persona[owner]], style[owner, category])
        lists.append(picks.reshape(n, size))
    return Visitors(
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
