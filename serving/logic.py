"""Every serving decision, as plain functions testable without BentoML.

The rules (:mod:`serving.rules`) pick a candidate source per request: the model for people it was
trained on, popular items in the request's context (category, country, device) for people it has
not seen. Filters drop what the person bought and what the caller excluded, a diversity re-rank
caps items per category, slots pin items from other sources, and content variants follow the
request's location and device. Every item says which source and rule produced it. When the model
or the online store fails, the answer falls back to popularity and says why (``degraded``).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

import numpy as np

from features.feature_specs import UNCLASSIFIED_ID, UNCLASSIFIED_LABEL
from features.live_sessions import LiveSession
from features.personas import SEPARATOR, split_label
from models.scoring import Scorer
from serving.rerank import Candidate, boost, candidates, diversify, iter_candidates, place_slots
from serving.rules import CONTEXT_CATEGORY, Decision, Facts, RuleSet, load_rules
from serving.schemas import (
    MODEL_FAILED,
    STORE_UNAVAILABLE,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)

__all__ = [
    "UnknownItemError",
    "cold_start_category",
    "read_features",
    "recommend",
    "SESSION_BLEND",
    "SessionBlend",
    "session_candidates",
    "similar_items",
]

logger = logging.getLogger(__name__)

#: Candidates fetched per requested item, so filters and the diversity re-rank have room.
POOL_FACTOR = 4
#: Online features that show the feature store knows the person (``returning`` maturity).
ACTIVITY_KEYS = ("last_event_type", "last_product_id", "last_category", "top_category")


class UnknownItemError(KeyError):
    """``/similar_items`` asked about an item the model does not know."""


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The packaged ``serving/rules.yaml`` (validated once per process)."""
    return load_rules(None)


def clean_features(features: dict[str, Any] | None) -> dict[str, Any]:
    """Online features without missing values (None, NaN) and without the entity key."""
    out = {}
    for key, value in (features or {}).items():
        if key == "user_id" or value is None:
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        out[key] = value
    return out


def read_features(read: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """``(features, None)``, or ``({}, reason)`` when the online store fails: the request is then
    answered in degraded mode (popularity) instead of failing. The reason is a fixed text
    (:data:`serving.store_health.STORE_UNAVAILABLE`); what failed is logged, never answered."""
    try:
        return read(), None
    except Exception as exc:
        logger.warning("online store read failed: %s: %s", type(exc).__name__, exc)
        return {}, STORE_UNAVAILABLE  # the cause stays in the log, never in an answer


def known_segment(row: dict[str, Any]) -> dict[str, Any]:
    """A ``user_segment_v1`` row with ``Unclassified`` (fits no segment) blanked: the person is
    served like someone without a segment."""
    if row.get("segment_label") == UNCLASSIFIED_LABEL or row.get("segment_id") == UNCLASSIFIED_ID:
        return {**row, "segment_id": None, "segment_label": None}
    return row


def cold_start_category(features: dict[str, Any]) -> str:
    """The category a person's features point to: live activity first, then the profile."""
    for key in ("last_category", "top_category"):
        value = features.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def purchased_items(scorer: Scorer, history: np.ndarray, features: dict[str, Any]) -> set[int]:
    """What the person bought: the latest purchase from the real-time activity features, and
    every item in their model history (the bundle keeps interaction weights, not event types, so
    each item there counts as possibly bought; the model never recommends them anyway)."""
    bought = set(history.tolist())
    if features.get("last_event_type") == "purchase":
        bought.update(scorer.item_indices([features.get("last_product_id", "")]))
    return bought


@dataclass
class _Context:
    """What the candidate sources may use for one request."""

    scorer: Scorer
    values: dict[str, str]  # context column -> value (request first, then the person's features)
    personal: set[str]  # columns whose value came from the person's features
    exclude: set[int]
    pool: int


def _popular_for(ctx: _Context, column: str, rule: str | None) -> tuple[list[Candidate], str, list]:
    """Popular items for one context column: (items, strategy, notes on missing tables)."""
    bundle = ctx.scorer.bundle
    value = ctx.values.get(column)
    if not value:
        return [], "", []
    order = bundle.popular_in_context(column, value)
    if order is None and column == "category":
        order = bundle.popular_in(value)  # item categories are always in the bundle
    if order is None:
        return [], "", [f"no {column} table"]
    strategy = f"popular_in_{column}:{value}"
    return (
        candidates(order, ctx.scorer.popularity, strategy, rule, ctx.exclude, ctx.pool),
        strategy,
        [],
    )


def _source(ctx: _Context, decision: Decision, source: str) -> tuple[list[Candidate], str, bool]:
    """Candidates of a popularity source: (items, strategy, personalized)."""
    rule = decision.source_rule
    columns = {
        "popular_in_context": decision.context_order,
        "popular_in_country": ("country",),
        "popular_in_device_type": ("device_type",),
        "popular_in_category": ("category",),
        "popular": (),
    }[source]
    notes: list[str] = []
    for column in columns:
        items, strategy, missing = _popular_for(ctx, column, rule)
        notes += missing
        if items:
            return items, strategy, column in ctx.personal
    strategy = "popular" + (f" (fallback: {', '.join(notes)})" if notes else "")
    popular = candidates(
        ctx.scorer.bundle.popular, ctx.scorer.popularity, strategy, rule, ctx.exclude, ctx.pool
    )
    return popular, strategy, False


def _model(ctx: _Context, user_idx: int, rule: str | None) -> tuple[list[Candidate], str]:
    bundle = ctx.scorer.bundle
    n_pool = min(ctx.pool + len(ctx.exclude), bundle.history.shape[1])
    item_idx, scores = ctx.scorer.model_top(user_idx, n_pool)
    strategy = f"model:{bundle.model_name}"
    out: list[Candidate] = []
    exclude = ctx.exclude
    for i, score in zip(item_idx.tolist(), scores.tolist(), strict=True):
        if i < 0 or i in exclude or not math.isfinite(score):
            continue
        out.append(Candidate(i, score, strategy, rule))
        if len(out) >= ctx.pool:
            break
    return out, strategy


@dataclass(frozen=True)
class SessionBlend:
    """How the session strategy ranks (:func:`session_candidates`).

    ``show_viewed``: products viewed earlier in the session may come back (a "recently viewed"
    list, most recent first; the latest view, the product on screen, never does); otherwise every
    viewed product is excluded. ``popular``: the popular items of the request's context (what the
    visitor gets without a session) are fused in. Carted and purchased items are excluded either
    way. With more than one list the lists are fused by reciprocal rank (:data:`RRF_K`), each list
    weighing the same.
    """

    name: str
    show_viewed: bool = False
    popular: bool = False


#: The blend /recommend serves: chosen by `tailor bench session` on its selection seed and
#: confirmed on other seeds (experiments/results/session_strategy.md).
SESSION_BLEND = SessionBlend("similar+recent+popular", show_viewed=True, popular=True)
#: Reciprocal rank fusion constant (Cormack et al. 2009): an item scores ``1 / (RRF_K + rank)``
#: in each list it appears in (rank from 1). Not tuned.
RRF_K = 60


def _similar_to_views(
    scorer: Scorer, viewed: list[int], exclude: set[int], pool: int
) -> list[tuple[int, float]]:
    """``(item, score)`` best first: each view (most recent last) adds the model's similarities
    to its nearest items, weighted ``1 / (1 + age)`` (the latest view 1, the one before 1/2, ...);
    items in ``exclude`` and items whose summed similarity is not positive are left out (ties:
    lower index)."""
    n = min(pool + len(exclude) + len(viewed), scorer.bundle.history.shape[1] - 1)
    if n <= 0:
        return []
    totals: dict[int, float] = {}
    for age, item in enumerate(reversed(viewed)):
        weight = 1.0 / (1 + age)
        item_idx, scores = scorer.bundle.model.similar_items(item, k=n)
        for i, score in zip(item_idx.tolist(), scores.tolist(), strict=True):
            if i >= 0 and i not in exclude and math.isfinite(score):
                totals[i] = totals.get(i, 0.0) + weight * score
    ranked = sorted(totals.items(), key=lambda pair: (-pair[1], pair[0]))
    return [(i, s) for i, s in ranked[:pool] if s > 0]


def session_candidates(
    scorer: Scorer,
    views: list[str],
    exclude: set[int],
    pool: int,
    blend: SessionBlend = SESSION_BLEND,
    popular: list[Candidate] | None = None,
) -> tuple[list[Candidate], str]:
    """Candidates for a live session: ``(items, strategy)``, every item ``session:<model>``.

    ``views``: the session's products viewed, most recent last; ``exclude``: what must never be
    shown (carted, purchased, given by the caller); ``popular``: the popularity candidates of the
    request, fused in when ``blend.popular``. The lists (:class:`SessionBlend`): the model's
    similarities to the views (:func:`_similar_to_views`), the recently viewed products, the
    popular ones; a single list keeps its similarity scores, several are fused by reciprocal rank.
    The best ``pool`` items come first. Empty when no view is known to the model.
    """
    viewed = scorer.item_indices(views)
    strategy = f"session:{scorer.bundle.model_name}"
    if not viewed:
        return [], strategy
    hidden = set(exclude) | {viewed[-1]}  # the product on screen is never recommended
    if not blend.show_viewed:
        hidden.update(viewed)
    lists = [_similar_to_views(scorer, viewed, hidden, pool)]
    if blend.show_viewed:
        recent = [i for i in reversed(viewed) if i not in hidden]
        lists.append([(i, 1.0) for i in recent[:pool]])
    if blend.popular:
        lists.append([(c.item_idx, c.score) for c in popular or () if c.item_idx not in hidden])
    if len(lists) == 1:
        return [Candidate(i, s, strategy) for i, s in lists[0]], strategy
    fused: dict[int, float] = {}
    for ranked in lists:
        for rank, (i, _) in enumerate(ranked, start=1):
            fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank)
    order = sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))
    return [Candidate(i, s, strategy) for i, s in order[:pool]], strategy


def facts_for(
    scorer: Scorer, request: RecommendRequest, features: dict[str, Any], person: bool = True
) -> Facts:
    """What the rules see: maturity, history size, segment, personas and the request context.
    ``person=False`` (no ``personalization`` consent): nothing of the person, a new visitor."""
    user_idx = scorer.user_idx(request.person) if person else -1
    known = user_idx >= 0
    indptr = scorer.bundle.history.indptr
    history = indptr[user_idx + 1] - indptr[user_idx] if known else 0
    active = any(features.get(key) not in (None, "") for key in ACTIVITY_KEYS)
    segment = features.get("segment")
    persona = features.get("persona")  # the real-time persona label pushed by /events
    return Facts(
        maturity="known" if known else ("returning" if active else "new"),
        interactions=int(history),
        segment=segment if isinstance(segment, str) and segment else None,
        personas=split_label(persona) if isinstance(persona, str) else (),
        country=request.context.country,
        device_type=request.device,
        page=request.context.page,
        category=request.context.category,
    )


def recommend(
    scorer: Scorer,
    request: RecommendRequest,
    features: dict[str, Any] | None = None,
    rules: RuleSet | None = None,
    degraded: str | None = None,
    session: LiveSession | None = None,
    session_blend: SessionBlend = SESSION_BLEND,
    consent: str | None = None,
) -> RecommendResponse:
    """Answer one request. ``features`` are the person's online features (may be empty);
    ``degraded`` says the online store failed, so the answer is popularity, not personalized.

    ``session``: the person's live session (:mod:`features.live_sessions`). A person the model
    has not seen, with views in it that the model knows, is answered item-to-item from those
    views (:func:`session_candidates`, strategy ``session:<model>``, ranked as ``session_blend``
    says; the served :data:`SESSION_BLEND` unless a benchmark compares others) instead of
    popularity, and never gets back what the session carted nor the product on screen (the
    latest view).

    ``consent``: why the person may not get a personalized answer (issue #12,
    :data:`serving.consent_gate.NOT_PERSONALIZED`); then nothing of the person is used (no
    features, session, model history nor persona: the request's context and popularity only),
    ``personalized`` is false and the answer's ``consent`` says why."""
    if consent is not None:
        features, session = {}, None
    features = clean_features(features)
    bundle, k = scorer.bundle, request.k
    facts = facts_for(scorer, request, features, person=consent is None)
    decision = (rules or default_rules()).decide(facts)
    known = facts.maturity == "known"
    user_idx = scorer.user_idx(request.person) if known else -1
    history = scorer.history(user_idx) if known else np.empty(0, dtype=np.int64)

    exclude: set[int] = set()
    if "exclude_given" in decision.filters:
        exclude.update(scorer.item_indices(request.exclude))
    if "exclude_purchased" in decision.filters:
        exclude |= purchased_items(scorer, history, features)
    if "exclude_seen" in decision.filters:
        exclude.update(history.tolist())
        exclude.update(scorer.item_indices([features.get("last_product_id", "")]))
    live = session if session is not None and not known and not degraded else None
    if live is not None:
        hidden_views = live.views[-1:] if session_blend.show_viewed else live.views
        exclude.update(scorer.item_indices([*hidden_views, *live.cart]))

    feature_category = cold_start_category(features)
    values = {
        "country": request.context.country or "",
        # only a device the caller named: the "other" default says nothing about the context
        "device_type": request.context.device_type or request.device_type or "",
        "category": request.context.category or ("" if degraded else feature_category),
    }
    personal = set() if request.context.category or degraded else {"category"}
    ctx = _Context(scorer, values, personal, exclude, pool=k * POOL_FACTOR)

    primary: list[Candidate] = []
    source = "popular_in_context" if degraded else decision.source
    if source == "model" and known:
        try:
            primary, strategy = _model(ctx, user_idx, decision.source_rule)
            personalized = True
        except Exception:  # a broken model must not break the answer
            # the user index, not the person's id: logs carry no raw ids (STYLE, people's data)
            logger.exception("model %s failed for user index %d", scorer.label, user_idx)
            degraded = MODEL_FAILED
            source = "popular_in_context"
    elif source == "model":  # the rules asked for the model, but it has never seen this person
        source = "popular_in_context"
    if live is not None and live.views:
        try:
            popular = _source(ctx, decision, source)[0] if session_blend.popular else None
            primary, strategy = session_candidates(
                scorer, list(live.views), exclude, ctx.pool, session_blend, popular
            )
            personalized = True
        except Exception:  # a broken model must not break the answer: popularity instead
            logger.exception("session candidates of %s failed", scorer.label)
            primary = []
    if (source != "model" or degraded) and not primary:
        primary, strategy, personalized = _source(ctx, decision, source)
    if degraded:
        personalized = False

    factors = {}
    for item in decision.boosts:
        category = values["category"] if item.category == CONTEXT_CATEGORY else item.category
        if category:
            factors[category] = factors.get(category, 1.0) * item.factor
    ranked = boost(primary, factors, scorer.categories)
    taken = exclude | {c.item_idx for c in ranked}
    # popular items fill in behind, built only when the re-rank reaches them
    fill = iter_candidates(bundle.popular, scorer.popularity, "popular", None, taken, ctx.pool)
    ranked = diversify(chain(ranked, fill), scorer.categories, decision.max_per_category, k)
    slots = []
    if not degraded:
        for slot in decision.slots:
            pool, _, _ = _source(
                ctx,
                Decision(source_rule=slot.rule, context_order=decision.context_order),
                slot.source,
            )
            slots.append((slot.positions, pool))
    final = place_slots(ranked, slots, k)
    if not any(c.strategy == strategy for c in final) or consent is not None:
        personalized = False
    item_ids = scorer.item_ids
    items = [
        RecommendedItem(
            item_id=item_ids[c.item_idx], score=c.score, strategy=c.strategy, rule=c.rule
        )
        for c in final
    ]
    return RecommendResponse(
        user_id=request.person,
        items=items,
        model=scorer.label,
        personalized=personalized,
        strategy=strategy,
        segment=facts.segment,
        persona=SEPARATOR.join(facts.personas) or None,
        persona_score=features.get("persona_score") if facts.personas else None,
        rules_fired=decision.fired,
        variant=decision.variant,
        degraded=degraded,
        features=features,
        consent=consent,
        request_id=uuid.uuid4().hex,
    )


def similar_items(scorer: Scorer, request: SimilarItemsRequest) -> SimilarItemsResponse:
    """The model's nearest items to one item; unknown items raise :class:`UnknownItemError`.

    A model that cannot answer (or fails) gives popular items of the same category instead,
    and their ``strategy`` says so.
    """
    bundle = scorer.bundle
    item_idx = scorer.item_positions.get(request.item_id, -1)
    if item_idx < 0:
        raise UnknownItemError(
            f"unknown item_id {request.item_id!r}: not among the {len(bundle.items)} items "
            f"of {scorer.label}"
        )
    k = min(request.k, len(bundle.items) - 1)
    found: list[Candidate] = []
    if k > 0:
        try:
            idx, scores = bundle.model.similar_items(item_idx, k=k)
            strategy = f"similar:{bundle.model_name}"
            found = [
                Candidate(int(i), float(s), strategy)
                for i, s in zip(idx.tolist(), scores.tolist(), strict=True)
                if i >= 0 and np.isfinite(s)
            ]
        except Exception:
            logger.exception("similar_items failed in %s; using category popularity", scorer.label)
            category = scorer.categories[item_idx]
            order = bundle.popular_in(category) if category else bundle.popular
            strategy = f"popular_in_category:{category}" if category else "popular"
            found = candidates(order, scorer.popularity, strategy, None, {item_idx}, k)
    items = [
        RecommendedItem(item_id=scorer.item_ids[c.item_idx], score=c.score, strategy=c.strategy)
        for c in found
    ]
    return SimilarItemsResponse(
        item_id=request.item_id, items=items, model=scorer.label, request_id=uuid.uuid4().hex
    )
