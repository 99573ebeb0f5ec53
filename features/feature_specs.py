"""Names, dtypes and descriptions of every feature-table column, and the constants behind them.

The Feast declarations in ``feature_repo/`` and the transforms both read these, so a feature's
name, type and meaning are stated once. Plain data: no pandas, no Feast.
"""

from __future__ import annotations

WINDOWS_DAYS = (7, 30)
#: ``days_since_last_purchase`` when there is no purchase in the largest window.
NO_PURCHASE_DAYS = 999.0
#: ``price_tier_preference`` when the user viewed or bought nothing priced: "typical prices".
NEUTRAL_PRICE_PREFERENCE = 1.0
#: Item price tiers, cheapest first, split at the 25th, 50th and 75th percentiles of the category.
PRICE_TIERS = ("budget", "mid", "premium", "luxury")
LARGEST_WINDOW = max(WINDOWS_DAYS)


def _window_features(w: int) -> dict[str, tuple[str, str]]:
    """The per-window user features for a window of ``w`` days, named with a ``_{w}d`` suffix."""
    return {
        f"sessions_{w}d": ("int64", f"Distinct sessions with an event in the last {w} days."),
        f"mean_session_seconds_{w}d": (
            "float64",
            f"Mean session duration (last minus first in-window event), {w}d; 0 if none.",
        ),
        f"events_per_session_{w}d": ("float64", f"Events per session in the last {w} days."),
        f"product_views_{w}d": ("int64", f"product_view events in the last {w} days."),
        f"add_to_carts_{w}d": ("int64", f"add_to_cart events in the last {w} days."),
        f"purchases_{w}d": ("int64", f"purchase events (order lines) in the last {w} days."),
        f"purchase_frequency_{w}d": (
            "float64",
            f"Purchases per window day (purchases_{w}d / {w}), comparable across users.",
        ),
        f"monetary_{w}d": ("float64", f"Sum of price * quantity over purchases, last {w} days."),
        f"cart_abandonment_rate_{w}d": (
            "float64",
            f"Share of sessions with add_to_cart but no purchase among sessions with add_to_cart,"
            f" last {w} days; 0 when no session added to cart.",
        ),
        f"mobile_share_{w}d": ("float64", f"Share of events on mobile in the last {w} days."),
    }


USER_FEATURES: dict[str, tuple[str, str]] = {
    **{name: spec for w in WINDOWS_DAYS for name, spec in _window_features(w).items()},
    "recency_days": ("float64", "Days from the last event before as-of to as-of."),
    "days_since_last_purchase": (
        "float64",
        f"Days since the last purchase in the last {LARGEST_WINDOW} days;"
        f" {NO_PURCHASE_DAYS} when none.",
    ),
    "top_category": (
        "string",
        f"Most frequent category of product events, last {LARGEST_WINDOW} days (ties:"
        " alphabetical); '' when none.",
    ),
    "top_category_share": ("float64", "Share of categorised product events in top_category."),
    "category_shares": (
        "string",
        'Compact JSON {"category": share} of categorised product events, sorted keys, 4 decimals;'
        " '{}' when none.",
    ),
    "price_tier_preference": (
        "float64",
        "Mean of price / category median item price over viewed and bought products;"
        f" {NEUTRAL_PRICE_PREFERENCE} (typical) when none.",
    ),
    "main_device": ("string", "Most frequent device_type (ties: alphabetical)."),
    "search_share": (
        "float64",
        f"Share of the user's events that are searches, last {LARGEST_WINDOW} days.",
    ),
    "view_price_preference": (
        "float64",
        "Mean of price / category median item price over viewed products only, last"
        f" {LARGEST_WINDOW} days; {NEUTRAL_PRICE_PREFERENCE} (typical) when none.",
    ),
    "purchase_price_preference": (
        "float64",
        "Mean of price / category median item price over bought products only, last"
        f" {LARGEST_WINDOW} days; {NEUTRAL_PRICE_PREFERENCE} (typical) when none.",
    ),
    # Behaviour shares for segmentation (issue #18): who shops how, not only how much.
    f"searches_per_session_{LARGEST_WINDOW}d": (
        "float64",
        f"search events per session in the last {LARGEST_WINDOW} days.",
    ),
    "deal_search_share": (
        "float64",
        "Share of the user's searches whose query has a deal word (cheap, sale, ...), last"
        f" {LARGEST_WINDOW} days; 0 when no search.",
    ),
    "device_shares": (
        "string",
        'Compact JSON {"device_type": share} of the user\'s events, last'
        f" {LARGEST_WINDOW} days, sorted keys, 4 decimals.",
    ),
    **{
        f"{kind}_tier_shares": (
            "string",
            f'Compact JSON {{"tier": share}} of {kind} events by the item\'s price tier'
            f" (budget|mid|premium|luxury), last {LARGEST_WINDOW} days; '{{}}' when none.",
        )
        for kind in ("view", "cart", "purchase")
    },
}
#: A search is a deal search when one of these words is a word of its query (the same words as
#: the default real-time persona rules, ``features/personas.yaml``).
DEAL_WORDS = frozenset(
    ("cheap", "discount", "sale", "deal", "deals", "offer", "coupon", "clearance", "bargain")
)

ITEM_FEATURES: dict[str, tuple[str, str]] = {
    "views_30d": ("int64", "product_view events in the last 30 days."),
    "carts_30d": ("int64", "add_to_cart events in the last 30 days."),
    "purchases_30d": ("int64", "purchase events in the last 30 days."),
    "popularity_30d": ("int64", "Distinct users (or anonymous visitors) with any event, 30d."),
    "conversion_rate_30d": (
        "float64",
        "purchases_30d / views_30d; 0 when no views (may exceed 1 when buys skip the view).",
    ),
    "price": ("float64", "Latest price seen before as-of; 0 when never priced."),
    "price_tier": (
        "string",
        "budget|mid|premium|luxury by the item's price among the category's item prices at the"
        " 25/50/75th percentiles (all items seen before as-of); 'mid' when the category has no"
        " price spread; '' when never priced.",
    ),
    "category": ("string", "Latest category seen before as-of; '' when none."),
}

#: Segment assignments written by ``tailor segment`` (the ``user_segments`` feature view).
SEGMENT_FEATURES: dict[str, tuple[str, str]] = {
    "segment_id": (
        "int64",
        "Segment of the user at the as-of time; ids keep their meaning across re-clusterings"
        " (matched to the previous run).",
    ),
    "segment_label": ("string", "Readable segment name, e.g. 'Frequent Buyers'."),
}
#: People the segmentation's outlier option leaves without a segment (they fit none); serving
#: treats them like people without a segment.
UNCLASSIFIED_ID, UNCLASSIFIED_LABEL = -2, "Unclassified"
