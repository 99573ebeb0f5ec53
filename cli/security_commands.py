"""Access-control commands (issue #13): ``tailor keys create|list|revoke`` and ``tailor audit
verify``.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module. Creating and
revoking keys are admin actions: each is appended to the audit log.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.common import HomeOption, app, console, fail, summary_table, workspace

PANEL = "Serving"
keys_app = typer.Typer(help="API keys of the service: create (shown once), list, revoke.")
audit_app = typer.Typer(help="The hash-chained audit log of admin actions.")
app.add_typer(keys_app, name="keys", rich_help_panel=PANEL)
app.add_typer(audit_app, name="audit", rich_help_panel=PANEL)


@keys_app.command("create")
def create_command(
    role: Annotated[str, typer.Option(help="collector (/events, /identify), app (/recommend, "
                                           "/similar_items, /segment) or admin (everything).")],
    name: Annotated[str | None, typer.Option(help="A label (default <role>-<key id>).")] = None,
    home: HomeOption = None,
) -> None:  # fmt: skip
    """Create a key and print it once: only its keyed hash is stored."""
    from features.security.api_keys import KeyStore
    from features.security.audit import AuditLog, cli_actor

    ws = workspace(home)
    created = KeyStore.for_workspace(ws).create(role, name)
    stored = created.stored
    AuditLog.for_workspace(ws).append(
        actor=cli_actor(),
        action="keys.create",
        subject=f"key:{stored.key_id}",
        details={"role": stored.role, "name": stored.name},
    )
    console.print(summary_table("API key", {"id": stored.key_id, "role": stored.role,
                                            "name": stored.name}))  # fmt: skip
    console.print("the key (shown once; send it as `Authorization: Bearer <key>`):")
    print(created.key)


@keys_app.command("list")
def list_command(home: HomeOption = None) -> None:
    """Every key: id, role, name, created, revoked (never the key)."""
    from features.security.api_keys import KeyStore

    table = Table(title="API keys")
    for column in ("id", "role", "name", "created", "revoked"):
        table.add_column(column)
    for key in KeyStore.for_workspace(workspace(home)).list():
        revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else ""
        table.add_row(key.key_id, key.role, key.name, key.created_at.strftime("%Y-%m-%d %H:%M"),
                      revoked)  # fmt: skip
    console.print(table)


@keys_app.command("revoke")
def revoke_command(
    key_id: Annotated[str, typer.Argument(help="The key's id as `tailor keys list` shows it.")],
    home: HomeOption = None,
) -> None:
    """Revoke a key: every worker refuses it within a few seconds."""
    from features.security.api_keys import KeyStore
    from features.security.audit import AuditLog, cli_actor

    ws = workspace(home)
    revoked = KeyStore.for_workspace(ws).revoke(key_id)
    AuditLog.for_workspace(ws).append(
        actor=cli_actor(), action="keys.revoke", subject=f"key:{revoked.key_id}"
    )
    console.print(f"revoked {revoked.key_id} ({revoked.role}, {revoked.name})")


@audit_app.command("verify")
def verify_command(home: HomeOption = None) -> None:
    """Check every entry's hash and link: exit 1 naming the first bad entry."""
    from features.security.audit import AuditLog

    log = AuditLog.for_workspace(workspace(home))
    result = log.verify()
    if not result.ok:
        fail(f"{log.path}: entry on line {result.bad_line}: {result.reason}")
    console.print(f"{log.path}: {result.entries} entries, the chain holds")
