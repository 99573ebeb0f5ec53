"""API keys and the hash-chained audit log (issue #13), on a real SQLite workspace database."""

from __future__ import annotations

import json

import pytest

from features.security.api_keys import ApiKeyError, KeyStore
from features.security.audit import AuditLog
from features.workspace import Workspace


@pytest.fixture
def store(tmp_path) -> KeyStore:
    return KeyStore.for_workspace(Workspace(home=tmp_path).ensure())


def test_a_created_key_verifies_with_its_role_and_only_its_hash_is_stored(store, tmp_path):
    created = store.create("app", "shop-frontend")
    assert created.key.startswith(f"tk_{created.stored.key_id}_")
    found = store.verify(created.key)
    assert (found.role, found.name) == ("app", "shop-frontend")
    files = b"".join(path.read_bytes() for path in tmp_path.glob("tailor.db*"))  # + the WAL
    assert created.key.encode() not in files  # only the keyed hash is stored
    assert store.hash(created.key).encode() in files
    assert (tmp_path / "secrets" / "api_key_pepper").stat().st_mode & 0o077 == 0


def test_wrong_forged_and_revoked_keys_do_not_verify(store):
    created = store.create("collector")
    key_id = created.stored.key_id
    assert store.verify(created.key[:-1] + ("A" if created.key[-1] != "A" else "B")) is None
    assert store.verify(f"tk_{key_id}_not-the-secret") is None
    assert store.verify("") is None and store.verify("x" * 500) is None
    assert store.revoke(key_id).revoked_at is not None
    assert store.verify(created.key) is None
    [listed] = store.list()
    assert listed.key_id == key_id and not listed.active


def test_another_pepper_cannot_use_a_copied_database(store, tmp_path):
    created = store.create("admin")
    other = KeyStore(store.engine, "another-pepper-of-at-least-32-characters")
    assert other.verify(created.key) is None


def test_unknown_role_and_unknown_key_name_what_is_allowed(store):
    with pytest.raises(ApiKeyError, match="unknown role 'root'; allowed: collector, app, admin"):
        store.create("root")
    with pytest.raises(ApiKeyError, match="no key 'deadbeef'"):
        store.revoke("deadbeef")


def _rewrite(log: AuditLog, change) -> None:
    lines = log.path.read_text().splitlines()
    lines = change(lines)
    log.path.write_text("\n".join(lines) + "\n")


def _log(tmp_path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "audit")
    for i in range(n):
        log.append(actor="key:abc", action="erase", subject=f"pseudo-{i}", details={"n": i})
    return log


def test_audit_chain_holds_and_links_each_entry_to_the_previous(tmp_path):
    log = _log(tmp_path)
    assert log.verify().ok and log.verify().entries == 4
    entries = log.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))


def test_audit_verify_names_the_first_edited_entry(tmp_path):
    log = _log(tmp_path)

    def edit(lines):
        entry = json.loads(lines[2])
        entry["subject"] = "someone-else"
        lines[2] = json.dumps(entry)
        return lines

    _rewrite(log, edit)
    result = log.verify()
    assert (result.bad_line, result.entries) == (3, 2)
    assert "edited" in result.reason


@pytest.mark.parametrize(
    ("change", "bad_line"),
    [
        (lambda lines: lines[:1] + lines[2:], 2),  # a deletion in the middle
        (lambda lines: [lines[0], lines[2], lines[1], lines[3]], 2),  # a reorder
        (lambda lines: lines[:3], 4),  # the last entry cut off (the head file notices)
    ],
)
def test_audit_verify_detects_deletion_reorder_and_truncation(tmp_path, change, bad_line):
    log = _log(tmp_path)
    _rewrite(log, change)
    result = log.verify()
    assert not result.ok and result.bad_line == bad_line, result


def test_audit_appends_continue_the_chain_across_instances(tmp_path):
    _log(tmp_path, 2)
    again = AuditLog(tmp_path / "audit")
    entry = again.append(actor="cli:me", action="keys.revoke")
    assert entry["seq"] == 3 and again.verify().ok
