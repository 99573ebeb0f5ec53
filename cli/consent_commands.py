"""Consent commands (issue #12): ``tailor consent show``, ``import`` and ``export``.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import HomeOption, app, console, fail, summary_table, workspace

consent_app = typer.Typer(help="The consent ledger: show a person's consent, import, export.")
app.add_typer(consent_app, name="consent", rich_help_panel="Data")

UserOption = Annotated[
    str | None, typer.Option("--user-id", help="The person's user id (or give --anonymous-id).")
]
AnonymousOption = Annotated[
    str | None,
    typer.Option("--anonymous-id", help="The person's anonymous (device) id (or give --user-id)."),
]


def _check(home: Path | None):
    from features.consent.check import ConsentCheck

    return ConsentCheck.for_workspace(workspace(home))


@consent_app.command("show")
def show_command(
    user_id: UserOption = None,
    anonymous_id: AnonymousOption = None,
    country: Annotated[
        str | None,
        typer.Option(help="ISO country code whose regime applies (default: the person's last)."),
    ] = None,
    gpc: Annotated[
        bool, typer.Option("--gpc", help="Answer as for a request with `Sec-GPC: 1`.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """One person's consent per purpose and history; without an id, the policy and counts."""
    from features.consent.ledger import person_key_of

    check = _check(home)
    if user_id is None and anonymous_id is None:
        policy = check.policy
        rows: dict[str, object] = {"policy_version": policy.policy_version}
        rows.update({f"purpose: {n}": p.description for n, p in policy.purposes.items()})
        rows.update({f"regime: {r}": ", ".join(c) for r, c in policy.regimes.items()})
        rows["regime: any other country"] = policy.default_regime
        rows.update(check.ledger.counts())
        console.print(summary_table("consent ledger", rows))
        return
    key = person_key_of(user_id, anonymous_id)
    state = check.state(key, country=country, gpc=gpc)
    table = Table(
        title=f"consent: {state.regime}, policy {state.policy_version}"
        + (", needs the banner" if state.needs_banner else "")
    )
    for column in ("purpose", "allowed", "reason", "chosen at"):
        table.add_column(column)
    for purpose, decision in state.decisions.items():
        chosen = decision.choice.recorded_at.isoformat() if decision.choice else "-"
        table.add_row(purpose, "yes" if decision.allowed else "no", decision.reason, chosen)
    console.print(table)
    console.print(f"{len(state.history)} records in the history")


@consent_app.command("import")
def import_command(
    csv_file: Annotated[
        Path,
        typer.Argument(
            help="CSV of existing choices: user_id or anonymous_id, one column per purpose "
            "(true/false), optional policy_version, source, timestamp, recorded_at, country."
        ),
    ],
    home: HomeOption = None,
) -> None:
    """Import existing choices into the ledger (all rows or none; errors name row and field)."""
    from features.consent.files import import_csv

    check = _check(home)
    done = import_csv(check.ledger, csv_file)
    console.print(
        summary_table(
            f"imported {csv_file}",
            {
                "records": done.rows,
                "people": done.people,
                "accepted": done.accepted,
                "refused": done.refused,
            },  # fmt: skip
        )
    )


@consent_app.command("export")
def export_command(
    out: Annotated[
        Path, typer.Option("--out", help="File to write: CSV for the ledger, JSON for a person.")
    ],
    user_id: UserOption = None,
    anonymous_id: AnonymousOption = None,
    home: HomeOption = None,
) -> None:
    """Export the whole ledger as CSV (the import format), or one person's records as JSON."""
    from features.consent.files import export_csv
    from features.consent.ledger import person_key_of

    check = _check(home)
    if user_id is None and anonymous_id is None:
        count = export_csv(check.ledger, out)
        console.print(f"written: {out} ({count} records)")
        return
    key = person_key_of(user_id, anonymous_id)
    records = check.ledger.export(key)
    if not records:
        fail(f"no consent records for {'--user-id' if user_id else '--anonymous-id'} given")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"consent": records}, indent=2) + "\n", encoding="utf-8")
    console.print(f"written: {out} ({len(records)} records)")
