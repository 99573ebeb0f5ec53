"""The adapters of every store that holds people's data, and the registry of a workspace's.

Each adapter has the :class:`~features.privacy.person.PersonStore` shape. :func:`workspace_stores`
lists them in erasure order: the identity graph **last**, because every other store is found
through the ids it links (a crash before it leaves the links, so a rerun finds everything again).

What is not here, and why (README "Erasure and export"): a RabbitMQ queue or a Kafka topic
cannot have single messages removed (their consumers move them into the event log within
seconds: erase after they drained; the disk spool in front of either *is* covered); MLflow
artifacts (the champion's bundle lists training users) are not rewritten; source files under
``raw/`` are the operator's own inputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from features.privacy.person import Person, PersonStore
from features.workspace import Workspace

logger = logging.getLogger(__name__)


def _json_ready(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as plain JSON values (times as ISO text, missing as None)."""
    return json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))


def _mentions(text: str, ids: list[str]) -> bool:
    """Whether JSON ``text`` holds one of ``ids`` as a whole string value (also inside a JSON
    text embedded as a string, as a cut raw row is)."""
    for value in ids:
        quoted = json.dumps(value)
        if quoted in text or json.dumps(quoted)[1:-1] in text:
            return True
    return False


def _is_theirs(row: Any, person: Person) -> bool:
    """Whether an event-like object is the person's: their user id, or no user id and one of
    their anonymous ids."""
    if not isinstance(row, dict):
        return False
    user = row.get("user_id")
    if user:
        return user in person.user_ids
    return bool(row.get("anonymous_id")) and row.get("anonymous_id") in person.anonymous_ids


def _without_device(body: bytes, person: Person) -> bytes | None:
    """Another person's event carrying one of the person's anonymous ids (a shared device):
    the body with that id blanked, as the event log keeps it; None when there is nothing to do."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(event, dict) or event.get("anonymous_id") not in person.anonymous_ids:
        return None
    return json.dumps({**event, "anonymous_id": None}).encode()


@dataclass
class EventLogStore:
    ws: Workspace
    name: str = "event_log"

    def _log(self):
        from features.eventlog import EventLog

        return EventLog(self.ws.event_log_dir)

    def export(self, person: Person) -> list[dict]:
        return _json_ready(self._log().read_people(person.keys))

    def erase(self, person: Person) -> int:
        return self._log().erase_people(person.user_ids, person.anonymous_ids)


@dataclass
class QuarantineStore:
    """Rejected rows naming one of the person's ids anywhere in the record."""

    ws: Workspace
    name: str = "quarantine"

    def _matches(self, person: Person):
        from features.quarantine import Quarantine

        quarantine = Quarantine(self.ws.quarantine_dir)
        for file in quarantine.files():
            records = quarantine.records(file.path)
            theirs = [_mentions(json.dumps(r), person.raw_ids) for r in records]
            yield quarantine, file.path, records, theirs

    def export(self, person: Person) -> list[dict]:
        out = []
        for _, _, records, theirs in self._matches(person):
            out.extend(r for r, mine in zip(records, theirs, strict=True) if mine)
        return out

    def erase(self, person: Person) -> int:
        removed = 0
        for quarantine, path, records, theirs in list(self._matches(person)):
            if any(theirs):
                kept = [r for r, mine in zip(records, theirs, strict=True) if not mine]
                quarantine.rewrite(path, kept)
                removed += sum(theirs)
        return removed


#: Columns naming the person in an offline table.
PERSON_COLUMNS = ("user_id", "consent_key")


@dataclass
class FeatureTableStore:
    """One offline Parquet table with a ``user_id`` column (features, personas, segments,
    micro-segments) or a ``consent_key`` column (the consent view's): rows of the person's keys.
    Rewritten whole (temporary file, rename)."""

    path: Path
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"offline:{self.path.stem}"

    def _key(self) -> str | None:
        """The person column: ``user_id``, or ``consent_key`` in the consent view's table (the
        ledger's decisions in time, issue #12)."""
        if not self.path.exists():
            return None
        names = pq.read_schema(self.path).names
        return next((key for key in PERSON_COLUMNS if key in names), None)

    def _frame(self) -> pd.DataFrame | None:
        return pd.read_parquet(self.path) if self._key() is not None else None

    def export(self, person: Person) -> list[dict]:
        frame = self._frame()
        if frame is None:
            return []
        return _json_ready(frame[frame[self._key()].isin(person.keys)])

    def erase(self, person: Person) -> int:
        frame = self._frame()
        if frame is None:
            return 0
        theirs = frame[self._key()].isin(person.keys)
        if theirs.any():
            schema = pq.read_schema(self.path)
            tmp = self.path.with_suffix(".erase.tmp")
            kept = frame[~theirs].reset_index(drop=True)
            try:
                kept.to_parquet(tmp, index=False, schema=schema.remove_metadata())
            except (TypeError, ValueError):  # a schema pandas cannot follow: its own
                kept.to_parquet(tmp, index=False)
            os.replace(tmp, self.path)
        return int(theirs.sum())


@dataclass
class OnlineFeatureStore:
    """Every ``user_id`` view of the Feast online store (SQLite, or Redis on the scale
    profile): exported as the persona the service reads; erased row by row."""

    ws: Workspace
    name: str = "online_store"

    def export(self, person: Person) -> list[dict]:
        from features.store import export_online

        return export_online(self.ws, list(person.keys))

    def erase(self, person: Person) -> int:
        from features.store import erase_online

        return erase_online(self.ws, list(person.keys))


@dataclass
class LiveSessionStore:
    ws: Workspace
    name: str = "live_sessions"

    def _store(self):
        from features.live_sessions import SessionStore

        return SessionStore.for_workspace(self.ws)

    def export(self, person: Person) -> list[dict]:
        store = self._store()
        return [s for key in person.keys for s in store.export(key)]

    def erase(self, person: Person) -> int:
        store = self._store()
        return sum(store.erase(key) for key in person.keys)


@dataclass
class ConsentStore:
    """The consent ledger: every record of every key. What remains of the person afterwards is
    the minimal proof of the erasure (a pseudonym and a time, see :mod:`.erasure`)."""

    ws: Workspace
    name: str = "consent_ledger"

    def _ledger(self):
        from features.consent.ledger import ConsentLedger

        return ConsentLedger.for_workspace(self.ws)

    def export(self, person: Person) -> list[dict]:
        return self._ledger().export(person.canonical)

    def erase(self, person: Person) -> int:
        return self._ledger().erase_keys(list(person.keys))


@dataclass
class EmbeddedQueueStore:
    """Pending and dead-lettered messages of the embedded queue whose event is the person's."""

    ws: Workspace
    name: str = "event_queue"

    @property
    def path(self) -> Path:
        return self.ws.queue_dir / "events.db"

    def _rows(self, db: sqlite3.Connection, person: Person):
        for table in ("queue", "dead_letters"):
            for seq, body in db.execute(f"SELECT seq, body FROM {table}"):  # noqa: S608
                try:
                    event = json.loads(body)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    event = None
                if _is_theirs(event, person) or (
                    event is None
                    and _mentions(
                        json.dumps(bytes(body).decode("utf-8", "replace")), person.raw_ids
                    )
                ):
                    yield table, seq, event

    def export(self, person: Person) -> list[dict]:
        if not self.path.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.path, timeout=30.0)) as db:
            return [{"state": t, "event": e} for t, _, e in self._rows(db, person)]

    def erase(self, person: Person) -> int:
        if not self.path.exists():
            return 0
        with contextlib.closing(sqlite3.connect(self.path, timeout=30.0)) as db, db:
            db.execute("PRAGMA secure_delete = ON")
            found = list(self._rows(db, person))
            for table, seq, _ in found:
                db.execute(f"DELETE FROM {table} WHERE seq = ?", (seq,))  # noqa: S608
            for table in ("queue", "dead_letters"):
                for seq, body in db.execute(f"SELECT seq, body FROM {table}").fetchall():  # noqa: S608
                    blanked = _without_device(bytes(body), person)
                    if blanked is not None:
                        db.execute(f"UPDATE {table} SET body = ? WHERE seq = ?", (blanked, seq))  # noqa: S608
        return len(found)


@dataclass
class SpoolStore:
    """Spool files (events kept while RabbitMQ was unreachable): the person's messages are cut
    out of each file under the forwarder's own ``flock``, the file rewritten atomically."""

    ws: Workspace
    name: str = "event_spool"

    def _files(self) -> list[Path]:
        from features.broker.spool import SUFFIX

        return sorted(self.ws.spool_dir.glob(f"*{SUFFIX}")) if self.ws.spool_dir.exists() else []

    def _theirs(self, body: bytes, person: Person) -> bool:
        try:
            return _is_theirs(json.loads(body), person)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False

    def export(self, person: Person) -> list[dict]:
        from features.broker.spool import decode_batch

        out = []
        for path in self._files():
            for _, body in decode_batch(path.read_bytes(), path.name):
                if self._theirs(body, person):
                    out.append(json.loads(body))
        return out

    def erase(self, person: Person) -> int:
        from features.broker.spool import decode_batch, encode_batch

        removed = 0
        for path in self._files():
            with open(path, "rb+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # not while a forwarder sends it
                if not path.exists():
                    continue
                messages = decode_batch(handle.read(), path.name)
                kept = [
                    (i, _without_device(b, person) or b)
                    for i, b in messages
                    if not self._theirs(b, person)
                ]
                if kept == messages:
                    continue
                removed += len(messages) - len(kept)
                if kept:
                    tmp = path.with_name(f".{path.name}.erase")
                    tmp.write_bytes(encode_batch(kept))
                    os.replace(tmp, path)
                else:
                    path.unlink()
        return removed


@dataclass
class IdentityStore:
    """The identity graph: the person's nodes, device hints and merge-log rows. Erased last."""

    ws: Workspace
    name: str = "identity_graph"

    def _graph(self):
        from features.identity.graph import IdentityGraph

        return IdentityGraph.for_workspace(self.ws)

    def export(self, person: Person) -> dict:
        return self._graph().export(person.canonical)

    def erase(self, person: Person) -> int:
        graph = self._graph()
        held = graph.export(person.canonical)
        nodes = len(held["aliases"]) if held["merges"] else 0
        count = nodes + len(held["hints"]) + len(held["merges"])
        if count:
            graph.erase(person.canonical)
        return count


def feature_tables(ws: Workspace) -> list[Path]:
    """Every offline Parquet table of the workspace's Feast folder (each written whole)."""
    if not ws.feature_data_dir.exists():
        return []
    return sorted(ws.feature_data_dir.glob("*.parquet"))


def workspace_stores(ws: Workspace) -> list[PersonStore]:
    """Every store of people's data in ``ws``, in erasure order (the identity graph last)."""
    stores: list[PersonStore] = [
        EventLogStore(ws),
        QuarantineStore(ws),
        *(FeatureTableStore(path) for path in feature_tables(ws)),
        OnlineFeatureStore(ws),
        LiveSessionStore(ws),
        ConsentStore(ws),
        EmbeddedQueueStore(ws),
        SpoolStore(ws),
        IdentityStore(ws),
    ]
    return stores


def sqlite_files(ws: Workspace) -> list[Path]:
    """The workspace's own SQLite databases erasure writes to (compacted afterwards, so no
    deleted row's bytes stay in a free page or the write-ahead log)."""
    found = [ws.home / "tailor.db", ws.queue_dir / "events.db", ws.feast_dir / "online_store.db"]
    return [p for p in dict.fromkeys(found) if p.exists()]
