"""The two-tower model (`models.two_tower`): planted blocks, side features, cold start, I/O.

The contract suite covers it once it is registered; these tests cover what is specific to it.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from models.interactions import IdMap, Interactions
from models.side_features import FeatureEncoder
from models.two_tower import TwoTower, TwoTowerConfig

BLOCK = 8  # items 0-7 are block A, 8-15 block B
N_ITEMS = 2 * BLOCK
#: Small data: short batches so a few epochs take enough steps.
SMALL = {"epochs": 20, "batch_size": 32, "learning_rate": 1e-2, "patience": 5}


def _blocks(n_per_group: int, per_user: int, seed: int) -> pd.DataFrame:
    """Group ``a`` consumes ``per_user`` random block-A items, group ``b`` block-B items."""
    rng = np.random.default_rng(seed)
    rows = []
    for group, offset in (("a", 0), ("b", BLOCK)):
        for user in range(n_per_group):
            for item in rng.choice(BLOCK, size=per_user, replace=False):
                rows.append((f"{group}{user:02d}", f"i{offset + item:02d}"))
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def _items() -> IdMap:
    return IdMap.from_ids(f"i{item:02d}" for item in range(N_ITEMS))


def _segments(users: IdMap) -> pd.DataFrame:
    """``segment`` A/B (the group) plus a numeric column that carries no signal."""
    ids = users.to_list()
    return pd.DataFrame(
        {
            "segment": [user[0].upper() for user in ids],
            "noise": np.arange(len(ids), dtype=np.float64) % 3,
        },
        index=pd.Index(ids, name="user_id"),
    )


def _item_frame() -> pd.DataFrame:
    ids = _items().to_list()
    return pd.DataFrame(
        {"genres": ["x|y" if i < BLOCK else "z" for i in range(N_ITEMS)], "year": 1990.0},
        index=pd.Index(ids, name="item_id"),
    )


@pytest.fixture(scope="module")
def featured() -> Interactions:
    events = _blocks(n_per_group=24, per_user=4, seed=0)
    base = Interactions.from_frame(events, items=_items())
    return Interactions(
        base.matrix,
        base.users,
        base.items,
        user_features=_segments(base.users),
        item_features=_item_frame(),
    )


@pytest.fixture(scope="module")
def model(featured: Interactions) -> TwoTower:
    return TwoTower(TwoTowerConfig(**SMALL)).fit(featured)


def _cold(segment: str, noise: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"segment": [segment], "noise": [noise]})


def _empty(n: int = 1) -> sp.csr_matrix:
    return sp.csr_matrix((n, N_ITEMS), dtype=np.float32)


# ---------------------------------------------------------------------- config


def test_config_defaults_round_trip_json() -> None:
    config = TwoTowerConfig(hidden="64, 32")
    assert config.hidden_sizes == (64, 32)
    assert TwoTowerConfig(hidden="").hidden_sizes == ()
    assert TwoTowerConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("embedding_dim", 0),
        ("hidden", "64,x"),
        ("hidden", 64),
        ("epochs", 0),
        ("batch_size", 1.5),
        ("learning_rate", 0.0),
        ("negatives", 0),
        ("weight_decay", -1.0),
        ("validation_fraction", 1.0),
        ("patience", 0),
        ("seed", -1),
        ("use_features", "yes"),
        ("cold_dropout", 1.0),
    ],
)
def test_config_errors_name_the_field(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{key} must"):
        TwoTowerConfig(**{key: value})


# ---------------------------------------------------------------------- feature encoding


def test_feature_encoder_standardizes_and_multi_hot_encodes() -> None:
    frame = pd.DataFrame(
        {
            "age": [20.0, 40.0, np.nan, 30.0],
            "genres": ["Action|Comedy", "Comedy", "Action", None],
            "rare": ["only-once", "x", "x", "x"],
        }
    )
    encoder = FeatureEncoder.fit(frame)
    assert encoder.numeric_columns == ("age",)
    assert encoder.vocabularies == (("Action", "Comedy"), ("x",))  # "only-once" is too rare
    encoded = encoder.transform(frame, 4)
    assert encoded.shape == (4, 4) and encoded.dtype == np.float32
    np.testing.assert_allclose(encoded[:, 0], [-np.sqrt(1.5), np.sqrt(1.5), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(encoded[:, 1:3], [[1, 1], [0, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(encoded[:, 3], [0, 1, 1, 1])
    restored = FeatureEncoder.from_arrays(encoder.to_arrays("p."), "p.")
    np.testing.assert_array_equal(restored.transform(frame, 4), encoded)
    with pytest.raises(ValueError, match=r"lacks columns \['genres'\]"):
        encoder.transform(frame.drop(columns="genres"), 4)


# ---------------------------------------------------------------------- behaviour


def test_recovers_planted_blocks_held_out_item_in_top3() -> None:
    """Every user has all but one item of their block; that item must be in their top 3."""
    rows = []
    for group, offset in (("a", 0), ("b", BLOCK)):
        for user in range(16):
            held_out = user % BLOCK
            rows += [
                (f"{group}{user:02d}", f"i{offset + i:02d}") for i in range(BLOCK) if i != held_out
            ]
    interactions = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    fitted = TwoTower(TwoTowerConfig(**SMALL, use_features=False)).fit(interactions)
    users = np.arange(interactions.n_users)
    top, _ = fitted.recommend(users, interactions.user_items(users), k=3)
    for user, user_id in enumerate(interactions.users.to_list()):
        offset = 0 if user_id[0] == "a" else BLOCK
        expected = offset + int(user_id[1:]) % BLOCK
        assert expected in top[user].tolist(), (user_id, top[user])


def test_cold_user_is_ranked_by_segment_feature(model: TwoTower) -> None:
    """No id and no history: only the segment tells the groups apart."""
    for segment, wanted in (("A", slice(0, BLOCK)), ("B", slice(BLOCK, N_ITEMS))):
        scores = model.score_new_users(_cold(segment), _empty())
        assert scores.shape == (1, N_ITEMS) and scores.dtype == np.float32
        inside = np.zeros(N_ITEMS, dtype=bool)
        inside[wanted] = True
        assert scores[0, inside].min() > scores[0, ~inside].max(), (segment, scores)


def test_cold_user_without_features_scores_the_same_for_both_segments(
    featured: Interactions,
) -> None:
    plain = TwoTower(TwoTowerConfig(**SMALL, use_features=False)).fit(featured)
    np.testing.assert_array_equal(
        plain.score_new_users(_cold("A"), _empty()), plain.score_new_users(_cold("B"), _empty())
    )


def test_cold_user_history_drives_scores(model: TwoTower) -> None:
    """No id, no features: a block-B history ranks the unseen block-B items first."""
    history = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 0], [8, 9, 10])), shape=(1, N_ITEMS))
    scores = model.score_new_users(None, history)[0]
    unseen_b = scores[11:N_ITEMS]
    assert unseen_b.min() > scores[:BLOCK].max()


def test_score_new_users_batch_equals_single(model: TwoTower) -> None:
    features = pd.DataFrame({"segment": ["A", "B", None], "noise": [0.0, 2.0, np.nan]})
    history = sp.csr_matrix(([1.0, 1.0], ([1, 2], [3, 12])), shape=(3, N_ITEMS))
    batch = model.score_new_users(features, history)
    for row in range(3):
        single = model.score_new_users(features.iloc[[row]], history[row])
        np.testing.assert_array_equal(single[0], batch[row])


def test_score_new_users_checks_its_inputs(model: TwoTower) -> None:
    with pytest.raises(ValueError, match=r"lacks columns \['noise'\]"):
        model.score_new_users(pd.DataFrame({"segment": ["A"]}), _empty())
    with pytest.raises(ValueError, match="features has 1 rows, user_items 2"):
        model.score_new_users(_cold("A"), _empty(2))
    with pytest.raises(ValueError, match="user_items has 3 columns"):
        model.score_new_users(_cold("A"), sp.csr_matrix((1, 3)))


def test_same_seed_same_scores(featured: Interactions, model: TwoTower) -> None:
    again = TwoTower(TwoTowerConfig(**SMALL)).fit(featured)
    users = np.arange(featured.n_users)
    np.testing.assert_array_equal(again.score(users), model.score(users))
    np.testing.assert_array_equal(
        again.score_new_users(_cold("A"), _empty()), model.score_new_users(_cold("A"), _empty())
    )
    other = TwoTower(TwoTowerConfig(**{**SMALL, "seed": 7})).fit(featured)
    assert not np.array_equal(other.score(users), model.score(users))


def test_save_load_gives_identical_scores(model: TwoTower, tmp_path: Path) -> None:
    model.save(tmp_path / "tt")
    with np.load(tmp_path / "tt" / "weights.npz", allow_pickle=False) as weights:
        assert all(weights[key].dtype != object for key in weights.files)
    loaded = TwoTower.load(tmp_path / "tt")
    assert loaded.config == model.config
    users = np.arange(model.n_users)
    np.testing.assert_array_equal(loaded.score(users), model.score(users))
    features = pd.DataFrame({"segment": ["A", "B"], "noise": [0.0, 1.0]})
    np.testing.assert_array_equal(
        loaded.score_new_users(features, _empty(2)), model.score_new_users(features, _empty(2))
    )
    for a, b in zip(loaded.similar_items(3, k=5), model.similar_items(3, k=5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_feature_frame_must_share_ids(featured: Interactions) -> None:
    unrelated = _segments(featured.users).reset_index(drop=True)  # a RangeIndex, no id column
    bad = dataclasses.replace(featured, user_features=unrelated)
    with pytest.raises(ValueError, match="user_features shares no id"):
        TwoTower(TwoTowerConfig(**SMALL)).fit(bad)
    # A user_id column is used as the index.
    with_column = dataclasses.replace(
        featured, user_features=_segments(featured.users).reset_index()
    )
    fitted = TwoTower(TwoTowerConfig(**{**SMALL, "epochs": 1})).fit(with_column)
    assert fitted.user_encoder.categorical_columns == ("segment",)


def test_works_without_side_features(tmp_path: Path) -> None:
    interactions = Interactions.from_frame(_blocks(12, 4, seed=1), items=_items())
    assert interactions.user_features is None and interactions.item_features is None
    fitted = TwoTower(TwoTowerConfig(**SMALL, use_features=True)).fit(interactions)
    users = np.arange(interactions.n_users)
    top, _ = fitted.recommend(users, interactions.user_items(users), k=2)
    in_own_block = [
        (item < BLOCK) == user_id.startswith("a")
        for user_id, row in zip(interactions.users.to_list(), top, strict=True)
        for item in row
    ]
    assert np.mean(in_own_block) >= 0.9
    assert fitted.score_new_users(None, _empty()).shape == (1, N_ITEMS)
    fitted.save(tmp_path / "plain")
    np.testing.assert_array_equal(
        TwoTower.load(tmp_path / "plain").score(users), fitted.score(users)
    )


def test_callback_sees_validation_ndcg() -> None:
    interactions = Interactions.from_frame(_blocks(8, 6, seed=2), items=_items())  # 1 held out
    seen: list[dict[str, float]] = []
    TwoTower(TwoTowerConfig(**{**SMALL, "epochs": 2})).fit(
        interactions, callback=lambda epoch, metrics: seen.append(metrics)
    )
    assert len(seen) == 2
    assert {"loss", "val_ndcg_at_10", "epoch_seconds"} <= set(seen[0])
