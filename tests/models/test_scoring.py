"""`models.scoring`: the scorer and the rule-free top-k that the MLflow pyfunc serves.

Issue #10 ("one shape", layers): the scorer and the top-k with popularity fallback live in
`models`, below both `training` (the pyfunc) and `serving` (the service), so that `training`
needs nothing from `serving`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.bundle import ModelBundle, popularity_order
from models.interactions import Interactions
from models.registry import build
from models.scoring import POPULAR, Scorer, top_k

# Four shoppers; items by how many people touched them: a 4, b 3, c 2, d 1, e 1 (ties: lower
# dense index first, so d before e).
HISTORIES = {
    "u1": ["a", "b", "c"],
    "u2": ["a", "b"],
    "u3": ["a", "c", "d"],
    "u4": ["a", "b", "e"],
}


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    rows = [(user, item) for user, items in HISTORIES.items() for item in items]
    interactions = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    model = build("item_knn", {}).fit(interactions)
    bundle = ModelBundle(
        model_name="item_knn",
        model=model,
        users=interactions.users,
        items=interactions.items,
        history=interactions.matrix,
        popular=popularity_order(interactions.matrix),
        item_categories=np.array(["x"] * len(interactions.items), dtype=object),
    )
    return Scorer.from_bundle(bundle, label="item_knn@1")


def _ids(scorer: Scorer, items) -> list[str]:
    return [scorer.item_ids[item.item_idx] for item in items]


def test_unknown_person_gets_the_most_popular_items_with_their_share(scorer: Scorer) -> None:
    items = top_k(scorer, "somebody-new", 3)
    assert _ids(scorer, items) == ["a", "b", "c"]
    assert [item.strategy for item in items] == [POPULAR] * 3
    assert [item.score for item in items] == [
        pytest.approx(scorer.popularity[scorer.item_positions[i]]) for i in ("a", "b", "c")
    ]


def test_known_person_gets_the_models_unseen_items_first(scorer: Scorer) -> None:
    items = top_k(scorer, "u2", 3)
    ids = _ids(scorer, items)
    assert not {"a", "b"} & set(ids)  # u2's history is never recommended
    model_items, model_scores = scorer.bundle.model.recommend(
        scorer.user_idx("u2"), scorer.bundle.history[scorer.user_idx("u2")], k=3
    )
    expected = [
        scorer.item_ids[i]
        for i, s in zip(model_items.tolist(), model_scores.tolist(), strict=True)
        if i >= 0 and np.isfinite(s)
    ]
    assert ids[: len(expected)] == expected
    assert all(item.strategy == "model:item_knn" for item in items[: len(expected)])


def test_a_short_model_list_is_filled_with_popular_unseen_items(scorer: Scorer) -> None:
    """u1 has seen a, b, c; only d and e remain, so k=5 gives two items, never a seen one."""
    items = top_k(scorer, "u1", 5)
    assert sorted(_ids(scorer, items)) == ["d", "e"]
    assert len({item.item_idx for item in items}) == len(items)


def test_k_must_be_positive(scorer: Scorer) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        top_k(scorer, "u1", 0)
