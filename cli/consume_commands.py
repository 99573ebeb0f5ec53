"""``tailor consume``: run the event consumer, rebuild online state, see and re-queue dead letters.

Registered on :data:`cli.common.app` when :mod:`cli.app` imports this module. The work is
:mod:`serving.consumer`'s; this module parses, opens the workspace's broker and store, and
prints.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from cli.common import HomeOption, app, console, fail, say, summary_table, workspace

PANEL = "Serving"
#: Seconds between two progress lines while consuming.
PROGRESS_SECONDS = 5.0


def _date(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date: give YYYY-MM-DD or an ISO-8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("consume", rich_help_panel=PANEL)
def consume(
    replay_from: Annotated[
        str | None,
        typer.Option(
            "--replay-from",
            help="Rebuild the online state (latest activity, persona) of everyone with an event "
            "since this date (YYYY-MM-DD, UTC) from the event log, then exit.",
        ),
    ] = None,
    dead_letters: Annotated[
        bool,
        typer.Option("--dead-letters", help="List the dead letters (poison messages), then exit."),
    ] = False,
    requeue: Annotated[
        bool,
        typer.Option("--requeue", help="Send every dead letter back to the queue, then exit."),
    ] = False,
    drain: Annotated[
        bool,
        typer.Option("--drain", help="Exit once the queue is empty (default: run until stopped)."),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            max=10_000,
            help="Messages handled per batch at most (a batch is what arrived; it grows to this "
            "only while a backlog is cleared).",
        ),
    ] = 2000,  # serving.consumer.BATCH_SIZE (not imported here: the CLI imports lazily)
    limit: Annotated[
        int, typer.Option(min=1, help="Dead letters listed at most (--dead-letters).")
    ] = 100,
    home: HomeOption = None,
) -> None:
    """Run the event consumer: broker → event log (idempotent by event_id) → online features
    and personas, until Ctrl-C or SIGTERM (the batch in hand is finished and acknowledged)."""
    from features.broker.connect import open_broker

    ws = workspace(home)
    since = _date(replay_from) if replay_from else None
    broker = open_broker(ws)
    try:
        if dead_letters or requeue:
            if dead_letters:
                _print_dead_letters(broker, limit)
            if requeue:
                moved = broker.requeue_dead_letters()
                console.print(f"re-queued {moved} dead letters")
            return
        consumer = _consumer(ws)
        if since is not None:
            _replay(consumer, since)
            return
        _run(broker, consumer, batch_size=batch_size, drain=drain)
    finally:
        broker.close()


def _consumer(ws):
    from features import store as feature_store
    from features.consent.check import ConsentCheck
    from features.persona_rules import load_personas
    from serving.consent_gate import ConsentGate
    from serving.consumer import EventConsumer

    personas = load_personas(ws.settings.personas)
    store = feature_store.feature_store(ws)
    # issue #12: personas only for people with personalization consent, as in the service
    gate = ConsentGate(ConsentCheck.for_workspace(ws) if ws.settings.consent_checks else None)
    return EventConsumer.for_workspace(ws, store, personas, consent=gate)


def _print_dead_letters(broker, limit: int) -> None:
    letters = broker.dead_letters(limit)
    table = Table(title=f"dead letters ({broker.kind} broker)")
    table.add_column("message id", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("reason")
    table.add_column("dead since (UTC)", no_wrap=True)
    for letter in letters:
        when = letter.dead_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(letter.message_id, str(letter.attempts), letter.reason, when)
    console.print(table)
    if not letters:
        console.print("no dead letters")


def _replay(consumer, since: datetime) -> None:
    def progress(done: int, total: int) -> None:
        say(f"rebuilt {done} of {total} people")

    try:
        events, people = consumer.replay(since, progress)
    except Exception as exc:
        fail(f"rebuilding the online state failed: {type(exc).__name__}: {exc}")
    console.print(
        summary_table(
            f"online state rebuilt from the log since {since.date().isoformat()}",
            {"events since": events, "people rebuilt": people},
        )
    )


#: `--drain` exits after this long with an empty queue and no message handled.
DRAIN_IDLE_SECONDS = 2.0


def _run(broker, consumer, *, batch_size: int, drain: bool) -> None:
    from serving.consumer import run_consumer

    stop = threading.Event()

    def stop_after_batch(signum, frame) -> None:
        # set from another thread: the handler runs in the main thread, which may hold the
        # event's lock inside stop.wait()
        threading.Thread(target=stop.set).start()

    previous = {
        sig: signal.signal(sig, stop_after_batch) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    worker = threading.Thread(
        target=run_consumer,
        args=(broker, consumer, stop),
        kwargs={"batch_size": batch_size},
        name="event-consumer",
    )
    say(f"consuming from the {broker.kind} queue ({broker.depth()} waiting); Ctrl-C stops")
    started = time.monotonic()
    worker.start()
    try:
        shown, shown_at = None, time.monotonic()
        while worker.is_alive():
            stop.wait(0.2)
            counts = consumer.counts.as_dict()
            due = time.monotonic() - shown_at >= PROGRESS_SECONDS
            if due and counts != shown and not stop.is_set():
                shown, shown_at = counts, time.monotonic()
                say(
                    f"{counts['messages']} messages: {counts['stored']} stored, "
                    f"{counts['duplicate']} duplicate, {counts['conflict']} conflict, "
                    f"{counts['poison']} poison"
                )
            # drained: nothing waiting and no batch handled nor in hand for DRAIN_IDLE_SECONDS
            # (RabbitMQ's depth leaves out what this consumer holds unacknowledged, prefetched
            # included; messages a killed consumer held come back a moment later, the embedded
            # queue's after their lease)
            idle = consumer.idle_seconds() >= DRAIN_IDLE_SECONDS
            if drain and not stop.is_set() and idle and broker.depth() == 0:
                stop.set()
            if stop.is_set():
                worker.join()
    finally:
        stop.set()
        worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = consumer.counts.as_dict()
    counts["seconds"] = round(time.monotonic() - started, 1)
    counts["waiting in the queue"] = broker.depth()
    console.print(summary_table("consumed", counts))
