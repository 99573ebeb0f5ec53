"""Real public data sets, fetched offline from PyPI wheels and loaded into one shape.

Only package registries are reachable from Tailor's build machines, so the data sets come out of
wheels that ship them: MovieLens-100K from ``recbole==1.2.1`` (RecBole "atomic files") and CDNOW
from ``lifetimes==0.11.3``. :func:`fetch` runs ``pip download`` for the wheel (never installs it),
copies the data files into ``<raw_dir>/<name>/`` and leaves them there as a cache. The original
GroupLens files (``u.data``, ``u.user``, ``u.item``) load too, through
:func:`load_movielens_grouplens`; copied into ``<raw_dir>/movielens-100k/`` they stand in for the
download. Both MovieLens formats give the same ids (users ``"1".."943"``, items ``"1".."1682"``)
and identical interactions.

Malformed input raises :class:`DatasetFormatError` naming the file, the line and the reason; a
failed download raises :class:`DatasetFetchError` with pip's output and how to supply the files
by hand.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

DATASETS = ("movielens-100k", "cdnow")

ML_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre flags of GroupLens ``u.item``, in column order."""

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
CDNOW_ITEM_ID = "cdnow"
"""CDNOW records purchases, not products: every interaction points at this one pseudo item."""

_ML_USER_FIELDS = ("user_id", "age", "gender", "occupation", "zip_code")
_RECBOLE_FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
_GROUPLENS_FILES = ("u.data", "u.user", "u.item")
_CDNOW_FILE = "CDNOW_master.txt"
_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
_PIP_TIMEOUT_S = 300
_TITLE_YEAR = re.compile(r"^(?P<title>.*\S)\s+\((?P<year>\d{4})\)$")


class DatasetFetchError(RuntimeError):
    """A data set's wheel could not be downloaded or did not hold the expected files."""


class DatasetFormatError(ValueError):
    """A data file is malformed; the message names the file, the line and what is wrong."""


@dataclass(frozen=True)
class RatingsDataset:
    """One data set as three frames, ids as strings.

    ``interactions``: one row per interaction with ``user_id`` (str), ``item_id`` (str),
    ``rating`` (float64) and ``timestamp`` (datetime64[ns, UTC]), sorted stably by
    ``(user_id, timestamp, item_id)`` (ids compare as strings). CDNOW adds ``quantity``.
    ``users``: ``user_id`` plus attributes, one row per user. ``items``: ``item_id`` plus
    attributes, one row per item.
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing or "user_id" not in self.users.columns or "item_id" not in self.items.columns:
            raise ValueError(
                f"{self.name}: interactions need columns {', '.join(INTERACTION_COLUMNS)} "
                f"(missing: {', '.join(missing) or 'none'}); users need user_id, items item_id"
            )


# -- fetching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WheelSource:
    package: str
    version: str
    members: tuple[tuple[str, str], ...]  # (path inside the wheel, cached file name)
    by_hand: str  # how to supply the files without pip, {folder} filled in


_SOURCES = {
    "movielens-100k": _WheelSource(
        package="recbole",
        version="1.2.1",
        members=tuple((f"recbole/dataset_example/ml-100k/{f}", f) for f in _RECBOLE_FILES),
        by_hand=(
            "unzip ml-100k.zip from https://grouplens.org/datasets/movielens/100k/ and copy "
            "u.data, u.user and u.item into {folder} (or load that folder directly with "
            "load_movielens_grouplens)"
        ),
    ),
    "cdnow": _WheelSource(
        package="lifetimes",
        version="0.11.3",
        members=((f"lifetimes/datasets/{_CDNOW_FILE}", _CDNOW_FILE),),
        by_hand=f"copy {_CDNOW_FILE} (customer id, YYYYMMDD date, CDs, dollars) into {{folder}}",
    ),
}


def fetch(name: str, raw_dir: Path, *, force: bool = False) -> Path:
    """Make sure data set ``name`` is cached under ``raw_dir / name`` and return that folder.

    Files already there are used as they are (no download) unless ``force`` is set. For
    MovieLens, GroupLens files copied there by hand count as cached too.
    """
    source = _source(name)
    folder = Path(raw_dir) / name
    if not force and _is_cached(name, folder):
        logger.debug("using cached %s in %s", name, folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tailor-wheel-") as tmp:
        wheel = _download_wheel(name, source, folder, Path(tmp))
        _extract_members(name, source, wheel, folder)
    logger.info("fetched %s from %s==%s into %s", name, source.package, source.version, folder)
    return folder


def load(name: str, raw_dir: Path) -> RatingsDataset:
    """Fetch data set ``name`` if it is not cached yet, then load it.

    For MovieLens, GroupLens files in the cache folder (supplied by hand) are read in preference
    to the wheel's RecBole files; both give the same frames.
    """
    folder = fetch(name, raw_dir)
    if name == "cdnow":
        return load_cdnow(folder / _CDNOW_FILE)
    if all((folder / f).is_file() for f in _GROUPLENS_FILES):
        return load_movielens_grouplens(folder)  # files the user supplied win over the wheel's
    return load_movielens_recbole(folder)


def _source(name: str) -> _WheelSource:
    if name not in _SOURCES:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    return _SOURCES[name]


def _is_cached(name: str, folder: Path) -> bool:
    wheel_files = [folder / target for _, target in _SOURCES[name].members]
    if all(p.is_file() for p in wheel_files):
        return True
    return name == "movielens-100k" and all((folder / f).is_file() for f in _GROUPLENS_FILES)


def _download_wheel(name: str, source: _WheelSource, folder: Path, dest: Path) -> Path:
    """``pip download`` the source's wheel (no dependencies, wheels only) into ``dest``."""
    requirement = f"{source.package}=={source.version}"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        requirement, "-d", str(dest),
    ]  # fmt: skip
    by_hand = source.by_hand.format(folder=folder)
    logger.info("downloading %s to fetch %s", requirement, name)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetFetchError(
            f"could not run pip to download {requirement} for data set {name!r}: {exc}. "
            f"To supply the files by hand, {by_hand}."
        ) from exc
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-15:])
        raise DatasetFetchError(
            f"pip could not download {requirement} for data set {name!r} "
            f"(exit code {result.returncode}). pip said:\n{tail}\n"
            f"To supply the files by hand, {by_hand}."
        )
    prefix = f"{source.package}-{source.version}-".lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if len(wheels) != 1:
        found = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise DatasetFetchError(
            f"pip download of {requirement} left {found} in {dest}, expected one "
            f"{prefix}*.whl. To supply the files by hand, {by_hand}."
        )
    return wheels[0]


def _extract_members(name: str, source: _WheelSource, wheel: Path, folder: Path) -> None:
    """Copy the data files out of the wheel; each lands under a temporary name, then renames."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member, target in source.members:
                try:
                    data = archive.read(member)
                except KeyError:
                    raise DatasetFetchError(
                        f"{wheel.name} has no {member}; cannot fetch data set {name!r}. "
                        f"To supply the files by hand, {source.by_hand.format(folder=folder)}."
                    ) from None
                partial = folder / f"{target}.part"
                partial.write_bytes(data)
                os.replace(partial, folder / target)
    except zipfile.BadZipFile as exc:
        raise DatasetFetchError(f"{wheel} is not a valid wheel (zip): {exc}") from exc


# -- MovieLens-100K --------------------------------------------------------------------------


def load_movielens_recbole(folder: Path) -> RatingsDataset:
    """Load MovieLens-100K from RecBole atomic files ``ml-100k.{inter,user,item}`` in ``folder``.

    Atomic files are tab-separated with a ``name:type`` header; extra columns are ignored.
    RecBole split the year off the GroupLens title (``release_year``) and kept the genres as a
    space-separated ``class`` token_seq; genres come out joined by ``|``. Release years that are
    not a year (RecBole writes ``unkonwn`` and ``V``) fall back to a ``(YYYY)`` ending the title,
    else missing.
    """
    inter_path, user_path, item_path = (
        _require_file(Path(folder), f, _RECBOLE_FILES) for f in _RECBOLE_FILES
    )
    interactions = _ml_interactions(_read_atomic(inter_path, INTERACTION_COLUMNS))
    users = _ml_users(_read_atomic(user_path, _ML_USER_FIELDS))

    table = _read_atomic(item_path, ("item_id", "movie_title", "release_year", "class"))
    titles, years, genres = [], [], []
    for lineno, title, year_text, classes in zip(
        table.linenos, table["movie_title"], table["release_year"], table["class"], strict=True
    ):
        title = "unknown" if title == "unkonwn" else title  # RecBole's typo for GroupLens 267
        year = int(year_text) if re.fullmatch(r"\d{4}", year_text.strip()) else None
        if year is None:
            title, year = _split_title(title)
        unknown = [g for g in classes.split() if g not in ML_GENRES]
        if unknown:
            raise _format_error(item_path, lineno, f"unknown genre(s) {unknown} in class")
        titles.append(title)
        years.append(year)
        genres.append(sorted(classes.split(), key=ML_GENRES.index))
    items = _ml_items(table, titles, years, genres)
    return _ml_dataset(interactions, users, items, inter_path)


def load_movielens_grouplens(folder: Path) -> RatingsDataset:
    """Load MovieLens-100K from the original GroupLens files ``u.data``, ``u.user``, ``u.item``.

    ``folder`` may hold the files, hold the unzipped archive's ``ml-100k/`` folder, or be the
    path of ``u.data`` itself. ``u.item`` is latin-1 in the original archive; a UTF-8 copy reads
    too. Titles lose a trailing ``(YYYY)``, which becomes ``release_year`` (else the year of the
    release date), as in RecBole's files.
    """
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    elif not (folder / "u.data").is_file() and (folder / "ml-100k" / "u.data").is_file():
        folder = folder / "ml-100k"
    data_path, user_path, item_path = (
        _require_file(folder, f, _GROUPLENS_FILES) for f in _GROUPLENS_FILES
    )
    interactions = _ml_interactions(_read_fields(data_path, "\t", INTERACTION_COLUMNS))
    users = _ml_users(_read_fields(user_path, "|", _ML_USER_FIELDS))

    names = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *ML_GENRES)
    table = _read_fields(item_path, "|", names)
    titles, years, genres = [], [], []
    for row, lineno in enumerate(table.linenos):
        title, year = _split_title(table["title"][row].strip())
        released = table["release_date"][row].strip()
        if year is None and released:
            try:
                year = datetime.strptime(released, "%d-%b-%Y").year
            except ValueError:
                reason = f"release date must look like 01-Jan-1995, got {released!r}"
                raise _format_error(item_path, lineno, reason) from None
        flags = [table[genre][row].strip() for genre in ML_GENRES]
        if any(flag not in ("0", "1") for flag in flags):
            raise _format_error(item_path, lineno, f"genre flags must be 0 or 1, got {flags}")
        titles.append(title)
        years.append(year)
        genres.append([g for g, flag in zip(ML_GENRES, flags, strict=True) if flag == "1"])
    items = _ml_items(table, titles, years, genres)
    return _ml_dataset(interactions, users, items, data_path)


def _ml_interactions(table: _Table) -> pd.DataFrame:
    return _interactions_frame(
        _tokens(table, "user_id"),
        _tokens(table, "item_id"),
        _numbers(table, "rating"),
        _utc_from_seconds(_numbers(table, "timestamp")),
    )


def _ml_users(table: _Table) -> pd.DataFrame:
    users = pd.DataFrame(
        {
            "user_id": _tokens(table, "user_id"),
            "age": _numbers(table, "age", integer=True),
            **{f: [v.strip() for v in table[f]] for f in ("gender", "occupation", "zip_code")},
        }
    )
    _check_unique(table, users["user_id"])
    return users


def _ml_items(
    table: _Table, titles: list[str], years: list[int | None], genres: list[list[str]]
) -> pd.DataFrame:
    items = pd.DataFrame(
        {
            "item_id": _tokens(table, "item_id"),
            "title": pd.Series(titles, dtype=object),
            "release_year": pd.array(years, dtype="Int64"),
            "genres": pd.Series(["|".join(g) for g in genres], dtype=object),
        }
    )
    _check_unique(table, items["item_id"])
    return items


def _ml_dataset(
    interactions: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, path: Path
) -> RatingsDataset:
    """Assemble, refusing interactions whose user or item is missing from the side files."""
    for column, known in (("user_id", users["user_id"]), ("item_id", items["item_id"])):
        unknown = sorted(set(interactions[column]) - set(known))
        if unknown:
            raise DatasetFormatError(
                f"{path}: {len(unknown)} {column}(s) not in the {column.split('_')[0]} file, "
                f"e.g. {unknown[:5]}"
            )
    return RatingsDataset("movielens-100k", interactions, users, items)


def _split_title(title: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` → ``("Toy Story", 1995)``; no trailing year → ``(title, None)``."""
    match = _TITLE_YEAR.match(title)
    return (match["title"], int(match["year"])) if match else (title, None)


# -- CDNOW ------------------------------------------------------------------------------------


def load_cdnow(path: Path) -> RatingsDataset:
    """Load CDNOW purchases from ``CDNOW_master.txt`` (or a folder holding it).

    Each line is ``customer_id date(YYYYMMDD) number_of_cds dollar_value``, whitespace-separated;
    a header line (as in the lifetimes copy) is skipped. Interactions: ``user_id`` is the customer
    id without its zero padding (``00001`` → ``"1"``), ``item_id`` is :data:`CDNOW_ITEM_ID`,
    ``rating`` is the dollar amount, ``timestamp`` the purchase date at midnight UTC, and
    ``quantity`` (int64) the number of CDs. Users, in file order: ``first_purchase``,
    ``n_purchases`` (purchase lines; a customer can have several a day) and ``total_spend``
    (dollars, rounded to cents). Items: the one pseudo item.
    """
    path = Path(path)
    if path.is_dir():
        path = _require_file(path, _CDNOW_FILE, (_CDNOW_FILE,))
    elif not path.is_file():
        raise FileNotFoundError(f"CDNOW file not found: {path}")
    names = ("customer_id", "date", "number_of_cds", "dollar_value")
    table = _read_fields(path, None, names, "ascii")
    if table.linenos and table["customer_id"][0].lower() == "customer_id":
        table = _Table(path, table.linenos[1:], {k: v[1:] for k, v in table.columns.items()})
    for row, customer in enumerate(table["customer_id"]):
        if not customer.isdigit():
            reason = f"customer id must be digits, got {customer!r}"
            raise _format_error(path, table.linenos[row], reason)
    user_ids = [str(int(customer)) for customer in table["customer_id"]]
    dates = pd.to_datetime(pd.Series(table["date"]), format="%Y%m%d", errors="coerce")
    _raise_at_first(table, "date", dates.isna().to_numpy(), "a YYYYMMDD date")
    dollars = _numbers(table, "dollar_value")
    purchases = pd.DataFrame(
        {"user_id": user_ids, "timestamp": dates.dt.tz_localize("UTC"), "spend": dollars}
    )
    by_user = purchases.groupby("user_id", sort=False)
    users = pd.DataFrame(
        {
            "first_purchase": by_user["timestamp"].min().astype("datetime64[ns, UTC]"),
            "n_purchases": by_user.size().astype("int64"),
            "total_spend": by_user["spend"].sum().round(2),
        }
    ).reset_index()
    interactions = _interactions_frame(
        user_ids,
        [CDNOW_ITEM_ID] * len(user_ids),
        dollars,
        dates.to_numpy("datetime64[ns]"),
        quantity=_numbers(table, "number_of_cds", integer=True),
    )
    items = pd.DataFrame({"item_id": pd.Series([CDNOW_ITEM_ID], dtype=object)})
    return RatingsDataset("cdnow", interactions, users, items)


# -- shared parsing helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A parsed text file: raw field text by column name, with each row's 1-based line number."""

    path: Path
    linenos: list[int]
    columns: dict[str, list[str]]

    def __getitem__(self, name: str) -> list[str]:
        return self.columns[name]


def _require_file(folder: Path, name: str, expected: Iterable[str]) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in {folder}; expected {', '.join(expected)}")
    return path


def _read_lines(path: Path, encoding: str) -> list[tuple[int, str]]:
    """Non-blank lines with 1-based line numbers, line endings (LF or CRLF) removed.

    ``encoding="latin-1"`` tries UTF-8 first: latin-1 text is almost never valid UTF-8, so a
    re-encoded copy reads right too. Splits on ``\\n`` only: ``str.splitlines`` would also break
    on latin-1 characters such as ``\\x85``.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if encoding != "latin-1":
            raise DatasetFormatError(f"{path}: not {encoding} text: {exc}") from None
        text = data.decode("latin-1")
    lines = (line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n"))
    return [(lineno, line) for lineno, line in enumerate(lines, start=1) if line.strip()]


def _split_lines(
    path: Path, lines: list[tuple[int, str]], sep: str | None, names: tuple[str, ...]
) -> _Table:
    """Split each line on ``sep`` (``None``: any whitespace); exactly ``len(names)`` fields."""
    rows = []
    sep_name = {None: "whitespace", "\t": "tab", "|": "'|'"}.get(sep, repr(sep))
    for lineno, line in lines:
        fields = line.split(sep)
        if len(fields) != len(names):
            shown = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:5])}, ..."
            reason = (
                f"expected {len(names)} {sep_name}-separated fields ({shown}), "
                f"found {len(fields)}: {_shorten(line)}"
            )
            raise _format_error(path, lineno, reason)
        rows.append(fields)
    columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in names]
    return _Table(path, [n for n, _ in lines], dict(zip(names, columns, strict=True)))


def _read_fields(
    path: Path, sep: str | None, names: tuple[str, ...], encoding: str = "latin-1"
) -> _Table:
    return _split_lines(path, _read_lines(path, encoding), sep, names)


def _read_atomic(path: Path, required: tuple[str, ...]) -> _Table:
    """A RecBole atomic file; columns are named by the header with the ``:type`` dropped."""
    lines = _read_lines(path, "utf-8")
    if not lines:
        raise DatasetFormatError(f"{path}: empty file, expected a name:type header line")
    header_lineno, header = lines[0]
    names = []
    for token in header.split("\t"):
        name, _, kind = token.strip().partition(":")
        if not name or kind not in _ATOMIC_TYPES:
            reason = f"header field {token!r} is not name:type, type one of {_ATOMIC_TYPES}"
            raise _format_error(path, header_lineno, reason)
        names.append(name)
    missing = [name for name in required if name not in names]
    if missing:
        reason = f"missing column(s) {missing}; the header has {names}"
        raise _format_error(path, header_lineno, reason)
    return _split_lines(path, lines[1:], "\t", tuple(names))


def _tokens(table: _Table, name: str) -> pd.Series:
    """Stripped, non-empty id strings."""
    values = [value.strip() for value in table[name]]
    _raise_at_first(table, name, np.array([not v for v in values], dtype=bool), "a non-empty id")
    return pd.Series(values, dtype=object)


def _numbers(table: _Table, name: str, *, integer: bool = False) -> np.ndarray:
    """Finite float64 values (int64 with ``integer``); the first bad one is an error."""
    values = pd.to_numeric(pd.Series(table[name], dtype=object), errors="coerce")
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers)
    if integer:
        bad |= np.isfinite(numbers) & (numbers != np.round(numbers))
    _raise_at_first(table, name, bad, "an integer" if integer else "a finite number")
    return numbers.astype(np.int64) if integer else numbers


def _raise_at_first(table: _Table, name: str, bad: np.ndarray, wanted: str) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        reason = f"{name} must be {wanted}, got {table[name][row]!r}"
        raise _format_error(table.path, table.linenos[row], reason)


def _check_unique(table: _Table, ids: pd.Series) -> None:
    duplicated = ids.duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise _format_error(table.path, table.linenos[row], f"id {ids.iloc[row]!r} appears twice")


def _utc_from_seconds(seconds: np.ndarray) -> np.ndarray:
    """Unix seconds → datetime64[ns]; whole seconds go through int64 so they stay exact."""
    if np.all(seconds == np.floor(seconds)):
        return pd.to_datetime(seconds.astype(np.int64), unit="s").to_numpy("datetime64[ns]")
    return pd.to_datetime(seconds, unit="s").to_numpy("datetime64[ns]")


def _interactions_frame(
    user_ids: Iterable[str],
    item_ids: Iterable[str],
    ratings: np.ndarray,
    timestamps: np.ndarray,
    quantity: np.ndarray | None = None,
) -> pd.DataFrame:
    """The interactions frame in the documented dtypes, sorted by (user, time, item)."""
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(list(user_ids), dtype=object),
            "item_id": pd.Series(list(item_ids), dtype=object),
            "rating": np.asarray(ratings, dtype=np.float64),
            "timestamp": pd.Series(timestamps).dt.tz_localize("UTC").astype("datetime64[ns, UTC]"),
        }
    )
    if quantity is not None:
        frame["quantity"] = np.asarray(quantity, dtype=np.int64)
    frame = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    return frame.reset_index(drop=True)


def _format_error(path: Path, lineno: int, reason: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}, line {lineno}: {reason}")


def _shorten(line: str, limit: int = 120) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "...")


def movielens_file_order(raw_dir: Path) -> pd.DataFrame:
    """MovieLens-100K interactions in the source file's row order (``u.data`` order).

    :func:`load` sorts by (user, time, item); protocols that draw one random number per row in
    file order, like the Microsoft Recommenders stratified split, need the original order.
    """
    dataset = load("movielens-100k", raw_dir)
    folder = Path(raw_dir) / "movielens-100k"
    grouplens = folder / "u.data"
    if grouplens.exists():
        keys = pd.read_csv(grouplens, sep="\t", header=None, usecols=[0, 1], dtype=str)
    else:
        keys = pd.read_csv(folder / "ml-100k.inter", sep="\t", usecols=[0, 1], dtype=str)
    keys.columns = ["user_id", "item_id"]
    indexed = dataset.interactions.set_index(["user_id", "item_id"])
    if not indexed.index.is_unique or len(keys) != len(indexed):
        raise DatasetFormatError(f"{folder}: cannot restore file order (duplicate or missing rows)")
    ordered = indexed.loc[pd.MultiIndex.from_frame(keys)].reset_index()
    return ordered.loc[:, list(dataset.interactions.columns)]
