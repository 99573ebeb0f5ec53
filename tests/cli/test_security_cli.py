"""``tailor keys create|list|revoke`` and ``tailor audit verify`` (issue #13) on a real
workspace database and audit log."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from cli.app import app
from features.security.api_keys import KeyStore
from features.security.audit import AuditLog
from features.workspace import Workspace

runner = CliRunner()


def _run(*args: str, home) -> object:
    return runner.invoke(app, [*args, "--home", str(home)], env={"COLUMNS": "200"})


def test_create_prints_the_key_once_list_never_shows_it_revoke_stops_it(tmp_path):
    created = _run("keys", "create", "--role", "app", "--name", "web", home=tmp_path)
    assert created.exit_code == 0, created.output
    key = re.search(r"^(tk_[0-9a-f]{8}_\S+)$", created.output, re.M).group(1)
    store = KeyStore.for_workspace(Workspace(tmp_path))
    assert store.verify(key).role == "app"

    listed = _run("keys", "list", home=tmp_path)
    key_id = key.split("_")[1]
    assert listed.exit_code == 0 and key_id in listed.output and "web" in listed.output
    assert key not in listed.output and key.split("_", 2)[2] not in listed.output

    revoked = _run("keys", "revoke", key_id, home=tmp_path)
    assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.output
    assert KeyStore.for_workspace(Workspace(tmp_path)).verify(key) is None
    actions = [e["action"] for e in AuditLog.for_workspace(Workspace(tmp_path)).entries()]
    assert actions == ["keys.create", "keys.revoke"]  # admin actions are audited


def test_bad_role_and_unknown_key_are_one_error_line(tmp_path):
    bad = _run("keys", "create", "--role", "root", home=tmp_path)
    assert bad.exit_code == 1
    assert "error: unknown role 'root'; allowed: collector, app, admin" in bad.output
    unknown = _run("keys", "revoke", "deadbeef", home=tmp_path)
    assert unknown.exit_code == 1 and "no key 'deadbeef'" in unknown.output


def test_audit_verify_names_the_first_edited_entry(tmp_path):
    for role in ("app", "collector", "admin"):
        assert _run("keys", "create", "--role", role, home=tmp_path).exit_code == 0
    ok = _run("audit", "verify", home=tmp_path)
    assert ok.exit_code == 0 and "3 entries, the chain holds" in ok.output
    log = AuditLog.for_workspace(Workspace(tmp_path))
    lines = log.path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["details"]["role"] = "admin"  # someone upgrades the record of a key
    lines[1] = json.dumps(entry)
    log.path.write_text("\n".join(lines) + "\n")
    bad = _run("audit", "verify", home=tmp_path)
    assert bad.exit_code == 1
    assert "entry on line 2: content does not match its hash (edited)" in bad.output
