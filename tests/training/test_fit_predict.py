"""``tailor fit-predict`` on small files: output shape, unseen items, clear errors."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


@pytest.fixture()
def files(tmp_path):
    rows = [(u, i) for u in ("a1", "a2", "a3") for i in ("x1", "x2", "x3")]
    rows += [(u, i) for u in ("b1", "b2", "b3") for i in ("y1", "y2", "y3")]
    rows += [("a4", "x1"), ("a4", "x2")]  # a4 should get x3 first
    train = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(train, index=False)
    users = tmp_path / "users.csv"
    pd.DataFrame({"user_id": ["a4", "b1", "stranger"]}).to_csv(users, index=False)
    return train, users, tmp_path / "out" / "top.csv"


def _invoke(*args: str):
    return runner.invoke(app, ["fit-predict", *args])


def test_writes_top_k_unseen_items_for_every_listed_user(files):
    train, users, out = files
    result = _invoke("--train", str(train), "--users", str(users), "--out", str(out), "--k", "2")
    assert result.exit_code == 0, result.output
    top = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    assert list(top.columns) == ["user_id", "item_id", "rank", "score"]
    assert top.groupby("user_id").size().to_dict() == {"a4": 2, "b1": 2, "stranger": 2}
    a4 = top[top["user_id"] == "a4"].sort_values("rank")
    assert a4["item_id"].iloc[0] == "x3"
    assert not set(a4["item_id"]) & {"x1", "x2"}
    b1 = top[top["user_id"] == "b1"]
    assert not set(b1["item_id"]) & {"y1", "y2", "y3"}
    assert re.search(r"unknown users \(popular items\)\s*│\s*1\b", result.output)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nope"], "allowed"),
        (["--set", "l3=1"], "l3"),
        (["--k", "0"], "k must be a positive integer"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(files, extra, message):
    train, users, out = files
    result = _invoke("--train", str(train), "--users", str(users), "--out", str(out), *extra)
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists()


def test_missing_columns_are_named(files, tmp_path):
    _, users, out = files
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"user": ["a"], "item_id": ["x"]}).to_csv(bad, index=False)
    result = _invoke("--train", str(bad), "--users", str(users), "--out", str(out))
    assert result.exit_code == 1
    assert "missing column(s) user_id" in result.output
