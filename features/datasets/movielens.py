"""MovieLens-100K loaders: RecBole atomic files (the wheel's copy) and the original GroupLens files.

Both formats give the same ids (users ``"1".."943"``, items ``"1".."1682"``) and identical frames.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pandas as pd

from features.datasets.text import (
    Table,
    check_unique,
    format_error,
    interactions_frame,
    number_values,
    read_atomic,
    read_fields,
    require_file,
    token_values,
    utc_from_seconds,
)
from features.datasets.types import INTERACTION_COLUMNS, DatasetFormatError, RatingsDataset

ML_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre flags of GroupLens ``u.item``, in column order."""

_ML_USER_FIELDS = ("user_id", "age", "gender", "occupation", "zip_code")
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
GROUPLENS_FILES = ("u.data", "u.user", "u.item")
_TITLE_YEAR = re.compile(r"^(?P<title>.*\S)\s+\((?P<year>\d{4})\)$")


def load_movielens_recbole(folder: Path) -> RatingsDataset:
    """Load MovieLens-100K from RecBole atomic files ``ml-100k.{inter,user,item}`` in ``folder``.

    Atomic files are tab-separated with a ``name:type`` header; extra columns are ignored.
    RecBole split the year off the GroupLens title (``release_year``) and kept the genres as a
    space-separated ``class`` token_seq; genres come out joined by ``|``. Release years that are
    not a year (RecBole writes ``unkonwn`` and ``V``) fall back to a ``(YYYY)`` ending the title,
    else missing.
    """
    inter_path, user_path, item_path = (
        require_file(Path(folder), f, RECBOLE_FILES) for f in RECBOLE_FILES
    )
    interactions = _ml_interactions(read_atomic(inter_path, INTERACTION_COLUMNS))
    users = _ml_users(read_atomic(user_path, _ML_USER_FIELDS))

    table = read_atomic(item_path, ("item_id", "movie_title", "release_year", "class"))
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
            raise format_error(item_path, lineno, f"unknown genre(s) {unknown} in class")
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
        require_file(folder, f, GROUPLENS_FILES) for f in GROUPLENS_FILES
    )
    interactions = _ml_interactions(read_fields(data_path, "\t", INTERACTION_COLUMNS))
    users = _ml_users(read_fields(user_path, "|", _ML_USER_FIELDS))

    names = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *ML_GENRES)
    table = read_fields(item_path, "|", names)
    titles, years, genres = [], [], []
    for row, lineno in enumerate(table.linenos):
        title, year = _split_title(table["title"][row].strip())
        released = table["release_date"][row].strip()
        if year is None and released:
            try:
                year = datetime.strptime(released, "%d-%b-%Y").year
            except ValueError:
                reason = f"release date must look like 01-Jan-1995, got {released!r}"
                raise format_error(item_path, lineno, reason) from None
        flags = [table[genre][row].strip() for genre in ML_GENRES]
        if any(flag not in ("0", "1") for flag in flags):
            raise format_error(item_path, lineno, f"genre flags must be 0 or 1, got {flags}")
        titles.append(title)
        years.append(year)
        genres.append([g for g, flag in zip(ML_GENRES, flags, strict=True) if flag == "1"])
    items = _ml_items(table, titles, years, genres)
    return _ml_dataset(interactions, users, items, data_path)


def _ml_interactions(table: Table) -> pd.DataFrame:
    return interactions_frame(
        token_values(table, "user_id"),
        token_values(table, "item_id"),
        number_values(table, "rating"),
        utc_from_seconds(number_values(table, "timestamp")),
    )


def _ml_users(table: Table) -> pd.DataFrame:
    users = pd.DataFrame(
        {
            "user_id": token_values(table, "user_id"),
            "age": number_values(table, "age", integer=True),
            **{f: [v.strip() for v in table[f]] for f in ("gender", "occupation", "zip_code")},
        }
    )
    check_unique(table, users["user_id"])
    return users


def _ml_items(
    table: Table, titles: list[str], years: list[int | None], genres: list[list[str]]
) -> pd.DataFrame:
    items = pd.DataFrame(
        {
            "item_id": token_values(table, "item_id"),
            "title": pd.Series(titles, dtype=object),
            "release_year": pd.array(years, dtype="Int64"),
            "genres": pd.Series(["|".join(g) for g in genres], dtype=object),
        }
    )
    check_unique(table, items["item_id"])
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
