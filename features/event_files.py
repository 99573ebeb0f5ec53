"""Reading event files row by row: CSV, Parquet and JSON Lines, decoded per row.

Files are UTF-8 (a byte-order mark is skipped) or UTF-16 (told by its mark, or by the zero bytes
of ASCII text); each is read with undecodable bytes kept as escapes, so a row holding bytes that
are not text in that encoding becomes a :class:`Rejection` with its row number and the rows
around it are read. A file that is not an event file at all (binary, a table of something else)
raises :class:`EventFileError`: one line naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa

from features.schema import EVENT_COLUMNS
from models.errors import DataError

FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
#: Columns every event file must have (one of user_id / anonymous_id is checked per row).
REQUIRED_COLUMNS = ("event_id", "event_type", "timestamp", "session_id")
# Undecodable bytes, read with errors="surrogateescape", become U+DC80..U+DCFF.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


class EventFileError(DataError, ValueError):
    """The file is not an event file at all (binary, another table, no event columns)."""


@dataclass
class Rejection:
    """One rejected input row: ``row`` is 1-based (a CSV's line is ``row + 1``)."""

    row: int
    field: str
    reason: str
    raw: dict[str, Any] | str
    #: The raw row holds bytes that were not text, written as ``\xNN`` (replay refuses it
    #: until an operator fixed them and removed the record's ``undecodable`` mark).
    undecodable: bool = False


@dataclass(frozen=True)
class RawRow:
    """An input row with its own row number (when the reader knows it better than a count)."""

    row: int
    data: dict[str, Any]


def escaped(text: str) -> str:
    """Undecodable bytes as ``\\xNN`` text (a lone surrogate is not valid UTF-8 in a file)."""
    if not _UNDECODABLE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"unknown format {fmt!r}; allowed: csv, parquet, jsonl")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the format of {path.name!r} from its suffix {suffix!r}; "
            f"use one of {', '.join(sorted(FORMATS))} or pass fmt"
        )
    return FORMATS[suffix]


# -- reading --------------------------------------------------------------------------------
def _encoding(path: Path) -> str:
    """UTF-8 unless the file starts with a UTF-16 byte-order mark or looks like UTF-16 text."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if len(head) == 4 and head[1] == 0 and head[3] == 0 and head[0] and head[2]:
        return "utf-16-le"  # no mark, but ASCII letters with zero high bytes
    if len(head) == 4 and head[0] == 0 and head[2] == 0 and head[1] and head[3]:
        return "utf-16-be"
    return "utf-8"


def _open_text(path: Path, newline: str | None = None) -> tuple[IO[str], str]:
    encoding = _encoding(path)
    handle = path.open(encoding=encoding, errors="surrogateescape", newline=newline)
    return handle, encoding.removesuffix("-sig")


def _not_text(path: Path, what: str) -> EventFileError:
    return EventFileError(
        f"{path.name} is not an event file: {what}; expected CSV with a header "
        f"({', '.join(REQUIRED_COLUMNS)}, ...), JSON Lines or Parquet in UTF-8 or UTF-16"
    )


def _check_columns(path: Path, columns: list[str]) -> None:
    """One clear error for a table that is not events, instead of every row rejected."""
    known = [c for c in columns if c in EVENT_COLUMNS]
    shown = ", ".join(repr(c[:40]) for c in columns[:6]) + (" ..." if len(columns) > 6 else "")
    if not known:
        raise _not_text(path, f"none of its columns ({shown or 'none'}) is an event column")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise EventFileError(
            f"{path.name} lacks the event columns {', '.join(missing)} (it has {shown}); "
            f"every event file needs {', '.join(REQUIRED_COLUMNS)}"
        )


def _undecodable(text: str, encoding: str) -> str | None:
    """Why ``text`` is not text in ``encoding``, or None when it is."""
    bad = _UNDECODABLE.search(text)
    if bad is None:
        return None
    byte = ord(bad.group()) - 0xDC00
    return f"not {encoding.upper()} text: byte 0x{byte:02X} at character {bad.start()}"


def read_rows(path: Path, fmt: str | None = None) -> Iterator[dict[str, Any] | RawRow | Rejection]:
    """Yield the raw rows of a CSV, Parquet or JSON Lines file; rows that cannot be read
    (undecodable bytes, malformed lines) as Rejections with their row number.

    Raises :class:`EventFileError` when the file is not an event file at all.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"events file not found: {path}")
    kind = _format_of(path, fmt)
    if kind == "jsonl":
        yield from _jsonl_rows(path)
    elif kind == "csv":
        yield from _csv_rows(path)
    else:
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise _not_text(path, f"not a Parquet file ({exc})") from None
        _check_columns(path, [str(c) for c in frame.columns])
        frame = frame.astype(object).where(frame.notna(), None)
        yield from frame.to_dict(orient="records")


def _jsonl_rows(path: Path) -> Iterator[RawRow | Rejection]:
    handle, encoding = _open_text(path)
    objects = lines = 0
    with handle:
        for row, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            lines += 1
            text = line.rstrip("\n")
            if "\x00" in text and lines == 1:
                raise _not_text(path, "binary content on line 1")
            reason = _undecodable(text, encoding)
            if reason is not None:
                yield Rejection(row, "<line>", reason, escaped(text), undecodable=True)
                continue
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Rejection(row, "<line>", f"invalid JSON: {exc.msg}", text)
                continue
            except RecursionError:
                yield Rejection(row, "<line>", "invalid JSON: nested too deeply", text)
                continue
            if not isinstance(parsed, dict):
                yield Rejection(row, "<line>", "a JSON object is required", text)
                continue
            objects += 1
            yield RawRow(row, parsed)
    if lines and not objects:
        raise _not_text(path, f"none of its {lines} lines is a JSON object")


def _csv_rows(path: Path) -> Iterator[RawRow | Rejection]:
    """Stream a CSV as text cells (ids stay text; '' means missing), each data row numbered from
    1 (a CSV's line is row + 1 when no cell spans lines). Ragged, undecodable or unparseable
    rows are rejected; the header decides whether this is an event file at all."""
    handle, encoding = _open_text(path, newline="")
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise _not_text(path, f"its first line is not a CSV header ({exc})") from None
        if header is None:
            return
        if any("\x00" in cell or _UNDECODABLE.search(cell) for cell in header):
            raise _not_text(path, f"its first line is binary, not {encoding.upper()} text")
        header = [cell.strip() for cell in header]
        _check_columns(path, header)
        width = len(header)
        number = 0
        while True:
            number += 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Rejection(number, "<line>", f"unreadable CSV: {exc}", "")
                continue
            if not cells:
                continue
            if len(cells) != width:
                reason = f"{len(cells)} cells but the header has {width}"
                yield Rejection(number, "<line>", reason, escaped(",".join(cells)))
                continue
            data = dict(zip(header, cells, strict=True))
            bad = next((c for c in header if _UNDECODABLE.search(data[c])), None)
            if bad is not None:
                reason = f"{bad}: {_undecodable(data[bad], encoding)}"
                raw = {k: escaped(v) for k, v in data.items()}
                yield Rejection(number, bad, reason, raw, undecodable=True)
                continue
            yield RawRow(number, data)
