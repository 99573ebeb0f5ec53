"""Erase a person from every store, with a journal and a signed receipt; export a person.

:func:`erase_person` resolves the person to every linked id, then asks each store of
:func:`~features.privacy.stores.workspace_stores` to erase them, in order (the identity graph
last). A **journal** (``<home>/privacy/journal/<pseudonym>.json``, rewritten atomically after
each store) holds the person's keys and each finished store's count while the erasure runs, so
a crash midway is completed by a rerun with any of their ids, even one the graph no longer
links; it is deleted at the end. Then the workspace's SQLite files are compacted (``VACUUM``,
write-ahead log truncated), so no deleted row survives in a free page, and the signed receipt
(:mod:`features.privacy.receipts`) is written to ``<home>/privacy/receipts/``. What stays is the
**minimal proof**: one line in ``<home>/privacy/erasures.jsonl`` with the pseudonym, the time
and the receipt's SHA-256, no raw id. Erasing again finds nothing and signs a receipt that says
nothing was held.

:func:`export_person` writes what every store holds about a person into a zip, one JSON file
per store (GDPR Art. 15/20).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.privacy.person import Person, PersonStore
from features.privacy.receipts import pseudonym, sign_receipt
from features.privacy.stores import sqlite_files, workspace_stores
from features.workspace import Workspace

logger = logging.getLogger(__name__)

#: ``audit(action, subject, details)``: where an erasure is reported for the audit log. The
#: CLI and the service pass the audit log's ``append`` (issue #13, keys and roles) here.
AuditHook = Callable[[str, str, dict[str, Any]], None]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _journal_path(ws: Workspace, reference: str) -> Path:
    return ws.privacy_dir / "journal" / f"{reference}.json"


def _pending(ws: Workspace, person: Person) -> dict[str, Any] | None:
    """An unfinished erasure naming one of ``person``'s keys (a crash midway), if any."""
    folder = ws.privacy_dir / "journal"
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        journal = json.loads(path.read_text(encoding="utf-8"))
        if set(journal["keys"]) & set(person.keys):
            return journal
    return None


def compact_sqlite(path: Path) -> bool:
    """``VACUUM`` the SQLite file and truncate its write-ahead log; False (logged) when another
    connection holds it too long (the deleted rows are gone either way, their bytes may linger
    in free pages until the next compaction)."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30.0, isolation_level=None)) as db:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True
    except sqlite3.Error as exc:
        logger.warning("could not compact %s after an erasure: %s", path.name, exc)
        return False


def erase_person(
    ws: Workspace,
    person: Person,
    *,
    stores: list[PersonStore] | None = None,
    audit: AuditHook | None = None,
) -> dict[str, Any]:
    """Erase ``person`` (every key :func:`~features.privacy.person.resolve` found) from every
    store; returns the signed receipt (also written under ``<home>/privacy/receipts``).

    Idempotent and restartable (see the module docstring). ``audit``, when given, is called once
    with ``("privacy.erase", <pseudonym>, {"stores": ..., "total": ...})`` after the receipt is
    signed (the hook the audit log plugs into)."""
    journal = _pending(ws, person)
    if journal is None:
        journal = {
            "person": pseudonym(ws, person.canonical),
            "keys": list(person.keys),
            "started_at": datetime.now(UTC).isoformat(),
            "done": {},
        }
    else:  # finish the earlier run: its keys may include ids the graph no longer links
        journal["keys"] = list(dict.fromkeys([*journal["keys"], *person.keys]))
        person = Person(tuple(journal["keys"]))
    path = _journal_path(ws, journal["person"])
    _write_atomic(path, json.dumps(journal).encode())
    for store in stores if stores is not None else workspace_stores(ws):
        if store.name in journal["done"]:
            continue
        journal["done"][store.name] = int(store.erase(person))
        _write_atomic(path, json.dumps(journal).encode())
        logger.info(
            "erasure %s: %s removed %d", journal["person"], store.name, journal["done"][store.name]
        )
    compacted = {p.name: compact_sqlite(p) for p in sqlite_files(ws)}
    total = sum(journal["done"].values())
    receipt = sign_receipt(
        ws,
        {
            "person": journal["person"],
            "requested_at": journal["started_at"],
            "erased_at": datetime.now(UTC).isoformat(),
            "ids": {"user_ids": len(person.user_ids), "anonymous_ids": len(person.anonymous_ids)},
            "stores": journal["done"],
            "total": total,
            "nothing_held": total == 0,
            "compacted": compacted,
        },
    )
    data = json.dumps(receipt, indent=2).encode()
    stamp = receipt["receipt"]["erased_at"].replace(":", "").replace("-", "")[:15]
    receipt_path = ws.privacy_dir / "receipts" / f"{stamp}-{journal['person']}.json"
    _write_atomic(receipt_path, data)
    proof = {
        "person": journal["person"],
        "erased_at": receipt["receipt"]["erased_at"],
        "receipt_sha256": hashlib.sha256(data).hexdigest(),
    }
    with open(ws.privacy_dir / "erasures.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(proof) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()  # the raw keys go last: until here a rerun can finish the work
    if audit is not None:
        audit("privacy.erase", journal["person"], {"stores": journal["done"], "total": total})
    receipt["path"] = str(receipt_path)
    return receipt


def export_person(
    ws: Workspace, person: Person, out: Path, *, stores: list[PersonStore] | None = None
) -> dict[str, int]:
    """Write ``out`` (a zip): ``person.json`` (their ids) and ``<store>.json`` per store with
    what it holds about the person. Returns ``{store: records}`` (a dict counts as one)."""
    counts: dict[str, int] = {}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "person.json",
            json.dumps(
                {
                    "user_ids": person.user_ids,
                    "anonymous_ids": person.anonymous_ids,
                    "exported_at": datetime.now(UTC).isoformat(),
                },
                indent=2,
            ),
        )
        for store in stores if stores is not None else workspace_stores(ws):
            held = store.export(person)
            counts[store.name] = len(held) if isinstance(held, list) else int(bool(held))
            name = store.name.replace(":", "_")
            archive.writestr(f"{name}.json", json.dumps(held, indent=2, default=str))
    os.replace(tmp, out)
    return counts
