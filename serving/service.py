"""The BentoML service: the only BentoML importer, and thin.

Heavy loading happens once in ``__init__`` (the champion from the MLflow registry, the Feast store,
the rules file); each request reads the person's online features and delegates to
:mod:`serving.logic` / :mod:`serving.events`. A background thread follows the registry alias and
swaps models without dropping requests (:mod:`serving.watcher`).

The constructor reads the settings once (:meth:`features.settings.Settings.from_env`; every
variable is in README's "Configuration" table): the workspace, the model name and alias and how
often the alias is polled, the rules and persona files, the body limits, the online read's
bounds. With ``TAILOR_BENTO_MODEL`` (set inside a Bento built by ``tailor build``) it serves that
BentoML model instead of the registry's alias; that model is fixed, so nothing is watched.
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import math
import threading
import time
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
import attr
import bentoml
from bentoml._internal.service.openapi.specification import (
    Info,
    MediaType,
    OpenAPISpecification,
    Reference,
    Response,
    Schema,
)
from bentoml.exceptions import BentoMLException, NotFound
from pydantic import Field

from features import store as feature_store
from features.eventlog import EventLog
from features.ids import person_keys
from features.persona_rules import load_personas
from features.settings import Settings
from features.workspace import Workspace
from models.errors import ConfigError
from serving import logic
from serving.bento import BENTO_MODEL_ENV, load_bento_model
from serving.error_bodies import (
    MAX_JSON_DEPTH,
    BodyLimits,
    ClientErrorLogFilter,
    ErrorShapeMiddleware,
)
from serving.events import BatchTooLargeError, ingest_events
from serving.loader import (
    LoadedModel,
    ServingStartupError,
    alias_version,
    check_feature_service,
    load_registered,
)
from serving.persona_updates import (
    REAPPLY_BATCH,
    PendingPersonas,
    reapply_personas,
    unknown_rule_personas,
    update_personas,
)
from serving.prometheus import service_metrics
from serving.rules import load_rules
from serving.schemas import (
    MAX_EVENTS,
    PERSON_REQUIRED,
    STORE_UNAVAILABLE,
    EventsResponse,
    RecommendRequest,
    RecommendResponse,
    SegmentRequest,
    SegmentResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
)
from serving.store_health import OnlineHealth, ReadinessNoteMiddleware
from serving.watcher import ModelHolder

logger = logging.getLogger(__name__)

#: /recommend runs on the event loop (a sync api's hop to the worker thread costs ~0.2 ms of
#: CPU per request, as much as the request's own work). After an online read slower than
#: SLOW_READ_SECONDS (a locked SQLite file, a Redis timeout; a healthy read takes ~0.2 ms, a
#: reader rebuilt from the registry ~20 ms) it runs in one thread, as a sync api would, for
#: OFF_LOOP_SECONDS, so a stalled store stalls the loop (health checks, timeouts) once at most.
SLOW_READ_SECONDS, OFF_LOOP_SECONDS = 0.25, 30.0
#: Seconds between the checks that re-apply personas whose update failed (serving.persona_updates).
PERSONA_RETRY_SECONDS = 5.0

EventsPayload = Annotated[
    list[dict[str, Any]] | dict[str, Any],
    Field(description=f"One event, or a list of at most {MAX_EVENTS}, in the event schema."),
]
#: BentoML's logger that writes every failed request as ERROR with a traceback.
BENTOML_REQUEST_ERROR_LOGGER = "bentoml._internal.server.http_app"

DESCRIPTION = f"""Tailor's personalization API: recommendations for a person in a request context
(`/recommend`), similar items (`/similar_items`), behavioural segments (`/segment`) and event
ingestion (`/events`).

Every error is a JSON object `{{"error": text, "detail": object}}`; `error` names the fields at
fault, `detail` (when present) carries them as `{{"errors": [{{"field", "message", "type"}}]}}`
or the limit that was exceeded. Request bodies are JSON (else 415), nested at most
{MAX_JSON_DEPTH} levels (else 400), and at most 64 KiB, or 1 MiB and {MAX_EVENTS} events for
`/events` (else 413; the byte limits are the defaults of `TAILOR_MAX_REQUEST_BYTES` and
`TAILOR_MAX_EVENTS_BYTES`). An answer that fell back to popularity, or events that did not reach
the online store, carry a fixed reason in `degraded`."""


def _version() -> str:
    try:
        return importlib.metadata.version("tailor")
    except importlib.metadata.PackageNotFoundError:  # a Bento runs the source, not the package
        return "unknown"


def _error_schema(title: str, description: str) -> Schema:
    return Schema(
        title=title,
        type="object",
        description=description,
        required=["error"],
        properties={
            "error": Schema(title="Message", type="string"),
            "detail": Schema(title="Error Detail", type="object", additionalProperties=True),
        },
    )


def tailored_openapi(spec: OpenAPISpecification) -> OpenAPISpecification:
    """BentoML's document with Tailor's title, version and description, request bodies marked
    required (each API reads an empty body as ``{}``, which none accepts, bar ``/events``'s
    single-event form), ``/events`` documented as one event or a list, the error schemas in the
    shape :mod:`serving.error_bodies` answers, and the 413 and 415 answers of every API."""
    errors = {"InvalidArgument": "Bad Request", "NotFound": "Not Found"}
    errors |= {"InternalServerError": "Internal Server Error"}
    errors |= {"PayloadTooLarge": "Request body over the limit"}
    errors |= {"UnsupportedMediaType": "Body not JSON"}
    for title, description in errors.items():
        spec.components["schemas"][title] = _error_schema(title, description)
    extra = {
        413: ("PayloadTooLarge", "Request body over the limit"),
        415: ("UnsupportedMediaType", "Body not JSON"),
    }
    for route, item in spec.paths.items():
        post = item.post
        if not isinstance(post, dict) or "requestBody" not in post:
            continue
        post["requestBody"]["required"] = True
        for status, (title, description) in extra.items():
            post["responses"][status] = Response(
                description=description,
                content={
                    "application/json": MediaType(schema=Reference(f"#/components/schemas/{title}"))
                },
            )
        if route == "/recommend":  # BentoML flattens the model's anyOf into its first branch
            media = post["requestBody"]["content"]["application/json"]
            person = [Schema(**branch) for branch in PERSON_REQUIRED]
            media = attr.evolve(
                media, schema=attr.evolve(media.schema, required=None, anyOf=person)
            )
            post["requestBody"]["content"]["application/json"] = media
        if route == "/events":
            event = {"type": "object", "additionalProperties": True}
            post["requestBody"]["content"]["application/json"] = MediaType(
                schema=Schema(
                    oneOf=[Schema(type="array", items=Schema(**event)), Schema(**event)],
                    description=f"One event, or a list of at most {MAX_EVENTS} events.",
                )
            )
    info = Info(title="Tailor", version=_version(), description=DESCRIPTION)
    return attr.evolve(spec, info=info)


class TailorService(bentoml.Service):
    """The BentoML service with Tailor's OpenAPI document (:func:`tailored_openapi`)."""

    @property
    def openapi_spec(self) -> OpenAPISpecification:
        return tailored_openapi(super().openapi_spec)


@bentoml.service(name="tailor", traffic={"timeout": 30}, service_class=TailorService)
class Tailor:
    def __init__(self) -> None:
        # a client error is one WARNING line, not an ERROR with the traceback and the input
        logging.getLogger(BENTOML_REQUEST_ERROR_LOGGER).addFilter(ClientErrorLogFilter())
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            raise ServingStartupError(str(exc)) from None
        self.body_limits = BodyLimits.from_settings(settings)
        ws = Workspace.from_env(settings=settings)
        name, alias = settings.model_name, settings.model_alias
        self.rules = load_rules(settings.rules)
        self.personas = load_personas(settings.personas)
        problems = unknown_rule_personas(self.rules, self.personas)
        if problems:
            raise ServingStartupError("; ".join(problems))
        self.store = feature_store.feature_store(ws)
        bento_model = settings.bento_model
        if bento_model:
            try:
                stored = bentoml.models.get(bento_model)
            except NotFound:
                raise ServingStartupError(
                    f"{BENTO_MODEL_ENV}={bento_model!r} is not in the BentoML model store: run "
                    f"`tailor build`, or unset {BENTO_MODEL_ENV} to serve the registry's champion"
                ) from None
            loaded = load_bento_model(Path(stored.path), dict(stored.info.metadata))
        else:
            loaded = load_registered(ws, name, alias)
        check_feature_service(self.store, loaded.feature_service)
        self.metrics = service_metrics()
        self.metrics.serving(loaded.label)
        self.log = EventLog(ws.event_log_dir)
        self.quarantine_dir = ws.quarantine_dir
        self._has_segments = False
        self._segments_checked = -math.inf
        self._segments_recheck = settings.model_poll_seconds
        self._off_loop_until = -math.inf  # see SLOW_READ_SECONDS
        self._off_loop: anyio.CapacityLimiter | None = None  # made on the event loop
        self.online = OnlineHealth(settings.online_retry_seconds)
        self.pending_personas = PendingPersonas()
        self._stop_retry = threading.Event()
        threading.Thread(target=self._retry_personas, name="persona-retry", daemon=True).start()

        def load_checked() -> LoadedModel:
            new = load_registered(ws, name, alias)
            check_feature_service(self.store, new.feature_service)
            return new

        self.models: ModelHolder[LoadedModel] = ModelHolder(
            loaded,
            version_of=lambda model: model.version,
            alias_version=lambda: alias_version(ws, name, alias),
            load=load_checked,
            on_swap=self._swapped,
        )
        if not bento_model:
            self.models.start(settings.model_poll_seconds)
        # What is loaded now (model, store, libraries) lives as long as the worker: keep it out of
        # the cyclic collector, whose full passes over it (~0.3 s each, several a minute under
        # load) were most of /recommend's p99 (issue #5).
        gc.collect()
        gc.freeze()

    def _swapped(self, old: LoadedModel, new: LoadedModel) -> None:
        self.metrics.serving(new.label, old.label)
        gc.unfreeze()  # the replaced model's reference cycles are collectable again
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.models.current is not None and self.store is not None

    @bentoml.on_shutdown
    def _stop_watching(self) -> None:
        self.models.stop()
        self._stop_retry.set()

    def _features(self, person: str, device: str, service: str) -> dict:
        rows = [{"user_id": person, "device_type": device}]
        started = time.perf_counter()
        features = feature_store.online_features(self.store, rows, service)[0]
        self.metrics.feature_read.labels(service=service).observe(time.perf_counter() - started)
        segment = self._segment(person)
        if segment.get("segment_label"):
            features["segment"] = segment["segment_label"]
        return features

    def _segment(self, person: str) -> dict:
        """The person's row of the segment feature service; empty before any `tailor segment`
        run registered it (looked for again every model-poll interval, so a first run is picked
        up without a restart)."""
        now = time.monotonic()
        if not self._has_segments and now - self._segments_checked > self._segments_recheck:
            self._segments_checked = now
            self._has_segments = feature_store.has_feature_service(
                self.store, feature_store.SEGMENT_SERVICE
            )
        if not self._has_segments:
            return {}
        rows = [{"user_id": person}]
        row = feature_store.online_features(self.store, rows, feature_store.SEGMENT_SERVICE)[0]
        return logic.known_segment(row)

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k items for one person (user_id or anonymous_id) in a request context, with the
        strategy and rule behind each item, the rules that fired and the content variant."""
        if not self.online.should_read():  # the store failed a moment ago: popularity at once
            return self._recommend(request, read=False)
        if time.monotonic() < self._off_loop_until:
            if self._off_loop is None:
                self._off_loop = anyio.CapacityLimiter(1)  # one thread: no read contention
            return await anyio.to_thread.run_sync(self._recommend, request, limiter=self._off_loop)
        return self._recommend(request)

    def _recommend(self, request: RecommendRequest, read: bool = True) -> RecommendResponse:
        started = time.perf_counter()
        model = self.models.current  # one read: a swap mid-request does not mix models
        if read:
            features, degraded = logic.read_features(
                lambda: self._features(request.person, request.device, model.feature_service)
            )
            if degraded:
                self.online.failed()
            else:
                self.online.succeeded()
        else:
            features, degraded = {}, STORE_UNAVAILABLE
        if time.perf_counter() - started > SLOW_READ_SECONDS:
            self._off_loop_until = time.monotonic() + OFF_LOOP_SECONDS
        answer = logic.recommend(model.scorer, request, features, self.rules, degraded)
        self.metrics.observe(
            "/recommend", answer.strategy, time.perf_counter() - started, bool(answer.degraded)
        )
        return answer

    @bentoml.api(route="/segment")
    def segment(self, request: SegmentRequest, /) -> SegmentResponse:
        """The person's behavioural segment from the last `tailor segment` run (Feast online)."""
        started = time.perf_counter()
        person = request.user_id
        try:
            row = self._segment(person)
            source = feature_store.SEGMENT_SERVICE if row else "no segmentation run yet"
        except Exception as exc:  # the store is down: say so, never a 5xx
            logger.warning("segment read failed: %s: %s", type(exc).__name__, exc)
            row, source = {}, f"degraded: {STORE_UNAVAILABLE}"
        segment_id = row.get("segment_id")
        answer = SegmentResponse(
            user_id=person,
            segment_id=None if segment_id is None else int(segment_id),
            segment_label=row.get("segment_label") or None,
            source=source,
            request_id=uuid.uuid4().hex,
        )
        self.metrics.observe("/segment", source, time.perf_counter() - started, False)
        return answer

    @bentoml.api(route="/similar_items")
    def similar_items(self, request: SimilarItemsRequest, /) -> SimilarItemsResponse:
        """Items the model finds most similar to one item (404 for an unknown item_id)."""
        started = time.perf_counter()
        try:
            answer = logic.similar_items(self.models.current.scorer, request)
        except logic.UnknownItemError as exc:
            raise NotFound(exc.args[0]) from None
        strategy = answer.items[0].strategy if answer.items else "none"
        self.metrics.observe("/similar_items", strategy, time.perf_counter() - started, False)
        return answer

    def _read_personas(self, people: list[str]) -> list[dict]:
        rows = [{"user_id": person} for person in people]
        return feature_store.online_features(self.store, rows, feature_store.PERSONA_SERVICE)

    def _push_personas(self, rows) -> None:
        feature_store.push_personas(self.store, rows)

    def _fold_personas(self, appended) -> tuple[int, str | None]:
        """Fold the events a call appended into their people's personas (one online read, one
        push); a store failure is returned as the reason, never raised, and the people wait in
        :attr:`pending_personas`. After a success, the people waiting are re-applied too."""
        updated, degraded = update_personas(
            appended, self._read_personas, self._push_personas, self.personas
        )
        self.metrics.persona_updates.labels(outcome="updated").inc(updated)
        if degraded:
            self.metrics.persona_updates.labels(outcome="failed").inc()
            if not appended.empty:
                self.pending_personas.add(person_keys(appended).unique().tolist())
        elif len(self.pending_personas):
            self._reapply_personas()
        return updated, degraded

    def _reapply_personas(self) -> int:
        """Fold the pending people's events again from the log and push them, REAPPLY_BATCH
        people at a time (call under the log's writer lock); on a failure the people not done
        stay pending."""
        people = self.pending_personas.take()
        done = 0
        for start in range(0, len(people), REAPPLY_BATCH):
            batch = people[start : start + REAPPLY_BATCH]
            try:
                done += reapply_personas(
                    batch,
                    self.log.read_people,
                    self._read_personas,
                    self._push_personas,
                    self.personas,
                )
            except Exception as exc:
                self.pending_personas.add(people[start:])
                logger.warning(
                    "re-applying %d pending personas failed: %s",
                    len(people) - start,
                    type(exc).__name__,
                )
                break
        if done:
            logger.info("re-applied the personas of %d people from the event log", done)
            self.metrics.persona_updates.labels(outcome="updated").inc(done)
        return done

    def _retry_personas(self) -> None:
        """Every PERSONA_RETRY_SECONDS, re-apply the pending personas if the store answers."""
        while not self._stop_retry.wait(PERSONA_RETRY_SECONDS):
            if len(self.pending_personas):
                with self.log.writer():  # no /events fold in between: the log is complete
                    self._reapply_personas()

    @bentoml.api(route="/events")
    def events(self, payload: EventsPayload, /) -> EventsResponse:
        """Validate and append events to the log (idempotent by event_id), then push each
        person's real-time activity and persona to the online store; counts and per-row reasons."""
        started = time.perf_counter()
        try:
            # the log's writer lock (threads and worker processes): de-duplication, append and
            # each person's persona read-fold-push happen one call at a time
            with self.log.writer():
                answer = ingest_events(
                    payload,
                    self.log,
                    self.quarantine_dir,
                    lambda activity: feature_store.push_activity(self.store, activity),
                    fold=self._fold_personas,
                )
        except BatchTooLargeError as exc:
            raise BentoMLException(
                str(exc), error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            ) from None
        for outcome in ("accepted", "duplicate", "rejected", "conflict"):
            self.metrics.events.labels(outcome=outcome).inc(getattr(answer, outcome))
        strategy = "push" if not answer.degraded else "log_only"
        self.metrics.observe(
            "/events", strategy, time.perf_counter() - started, bool(answer.degraded)
        )
        return answer


def _body_limits() -> BodyLimits:
    """The running service's limits (read by its constructor), per request."""
    try:
        return bentoml.get_current_service().body_limits
    except BentoMLException:  # not constructed yet: no API request gets this far then
        return BodyLimits()


Tailor.add_asgi_middleware(ErrorShapeMiddleware, limits=_body_limits)
Tailor.add_asgi_middleware(
    ReadinessNoteMiddleware,
    health_of=lambda: getattr(bentoml.get_current_service(), "online", None),
)
