"""Evaluation protocols: partition invariants, hand-built examples, the reference algorithms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.datasets.fetch import fetch
from features.datasets.load import load
from features.datasets.types import DatasetUnreachableError
from training.protocols import (
    Split,
    leave_last_out,
    msr_split,
    recbole_part_sizes,
    recbole_split,
    temporal_global_split,
    to_eval,
)

SEEDS = [0, 1, 2, 3, 4]


def random_frame(
    seed: int, n_rows: int = 300, n_users: int = 25, n_items: int = 40
) -> pd.DataFrame:
    """Interactions with repeated timestamps, users with one row and a shuffled, non-0..n index."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_rows)
    users[:3] = n_users + np.arange(3)  # three users with a single row
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{i}" for i in rng.integers(0, n_items, n_rows)],
            "rating": rng.integers(1, 6, n_rows).astype(float),
            "timestamp": pd.to_datetime(rng.integers(0, 50, n_rows), unit="D", utc=True),
        },
        index=1000 + rng.permutation(n_rows),
    )
    return frame


def parts(split: Split) -> list[pd.DataFrame]:
    return [p for p in (split.train, split.valid, split.test) if p is not None]


def assert_partition(split: Split, frame: pd.DataFrame) -> None:
    """No row in two parts, union = input, every part holds the input's rows unchanged."""
    labels = np.concatenate([p.index.to_numpy() for p in parts(split)])
    assert len(labels) == len(frame)
    assert len(set(labels.tolist())) == len(labels), "a row is in two parts"
    assert set(labels.tolist()) == set(frame.index.tolist())
    for part in parts(split):
        pd.testing.assert_frame_equal(part, frame.loc[part.index])


def all_splits(frame: pd.DataFrame, seed: int) -> list[Split]:
    return [
        msr_split(frame, seed=seed),
        msr_split(frame, 0.6, seed, filter_by="user", rounding="fraction"),
        recbole_split(frame, seed=seed),
        recbole_split(frame, (0.7, 0.3), seed=seed),
        temporal_global_split(frame, test_fraction=0.25),
        temporal_global_split(frame, cut=pd.Timestamp("1970-01-20", tz="UTC")),
        leave_last_out(frame),
        leave_last_out(frame, n_valid=0),
        leave_last_out(frame, n_valid=3),
    ]


# -- invariants over seeded random frames --------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_every_split_is_a_partition_of_its_input(seed: int) -> None:
    frame = random_frame(seed)
    for split in all_splits(frame, seed):
        assert_partition(split, frame)


@pytest.mark.parametrize("seed", SEEDS)
def test_temporal_global_test_never_precedes_train(seed: int) -> None:
    frame = random_frame(seed)
    for split in (
        temporal_global_split(frame, test_fraction=0.3),
        temporal_global_split(frame, cut=frame["timestamp"].iloc[0]),
    ):
        assert split.train["timestamp"].max() < split.test["timestamp"].min()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_valid", [0, 1, 2])
def test_leave_last_out_orders_each_user(seed: int, n_valid: int) -> None:
    frame = random_frame(seed)
    split = leave_last_out(frame, n_valid=n_valid)

    def key(part: pd.DataFrame | None) -> pd.Series:
        if part is None:
            return pd.Series(dtype=object)
        return pd.Series(list(zip(part["timestamp"], part["item_id"], strict=True)), part.index)

    counts = frame["user_id"].value_counts()
    for user, n in counts.items():
        train = key(split.train[split.train["user_id"] == user])
        valid = key(None if split.valid is None else split.valid[split.valid["user_id"] == user])
        test = key(split.test[split.test["user_id"] == user])
        assert len(train) >= 1  # every user keeps a train row
        assert len(test) == (1 if n >= 2 else 0)
        assert len(valid) == min(n_valid, max(n - 2, 0))
        if len(test):
            assert train.max() <= test.min()
        if len(valid):
            assert train.max() <= valid.min() and valid.max() <= test.min()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("filter_by", "col"), [("item", "item_id"), ("user", "user_id")])
def test_msr_train_share_per_group_follows_the_rounding_rule(
    seed: int, filter_by: str, col: str
) -> None:
    frame = random_frame(seed)
    counts = frame[col].value_counts()
    for rounding, expected in (
        ("round", np.round(0.75 * counts)),  # half to even: 2 rows -> 2, 6 rows -> 4
        ("fraction", np.floor(0.75 * counts)),
    ):
        split = msr_split(frame, seed=seed, filter_by=filter_by, rounding=rounding)
        train_counts = split.train[col].value_counts().reindex(counts.index, fill_value=0)
        assert (train_counts == expected.astype(int)).all(), rounding


@pytest.mark.parametrize("seed", SEEDS)
def test_recbole_sizes_per_user_follow_recbole(seed: int) -> None:
    frame = random_frame(seed)
    split = recbole_split(frame, seed=seed)
    for user, n in frame["user_id"].value_counts().items():
        got = [int((part["user_id"] == user).sum()) for part in parts(split)]
        assert got == recbole_part_sizes(n, (0.8, 0.1, 0.1)), user


@pytest.mark.parametrize("seed", SEEDS)
def test_same_seed_same_split_other_seed_other_split(seed: int) -> None:
    frame = random_frame(seed)
    for make in (
        lambda s: msr_split(frame, seed=s),
        lambda s: recbole_split(frame, seed=s),
    ):
        first, again, other = make(seed), make(seed), make(seed + 100)
        for a, b in zip(parts(first), parts(again), strict=True):
            pd.testing.assert_frame_equal(a, b)
        assert set(first.test.index) != set(other.test.index)


# -- hand-built examples ---------------------------------------------------------------------

# np.random.RandomState(42).rand(7), rounded: the draws msr_split gives rows 0..6.
MSR_DRAWS = [0.3745, 0.9507, 0.7320, 0.5987, 0.15602, 0.15599, 0.0581]


def tiny_msr_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4", "u1", "u2", "u3"],
            "item_id": ["a", "a", "a", "a", "b", "b", "c"],
            "rating": [5.0, 4.0, 3.0, 2.0, 1.0, 2.0, 3.0],
        }
    )


def test_msr_tiny_example_matches_hand_computation() -> None:
    np.testing.assert_allclose(np.random.RandomState(42).rand(7), MSR_DRAWS, atol=5e-5)
    frame = tiny_msr_frame()
    # Item a: rows by draw 0, 3, 2, 1; round(0.75 * 4) = 3 train. Item b: rows 5, 4 (draw 0.15599
    # < 0.15602); round(1.5) = 2 (half to even), both train. Item c: round(0.75) = 1 train.
    split = msr_split(frame)
    assert split.train.index.tolist() == [0, 3, 2, 5, 4, 6]
    assert split.test.index.tolist() == [1]
    # rank / count <= 0.75: item b keeps 1 of 2 and item c's single row goes to test.
    split = msr_split(frame, rounding="fraction")
    assert split.train.index.tolist() == [0, 3, 2, 5]
    assert split.test.index.tolist() == [1, 4, 6]
    assert split.name == "msr"
    assert split.params == {"ratio": 0.75, "seed": 42, "filter_by": "item", "rounding": "fraction"}


def test_msr_tiny_example_by_user() -> None:
    frame = tiny_msr_frame()
    # u1: rows 4, 0; u2: rows 5, 1; u3: rows 6, 2; u4: row 3. Every user has 1 or 2 rows, and
    # round(0.75) = 1, round(1.5) = 2: everything is train.
    split = msr_split(frame, filter_by="user")
    assert split.train.index.tolist() == [4, 0, 5, 1, 6, 2, 3]
    assert split.test.empty


def msr_reference(
    data: pd.DataFrame, ratio: float, seed: int, col: str, rounding: str
) -> list[pd.DataFrame]:
    """Recommenders 1.2.1's ``_do_stratification`` (random) as its source reads, line by line."""
    data = data.copy()
    state = np.random.get_state()
    np.random.seed(seed)
    data["random"] = np.random.rand(data.shape[0])
    np.random.set_state(state)
    data = data.sort_values([col, "random"])
    groups = data.groupby(col)
    data["count"] = groups[col].transform("count")
    data["rank"] = groups.cumcount() + 1
    data = data.drop("random", axis=1)
    splits = []
    prev_threshold = None
    for threshold in np.cumsum([ratio, 1 - ratio]):
        if rounding == "round":
            condition = data["rank"] <= round(threshold * data["count"])
            if prev_threshold is not None:
                condition &= data["rank"] > round(prev_threshold * data["count"])
        else:
            condition = data["rank"] / data["count"] <= threshold
            if prev_threshold is not None:
                condition &= data["rank"] / data["count"] > prev_threshold
        splits.append(data[condition].drop(["rank", "count"], axis=1))
        prev_threshold = threshold
    return splits


@pytest.mark.parametrize("seed", [42, 7])
@pytest.mark.parametrize("ratio", [0.75, 0.8, 0.3])
@pytest.mark.parametrize("filter_by", ["item", "user"])
@pytest.mark.parametrize("rounding", ["round", "fraction"])
def test_msr_reproduces_the_reference_algorithm(
    seed: int, ratio: float, filter_by: str, rounding: str
) -> None:
    frame = random_frame(seed, n_rows=120)
    col = "item_id" if filter_by == "item" else "user_id"
    ref_train, ref_test = msr_reference(frame, ratio, seed, col, rounding)
    split = msr_split(frame, ratio, seed, filter_by=filter_by, rounding=rounding)
    pd.testing.assert_frame_equal(split.train, ref_train)
    pd.testing.assert_frame_equal(split.test, ref_test)


def test_msr_leaves_input_and_global_random_state_alone() -> None:
    frame = random_frame(0)
    before = frame.copy()
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    msr_split(frame)
    assert np.random.rand() == expected_next
    pd.testing.assert_frame_equal(frame, before)


def test_recbole_part_sizes_match_recbole_rounding() -> None:
    ratios = (0.8, 0.1, 0.1)
    # int(share * n) for valid and test, the remainder to train ...
    assert recbole_part_sizes(10, ratios) == [8, 1, 1]
    assert recbole_part_sizes(20, ratios) == [16, 2, 2]
    assert recbole_part_sizes(25, ratios) == [21, 2, 2]  # 2.5 rounds down; train takes the rest
    # ... then parts whose share is below one row get one, last part first, while train keeps 2+.
    assert recbole_part_sizes(5, ratios) == [3, 1, 1]
    assert recbole_part_sizes(3, ratios) == [1, 1, 1]
    assert recbole_part_sizes(2, ratios) == [1, 0, 1]
    assert recbole_part_sizes(1, ratios) == [1, 0, 0]
    assert recbole_part_sizes(4, (0.8, 0.2)) == [3, 1]
    assert recbole_part_sizes(10, (8, 1, 1)) == [8, 1, 1]  # ratios are normalised


def test_recbole_tiny_example_matches_hand_computation() -> None:
    frame = pd.DataFrame({"user_id": ["A"] * 5 + ["C"] * 2, "item_id": list("abcdefg")})
    # default_rng(0).permutation(7) = [2, 4, 3, 6, 5, 0, 1]: A's rows in shuffled order are
    # 2, 4, 3, 0, 1 -> sizes [3, 1, 1]; C's are 6, 5 -> sizes [1, 0, 1].
    assert np.random.default_rng(0).permutation(7).tolist() == [2, 4, 3, 6, 5, 0, 1]
    split = recbole_split(frame, seed=0)
    assert split.train.index.tolist() == [2, 3, 4, 6]
    assert split.valid is not None and split.valid.index.tolist() == [0]
    assert split.test.index.tolist() == [1, 5]
    two = recbole_split(frame, (0.8, 0.2), seed=0)
    assert two.valid is None
    # A: sizes [4, 1], so 2, 4, 3, 0 train and 1 test; C: [1, 1], 6 train and 5 test.
    assert two.train.index.tolist() == [0, 2, 3, 4, 6]
    assert two.test.index.tolist() == [1, 5]


def test_temporal_global_tiny_example() -> None:
    frame = pd.DataFrame({"user_id": list("abcde"), "item_id": list("vwxyz"), "t": [4, 1, 3, 2, 3]})
    # 40% of 5 rows = 2: the 2nd latest timestamp is 3, and both rows at 3 go to test.
    split = temporal_global_split(frame, test_fraction=0.4, time_col="t")
    assert split.train.index.tolist() == [1, 3]
    assert split.test.index.tolist() == [0, 2, 4]
    split = temporal_global_split(frame, cut=2, time_col="t")
    assert split.train.index.tolist() == [1]
    assert split.valid is None and split.name == "temporal_global"


def test_leave_last_out_tiny_example_breaks_time_ties_by_item() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["A", "A", "A", "A", "B", "C", "C"],
            "item_id": ["i1", "i2", "i0", "i3", "i9", "i5", "i4"],
            "timestamp": [1, 2, 2, 3, 7, 5, 6],
        }
    )
    # A by (time, item): i1, i0, i2, i3 -> test i3 (row 3), valid i2 (row 1). B: one row, train.
    # C: two rows -> one held out, the latest (row 6) to test, no validation row.
    split = leave_last_out(frame)
    assert split.test.index.tolist() == [3, 6]
    assert split.valid is not None and split.valid.index.tolist() == [1]
    assert split.train.index.tolist() == [0, 2, 4, 5]
    no_valid = leave_last_out(frame, n_valid=0)
    assert no_valid.valid is None
    assert no_valid.train.index.tolist() == [0, 1, 2, 4, 5]


# -- errors ------------------------------------------------------------------------------------


def test_duplicate_index_labels_are_refused() -> None:
    frame = tiny_msr_frame().set_axis([0, 0, 1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="duplicate labels.*reset_index"):
        msr_split(frame)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: msr_split(f, ratio=1.0), "ratio must be a float in"),
        (lambda f: msr_split(f, ratio=3), "ratio must be a float in"),
        (
            lambda f: msr_split(f, filter_by="rating"),
            r"filter_by must be one of \['user', 'item'\]",
        ),
        (lambda f: msr_split(f, rounding="ceil"), "rounding must be one of"),
        (lambda f: recbole_split(f, (1.0,)), "ratios must be 2 or 3"),
        (lambda f: temporal_global_split(f), "exactly one of test_fraction and cut"),
        (lambda f: leave_last_out(f, n_valid=-1), "n_valid must be an int >= 0"),
        (lambda f: leave_last_out(f.drop(columns="timestamp")), r"columns \['timestamp'\]"),
    ],
)
def test_bad_arguments_name_the_problem(
    call: Callable[[pd.DataFrame], Split], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(random_frame(0, n_rows=30))


def test_temporal_cut_leaving_an_empty_part_raises() -> None:
    frame = random_frame(0, n_rows=30)
    with pytest.raises(ValueError, match="leaves 30 train and 0 test rows"):
        temporal_global_split(frame, cut=pd.Timestamp("2100-01-01", tz="UTC"))


# -- to_eval ---------------------------------------------------------------------------------


def test_to_eval_maps_test_rows_and_reports_what_it_dropped() -> None:
    train = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "b"]})
    test = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u9", "u2"],
            "item_id": ["b", "b", "a", "z", "a", "a"],  # seen, seen, ok, new item, new user, dup
        },
        index=range(10, 16),
    )
    for name, keep_seen in (("msr", True), ("recbole", False)):
        evaluation = to_eval(Split(train=train, test=test, name=name))
        assert evaluation.train.users.to_list() == ["u1", "u2"]
        assert evaluation.train.items.to_list() == ["a", "b"]
        assert evaluation.n_rows == 6
        assert evaluation.n_unknown_user == 1
        assert evaluation.n_unknown_item == 1
        assert evaluation.n_seen == 2
        assert evaluation.keep_seen is keep_seen
        if keep_seen:  # MSR: every test rating is relevant
            assert evaluation.test_users.tolist() == [0, 1]
            assert evaluation.relevant == [{1}, {0}]
        else:
            assert evaluation.test_users.tolist() == [1]
            assert evaluation.relevant == [{0}]
        assert evaluation.n_relevant == sum(len(r) for r in evaluation.relevant)


def test_to_eval_on_the_validation_part_and_refit_with_it() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["A"] * 4 + ["B"] * 4,
            "item_id": ["a", "b", "c", "d", "c", "d", "a", "b"],
            "timestamp": [1, 2, 3, 4, 1, 2, 3, 4],
        }
    )
    split = leave_last_out(frame)  # A: train a, b; valid c; test d. B: train c, d; valid a; test b
    valid = to_eval(split, part="valid")
    assert valid.train.items.to_list() == ["a", "b", "c", "d"]
    assert valid.test_users.tolist() == [0, 1]
    assert valid.relevant == [{2}, {0}]
    refit = to_eval(split, train_with_valid=True)
    assert refit.train.matrix.nnz == 6
    assert refit.relevant == [{3}, {1}]
    assert (refit.n_rows, refit.n_unknown_user, refit.n_unknown_item, refit.n_seen) == (2, 0, 0, 0)
    with pytest.raises(ValueError, match="no validation part"):
        to_eval(leave_last_out(frame, n_valid=0), part="valid")
    with pytest.raises(ValueError, match="would train on the evaluated rows"):
        to_eval(split, part="valid", train_with_valid=True)


# -- MovieLens-100K ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def movielens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw_dir = tmp_path_factory.mktemp("protocols-raw")
    try:
        return fetch("movielens-100k", raw_dir)
    except DatasetUnreachableError as exc:  # only the network; a defect fails
        pytest.skip(f"cannot download MovieLens-100K: {exc}")


@pytest.mark.integration
def test_movielens_100k_split_sizes(movielens_dir: Path) -> None:
    interactions = load("movielens-100k", movielens_dir.parent).interactions
    # The rows of ml-100k.inter are in u.data order, the order Recommenders' loader keeps.
    file_order = pd.read_csv(movielens_dir / "ml-100k.inter", sep="\t")
    file_order.columns = ["user_id", "item_id", "rating", "timestamp"]

    # The Recommenders benchmark (stratified by item). Sizes do not depend on row order.
    for frame in (interactions, file_order):
        assert msr_split(frame).sizes() == {"train": 75_066, "test": 24_934}
        # The SAR quick-start notebook's split (filter_by's default "user"): 74,992 / 25,008.
        assert msr_split(frame, filter_by="user").sizes() == {"train": 74_992, "test": 25_008}
    assert msr_split(file_order, rounding="fraction").sizes() == {"train": 74_331, "test": 25_669}
    # Which rows, pinned for u.data order; checked once against recommenders 1.2.1's own
    # python_stratified_split on the same frame (identical train and test frames).
    test = msr_split(file_order).test
    assert test.index[:6].tolist() == [88028, 17299, 44422, 16768, 58395, 90574]
    assert int(test.index.to_numpy().sum()) == 1_247_962_990

    recbole = recbole_split(interactions)
    assert recbole.sizes() == {"train": 80_808, "valid": 9_596, "test": 9_596}
    assert recbole_split(interactions, (0.8, 0.2)).sizes() == {"train": 80_367, "test": 19_633}

    last = leave_last_out(interactions)
    assert last.sizes() == {"train": 98_114, "valid": 943, "test": 943}
    assert last.test["user_id"].nunique() == 943

    evaluation = to_eval(msr_split(file_order))
    assert (evaluation.n_unknown_user, evaluation.n_unknown_item) == (0, 0)
    assert evaluation.n_relevant == 24_934
    assert len(evaluation.test_users) == 943
