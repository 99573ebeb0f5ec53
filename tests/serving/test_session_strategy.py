"""The session strategy of /recommend (issue #11): a visitor the model has not seen, with views in
the live session, is answered item-to-item from those views (``session:<model>``), not from
popularity; known users and visitors without a session keep their answers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from features.live_sessions import LiveSession
from models.scoring import Scorer
from serving.logic import SESSION_BLEND, SessionBlend, recommend, session_candidates
from serving.rerank import Candidate
from serving.schemas import RecommendRequest
from serving.session_bench import SESSION_VARIANTS
from tests.serving.test_logic import GLOBAL_POPULAR, HISTORIES, _ids, _scorer, _strategies

scorer = _scorer("ease")


def _session(*views: str, cart: dict[str, int] | None = None) -> LiveSession:
    return LiveSession("s1", people=("anon:new",), views=views, cart=cart or {})


def test_a_visitor_with_session_views_gets_the_fused_session_list() -> None:
    """Hats h0 then h1 viewed, last category hats; the served blend fuses three lists by
    reciprocal rank (1 / (60 + rank)), h1 (on screen) left out of each:

    * similarities to the views: h0 h2 h3 (h0 co-viewed with h1, weight 1);
    * recently viewed: h0;
    * popular in hats: h0 h2 h3 h4.

    h0 3/61, h2 2/62, h3 2/63, h4 1/64; then popular items fill in."""
    assert SESSION_BLEND.show_viewed and SESSION_BLEND.popular
    request = RecommendRequest(anonymous_id="new", k=5)
    response = recommend(scorer, request, {"last_category": "hats"}, session=_session("h0", "h1"))
    assert response.strategy == "session:ease"
    assert response.personalized is True
    assert _ids(response) == ["h0", "h2", "h3", "h4", "s0"]
    assert _strategies(response) == ["session:ease"] * 4 + ["popular"]
    scores = [item.score for item in response.items[:4]]
    np.testing.assert_allclose(scores, [3 / 61, 2 / 62, 2 / 63, 1 / 64])


def test_the_similar_variant_never_shows_a_viewed_product_back() -> None:
    """The first served variant: the similarities of the views alone, every viewed product
    excluded: the hats co-viewed with h0 and h1 (positive similarity), then popular items."""
    request = RecommendRequest(anonymous_id="new", k=5)
    response = recommend(
        scorer, request, {}, session=_session("h0", "h1"), session_blend=SessionBlend("similar")
    )
    assert response.strategy == "session:ease"
    ids = _ids(response)
    assert "h0" not in ids and "h1" not in ids
    assert ids[:2] == ["h2", "h3"]
    assert _strategies(response) == ["session:ease"] * 2 + ["popular"] * 3


def test_recently_viewed_products_come_back_but_not_the_one_on_screen() -> None:
    recent = SessionBlend("similar+recent", show_viewed=True)
    found, _ = session_candidates(scorer, ["s3", "h0", "h1"], set(), pool=20, blend=recent)
    names = [scorer.item_ids[c.item_idx] for c in found]
    assert "h1" not in names  # the latest view
    assert {"h0", "s3"} <= set(names)
    # h0 is first in both lists (similar to h1, viewed just before): 2/61
    assert names[0] == "h0" and found[0].score == pytest.approx(2 / 61)
    # without a popular blend, a popular list given is ignored
    popular = [Candidate(scorer.item_positions["s4"], 1.0, "popular")]
    again, _ = session_candidates(scorer, ["s3", "h0", "h1"], set(), 20, recent, popular)
    assert again == found


def test_the_popular_list_is_fused_in_and_filtered() -> None:
    """Only view s0 (on screen, never shown); popular list s0 s4, so s4 alone once s0 is left
    out: s4 is first there and 4th in the similarities of s0 (s1 s2 s3 s4), 1/61 + 1/64, ahead
    of s1 (1/61)."""
    index = scorer.item_positions
    popular = [Candidate(index["s0"], 5.0, "popular"), Candidate(index["s4"], 1.0, "popular")]
    found, strategy = session_candidates(scorer, ["s0"], set(), 20, SESSION_BLEND, popular)
    names = [scorer.item_ids[c.item_idx] for c in found]
    assert strategy == "session:ease"
    assert names == ["s4", "s1", "s2", "s3"]
    np.testing.assert_allclose([c.score for c in found], [1 / 61 + 1 / 64, 1 / 61, 1 / 62, 1 / 63])
    limited, _ = session_candidates(scorer, ["s0"], {index["s4"]}, 2, SESSION_BLEND, popular)
    assert [scorer.item_ids[c.item_idx] for c in limited] == ["s1", "s2"]  # pool 2, s4 excluded


def test_the_served_blend_is_the_one_the_committed_table_chose() -> None:
    """experiments/results/session_strategy.md chooses the variant on its selection seed; the
    served one must be it (rerun `tailor bench session` after changing either)."""
    table = Path(__file__).parents[2] / "experiments" / "results" / "session_strategy.md"
    chosen = re.search(r"chosen on seed \d+: \*\*(.+?)\*\*", table.read_text())
    assert chosen is not None
    assert chosen.group(1) == SESSION_BLEND.name
    assert SESSION_BLEND in SESSION_VARIANTS


def test_without_a_session_the_same_visitor_gets_popularity() -> None:
    request = RecommendRequest(anonymous_id="new", k=5)
    for session in (None, _session()):  # no session, or one without views
        response = recommend(scorer, request, {}, session=session)
        assert response.strategy == "popular"
        assert _ids(response) == GLOBAL_POPULAR[:5]
        assert response.personalized is False


def test_session_answers_differ_from_popularity() -> None:
    """A shoe viewed while the last category says hats: s1 (the nearest shoe) joins the popular
    hats: h0 and s1 tie at 1/61 (h0 has the lower index), then h1 at 1/62."""
    request = RecommendRequest(anonymous_id="new", k=3)
    popular = recommend(scorer, request, {"last_category": "hats"})
    assert popular.strategy == "popular_in_category:hats"
    assert _ids(popular) == ["h0", "h1", "h2"]
    session = recommend(scorer, request, {"last_category": "hats"}, session=_session("s0"))
    assert session.strategy == "session:ease"
    assert _ids(session) == ["h0", "s1", "h1"]


def test_carted_items_are_excluded() -> None:
    """h1 then h0 viewed, h2 carted: h2 (similar and popular) never shows, h0 (on screen)
    neither; h1, viewed before, does."""
    request = RecommendRequest(anonymous_id="new", k=5)
    session = _session("h1", "h0", cart={"h2": 1})
    response = recommend(scorer, request, {"last_category": "hats"}, session=session)
    assert response.strategy == "session:ease"
    ids = _ids(response)
    assert "h2" not in ids and "h0" not in ids
    assert ids[0] == "h1"


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
    similar = SessionBlend("similar")
    hats_last, _ = session_candidates(scorer, ["s0", "h0"], set(), pool=4, blend=similar)
    shoes_last, _ = session_candidates(scorer, ["h0", "s0"], set(), pool=4, blend=similar)
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
