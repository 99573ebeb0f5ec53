"""Strict parsing of data-set text files into columns, with errors that name file and line.

Shared by every format's loader (:mod:`features.datasets.movielens`,
:mod:`features.datasets.cdnow`): separated-field and RecBole atomic files, typed column checks
and the interactions frame in its documented dtypes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.datasets.types import DatasetFormatError

_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass(frozen=True)
class Table:
    """A parsed text file: raw field text by column name, with each row's 1-based line number."""

    path: Path
    linenos: list[int]
    columns: dict[str, list[str]]

    def __getitem__(self, name: str) -> list[str]:
        return self.columns[name]


def require_file(folder: Path, name: str, expected: Iterable[str]) -> Path:
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
) -> Table:
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
            raise format_error(path, lineno, reason)
        rows.append(fields)
    columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in names]
    return Table(path, [n for n, _ in lines], dict(zip(names, columns, strict=True)))


def read_fields(
    path: Path, sep: str | None, names: tuple[str, ...], encoding: str = "latin-1"
) -> Table:
    return _split_lines(path, _read_lines(path, encoding), sep, names)


def read_atomic(path: Path, required: tuple[str, ...]) -> Table:
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
            raise format_error(path, header_lineno, reason)
        names.append(name)
    missing = [name for name in required if name not in names]
    if missing:
        reason = f"missing column(s) {missing}; the header has {names}"
        raise format_error(path, header_lineno, reason)
    return _split_lines(path, lines[1:], "\t", tuple(names))


def token_values(table: Table, name: str) -> pd.Series:
    """Stripped, non-empty id strings."""
    values = [value.strip() for value in table[name]]
    raise_at_first(table, name, np.array([not v for v in values], dtype=bool), "a non-empty id")
    return pd.Series(values, dtype=object)


def number_values(table: Table, name: str, *, integer: bool = False) -> np.ndarray:
    """Finite float64 values (int64 with ``integer``); the first bad one is an error."""
    values = pd.to_numeric(pd.Series(table[name], dtype=object), errors="coerce")
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers)
    if integer:
        bad |= np.isfinite(numbers) & (numbers != np.round(numbers))
    raise_at_first(table, name, bad, "an integer" if integer else "a finite number")
    return numbers.astype(np.int64) if integer else numbers


def raise_at_first(table: Table, name: str, bad: np.ndarray, wanted: str) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        reason = f"{name} must be {wanted}, got {table[name][row]!r}"
        raise format_error(table.path, table.linenos[row], reason)


def check_unique(table: Table, ids: pd.Series) -> None:
    duplicated = ids.duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise format_error(table.path, table.linenos[row], f"id {ids.iloc[row]!r} appears twice")


def utc_from_seconds(seconds: np.ndarray) -> np.ndarray:
    """Unix seconds → datetime64[ns]; whole seconds go through int64 so they stay exact."""
    if np.all(seconds == np.floor(seconds)):
        return pd.to_datetime(seconds.astype(np.int64), unit="s").to_numpy("datetime64[ns]")
    return pd.to_datetime(seconds, unit="s").to_numpy("datetime64[ns]")


def interactions_frame(
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


def format_error(path: Path, lineno: int, reason: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}, line {lineno}: {reason}")


def _shorten(line: str, limit: int = 120) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "...")
