"""Data-subject rights (issue #13): ``tailor privacy erase``, ``export`` and ``verify``.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import HomeOption, app, console, fail, summary_table, workspace

privacy_app = typer.Typer(
    help="A person's data in every store: erase it with a signed receipt, export it, verify."
)
app.add_typer(privacy_app, name="privacy", rich_help_panel="Data")

UserOption = Annotated[
    str | None, typer.Option("--user-id", help="The person's user id (or give --anonymous-id).")
]
AnonymousOption = Annotated[
    str | None,
    typer.Option("--anonymous-id", help="One of the person's anonymous (device) ids."),
]


def _person(ws, user_id: str | None, anonymous_id: str | None):
    from features.privacy.person import resolve

    if user_id is None and anonymous_id is None:
        fail("give --user-id or --anonymous-id")
    return resolve(ws, user_id, anonymous_id)


@privacy_app.command("erase")
def erase_command(
    user_id: UserOption = None,
    anonymous_id: AnonymousOption = None,
    home: HomeOption = None,
) -> None:
    """Erase the person and every id linked to them from every store; print the receipt."""
    from features.privacy.erasure import erase_person

    ws = workspace(home)
    # audit: the audit log's append plugs in here once keys and roles land (issue #13)
    receipt = erase_person(ws, _person(ws, user_id, anonymous_id), audit=None)
    body = receipt["receipt"]
    rows: dict[str, object] = {"person (pseudonym)": body["person"], **body["stores"]}
    rows["total removed"] = body["total"]
    title = "erased: nothing was held" if body["nothing_held"] else "erased"
    console.print(summary_table(title, rows))
    console.print(f"receipt: {receipt['path']}")


@privacy_app.command("export")
def export_command(
    out: Annotated[Path, typer.Option("--out", help="The zip to write (one JSON per store).")],
    user_id: UserOption = None,
    anonymous_id: AnonymousOption = None,
    home: HomeOption = None,
) -> None:
    """Export what every store holds about the person (GDPR Art. 15/20) as a zip of JSON."""
    from features.privacy.erasure import export_person

    ws = workspace(home)
    counts = export_person(ws, _person(ws, user_id, anonymous_id), out)
    console.print(summary_table(f"exported: {out}", counts))


@privacy_app.command("verify")
def verify_command(
    receipt: Annotated[Path, typer.Argument(help="An erasure receipt (JSON) to check.")],
    home: HomeOption = None,
) -> None:
    """Check an erasure receipt's Ed25519 signature against this workspace's key."""
    from features.privacy.receipts import verify_receipt

    try:
        document = json.loads(receipt.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        fail(f"cannot read receipt {receipt}: {exc}")
    body = verify_receipt(document, workspace(home))
    console.print(
        f"valid: erasure of {body['person']} at {body['erased_at']}, "
        f"{body['total']} records in {len(body['stores'])} stores"
    )
