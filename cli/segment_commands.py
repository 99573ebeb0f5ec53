"""Segment commands: ``tailor segment``, ``patterns`` and ``micro-segments``.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    HomeOption,
    app,
    console,
    fail,
    progress_bar,
    say,
    summary_table,
    workspace,
)

PANEL = "Segments and patterns"


@app.command("segment", rich_help_panel=PANEL)
def segment_command(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Segment as of this UTC date/time (default: end of log)."),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(help="Events file: import → features → Feast → segments (needs --out)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="CSV to write: user_id,segment_id,segment_label.")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="movielens-100k or cdnow: segment a real data set (no Feast)."),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(help="Ground truth CSV (user_id,label), e.g. personas.csv: report ARI."),
    ] = None,
    spec: Annotated[Path | None, typer.Option(help="YAML segmentation spec.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override: key=value (algorithm, k_max, scaling, ...)."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Markdown results file to write (figures in a folder beside it)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Segment users: Feast features → clustering → MLflow run + registry → Feast user_segments."""
    import shlex
    import sys

    import pandas as pd

    from training.segments.job import load_segment_job

    job = load_segment_job(spec, list(set_ or []))  # checked before the heavy imports below
    from training.segments.report import write_report
    from training.segments.run import segment_dataset, segment_events, segment_workspace, write_csv

    if events is not None and out is None:
        fail("--events needs --out FILE for the user_id,segment_id,segment_label CSV")
    if dataset is not None and (events is not None or as_of is not None):
        fail("--dataset segments a real data set; it takes no --events or --as-of")
    if truth is not None and not truth.is_file():
        fail(f"--truth {truth}: no such file; pass a CSV of user_id,label (e.g. personas.csv)")
    stamp = None
    if as_of is not None:
        try:
            stamp = pd.Timestamp(as_of)
        except ValueError:
            fail(f"--as-of {as_of!r}: not a date/time; write e.g. 2026-01-22 or 2026-01-22T12:00")
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC")
    ws = workspace(home)
    try:
        truth_frame = pd.read_csv(truth, dtype=str) if truth is not None else None
        if dataset is not None:
            result = segment_dataset(ws, dataset, job, say=say)
            if out is not None:
                write_csv(result.assignments, out)
        elif events is not None:
            result = segment_events(ws, events, job, out, truth=truth_frame, say=say)
        else:
            result = segment_workspace(ws, job, stamp, truth=truth_frame, out=out, say=say)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table(title=f"segments ({result.segmenter.report.algorithm})")
    for column in ("id", "label", "size", "share", "defining features (z)", "neighbour p"):
        table.add_column(column, justify="right" if column in ("size", "share") else "left")
    for row in result.table.to_dict(orient="records"):
        table.add_row(
            str(row["segment_id"]), row["label"], str(row["size"]), f"{row['share']:.1%}",
            row["defining_features"], f"{row['neighbour_p_bonferroni']:.1e}",
        )  # fmt: skip
    console.print(table)
    rows: dict[str, object] = {"MLflow run": result.run_id, "merges": len(result.merges)}
    rows["stability (other seeds)"] = ", ".join(f"{a:.3f}" for _, a in result.stability)
    if result.ari is not None:
        rows["adjusted Rand index"] = result.ari
    if result.version is not None:
        rows["registered"] = f"{job.registered_model}@{result.version}"
        rows["promotion"] = result.promotion.reason
    if out is not None:
        rows["csv"] = str(out)
    if report is not None:
        command = "tailor " + shlex.join(sys.argv[1:])
        notes = ["Bypasses Feast: not an event-schema data set."] if dataset else []
        rows["report"] = str(write_report(result, report, "Segments", [command], notes))
    console.print(summary_table("segment", rows))


# -- navigation patterns and micro-segments -------------------------------------------------
def _min_support(text: str) -> int | float:
    """'50' → a count of sessions, '0.05' → a share of them."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a count (50) nor a fraction (0.05)"
        ) from None


@app.command("patterns", rich_help_panel=PANEL)
def patterns_command(
    out: Annotated[Path, typer.Option(help="CSV to write: pattern, length, support, ...")],
    by: Annotated[
        str, typer.Option(help="Session sequence of: page, category or event_type.")
    ] = "page",
    min_support: Annotated[
        str,
        typer.Option(help="Minimum support: a count of sessions (50) or a fraction (0.05)."),
    ] = "0.05",
    max_length: Annotated[
        int | None, typer.Option(min=1, help="Longest pattern kept (default: no limit).")
    ] = None,
    min_length: Annotated[int, typer.Option(min=1, help="Shortest pattern kept.")] = 1,
    closed: Annotated[
        bool, typer.Option("--closed", help="Keep only closed patterns (no equal-support super).")
    ] = False,
    collapse_repeats: Annotated[
        bool,
        typer.Option(
            "--collapse-repeats", help="Merge runs of one token (product, product → product)."
        ),
    ] = False,
    per_segment: Annotated[
        Path | None,
        typer.Option(help="CSV/Parquet of user_id,segment_label: mine each segment separately."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows of the printed table.")] = 15,
    track: Annotated[bool, typer.Option(help="Log the run and the table to MLflow.")] = True,
    home: HomeOption = None,
) -> None:
    """Frequent sequential navigation patterns over sessions (PrefixSpan), as a CSV and a table."""
    from models.prefixspan import PatternConfig
    from training.patterns import run_patterns

    try:
        config = PatternConfig(
            min_support=_min_support(min_support),
            max_length=max_length,
            min_length=min_length,
            closed=closed,
        )
    except ValueError as exc:
        fail(str(exc))
    ws = workspace(home)
    try:
        with progress_bar() as progress:
            task = progress.add_task(f"mining {by} sequences", total=None)
            result = run_patterns(
                ws,
                config,
                by,
                out=out,
                segments=per_segment,
                collapse_repeats=collapse_repeats,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
                track=track,
            )
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    kind = "closed patterns" if closed else "patterns"
    table = Table(title=f"top {kind} of {by} sequences ({result.n_sessions} sessions)")
    shown = result.table.head(top)
    if result.segments:  # the top few of every segment
        per = max(1, top // len(result.segments))
        shown = result.table.groupby("segment", sort=False).head(per)
        table.add_column("segment")
    for column in ("pattern", "length", "support", "share"):
        table.add_column(column, justify="left" if column == "pattern" else "right")
    for row in shown.to_dict(orient="records"):
        cells = [row["pattern"], str(row["length"]), str(row["support"])]
        cells.append(f"{row['support_fraction']:.3f}")
        table.add_row(*([row["segment"]] if result.segments else []), *cells)
    console.print(table)
    summary: dict[str, object] = {"patterns": result.n_patterns, "seconds": result.seconds}
    if result.segments:
        summary["segments"] = len(result.segments)
        summary["sessions without a segment"] = result.unassigned_sessions
    summary["written"] = str(result.out)
    if result.run_id:
        summary["MLflow run"] = result.run_id
    console.print(summary_table("patterns", summary))


@app.command("micro-segments", rich_help_panel=PANEL)
def micro_segments_command(
    rules: Annotated[
        Path, typer.Argument(help="YAML rules, e.g. experiments/micro_segments.yaml.")
    ],
    out: Annotated[Path, typer.Option(help="CSV to write: user_id,micro_segment.")],
    feast: Annotated[
        bool, typer.Option(help="Update the user_micro_segments Feast view (offline + online).")
    ] = True,
    home: HomeOption = None,
) -> None:
    """Evaluate micro-segment rules on the event log; write the lists and the Feast feature."""
    from training.segments.micro import load_rules, run_micro_segments

    loaded = load_rules(rules)
    ws = workspace(home)
    try:
        with console.status("evaluating micro-segment rules"):
            result = run_micro_segments(ws, loaded, out, feast=feast)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table(title=f"micro-segments as of {result.segments.as_of}")
    table.add_column("micro-segment")
    table.add_column("members", justify="right")
    table.add_column("rule")
    for rule in loaded:
        table.add_row(rule.name, str(result.segments.counts[rule.name]), rule.description)
    console.print(table)
    console.print(f"people left out without personalization consent: {result.left_out}")
    console.print(f"written: {result.out}")
    if result.feast_table is not None:
        console.print(f"Feast view user_micro_segments updated from {result.feast_table}")
