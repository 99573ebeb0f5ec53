"""The event consumer (issue #11): broker → event log → online store, at least once, idempotent.

:meth:`EventConsumer.handle` is the broker handler (:data:`features.broker.contract.Handler`). For a
batch of messages published by :func:`serving.publish.publish_events` it

1. decodes and validates each body again; a body that cannot be decoded or validated, or whose
   ``event_id`` is not its ``message_id``, is a *poison* message: reported failed with the reason,
   so the broker dead-letters it after its last attempt;
2. appends the valid events to the event log under the log's writer lock, idempotently by
   ``event_id`` (:func:`features.ingest.ingest_validated`: a redelivered message is a duplicate and
   changes nothing; an ``event_id`` stored with other content is a conflict, quarantined);
   only a failure of *this* write reports the messages failed (they are delivered again);
3. pushes the appended events' activity rows and folds them into the personas
   (:mod:`serving.persona_updates`; with a consent gate, only for people with
   ``personalization``, the others' persona emptied, issue #12); a store failure is logged
   and counted, and the people wait
   in :class:`~serving.persona_updates.PendingPersonas`: every ``PERSONA_RETRY_SECONDS`` (and
   after the next successful update) their persona and latest activity are rebuilt from the
   log, never by redelivering messages;
4. calls each ``on_appended`` hook with the appended frame (the live session store plugs in here);
   a failing hook is logged and counted.

A message delivered again after a crash between the append and the acknowledgement finds its
event in the log (a duplicate): its person's online state is then rebuilt from the log, so the
push and fold the crash cut short are not lost, and never applied twice.

:func:`run_consumer` runs the handler until a stop event (the service's in-process thread,
``tailor consume``); :meth:`EventConsumer.replay` rebuilds the online state from the log
(``tailor consume --replay-from``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features.broker.contract import Broker, Message
from features.context import activity_rows
from features.eventlog import EventLog
from features.identity.graph import IdentityGraph
from features.identity.keys import person_keys
from features.ingest import ingest_validated, validate_rows
from features.live_sessions import SessionStore
from features.personas import PersonaConfig
from features.workspace import Workspace
from serving.identify import link_identify_events, record_fingerprint_hints
from serving.persona_updates import (
    REAPPLY_BATCH,
    PendingPersonas,
    reapply_personas,
    update_personas,
)
from serving.publish import decode_event

logger = logging.getLogger(__name__)

#: Seconds between the checks that rebuild the online state of people whose update failed.
PERSONA_RETRY_SECONDS = 5.0
#: Seconds a consumer waits before consuming again after its broker loop failed.
CONSUME_RETRY_SECONDS = 1.0
#: The source name the consumer's quarantine files carry.
SOURCE = "broker"
#: Messages handled per batch at most. A batch is what waits when it is handed over (the
#: brokers hand over what arrived, not a full batch), so batches are large only when a backlog
#: built up, and large batches are what clears it: each batch costs ~60-130 ms whatever its size
#: (frames, sorts, a log part, a transaction per store), so on 2 cores a batch of 2,000 costs
#: about half as much per event as one of 500 (issue #11).
BATCH_SIZE = 2000

Frame = Callable[[pd.DataFrame], None]
#: ``people -> one row per person`` with their stored ``persona_state`` (the persona read).
ReadStates = Callable[[list[str]], list[dict[str, Any]]]
#: ``events -> each row's person key`` (default :func:`features.identity.keys.person_keys`).
Resolve = Callable[[pd.DataFrame], pd.Series]
#: ``people -> their events in the log`` (default :meth:`EventLog.read_people`).
ReadEvents = Callable[[list[str]], pd.DataFrame]
#: ``appended events -> people whose whole history must be rebuilt`` (e.g. merged by a login).
Link = Callable[[pd.DataFrame], Iterable[str]]


@dataclass
class ConsumeCounts:
    """What a consumer did since it started (``tailor consume`` prints it)."""

    batches: int = 0
    messages: int = 0
    #: events appended to the log
    stored: int = 0
    #: events whose event_id the log already had with the same content (redeliveries, repeats)
    duplicate: int = 0
    #: events whose event_id the log had with other content (quarantined)
    conflict: int = 0
    #: deliveries of messages that could not be decoded or validated
    poison: int = 0
    #: deliveries failed because the event log write failed (delivered again)
    failed: int = 0
    #: activity rows pushed; events whose push failed (rebuilt from the log later)
    pushed: int = 0
    not_pushed: int = 0
    #: people whose persona was updated or rebuilt
    personas: int = 0
    #: on_appended hook calls that raised
    hook_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class EventConsumer:
    """Appends the broker's events to ``log`` and keeps the online store up to date.

    ``push_activity``, ``read_personas`` and ``push_personas`` are the online store
    (:meth:`for_store` builds them from a Feast store); ``metrics`` is the service's
    :class:`serving.prometheus.ServiceMetrics` when it runs in the service.

    Who a person is can be plugged in: ``resolve`` keys the events' people (pending people, the
    people of a redelivery), ``read_events`` reads a person's history for a rebuild, and
    ``link``, called with the appended events before the push and fold, returns people whose
    online state must be rebuilt from their whole history afterwards (an identity graph merging
    two keys at a login).
    """

    def __init__(
        self,
        log: EventLog,
        quarantine_dir: Path,
        push_activity: Frame,
        read_personas: ReadStates,
        push_personas: Frame,
        personas: PersonaConfig,
        *,
        on_appended: Iterable[Frame] = (),
        metrics: Any = None,
        resolve: Resolve = person_keys,
        read_events: ReadEvents | None = None,
        link: Link | None = None,
        consent: Any = None,
    ) -> None:
        self.log = log
        self.quarantine_dir = quarantine_dir
        self.push_activity = push_activity
        self.read_personas = read_personas
        self.push_personas = push_personas
        self.personas = personas
        self.on_appended: list[Frame] = list(on_appended)
        self.metrics = metrics
        self.resolve = resolve
        self.read_events: ReadEvents = read_events or log.read_people
        self.link = link
        # issue #12: personas only for people with personalization consent (ConsentGate)
        self.allowed = consent.personalized if consent is not None and consent.enabled else None
        self.pending = PendingPersonas()
        self.counts = ConsumeCounts()
        self._counts_lock = threading.Lock()  # the handler and the retry thread both count
        self._handling = 0  # handler calls in progress
        self._last_handled = time.monotonic()

    @classmethod
    def for_store(
        cls,
        log: EventLog,
        quarantine_dir: Path,
        store: Any,
        personas: PersonaConfig,
        **kwargs: Any,
    ) -> EventConsumer:
        """A consumer pushing to the Feast store ``store`` (:mod:`features.store`)."""
        from features import store as feature_store

        def read_personas(people: list[str]) -> list[dict]:
            rows = [{"user_id": person} for person in people]
            return feature_store.online_features(store, rows, feature_store.PERSONA_SERVICE)

        return cls(
            log,
            quarantine_dir,
            lambda activity: feature_store.push_activity(store, activity),
            read_personas,
            lambda rows: feature_store.push_personas(store, rows),
            personas,
            **kwargs,
        )

    @classmethod
    def for_workspace(
        cls,
        ws: Workspace,
        store: Any,
        personas: PersonaConfig,
        *,
        log: EventLog | None = None,
        identity: IdentityGraph | None = None,
        sessions: SessionStore | None = None,
        metrics: Any = None,
        consent: Any = None,
    ) -> EventConsumer:
        """The consumer of a workspace, as the service and ``tailor consume`` run it: people
        keyed through the identity graph (identify events link, merged people rebuilt from their
        whole history), the live session store updated with every appended batch."""
        log = log or EventLog(ws.event_log_dir)
        identity = identity or IdentityGraph.for_workspace(ws)
        sessions = sessions or SessionStore.for_workspace(ws)

        fingerprints = ws.settings.fingerprint

        def link(appended: pd.DataFrame) -> list[str]:
            if fingerprints:  # weak hints only: never a reason to merge
                record_fingerprint_hints(identity, appended)
            merged = link_identify_events(identity, appended)
            if metrics is not None and metrics.identify is not None and merged:
                metrics.identify.labels(outcome="linked").inc(len(merged))
            return merged

        return cls.for_store(
            log,
            ws.quarantine_dir,
            store,
            personas,
            metrics=metrics,
            resolve=identity.canonical_keys,
            read_events=lambda people: log.read_people(people, identity.aliases),
            link=link,
            on_appended=[sessions.update],
            consent=consent,
        )

    # -- counting -------------------------------------------------------------------------
    def _count(self, outcome: str, n: int) -> None:
        with self._counts_lock:
            setattr(self.counts, outcome, getattr(self.counts, outcome) + n)
        if self.metrics is not None and n:
            if outcome == "personas":
                self.metrics.persona_updates.labels(outcome="updated").inc(n)
            elif outcome in ("stored", "duplicate", "conflict", "poison", "not_pushed"):
                self.metrics.events.labels(outcome=outcome).inc(n)

    def idle_seconds(self) -> float:
        """Seconds since the handler last returned (since the consumer was built, before any
        batch); 0 while it runs. ``tailor consume --drain`` stops after a while of it: a batch
        in hand can take longer than that, and the broker's depth leaves out what it holds."""
        with self._counts_lock:
            return 0.0 if self._handling else time.monotonic() - self._last_handled

    # -- the handler ----------------------------------------------------------------------
    def handle(self, messages: list[Message]) -> dict[str, str]:
        """The broker handler: ``{message_id: reason}`` for the messages that failed (poison,
        or the log write failed); every other one may be acknowledged."""
        with self._counts_lock:
            self._handling += 1
        try:
            return self._handle(messages)
        finally:
            with self._counts_lock:
                self._handling -= 1
                self._last_handled = time.monotonic()

    def _handle(self, messages: list[Message]) -> dict[str, str]:
        self._count("batches", 1)
        self._count("messages", len(messages))
        failures: dict[str, str] = {}
        decoded: list[tuple[Message, dict]] = []
        for message in messages:
            try:
                decoded.append((message, decode_event(message.body)))
            except ValueError as exc:
                failures[message.message_id] = f"poison: {exc}"
        valid, rejected = validate_rows(iter([raw for _, raw in decoded]))
        for rejection in rejected:
            message = decoded[rejection.row - 1][0]
            failures[message.message_id] = f"poison: invalid event: {rejection.reason}"
        good: list[tuple[Message, dict, dict]] = []
        for row in valid:
            message, raw = decoded[row["_row"] - 1]
            if row["event_id"] != message.message_id:
                failures[message.message_id] = (
                    f"poison: the body's event_id is not the message id {message.message_id!r}"
                )
            else:
                good.append((message, raw, row))
        self._count("poison", len(failures))
        if good:
            failures.update(self._store(good))
        if failures:
            logger.warning("%d of %d messages failed", len(failures), len(messages))
        return failures

    def _store(self, good: list[tuple[Message, dict, dict]]) -> dict[str, str]:
        """Append, then update the online state; ``{message_id: reason}`` when the append
        failed (nothing else fails a message)."""
        # the writer lock (threads and processes): de-duplication and append, and each person's
        # persona read-fold-push, happen one consumer at a time
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.log.writer())
                # validated in handle: numbered as ingest_rows would number the good rows
                rows = [row | {"_row": n} for n, (_, _, row) in enumerate(good, start=1)]
                report = ingest_validated(rows, self.log, self.quarantine_dir, SOURCE)
            except Exception as exc:  # the log did not take them: deliver them again
                logger.exception("appending %d events to the event log failed", len(good))
                self._count("failed", len(good))
                reason = f"event log write failed: {type(exc).__name__}"
                return {message.message_id: reason for message, _, _ in good}
            self._count("stored", report.accepted)
            self._count("duplicate", report.duplicate)
            self._count("conflict", report.conflict)
            if report.appended is not None:
                self._online(report.appended)
            appended = set() if report.appended is None else set(report.appended["event_id"])
            again = [
                row
                for message, _, row in good
                if message.attempts > 1 and row["event_id"] not in appended
            ]
            if again:  # a crash may have cut their push and fold short: rebuild from the log
                self.pending.add(sorted(set(self.resolve(pd.DataFrame(again)))))
                self.reapply_pending()
        return {}

    def _online(self, appended: pd.DataFrame) -> None:
        """Push the appended events' activity, fold their personas, call the hooks; failures are
        logged and counted, the people kept pending (the events are safe in the log)."""
        merged: list[str] = []
        if self.link is not None:
            try:
                merged = list(self.link(appended))
            except Exception as exc:  # the events are logged; a replay links them again
                logger.warning("linking the appended events failed: %s", type(exc).__name__)
        # every person key once (an identity graph lookup), after the link merged people
        if not appended.index.is_unique:
            appended = appended.reset_index(drop=True)
        keys = self.resolve(appended)

        def resolved(frame: pd.DataFrame) -> pd.Series:  # rows of ``appended``, in any order
            return keys.loc[frame.index]

        people = keys.unique().tolist()
        activity = activity_rows(appended, resolved)
        pushed = True
        try:
            self.push_activity(activity)
            self._count("pushed", len(activity))
        except Exception as exc:
            pushed = False
            logger.warning("pushing %d activity rows failed: %s", len(activity), type(exc).__name__)
            self._count("not_pushed", len(appended))
        updated, degraded = update_personas(
            appended, self.read_personas, self.push_personas, self.personas, resolved, self.allowed
        )
        self._count("personas", updated)
        if degraded or not pushed:
            if degraded and self.metrics is not None:
                self.metrics.persona_updates.labels(outcome="failed").inc()
            self.pending.add(people)
        self.pending.add(merged)  # their whole history, under the key they have now
        if not (degraded or not pushed) and len(self.pending):
            self.reapply_pending()
        for hook in self.on_appended:
            try:
                hook(appended)
            except Exception as exc:
                logger.warning(
                    "the on_appended hook %s failed: %s",
                    getattr(hook, "__qualname__", type(hook).__name__),
                    type(exc).__name__,
                )
                self._count("hook_failures", 1)

    # -- rebuilding the online state from the log -------------------------------------------
    def _rebuild(self, people: list[str], read_events: Callable[[list[str]], pd.DataFrame]) -> int:
        """Fold each person's events in the log from the empty state, push the personas and
        the latest activity row of each; the people pushed. Raises what the store raises."""
        seen: list[pd.DataFrame] = []

        def read_and_keep(asked: list[str]) -> pd.DataFrame:
            frame = read_events(asked)
            seen.append(frame)
            return frame

        done = reapply_personas(
            people,
            read_and_keep,
            self.read_personas,
            self.push_personas,
            self.personas,
            self.resolve,
            self.allowed,
        )
        events = seen[0] if seen else pd.DataFrame()
        if not events.empty:
            latest = activity_rows(events, self.resolve).drop_duplicates("user_id", keep="last")
            self.push_activity(latest.reset_index(drop=True))
            self._count("pushed", len(latest))
        return done

    def reapply_pending(self) -> int:
        """Rebuild the pending people's online state from the log, REAPPLY_BATCH at a time
        (call under the log's writer lock); on a failure the people not done stay pending."""
        people = self.pending.take()
        done = 0
        for start in range(0, len(people), REAPPLY_BATCH):
            try:
                done += self._rebuild(people[start : start + REAPPLY_BATCH], self.read_events)
            except Exception as exc:
                self.pending.add(people[start:])
                logger.warning(
                    "rebuilding the online state of %d people failed: %s",
                    len(people) - start,
                    type(exc).__name__,
                )
                break
        if done:
            logger.info("rebuilt the online state of %d people from the event log", done)
            self._count("personas", done)
        return done

    def retry_pending(self, stop: threading.Event) -> None:
        """Every PERSONA_RETRY_SECONDS until ``stop``: rebuild the pending people's state."""
        while not stop.wait(PERSONA_RETRY_SECONDS):
            if len(self.pending):
                with self.log.writer():  # no fold in between: the log is complete
                    self.reapply_pending()

    def replay(
        self, since: datetime, progress: Callable[[int, int], None] | None = None
    ) -> tuple[int, int]:
        """Rebuild the online state (latest activity, persona) of everyone with an event at or
        after ``since`` from the whole log; ``(events since, people rebuilt)``. Holds the log's
        writer lock throughout, so no consumer folds onto a state being rebuilt. ``progress``
        gets ``(people done, people)``. Raises what the store raises."""
        with self.log.writer():
            recent = self.log.read(["user_id", "anonymous_id"], start=pd.Timestamp(since))
            people = sorted(set(self.resolve(recent))) if not recent.empty else []
            if not people:
                return len(recent), 0
            everything = self.log.read()
            keys = self.resolve(everything)
            mine = keys.isin(people).to_numpy()
            everything, keys = everything[mine], keys[mine]

            def read_events(asked: list[str]) -> pd.DataFrame:
                return everything[keys.isin(asked).to_numpy()]

            done = 0
            for start in range(0, len(people), REAPPLY_BATCH):
                done += self._rebuild(people[start : start + REAPPLY_BATCH], read_events)
                if progress is not None:
                    progress(min(start + REAPPLY_BATCH, len(people)), len(people))
        self._count("personas", done)
        return len(recent), done


def run_consumer(
    broker: Broker,
    consumer: EventConsumer,
    stop: threading.Event,
    *,
    batch_size: int = BATCH_SIZE,
    max_wait_seconds: float = 0.2,
) -> None:
    """Consume until ``stop`` is set (then the batch in hand is finished and acknowledged), with
    the pending-persona retry beside it; a failing broker loop (connection lost) is logged and
    started again after CONSUME_RETRY_SECONDS."""
    retry = threading.Thread(
        target=consumer.retry_pending, args=(stop,), name="persona-retry", daemon=True
    )
    retry.start()
    try:
        while not stop.is_set():
            try:
                broker.consume(
                    consumer.handle,
                    stop=stop,
                    batch_size=batch_size,
                    max_wait_seconds=max_wait_seconds,
                )
            except Exception as exc:
                logger.warning(
                    "the %s consumer stopped: %s: %s; consuming again in %.0f s",
                    broker.kind,
                    type(exc).__name__,
                    exc,
                    CONSUME_RETRY_SECONDS,
                )
                stop.wait(CONSUME_RETRY_SECONDS)
    finally:
        retry.join(timeout=PERSONA_RETRY_SECONDS + 1)


class ConsumerThread:
    """:func:`run_consumer` in a daemon thread (the service's in-process consumer)."""

    def __init__(self, broker: Broker, consumer: EventConsumer, **kwargs: Any) -> None:
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=run_consumer,
            args=(broker, consumer, self.stop_event),
            kwargs=kwargs,
            name="event-consumer",
            daemon=True,
        )

    def start(self) -> ConsumerThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in hand (acknowledged), waiting at most ``timeout`` seconds."""
        self.stop_event.set()
        self.thread.join(timeout)
