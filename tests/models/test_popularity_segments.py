"""Per-segment popularity: each segment's favourites first, global popularity otherwise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.interactions import Interactions
from models.popularity import Popularity, PopularityConfig


@pytest.fixture()
def data() -> Interactions:
    # Segment A (a1..a3) loves x; segment B (b1..b4) loves y; y is globally most popular.
    rows = [(u, "x") for u in ("a1", "a2", "a3")] + [(u, "y") for u in ("b1", "b2", "b3", "b4")]
    rows += [("a1", "z"), ("b1", "z"), ("n1", "y"), ("n1", "z")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    segments = pd.DataFrame(
        {"segment": ["A", "A", "A", "B", "B", "B", "B"]},
        index=["a1", "a2", "a3", "b1", "b2", "b3", "b4"],
    )
    return Interactions.from_frame(frame, user_features=segments)


def _top(model: Popularity, data: Interactions, user: str, k: int = 3) -> list[str]:
    idx = data.users.index(user)
    items, _ = model.recommend(idx, data.matrix[idx], k=k, exclude_seen=False)
    return [str(data.items.ids[i]) for i in items]


def test_each_segment_gets_its_own_favourite(data):
    model = Popularity(PopularityConfig(segment_column="segment")).fit(data)
    assert _top(model, data, "a2")[0] == "x"
    assert _top(model, data, "b2")[0] == "y"


def test_users_without_a_segment_get_global_popularity(data):
    segmented = Popularity(PopularityConfig(segment_column="segment")).fit(data)
    plain = Popularity().fit(data)
    assert (
        _top(segmented, data, "n1") == _top(plain, data, "n1") == ["y", "x", "z"]
    )  # x, z tie at 3: lower index first


def test_segment_counts_order_the_segment_ranking(data):
    model = Popularity(PopularityConfig(segment_column="segment")).fit(data)
    # Segment A: x by 3 users, z by 1, y by none.
    assert _top(model, data, "a3") == ["x", "z", "y"]


def test_unknown_segment_column_names_the_available_ones(data):
    with pytest.raises(ValueError, match=r"segment_column 'device'.*\['segment'\]"):
        Popularity(PopularityConfig(segment_column="device")).fit(data)


def test_save_load_keeps_segments(data, tmp_path):
    model = Popularity(PopularityConfig(segment_column="segment")).fit(data)
    model.save(tmp_path / "m")
    loaded = Popularity.load(tmp_path / "m")
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(
        model.score(users, user_items=data.matrix), loaded.score(users, user_items=data.matrix)
    )
