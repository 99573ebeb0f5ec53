"""ModelBundle: a fitted model plus serving data, saved as JSON/npz and loaded back unchanged."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.bundle import ModelBundle, context_popularity
from models.interactions import IdMap, Interactions
from models.registry import build

# Shoes s0-s4 and hats h0-h4; by distinct users s0 (5) > h0 = s1 (4) > h1 = s2 (3) > ...
HISTORIES = {
    "a0": ["s0", "s1", "s2", "s3"],
    "a1": ["s0", "s1", "s2", "s3", "s4"],
    "a2": ["s0", "s1", "s2"],
    "a3": ["s0", "s1"],
    "a4": ["s0"],
    "b0": ["h0", "h1", "h2", "h3"],
    "b1": ["h0", "h1", "h2"],
    "b2": ["h0", "h1"],
    "b3": ["h0", "h4"],
}
CATEGORY = {f"s{i}": "shoes" for i in range(5)} | {f"h{i}": "hats" for i in range(5)}


def _bundle(model_name: str, items: IdMap | None = None) -> ModelBundle:
    rows = [(user, item) for user, items_ in HISTORIES.items() for item in items_]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    interactions = Interactions.from_frame(frame, items=items)
    params = {"l2": 1.0} if model_name == "ease" else {}
    model = build(model_name, params).fit(interactions)
    popularity = build("popularity").fit(interactions)
    pop_scores = popularity.score(0)
    return ModelBundle(
        model_name=model_name,
        model=model,
        users=interactions.users,
        items=interactions.items,
        history=interactions.matrix,
        popular=np.argsort(-pop_scores, kind="stable"),
        item_categories=np.array([CATEGORY[i] for i in interactions.items.ids], dtype=object),
    )


def _ids(bundle: ModelBundle, item_idx: np.ndarray) -> list[str]:
    return [str(bundle.items.ids[i]) for i in item_idx]


def _all_recommendations(bundle: ModelBundle, k: int = 5) -> list[tuple[list[str], np.ndarray]]:
    out = []
    for user in range(len(bundle.users)):
        item_idx, scores = bundle.model.recommend(user, bundle.history[user], k=k)
        out.append((_ids(bundle, item_idx), scores))
    return out


def test_popular_in_keeps_popularity_order_within_the_category() -> None:
    bundle = _bundle("ease")
    assert _ids(bundle, bundle.popular[:3]) == ["s0", "h0", "s1"]
    assert _ids(bundle, bundle.popular_in("hats")) == ["h0", "h1", "h2", "h3", "h4"]
    assert _ids(bundle, bundle.popular_in("shoes")) == ["s0", "s1", "s2", "s3", "s4"]


def test_popular_in_unknown_category_is_empty() -> None:
    result = _bundle("ease").popular_in("socks")
    assert result.size == 0


def test_save_writes_plain_files(tmp_path: Path) -> None:
    directory = _bundle("ease").save(tmp_path / "bundle")
    assert directory == tmp_path / "bundle"
    names = {p.name for p in directory.iterdir()}
    assert {"bundle.json", "popular.npy", "model"} <= names  # history: the model's own matrix
    assert (directory / "model" / "config.json").is_file()


@pytest.mark.parametrize("model_name", ["ease", "popularity"])
def test_round_trip_gives_identical_recommendations(tmp_path: Path, model_name: str) -> None:
    bundle = _bundle(model_name)
    loaded = ModelBundle.load(bundle.save(tmp_path / "bundle"))

    assert loaded.model_name == model_name
    assert type(loaded.model) is type(bundle.model)
    assert loaded.users == bundle.users
    assert loaded.items == bundle.items
    assert (loaded.history != bundle.history).nnz == 0
    np.testing.assert_array_equal(loaded.popular, bundle.popular)
    assert loaded.item_categories.tolist() == bundle.item_categories.tolist()
    for category in ("shoes", "hats", "socks"):
        np.testing.assert_array_equal(loaded.popular_in(category), bundle.popular_in(category))

    for (ids_before, scores_before), (ids_after, scores_after) in zip(
        _all_recommendations(bundle), _all_recommendations(loaded), strict=True
    ):
        assert ids_after == ids_before
        np.testing.assert_array_equal(scores_after, scores_before)


def test_loaded_ease_still_recommends_the_planted_item(tmp_path: Path) -> None:
    loaded = ModelBundle.load(_bundle("ease").save(tmp_path / "bundle"))
    a3 = loaded.users.index("a3")
    item_idx, _ = loaded.model.recommend(a3, loaded.history[a3], k=1)
    assert _ids(loaded, item_idx) == ["s2"]  # every other user with s0 and s1 has s2


def test_round_trip_keeps_an_unsorted_item_map(tmp_path: Path) -> None:
    """Regression: load once rebuilt the maps with IdMap.from_ids, which sorts the ids, so a
    bundle whose item map was not sorted came back with indices that no longer matched."""
    catalogue_order = IdMap([f"h{i}" for i in range(5)][::-1] + [f"s{i}" for i in range(5)])
    bundle = _bundle("ease", items=catalogue_order)
    loaded = ModelBundle.load(bundle.save(tmp_path / "bundle"))
    assert loaded.items == bundle.items
    assert loaded.model.items == bundle.items
    # h3 and h4 tie on popularity; the lower dense index (h4 in this map) ranks first.
    assert _ids(loaded, loaded.popular_in("hats")) == ["h0", "h1", "h2", "h4", "h3"]
    assert _all_recommendations(loaded)[3][0] == _all_recommendations(bundle)[3][0]


# ----------------------------------------------------------------------------- context popularity
# Issue #5: popular items per request context (country, device, category), built from events.


def _context_events() -> pd.DataFrame:
    rows = [
        # (item, country, device, category)
        ("s1", "US", "mobile", "shoes"),
        ("s1", "US", "mobile", "shoes"),
        ("h2", "US", "desktop", "hats"),
        ("h2", "US", "desktop", "hats"),
        ("h2", "US", "desktop", "hats"),
        ("s0", "DE", "mobile", "shoes"),
        ("h0", "DE", None, "hats"),
        ("h0", "", "tablet", "hats"),
        ("zz", "US", "mobile", "shoes"),  # not in the item map: left out
        (None, "US", "mobile", None),  # a page view: no item
    ]
    return pd.DataFrame(rows, columns=["product_id", "country", "device_type", "category"])


def test_context_popularity_counts_items_per_context_value() -> None:
    bundle = _bundle("ease")
    table = context_popularity(_context_events(), bundle.items, item_column="product_id")
    assert set(table) == {"country", "device_type", "category"}
    assert set(table["country"]) == {"US", "DE"}  # blank and missing values are left out
    assert _ids(bundle, table["country"]["US"]) == ["h2", "s1"]
    # DE: h0 and s0 tie at one event each; the lower dense index (h0) ranks first
    assert _ids(bundle, table["country"]["DE"]) == ["h0", "s0"]
    assert _ids(bundle, table["device_type"]["mobile"]) == ["s1", "s0"]
    assert _ids(bundle, table["device_type"]["tablet"]) == ["h0"]
    assert _ids(bundle, table["category"]["hats"]) == ["h2", "h0"]
    assert table["country"]["US"].dtype == np.int64


def test_context_popularity_keeps_top_n() -> None:
    bundle = _bundle("ease")
    table = context_popularity(_context_events(), bundle.items, item_column="product_id", top_n=1)
    assert _ids(bundle, table["country"]["US"]) == ["h2"]


def test_context_popularity_names_a_missing_column() -> None:
    frame = _context_events().drop(columns="country")
    with pytest.raises(ValueError, match="country"):
        context_popularity(frame, _bundle("ease").items, item_column="product_id")


def test_context_table_round_trips_and_answers_lookups(tmp_path: Path) -> None:
    bundle = _bundle("ease")
    table = context_popularity(_context_events(), bundle.items, item_column="product_id")
    with_table = replace(bundle, context_popular=table)
    loaded = ModelBundle.load(with_table.save(tmp_path / "bundle"))
    assert (tmp_path / "bundle" / "context_popular.json").is_file()
    assert _ids(loaded, loaded.popular_in_context("country", "US")) == ["h2", "s1"]
    assert loaded.popular_in_context("country", "FR").size == 0  # unknown value: empty
    assert loaded.popular_in_context("page", "home") is None  # no table for that column


def test_bundle_saved_without_a_context_table_still_loads(tmp_path: Path) -> None:
    """Bundles registered before issue #5 have no context_popular.json."""
    directory = _bundle("ease").save(tmp_path / "bundle")
    assert not (directory / "context_popular.json").exists()
    loaded = ModelBundle.load(directory)
    assert loaded.context_popular is None
    assert loaded.popular_in_context("country", "US") is None


def test_the_history_is_saved_once_when_it_is_the_models_training_matrix(tmp_path: Path) -> None:
    """The model saves its training matrix; a bundle whose history is that matrix does not save
    it again, and the loaded bundle shares the model's one (one copy in memory)."""
    import dataclasses
    import json

    import scipy.sparse as sp

    bundle = _bundle("ease")
    folder = bundle.save(tmp_path / "shared")
    assert not (folder / "history.npz").exists()
    loaded = ModelBundle.load(folder)
    assert loaded.history is loaded.model.train_user_items
    assert (loaded.history != bundle.history).nnz == 0

    other = bundle.history.tolil(copy=True)
    other[0, 0] = 0.5 if other[0, 0] == 0 else 0.0  # not the model's matrix any more
    different = dataclasses.replace(bundle, history=sp.csr_matrix(other))
    folder = different.save(tmp_path / "own")
    assert (folder / "history.npz").exists()
    assert (ModelBundle.load(folder).history != different.history).nnz == 0

    meta_path = folder / "bundle.json"  # a bundle saved before the history was shared
    meta = json.loads(meta_path.read_text())
    del meta["history"]
    meta_path.write_text(json.dumps(meta))
    assert (ModelBundle.load(folder).history != different.history).nnz == 0
