"""The synthetic world's definitions: categories, countries, persona profiles and tuning constants.

Everything :mod:`features.synthetic.generate` plants lives here as plain data, so the planted
truth can be read (and tuned) in one place; the simulator modules only turn it into arrays and
draws.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

PRICE_TIERS = ("budget", "mid", "premium", "luxury")
TIER_CUTS = (0.3, 0.6, 0.85)  # per-category price quantiles between the tiers

# category: (share of catalogue, median price, log-sd of price, extra quantity mean, search terms)
CATEGORY_SPECS: dict[str, tuple[float, float, float, float, tuple[str, ...]]] = {
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
CATEGORIES = tuple(CATEGORY_SPECS)
DEAL_PREFIXES = ("cheap", "discount", "sale", "best deal")

# country, share of visitors, UTC offset in hours (for the diurnal cycle in local time)
COUNTRIES = (
    ("US", 0.30, -5), ("GB", 0.12, 0), ("DE", 0.10, 1), ("FR", 0.08, 1), ("ES", 0.05, 1),
    ("IT", 0.05, 1), ("NL", 0.04, 1), ("CA", 0.06, -5), ("AU", 0.04, 10), ("SE", 0.03, 1),
    ("PL", 0.03, 1), ("JP", 0.04, 9), ("BR", 0.03, -3), ("IN", 0.03, 5),
)  # fmt: skip
# relative session starts per local hour 0..23: quiet nights, a lunch bump, an evening peak
DIURNAL = (1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.6, 2.8, 3.0,
            3.4, 3.2, 2.9, 2.8, 2.9, 3.2, 3.8, 4.5, 4.8, 4.2, 3.0, 1.8)  # fmt: skip
REFERRERS = ("direct", "search_engine", "email", "social", "ads")
REFERRER_SHARES = (0.4, 0.3, 0.1, 0.1, 0.1)
PAYMENTS = ("card", "paypal", "apple_pay", "gift_card")
PAGES = ("home", "category", "product", "search", "cart", "checkout")

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

#: Two more personas that overlap the five above (issue #18): a gadget buyer who shares the
#: window shopper's electronics focus but buys, and a mobile impulse buyer who shares the casual
#: browser's phone-first device mix but fills carts in toys, garden and sports. With the bargain
#: hunter (defined mostly by searching for budget items) they make seven overlapping behaviours.
OVERLAPPING_PERSONA_SPECS: tuple[PersonaSpec, ...] = (
    # Twice as many sessions as in the five-persona world: seven overlapping behaviours are
    # only told apart from a month of a person's sessions when there are enough of them.
    *(replace(spec, share=share, sessions_per_day=2 * spec.sessions_per_day) for spec, share
      in zip(PERSONA_SPECS, (0.15, 0.16, 0.13, 0.13, 0.15), strict=True)),
    PersonaSpec(
        name="gadget_buyer", share=0.14, sessions_per_day=0.9, end_prob=0.1, gap_median_s=50.0,
        browse_mix=(0.2, 0.65, 0.15), cart_prob=0.3, purchase_prob=0.45, remove_prob=0.04,
        device_mix=(0.7, 0.2, 0.08, 0.02),
        affinity={"electronics": 40, "automotive": 3}, anchor_category="electronics",
        view_tiers=(-0.3, 0.3, 0.3, 0.0), buy_tiers=(-0.3, 0.3, 0.3, 0.0),
    ),
    PersonaSpec(
        name="mobile_impulse_buyer", share=0.14, sessions_per_day=1.2, end_prob=0.15,
        gap_median_s=25.0, browse_mix=(0.35, 0.6, 0.05), cart_prob=0.35, purchase_prob=0.55,
        remove_prob=0.03, device_mix=(0.04, 0.9, 0.05, 0.01),
        affinity={"toys": 6, "garden": 4, "sports": 3},
        view_tiers=(0.0, 0.3, 0.3, 0.0), buy_tiers=(0.0, 0.3, 0.3, 0.0),
    ),
)  # fmt: skip
#: The persona sets ``tailor data generate --personas N`` chooses from.
PERSONA_SETS: dict[int, tuple[PersonaSpec, ...]] = {5: PERSONA_SPECS, 7: OVERLAPPING_PERSONA_SPECS}
#: The truth label of noise users (they follow no persona; left out of ARI scores).
NOISE_PERSONA = "noise"


@dataclass(frozen=True)
class Difficulty:
    """How hard the planted segmentation is.

    ``personas``: 5 (well separated) or 7 (overlapping, :data:`OVERLAPPING_PERSONA_SPECS`).
    ``off_persona_share``: share of each person's sessions acted like another, random persona
    (its funnel, pace, device mix, category focus and price taste). ``noise_share``: share of
    registered users who behave at random: every session a random persona, a random main
    device and random category weights; their truth label is :data:`NOISE_PERSONA`.
    """

    personas: int = 5
    off_persona_share: float = 0.0
    noise_share: float = 0.0

    def __post_init__(self) -> None:
        if self.personas not in PERSONA_SETS:
            raise ValueError(f"personas={self.personas}; allowed: {sorted(PERSONA_SETS)}")
        for name in ("off_persona_share", "noise_share"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value}; allowed: 0 <= {name} < 1")

    @property
    def specs(self) -> tuple[PersonaSpec, ...]:
        return PERSONA_SETS[self.personas]

    @property
    def is_plain(self) -> bool:
        """The original generator, draw for draw."""
        return self == Difficulty()


#: ``tailor data generate --difficulty``: easy is the original data; hard has seven overlapping
#: personas, a fifth of sessions off-persona and one person in ten behaving at random.
DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(),
    "medium": Difficulty(personas=7, off_persona_share=0.1, noise_share=0.05),
    "hard": Difficulty(personas=7, off_persona_share=0.2, noise_share=0.1),
}


def persona_tables(specs: tuple[PersonaSpec, ...] = PERSONA_SPECS) -> dict[str, np.ndarray]:
    """Persona parameters as arrays indexed by persona index (rows) for vectorized lookups."""

    def col(field: str) -> np.ndarray:
        return np.array([getattr(s, field) for s in specs], dtype=float)

    affinity = np.array([[s.affinity.get(c, 1.0) for c in CATEGORIES] for s in specs])
    anchor = np.array(
        [[ANCHOR_BOOST * (c == s.anchor_category) for c in CATEGORIES] for s in specs]
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
        "share": col("share"),
        "browse_mix": browse,
        "first_mix": first,
    }
