"""Tests for ``features.datasets.load``: tiny hand-written files, fetch with a fake pip, real data.

Unit tests write both MovieLens formats and CDNOW into ``tmp_path``. The integration tests really
download the recbole and lifetimes wheels (once per session) and check the published sizes.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.datasets import fetch as dataset_fetch
from features.datasets.cdnow import load_cdnow
from features.datasets.fetch import DATASETS, fetch
from features.datasets.load import load
from features.datasets.movielens import ML_GENRES, load_movielens_grouplens, load_movielens_recbole
from features.datasets.types import (
    DatasetFetchError,
    DatasetFormatError,
    DatasetUnreachableError,
    RatingsDataset,
)

# -- tiny fixtures ----------------------------------------------------------------------------

RECBOLE_INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
2\t1\t4\t881250950
1\t2\t3\t881250949
1\t1\t5\t881250949
10\t3\t1\t881250000
"""
RECBOLE_USER = """user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token
1\t24\tM\ttechnician\t85711
2\t53\tF\tother\t94043
10\t53\tM\tlawyer\tT8H1N
"""
RECBOLE_ITEM = """item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq
1\tToy Story\t1995\tAnimation Children's Comedy
2\tMisérables, Les\t1995\tDrama Musical
3\tunkonwn\tunkonwn\tunknown
"""

GROUPLENS_DATA = "2\t1\t4\t881250950\n1\t2\t3\t881250949\n1\t1\t5\t881250949\n10\t3\t1\t881250000\n"
GROUPLENS_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n10|53|M|lawyer|T8H1N\n"


def _flags(*genres: str) -> str:
    return "|".join("1" if genre in genres else "0" for genre in ML_GENRES)


GROUPLENS_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
    + _flags("Animation", "Children's", "Comedy")
    + "\n2|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/Title?Mis%E9rables|"
    + _flags("Drama", "Musical")
    + "\n3|unknown||||"
    + _flags("unknown")
    + "\n"
)

CDNOW = """ customer_id  date number_of_cds  dollar_value\r
 00001 19970101  1   11.77\r
 00002 19970112  1   12.00\r
 00002 19970112  5   77.00\r
 00010 19970102  2   20.76\r
 00002 19970105  1    0.00\r
"""


def _write_recbole(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("inter", RECBOLE_INTER), ("user", RECBOLE_USER), ("item", RECBOLE_ITEM)):
        (folder / f"ml-100k.{name}").write_text(text, encoding="utf-8")
    return folder


def _write_grouplens(folder: Path, item_encoding: str = "latin-1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(GROUPLENS_DATA, encoding="ascii")
    (folder / "u.user").write_text(GROUPLENS_USER, encoding="ascii")
    (folder / "u.item").write_bytes(GROUPLENS_ITEM.encode(item_encoding))
    return folder


# -- MovieLens, both formats -------------------------------------------------------------------


def test_recbole_loader_gives_documented_frames(tmp_path: Path) -> None:
    ds = load_movielens_recbole(_write_recbole(tmp_path))

    assert ds.name == "movielens-100k"
    inter = ds.interactions
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert str(inter["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert inter["rating"].dtype == np.float64
    # ids sort as strings ("10" before "2"); a timestamp tie falls back to item_id
    assert list(zip(inter["user_id"], inter["item_id"], strict=True)) == [
        ("1", "1"), ("1", "2"), ("10", "3"), ("2", "1"),
    ]  # fmt: skip
    assert inter["rating"].tolist() == [5.0, 3.0, 1.0, 4.0]
    assert inter["timestamp"].iloc[0] == pd.Timestamp(881250949, unit="s", tz="UTC")

    assert ds.users.to_dict("list") == {
        "user_id": ["1", "2", "10"],
        "age": [24, 53, 53],
        "gender": ["M", "F", "M"],
        "occupation": ["technician", "other", "lawyer"],
        "zip_code": ["85711", "94043", "T8H1N"],
    }
    assert ds.users["age"].dtype == np.int64


def test_recbole_items_parse_genres_years_and_the_unknown_typo(tmp_path: Path) -> None:
    items = load_movielens_recbole(_write_recbole(tmp_path)).items

    assert items["item_id"].tolist() == ["1", "2", "3"]
    assert items["title"].tolist() == ["Toy Story", "Misérables, Les", "unknown"]
    assert items["genres"].tolist() == ["Animation|Children's|Comedy", "Drama|Musical", "unknown"]
    assert str(items["release_year"].dtype) == "Int64"
    assert items["release_year"].tolist()[:2] == [1995, 1995]
    assert items["release_year"].isna().tolist() == [False, False, True]


def test_recbole_year_token_that_is_not_a_year_falls_back_to_the_title(tmp_path: Path) -> None:
    folder = _write_recbole(tmp_path)
    item = RECBOLE_ITEM.replace("1\tToy Story\t1995", "1\tLand Before Time III (1995)\tV")
    (folder / "ml-100k.item").write_text(item, encoding="utf-8")

    items = load_movielens_recbole(folder).items

    assert items.loc[0, "title"] == "Land Before Time III"
    assert items.loc[0, "release_year"] == 1995


def test_grouplens_loader_reads_latin1_titles_and_genre_flags(tmp_path: Path) -> None:
    ds = load_movielens_grouplens(_write_grouplens(tmp_path))

    assert ds.items["title"].tolist() == ["Toy Story", "Misérables, Les", "unknown"]
    assert ds.items["genres"].tolist() == [
        "Animation|Children's|Comedy",
        "Drama|Musical",
        "unknown",
    ]
    assert ds.items["release_year"].isna().tolist() == [False, False, True]


def test_grouplens_item_file_in_utf8_reads_the_same(tmp_path: Path) -> None:
    latin1 = load_movielens_grouplens(_write_grouplens(tmp_path / "latin1"))
    utf8 = load_movielens_grouplens(_write_grouplens(tmp_path / "utf8", item_encoding="utf-8"))

    pd.testing.assert_frame_equal(latin1.items, utf8.items)


def test_grouplens_release_date_gives_the_year_when_the_title_has_none(tmp_path: Path) -> None:
    folder = _write_grouplens(tmp_path)
    item = GROUPLENS_ITEM.replace("Toy Story (1995)|01-Jan-1995", "Toy Story|22-Jan-1996")
    (folder / "u.item").write_bytes(item.encode("latin-1"))

    items = load_movielens_grouplens(folder).items

    assert (items.loc[0, "title"], items.loc[0, "release_year"]) == ("Toy Story", 1996)


def test_both_movielens_formats_give_identical_frames(tmp_path: Path) -> None:
    recbole = load_movielens_recbole(_write_recbole(tmp_path / "recbole"))
    grouplens = load_movielens_grouplens(_write_grouplens(tmp_path / "grouplens"))

    pd.testing.assert_frame_equal(recbole.interactions, grouplens.interactions)
    pd.testing.assert_frame_equal(recbole.users, grouplens.users)
    pd.testing.assert_frame_equal(recbole.items, grouplens.items)


@pytest.mark.parametrize("where", ["archive_parent", "u_data_path"])
def test_grouplens_loader_finds_the_files(tmp_path: Path, where: str) -> None:
    _write_grouplens(tmp_path / "ml-100k")
    target = tmp_path if where == "archive_parent" else tmp_path / "ml-100k" / "u.data"

    assert len(load_movielens_grouplens(target).interactions) == 4


def test_missing_grouplens_file_is_named(tmp_path: Path) -> None:
    (_write_grouplens(tmp_path) / "u.item").unlink()

    with pytest.raises(FileNotFoundError, match=r"u\.item not found"):
        load_movielens_grouplens(tmp_path)


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("u.data", "1\t2\t3\t881250949\n", "1\t2\t3\n", r"u\.data, line 2: expected 4 tab-sep"),
        ("u.data", "1\t2\t3\t881250949\n", "1\t2\tthree\t881250949\n", r"line 2: rating must"),
        ("u.data", "\n10\t3", "\n\t3", r"u\.data, line 4: user_id must be a non-empty id"),
        ("u.user", "2|53|F|other|94043", "2|53|F|other", r"u\.user, line 2: expected 5 '\|'"),
        ("u.user", "2|53|F", "2|fifty|F", r"u\.user, line 2: age must be an integer, got 'fifty'"),
        ("u.user", "10|53|M", "1|53|M", r"u\.user, line 3: id '1' appears twice"),
        ("u.item", "|0|0|0|0|0|0|0|0|1|0|0|0|1|", "|0|0|0|0|0|0|0|0|1|0|0|1|", r"line 2: expected"),
        ("u.item", "Story (1995)|01-Jan-1995", "Story|1995-01-01", r"u\.item, line 1: release"),
        ("u.item", "3|unknown||||1|", "3|unknown||||yes|", r"u\.item, line 3: genre flags"),
    ],
)  # fmt: skip
def test_malformed_grouplens_lines_are_named(
    tmp_path: Path, file: str, old: str, new: str, message: str
) -> None:
    folder = _write_grouplens(tmp_path)
    text = (folder / file).read_bytes().decode("latin-1")
    assert old in text
    (folder / file).write_bytes(text.replace(old, new, 1).encode("latin-1"))

    with pytest.raises(DatasetFormatError, match=message):
        load_movielens_grouplens(folder)


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("inter", "rating:float", "rating", r"ml-100k\.inter, line 1: header field 'rating' is"),
        ("inter", "rating:float", "score:float", r"line 1: missing column\(s\) \['rating'\]"),
        ("inter", "1\t2\t3\t881250949", "1\t2\t3", r"ml-100k\.inter, line 3: expected 4 tab"),
        ("inter", "881250000", "soon", r"line 5: timestamp must be a finite number, got 'soon'"),
        ("item", "Drama Musical", "Drama Opera", r"ml-100k\.item, line 3: unknown genre"),
    ],
)  # fmt: skip
def test_malformed_recbole_lines_are_named(
    tmp_path: Path, file: str, old: str, new: str, message: str
) -> None:
    folder = _write_recbole(tmp_path)
    path = folder / f"ml-100k.{file}"
    path.write_text(path.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")

    with pytest.raises(DatasetFormatError, match=message):
        load_movielens_recbole(folder)


def test_interactions_with_an_unknown_item_are_refused(tmp_path: Path) -> None:
    folder = _write_grouplens(tmp_path)
    (folder / "u.data").write_text(GROUPLENS_DATA + "1\t99\t4\t881250951\n", encoding="ascii")

    with pytest.raises(DatasetFormatError, match=r"1 item_id\(s\) not in the item file.*'99'"):
        load_movielens_grouplens(folder)


def test_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    folder = _write_grouplens(tmp_path)
    (folder / "u.data").write_text("\n" + GROUPLENS_DATA + "\n1\t2\n", encoding="ascii")

    with pytest.raises(DatasetFormatError, match=r"u\.data, line 7: expected 4"):
        load_movielens_grouplens(folder)


# -- CDNOW ---------------------------------------------------------------------------------------


def test_cdnow_loader_gives_purchases_users_and_one_pseudo_item(tmp_path: Path) -> None:
    path = tmp_path / "CDNOW_master.txt"
    path.write_bytes(CDNOW.encode("ascii"))  # CRLF and a header, as in the lifetimes wheel

    ds = load_cdnow(path)

    inter = ds.interactions
    assert ds.name == "cdnow"
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp", "quantity"]
    assert inter["user_id"].tolist() == ["1", "10", "2", "2", "2"]
    assert set(inter["item_id"]) == {"cdnow"}
    assert inter["rating"].tolist() == [11.77, 20.76, 0.0, 12.0, 77.0]
    assert inter["quantity"].tolist() == [1, 2, 1, 1, 5]
    assert inter["quantity"].dtype == np.int64
    assert str(inter["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert inter["timestamp"].iloc[2] == pd.Timestamp("1997-01-05", tz="UTC")

    users = ds.users
    assert users["user_id"].tolist() == ["1", "2", "10"]  # file order
    assert str(users["first_purchase"].dtype) == "datetime64[ns, UTC]"
    assert users["first_purchase"].iloc[1] == pd.Timestamp("1997-01-05", tz="UTC")
    assert users["n_purchases"].tolist() == [1, 3, 1]
    assert users["total_spend"].tolist() == [11.77, 89.0, 20.76]
    assert ds.items["item_id"].tolist() == ["cdnow"]


def test_cdnow_without_header_and_from_a_folder(tmp_path: Path) -> None:
    body = CDNOW.replace("\r", "").split("\n", 1)[1]
    (tmp_path / "CDNOW_master.txt").write_text(body, encoding="ascii")

    assert len(load_cdnow(tmp_path).interactions) == 5


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (" 00010 19970102  2   20.76", " 00010 19970102  2", r"line 5: expected 4 whitespace"),
        ("19970102", "1997-01-02", r"line 5: date must be a YYYYMMDD date, got '1997-01-02'"),
        ("19970102", "19971302", r"line 5: date must be a YYYYMMDD date, got '19971302'"),
        ("  2   20.76", "  2.5   20.76", r"line 5: number_of_cds must be an integer"),
        ("  2   20.76", "  2   $20.76", r"line 5: dollar_value must be a finite number"),
        (" 00010 ", " C10 ", r"line 5: customer id must be digits, got 'C10'"),
    ],
)
def test_malformed_cdnow_lines_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = tmp_path / "CDNOW_master.txt"
    path.write_text(CDNOW.replace(old, new, 1), encoding="ascii")

    with pytest.raises(DatasetFormatError, match=r"CDNOW_master\.txt, " + message):
        load_cdnow(path)


# -- fetch, with pip faked -----------------------------------------------------------------------


class FakePip:
    """Stands in for ``subprocess.run``: writes a wheel holding ``members`` or fails."""

    def __init__(self, members: dict[str, str], returncode: int = 0, stderr: str = "") -> None:
        self.members = members
        self.returncode = returncode
        self.stderr = stderr
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        self.calls.append(command)
        if self.returncode == 0:
            package, version = command[command.index("-d") - 1].split("==")
            wheel = Path(command[command.index("-d") + 1]) / f"{package.title()}-{version}-py3.whl"
            with zipfile.ZipFile(wheel, "w") as archive:
                for member, text in self.members.items():
                    archive.writestr(member, text)
        return subprocess.CompletedProcess(command, self.returncode, "", self.stderr)


ML_MEMBERS = {
    "recbole/dataset_example/ml-100k/ml-100k.inter": RECBOLE_INTER,
    "recbole/dataset_example/ml-100k/ml-100k.user": RECBOLE_USER,
    "recbole/dataset_example/ml-100k/ml-100k.item": RECBOLE_ITEM,
    "recbole/__init__.py": "",
}


def test_fetch_extracts_the_wheel_files_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip = FakePip(ML_MEMBERS)
    monkeypatch.setattr(dataset_fetch.subprocess, "run", pip)

    folder = fetch("movielens-100k", tmp_path)
    again = fetch("movielens-100k", tmp_path)

    assert folder == again == tmp_path / "movielens-100k"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ml-100k.inter", "ml-100k.item", "ml-100k.user",
    ]  # fmt: skip
    assert len(pip.calls) == 1
    command = pip.calls[0]
    assert command[1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "recbole==1.2.1"} <= set(command)

    fetch("movielens-100k", tmp_path, force=True)
    assert len(pip.calls) == 2


def test_fetch_cdnow_matches_the_capitalised_wheel_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip = FakePip({"lifetimes/datasets/CDNOW_master.txt": CDNOW})
    monkeypatch.setattr(dataset_fetch.subprocess, "run", pip)

    ds = load("cdnow", tmp_path)

    assert "lifetimes==0.11.3" in pip.calls[0]
    assert len(ds.interactions) == 5


def test_fetch_failure_names_package_pip_output_and_manual_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = "ERROR: Could not find a version that satisfies the requirement recbole==1.2.1"
    monkeypatch.setattr(dataset_fetch.subprocess, "run", FakePip({}, returncode=1, stderr=stderr))

    with pytest.raises(DatasetFetchError) as raised:
        fetch("movielens-100k", tmp_path)

    message = str(raised.value)
    assert "recbole==1.2.1" in message
    assert "exit code 1" in message
    assert stderr in message
    assert "u.data, u.user and u.item" in message
    assert str(tmp_path / "movielens-100k") in message


def test_only_an_unanswered_registry_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #10 (honest CI): tests skip a data set only when the registry never answered; a
    registry that answers "no such version" or a defective wheel is a failure, not a skip."""
    offline = (
        "WARNING: Retrying (Retry(total=4)) after connection broken by "
        "'NewConnectionError(\"Failed to establish a new connection: [Errno 111] "
        "Connection refused\")'\nERROR: No matching distribution found for recbole==1.2.1"
    )
    monkeypatch.setattr(dataset_fetch.subprocess, "run", FakePip({}, returncode=1, stderr=offline))
    with pytest.raises(DatasetUnreachableError):
        fetch("movielens-100k", tmp_path / "offline")

    answered = "ERROR: Could not find a version that satisfies the requirement recbole==1.2.1"
    monkeypatch.setattr(dataset_fetch.subprocess, "run", FakePip({}, returncode=1, stderr=answered))
    with pytest.raises(DatasetFetchError) as raised:
        fetch("movielens-100k", tmp_path / "answered")
    assert not isinstance(raised.value, DatasetUnreachableError)

    members = {k: v for k, v in ML_MEMBERS.items() if not k.endswith(".item")}
    monkeypatch.setattr(dataset_fetch.subprocess, "run", FakePip(members))
    with pytest.raises(DatasetFetchError) as raised:
        fetch("movielens-100k", tmp_path / "defective")
    assert not isinstance(raised.value, DatasetUnreachableError)


def test_fetch_fails_clearly_when_the_wheel_lacks_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = {k: v for k, v in ML_MEMBERS.items() if not k.endswith(".item")}
    monkeypatch.setattr(dataset_fetch.subprocess, "run", FakePip(members))

    with pytest.raises(DatasetFetchError, match=r"has no recbole/dataset_example/.*ml-100k\.item"):
        fetch("movielens-100k", tmp_path)


def test_grouplens_files_supplied_by_hand_need_no_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_grouplens(tmp_path / "movielens-100k")
    pip = FakePip({}, returncode=1)
    monkeypatch.setattr(dataset_fetch.subprocess, "run", pip)

    ds = load("movielens-100k", tmp_path)

    assert pip.calls == []
    assert ds.items["title"].tolist()[1] == "Misérables, Les"


def test_unknown_data_set_names_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown data set 'ml-1m'; allowed: movielens-100k, cdnow"
    ):
        fetch("ml-1m", tmp_path)
    assert DATASETS == ("movielens-100k", "cdnow")


# -- the real data sets (downloads two wheels once per session) ----------------------------------


@pytest.fixture(scope="session")
def real_raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw_dir = tmp_path_factory.mktemp("raw")
    try:
        for name in DATASETS:
            fetch(name, raw_dir)
    except DatasetUnreachableError as exc:  # no package registry reachable; a defect fails
        pytest.skip(f"cannot download the data-set wheels: {exc}")
    return raw_dir


def _write_as_grouplens(ds: RatingsDataset, folder: Path) -> None:
    """Write a loaded MovieLens data set back out in the original GroupLens layout."""
    folder.mkdir()
    inter = ds.interactions
    seconds = (inter["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    rows = zip(
        inter["user_id"], inter["item_id"], inter["rating"].astype(int), seconds, strict=True
    )
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{s}\n" for u, i, r, s in rows))
    users = ds.users.itertuples(index=False)
    (folder / "u.user").write_text("".join("|".join(map(str, u)) + "\n" for u in users))
    lines = []
    for item in ds.items.itertuples(index=False):
        year = None if pd.isna(item.release_year) else int(item.release_year)
        title = item.title if year is None else f"{item.title} ({year})"
        released = "" if year is None else f"01-Jan-{year}"
        lines.append(f"{item.item_id}|{title}|{released}|||{_flags(*item.genres.split('|'))}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))


@pytest.mark.integration
def test_real_movielens_100k(
    real_raw_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = load("movielens-100k", real_raw_dir)

    assert len(ds.interactions) == 100_000
    assert len(ds.users) == 943
    assert len(ds.items) == 1_682
    assert set(ds.users["user_id"]) == {str(i) for i in range(1, 944)}
    assert set(ds.items["item_id"]) == {str(i) for i in range(1, 1683)}
    assert ds.interactions["rating"].value_counts().sort_index().tolist() == [
        6_110, 11_370, 27_145, 34_174, 21_201,
    ]  # fmt: skip
    assert not ds.interactions.duplicated(["user_id", "item_id"]).any()
    assert ds.items.set_index("item_id").loc["543", "title"] == "Misérables, Les"

    _write_as_grouplens(ds, tmp_path / "ml-100k")
    grouplens = load_movielens_grouplens(tmp_path)
    pd.testing.assert_frame_equal(ds.interactions, grouplens.interactions)
    pd.testing.assert_frame_equal(ds.users, grouplens.users)
    pd.testing.assert_frame_equal(ds.items, grouplens.items)

    pip = FakePip({}, returncode=1)
    monkeypatch.setattr(dataset_fetch.subprocess, "run", pip)
    assert fetch("movielens-100k", real_raw_dir) == real_raw_dir / "movielens-100k"
    assert pip.calls == []  # served from the cache


@pytest.mark.integration
def test_real_cdnow(real_raw_dir: Path) -> None:
    ds = load("cdnow", real_raw_dir)

    assert len(ds.interactions) == 69_659
    assert len(ds.users) == 23_570
    assert ds.users["n_purchases"].sum() == 69_659
    assert ds.interactions["timestamp"].min() == pd.Timestamp("1997-01-01", tz="UTC")
    assert ds.interactions["timestamp"].max() == pd.Timestamp("1998-06-30", tz="UTC")
    assert ds.users["user_id"].iloc[[0, -1]].tolist() == ["1", "23570"]
