"""Events → weighted interactions, the temporal hold-out and item categories."""

import numpy as np
import pandas as pd
import pytest

from models.interactions import IdMap
from training.data import (
    EVENT_WEIGHTS,
    holdout_cut,
    interaction_frame,
    item_categories,
    temporal_holdout,
)

UTC = "UTC"


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def _events(rows: list[tuple]) -> pd.DataFrame:
    """``(event_type, timestamp, user_id, anonymous_id, product_id, category)`` rows."""
    columns = ["event_type", "timestamp", "user_id", "anonymous_id", "product_id", "category"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def _interactions(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """``(user_id, item_id, timestamp)`` rows → an interaction frame with weight 1."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["weight"] = np.float32(1.0)
    frame["category"] = "c"
    return frame


# ----------------------------------------------------------------------------- interaction_frame


def test_event_weights() -> None:
    assert EVENT_WEIGHTS == {"product_view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}


def test_interaction_frame_weights_per_event_type() -> None:
    events = _events(
        [
            ("product_view", "2024-01-01T10:00:00Z", "u1", "d1", "p1", "shoes"),
            ("add_to_cart", "2024-01-01T10:01:00Z", "u1", "d1", "p1", "shoes"),
            ("purchase", "2024-01-01T10:02:00Z", "u1", "d1", "p1", "shoes"),
        ]
    )
    frame = interaction_frame(events)
    assert list(frame.columns) == ["user_id", "item_id", "weight", "timestamp", "category"]
    assert frame["weight"].tolist() == [1.0, 2.0, 4.0]
    assert frame["weight"].dtype == np.float32
    assert frame["user_id"].tolist() == ["u1", "u1", "u1"]
    assert frame["item_id"].tolist() == ["p1", "p1", "p1"]
    assert frame["category"].tolist() == ["shoes"] * 3
    assert frame["timestamp"].tolist() == [
        _ts("2024-01-01T10:00"),
        _ts("2024-01-01T10:01"),
        _ts("2024-01-01T10:02"),
    ]


def test_interaction_frame_excludes_non_positive_events() -> None:
    events = _events(
        [
            ("page_view", "2024-01-01T10:00:00Z", "u1", "d1", None, None),
            ("search", "2024-01-01T10:01:00Z", "u1", "d1", None, None),
            ("remove_from_cart", "2024-01-01T10:02:00Z", "u1", "d1", "p9", "hats"),
            ("page_view", "2024-01-01T10:03:00Z", "u1", "d1", "p8", "hats"),  # even with a product
            ("product_view", "2024-01-01T10:04:00Z", "u1", "d1", "p1", "shoes"),
        ]
    )
    frame = interaction_frame(events)
    assert frame["item_id"].tolist() == ["p1"]
    assert "p9" not in set(frame["item_id"])
    assert "p8" not in set(frame["item_id"])


def test_interaction_frame_drops_product_events_without_product() -> None:
    events = _events(
        [
            ("product_view", "2024-01-01T10:00:00Z", "u1", "d1", None, None),
            ("purchase", "2024-01-01T10:01:00Z", "u1", "d1", "p2", "hats"),
        ]
    )
    assert interaction_frame(events)["item_id"].tolist() == ["p2"]


def test_interaction_frame_keys_anonymous_visitors_by_device() -> None:
    events = _events(
        [
            ("product_view", "2024-01-01T10:00:00Z", None, "dev7", "p1", "shoes"),
            ("add_to_cart", "2024-01-01T10:01:00Z", "", "dev8", "p1", "shoes"),
            ("purchase", "2024-01-01T10:02:00Z", "u1", "dev9", "p1", "shoes"),
        ]
    )
    frame = interaction_frame(events)
    assert frame["user_id"].tolist() == ["anon:dev7", "anon:dev8", "u1"]


def test_interaction_frame_of_no_positive_events_is_empty() -> None:
    events = _events([("page_view", "2024-01-01T10:00:00Z", "u1", "d1", None, None)])
    frame = interaction_frame(events)
    assert frame.empty


# --------------------------------------------------------------------------- temporal_holdout

# test_days=3 with the last interaction on 2024-01-10 puts the cut at 2024-01-08 00:00 UTC.
CUT = _ts("2024-01-08T00:00")
SPLIT_ROWS = [
    # u1: train i1, i2; after the cut a new item i3, a seen item i1 and an item unknown to train.
    ("u1", "i1", "2024-01-01T09:00:00Z"),
    ("u1", "i2", "2024-01-03T09:00:00Z"),
    ("u1", "i1", "2024-01-02T09:00:00Z"),
    ("u1", "i3", "2024-01-09T09:00:00Z"),
    ("u1", "i1", "2024-01-09T10:00:00Z"),
    ("u1", "i99", "2024-01-09T11:00:00Z"),
    # u2: one second before the cut is train; exactly at the cut is test.
    ("u2", "i2", "2024-01-07T23:59:59Z"),
    ("u2", "i4", "2024-01-08T00:00:00Z"),
    # u3: only repeats a train item after the cut, so has nothing relevant.
    ("u3", "i3", "2024-01-04T09:00:00Z"),
    ("u3", "i3", "2024-01-10T15:00:00Z"),
    # u4 makes i4 a train item.
    ("u4", "i4", "2024-01-02T09:00:00Z"),
    # u9 appears only after the cut.
    ("u9", "i1", "2024-01-09T09:00:00Z"),
]


@pytest.fixture()
def frame() -> pd.DataFrame:
    return _interactions(SPLIT_ROWS)


def _relevant_ids(split) -> dict[str, set[str]]:
    users = split.train.users.ids
    items = split.train.items.ids
    return {
        str(users[u]): {str(items[i]) for i in rel}
        for u, rel in zip(split.test_users.tolist(), split.relevant, strict=True)
    }


def _train_pairs(split) -> set[tuple[str, str]]:
    matrix = split.train.matrix.tocoo()
    users, items = split.train.users.ids, split.train.items.ids
    return {(str(users[u]), str(items[i])) for u, i in zip(matrix.row, matrix.col, strict=True)}


def test_cut_is_test_days_before_the_end_of_the_last_day(frame: pd.DataFrame) -> None:
    assert holdout_cut(frame, 3) == CUT
    assert holdout_cut(frame, 1) == _ts("2024-01-10T00:00")
    assert temporal_holdout(frame, 3)[0] == CUT


def test_no_interaction_at_or_after_the_cut_is_in_train(frame: pd.DataFrame) -> None:
    cut, split = temporal_holdout(frame, 3)
    before = frame[frame["timestamp"] < cut]
    expected = set(zip(before["user_id"], before["item_id"], strict=True))
    assert _train_pairs(split) == expected
    assert ("u2", "i4") not in _train_pairs(split)  # exactly at the cut: test side
    assert ("u2", "i2") in _train_pairs(split)  # one second before: train side
    assert "u9" not in split.train.users
    assert "i99" not in split.train.items


def test_train_weights_sum_repeated_interactions(frame: pd.DataFrame) -> None:
    _, split = temporal_holdout(frame, 3)
    u1 = split.train.users.index("u1")
    i1 = split.train.items.index("i1")
    assert split.train.matrix[u1, i1] == 2.0  # two views before the cut; the one after is not


def test_relevant_items_are_after_the_cut_and_unseen_in_train(frame: pd.DataFrame) -> None:
    _, split = temporal_holdout(frame, 3)
    relevant = _relevant_ids(split)
    assert relevant == {"u1": {"i3"}, "u2": {"i4"}}
    assert split.n_relevant == 2
    train_pairs = _train_pairs(split)
    for user, items in relevant.items():
        for item in items:
            assert (user, item) not in train_pairs
            rows = frame[(frame["user_id"] == user) & (frame["item_id"] == item)]
            assert (rows["timestamp"] >= CUT).all()


def test_users_unknown_to_train_or_with_nothing_new_are_not_test_users(
    frame: pd.DataFrame,
) -> None:
    _, split = temporal_holdout(frame, 3)
    test_ids = {str(split.train.users.ids[u]) for u in split.test_users}
    assert "u9" not in test_ids  # only after the cut
    assert "u3" not in test_ids  # only a seen item after the cut
    assert test_ids == {"u1", "u2"}
    assert split.test_users.dtype == np.int64
    assert list(split.test_users) == sorted(split.test_users)
    assert len(split.relevant) == len(split.test_users)


def test_impossible_test_days_raises_with_the_span(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"leaves 0 train and 12 test interactions") as excinfo:
        temporal_holdout(frame, 30)
    assert "lower test_days" in str(excinfo.value)
    assert "2024-01-01" in str(excinfo.value)


@pytest.mark.parametrize("test_days", [0, -1])
def test_non_positive_test_days_raises(frame: pd.DataFrame, test_days: int) -> None:
    with pytest.raises(ValueError, match=f"test_days must be positive, got {test_days}"):
        temporal_holdout(frame, test_days)


def test_empty_frame_raises() -> None:
    empty = _interactions([])
    with pytest.raises(ValueError, match="no interactions to split"):
        temporal_holdout(empty, 3)


def test_split_of_interaction_frame_from_events() -> None:
    events = _events(
        [
            ("purchase", "2024-01-01T10:00:00Z", "u1", "d1", "p1", "shoes"),
            ("product_view", "2024-01-01T11:00:00Z", None, "dev2", "p2", "hats"),
            ("page_view", "2024-01-05T11:00:00Z", "u1", "d1", None, None),
            ("add_to_cart", "2024-01-05T12:00:00Z", "u1", "d1", "p2", "hats"),
        ]
    )
    _, split = temporal_holdout(interaction_frame(events), 1)
    assert split.train.users.to_list() == ["anon:dev2", "u1"]
    assert _relevant_ids(split) == {"u1": {"p2"}}


# ----------------------------------------------------------------------------- item_categories


def test_item_categories_takes_the_latest_category_aligned_with_items() -> None:
    frame = pd.DataFrame(
        {
            "item_id": ["p1", "p1", "p2", "p1"],
            "category": ["shoes", "boots", "hats", "sneakers"],
            "timestamp": pd.to_datetime(
                ["2024-01-01", "2024-01-05", "2024-01-02", "2024-01-03"], utc=True
            ),
        }
    )
    items = IdMap.from_ids(["p1", "p2", "p3"])
    categories = item_categories(frame, items)
    assert categories.dtype == object
    assert categories.tolist() == ["boots", "hats", ""]  # p1: latest by time, not by row


def test_item_categories_unknown_category_is_empty_text() -> None:
    frame = pd.DataFrame(
        {
            "item_id": ["p1", "p2"],
            "category": [None, "hats"],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
        }
    )
    assert item_categories(frame, IdMap.from_ids(["p1", "p2"])).tolist() == ["", "hats"]
