"""The session strategy of /recommend (issue #11): a visitor the model has not seen, with views in
the live session, is answered item-to-item from those views (``session:<model>``), not from
popularity; known users and visitors without a session keep their answers."""

from __future__ import annotations

import numpy as np

from features.live_sessions import LiveSession
from models.scoring import Scorer
from serving.logic import recommend, session_candidates
from serving.schemas import RecommendRequest
from tests.serving.test_logic import GLOBAL_POPULAR, HISTORIES, _ids, _scorer, _strategies

scorer = _scorer("ease")


def _session(*views: str, cart: dict[str, int] | None = None) -> LiveSession:
    return LiveSession("s1", people=("anon:new",), views=views, cart=cart or {})


def test_a_visitor_with_session_views_gets_similar_items() -> None:
    """Hats h0, h1 viewed: the other hats (co-viewed with them in training) come first."""
    request = RecommendRequest(anonymous_id="new", k=5)
    response = recommend(scorer, request, {}, session=_session("h0", "h1"))
    assert response.strategy == "session:ease"
    assert response.personalized is True
    ids = _ids(response)
    assert ids[0] == "h2"  # with h0 and h1 in b0's and b1's histories, never s*
    assert "h0" not in ids and "h1" not in ids  # viewed items are never recommended back
    # the hats co-viewed with h0 and h1 (positive similarity), then popular items fill in
    assert ids[:2] == ["h2", "h3"]
    assert _strategies(response) == ["session:ease"] * 2 + ["popular"] * 3


def test_without_a_session_the_same_visitor_gets_popularity() -> None:
    request = RecommendRequest(anonymous_id="new", k=5)
    for session in (None, _session()):  # no session, or one without views
        response = recommend(scorer, request, {}, session=session)
        assert response.strategy == "popular"
        assert _ids(response) == GLOBAL_POPULAR[:5]
        assert response.personalized is False


def test_session_answers_differ_from_popularity() -> None:
    request = RecommendRequest(anonymous_id="new", k=3)
    popular = recommend(scorer, request, {"last_category": "hats"})
    assert popular.strategy == "popular_in_category:hats"
    session = recommend(scorer, request, {"last_category": "hats"}, session=_session("s0"))
    assert session.strategy == "session:ease"
    assert _ids(session)[0] == "s1"
    assert _ids(session) != _ids(popular)


def test_carted_items_are_excluded() -> None:
    request = RecommendRequest(anonymous_id="new", k=5)
    response = recommend(scorer, request, {}, session=_session("h0", cart={"h2": 1}))
    assert response.strategy == "session:ease"
    assert "h2" not in _ids(response) and "h0" not in _ids(response)


def test_views_unknown_to_the_model_fall_back_to_popularity() -> None:
    request = RecommendRequest(anonymous_id="new", k=5)
    response = recommend(scorer, request, {}, session=_session("never-seen"))
    assert response.strategy == "popular"


def test_known_users_keep_the_model_whatever_their_session() -> None:
    for user in sorted(HISTORIES):
        request = RecommendRequest(user_id=user, k=5)
        plain = recommend(scorer, request)
        with_session = recommend(scorer, request, {}, session=_session("h0", "s0"))
        assert with_session.strategy == plain.strategy == "model:ease"
        assert _ids(with_session) == _ids(plain)


def test_a_degraded_answer_ignores_the_session() -> None:
    request = RecommendRequest(anonymous_id="new", k=5)
    response = recommend(
        scorer, request, {}, degraded="online store unavailable", session=_session("h0")
    )
    assert response.strategy.startswith("popular") and response.degraded


def test_session_candidates_weigh_recent_views_more() -> None:
    """Shoe s0 then hat h0: the hats' neighbours (the latest view, weight 1) rank above the
    shoes' (weight 1/2) when their similarities are alike; reversed, the shoes lead."""
    hats_last, _ = session_candidates(scorer, ["s0", "h0"], set(), pool=4)
    shoes_last, _ = session_candidates(scorer, ["h0", "s0"], set(), pool=4)
    names = scorer.item_ids
    assert names[hats_last[0].item_idx].startswith("h")
    assert names[shoes_last[0].item_idx].startswith("s")
    scores = [c.score for c in hats_last]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))


def test_a_failing_model_falls_back_to_popularity(monkeypatch) -> None:
    broken = _scorer("ease")

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(broken.bundle.model, "similar_items", fail)
    request = RecommendRequest(anonymous_id="x", k=3)
    response = recommend(broken, request, {}, session=_session("h0"))
    assert response.strategy == "popular" and isinstance(broken, Scorer)
