"""The quarantine: rejected input rows kept with their source, row, field and reason, bounded.

Each ingestion that rejects rows writes one JSON Lines file ``<stamp>-<tag>-<source>.jsonl`` to
the quarantine folder; a record is ``{"source", "row", "field", "reason", "raw"}``. The folder
is bounded three ways, so a hostile client cannot grow it without limit:

* a record keeps at most ``max_raw_bytes`` of the raw row (longer rows are cut, the text ends with
  :data:`TRUNCATED` and the record carries ``"truncated": true``);
* one file holds at most ``max_bytes``; the records past it are counted in a last
  ``{"omitted": n}`` line instead of written;
* after each write, files older than ``max_age`` go, then the oldest files until the folder holds
  at most ``max_bytes`` and ``max_files``.

Listing, purging and rewriting (after a replay, see :func:`features.ingest.replay_quarantine`)
live here too; ``tailor data quarantine list|purge|replay`` calls them.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Ends a raw row cut to ``max_raw_bytes``.
TRUNCATED = "...[truncated]"
_STAMP = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True)
class QuarantineFile:
    path: Path
    written: datetime  # from the file name's stamp (a rewrite keeps it)
    size: int


@dataclass(frozen=True)
class Quarantine:
    """The quarantine folder and its bounds (keyword arguments with defaults for a workspace)."""

    folder: Path
    max_raw_bytes: int = 4096
    max_bytes: int = 256 * 2**20
    max_age: timedelta = timedelta(days=30)
    max_files: int = 10_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        if self.max_raw_bytes < 64 or self.max_bytes < self.max_raw_bytes or self.max_files < 1:
            raise ValueError(
                f"quarantine bounds: need max_raw_bytes >= 64, max_bytes >= max_raw_bytes and "
                f"max_files >= 1; got {self.max_raw_bytes}, {self.max_bytes}, {self.max_files}"
            )

    # -- writing ----------------------------------------------------------------------------
    def bounded_raw(self, raw: Any) -> tuple[Any, bool]:
        """``raw`` itself when its JSON takes at most ``max_raw_bytes``, else the start of that
        JSON text, as a string whose JSON fits, ending with :data:`TRUNCATED`; and whether it
        was cut."""
        text = json.dumps(raw)  # ASCII: characters are bytes in the file
        if len(text) <= self.max_raw_bytes:
            return raw, False
        cut = text[: self.max_raw_bytes]
        while (excess := len(json.dumps(cut + TRUNCATED)) - self.max_raw_bytes) > 0:
            cut = cut[:-excess]  # each character removed frees at least one byte
        return cut + TRUNCATED, True

    def write(self, source: str, records: Iterable[dict[str, Any]]) -> Path:
        """Write ``records`` (each with ``raw``) to a new file, then rotate; returns the file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime(_STAMP)
        path = self.folder / f"{stamp}-{uuid.uuid4().hex[:8]}-{Path(source).name}.jsonl"
        written, omitted = 0, 0
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                raw, cut = self.bounded_raw(record.get("raw"))
                line = json.dumps(record | {"raw": raw} | ({"truncated": True} if cut else {}))
                if written + len(line) + 1 > self.max_bytes - 200:  # room for the last line
                    omitted += 1
                    continue
                handle.write(line + "\n")
                written += len(line) + 1
            if omitted:
                note = f"{omitted} more rejected rows not kept: the file reached {self.max_bytes}"
                handle.write(json.dumps({"source": source, "omitted": omitted, "reason": note}))
                handle.write("\n")
                logger.warning("quarantine %s: %s", path.name, note)
        self.rotate(keep=path)
        return path

    # -- reading ----------------------------------------------------------------------------
    def files(self) -> list[QuarantineFile]:
        """The quarantine files, oldest first."""
        found = []
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not entry.name.endswith(".jsonl") or not entry.is_file():
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            found.append(QuarantineFile(Path(entry.path), _written(entry.name, stat), stat.st_size))
        return sorted(found, key=lambda f: (f.written, f.path.name))

    def find(self, name: str) -> Path:
        """The quarantine file called ``name`` (a file name in the folder, or a path to one)."""
        path = self.folder / Path(name).name
        if not path.is_file():
            known = ", ".join(f.path.name for f in self.files()[-5:]) or "none"
            raise FileNotFoundError(
                f"no quarantine file {name!r} in {self.folder}; latest: {known}"
            )
        return path

    @staticmethod
    def records(path: Path) -> list[dict[str, Any]]:
        """The records of one file; a line that is not a JSON object (edited by hand) becomes a
        record with ``row`` None whose ``raw`` is the line, so replay can report it."""
        out = []
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                record = {"row": None, "reason": f"quarantine line is not JSON: {exc.msg}"}
                record["raw"] = line
            if not isinstance(record, dict):
                record = {"row": None, "reason": "quarantine line is not a JSON object"}
                record["raw"] = line
            out.append(record)
        return out

    # -- removing ---------------------------------------------------------------------------
    def rewrite(self, path: Path, records: list[dict[str, Any]]) -> None:
        """Replace ``path``'s records (atomically); remove the file when none are left."""
        if not records:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        tmp.replace(path)

    def purge(self, older_than: timedelta | None = None) -> tuple[int, int]:
        """Remove every file, or those written more than ``older_than`` ago; returns (files,
        records) removed."""
        cutoff = None if older_than is None else datetime.now(UTC) - older_than
        files = records = 0
        for item in self.files():
            if cutoff is not None and item.written >= cutoff:
                continue
            records += _count_lines(item.path)
            item.path.unlink(missing_ok=True)
            files += 1
        return files, records

    def rotate(self, keep: Path | None = None) -> list[Path]:
        """Remove files older than ``max_age``, then the oldest until the folder fits
        ``max_bytes`` and ``max_files`` (``keep``, the file just written, stays)."""
        now = datetime.now(UTC)
        items = self.files()
        removed: list[Path] = []
        fresh = []
        for item in items:
            if item.path != keep and now - item.written > self.max_age:
                removed.append(item.path)
            else:
                fresh.append(item)
        total = sum(item.size for item in fresh)
        for item in list(fresh):
            if total <= self.max_bytes and len(fresh) <= self.max_files:
                break
            if item.path == keep:
                continue
            removed.append(item.path)
            fresh.remove(item)
            total -= item.size
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            logger.info("quarantine rotation removed %d files", len(removed))
        return removed


def _written(name: str, stat: os.stat_result) -> datetime:
    try:
        return datetime.strptime(name.split("-", 1)[0], _STAMP).replace(tzinfo=UTC)
    except ValueError:  # not written by Quarantine.write: its modification time
        return datetime.fromtimestamp(stat.st_mtime, tz=UTC)


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return 0
