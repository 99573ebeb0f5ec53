"""The append-only, hash-chained audit log of admin actions (issue #13).

One JSON object a line in ``<home>/audit/audit.jsonl``: ``seq`` (1, 2, ...), ``at`` (UTC),
``actor`` (a key id or ``cli:<user>``), ``action``, ``subject``, ``details``, ``prev`` (the
previous entry's ``hash``; 64 zeros for the first) and ``hash`` = SHA-256 of the entry's
canonical JSON without ``hash``. An edited entry fails its own hash; a deleted, inserted or
moved entry breaks the next entry's ``prev`` or the ``seq`` run; :meth:`AuditLog.verify` names
the first bad entry. The head (last ``seq`` and ``hash``) is also written to ``audit.head`` so
cutting entries off the end is detected too (unless the head is rewritten with them: an anchor
outside the host, e.g. the head shipped to a log service, is the complete answer).

Appends from several processes (service workers, commands) are serialized by an exclusive
``flock`` on the log file. Subjects are what the caller passes: callers pass pseudonyms or key
ids, never raw person ids.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.workspace import Workspace

GENESIS = "0" * 64
LOG_FILE, HEAD_FILE = "audit.jsonl", "audit.head"


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of ``entry`` without its ``hash``, as canonical JSON (sorted keys, no spaces)."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def audit_hook(ws: Workspace, actor: str):
    """``hook(action, subject, details)`` appending to ``ws``'s audit log as ``actor``: the
    shape :func:`features.privacy.erasure.erase_person` reports to."""
    log = AuditLog.for_workspace(ws)

    def hook(action: str, subject: str | None, details: dict[str, Any]) -> None:
        log.append(actor=actor, action=action, subject=subject, details=details)

    return hook


def cli_actor() -> str:
    """The actor of a command run on this machine: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@dataclass(frozen=True)
class Verification:
    """The outcome of :meth:`AuditLog.verify`: ``entries`` read, and the first bad entry's
    line number (1-based) with the reason, when any."""

    entries: int
    bad_line: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_line is None


class AuditLog:
    """One workspace's audit log (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOG_FILE
        self.head_path = folder / HEAD_FILE

    @classmethod
    def for_workspace(cls, ws: Workspace) -> AuditLog:
        return cls(ws.home / "audit")

    def append(
        self,
        *,
        actor: str,
        action: str,
        subject: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one entry and return it (with its ``seq`` and ``hash``)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                seq, prev = _last(handle)
                entry: dict[str, Any] = {
                    "seq": seq + 1,
                    "at": datetime.now(UTC).isoformat(timespec="microseconds"),
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    "details": details or {},
                    "prev": prev,
                }
                entry["hash"] = entry_hash(entry)
                line = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)
                handle.write(line.encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
                self._write_head(entry)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return entry

    def _write_head(self, entry: dict[str, Any]) -> None:
        tmp = self.head_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"seq": entry["seq"], "hash": entry["hash"]}))
        os.replace(tmp, self.head_path)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def verify(self) -> Verification:
        """Check every entry's hash, ``seq`` and ``prev`` link, and the head file."""
        prev, seq, count = GENESIS, 0, 0
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                return Verification(count, number, "not a JSON object")
            if not isinstance(entry, dict) or entry.get("hash") != entry_hash(entry):
                return Verification(count, number, "content does not match its hash (edited)")
            if entry.get("prev") != prev or entry.get("seq") != seq + 1:
                return Verification(
                    count, number, f"does not follow entry {seq} (an entry deleted or moved)"
                )
            prev, seq, count = entry["hash"], entry["seq"], count + 1
        head = self._head()
        if head is not None and (head.get("seq"), head.get("hash")) != (seq, prev):
            return Verification(
                count,
                count + 1,
                f"the log ends at entry {seq} but its head says {head.get('seq')} "
                "(entries cut off the end)",
            )
        return Verification(count)

    def _head(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.head_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"seq": None, "hash": None}


def _last(handle) -> tuple[int, str]:
    """The last entry's ``seq`` and ``hash`` of the open log (0 and :data:`GENESIS` if empty)."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return 0, GENESIS
    block = min(size, 64 << 10)
    while True:
        handle.seek(size - block)
        lines = handle.read(block).rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or block == size:
            entry = json.loads(lines[-1])
            return int(entry["seq"]), str(entry["hash"])
        block = min(size, block * 2)
