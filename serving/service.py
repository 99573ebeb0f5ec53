"""The BentoML service: the only BentoML importer, and thin.

Heavy loading happens once in ``__init__`` (the champion from the MLflow registry, the Feast store,
the rules file); each request reads the person's online features and delegates to
:mod:`serving.logic` / :mod:`serving.publish`. A background thread follows the registry alias and
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
from starlette.responses import Response as HTTPResponse

from features import store as feature_store
from features.broker.connect import open_broker
from features.consent.check import ConsentCheck
from features.consent.ledger import ConsentLedger
from features.consent.policy import workspace_policy
from features.database import engine as database_engine
from features.eventlog import EventLog
from features.identity.graph import IdentityError, IdentityGraph, UserMergeRefused
from features.live_sessions import LiveSession, SessionStore
from features.persona_rules import load_personas
from features.settings import Settings
from features.workspace import Workspace
from models.errors import ConfigError
from serving import logic
from serving.auth import AuthMiddleware, debug_view, for_caller, guard_for
from serving.bento import BENTO_MODEL_ENV, load_bento_model
from serving.collector import (
    COLLECT_PATH,
    COLLECT_PATHS,
    Collector,
    Delivery,
    SinkFullError,
    collector_app,
)
from serving.consent import ConsentEndpoint, consent_app
from serving.consent_gate import ConsentGate, header_country
from serving.consumer import ConsumerThread, EventConsumer
from serving.error_bodies import (
    MAX_JSON_DEPTH,
    BodyLimits,
    ClientErrorLogFilter,
    ErrorShapeMiddleware,
    error_json,
)
from serving.identify import identify, refresh_person, resolve_person
from serving.loader import (
    LoadedModel,
    ServingStartupError,
    alias_version,
    check_feature_service,
    load_registered,
)
from serving.persona_updates import unknown_rule_personas
from serving.persons import persons_app
from serving.privacy.page import privacy_app
from serving.prometheus import service_metrics
from serving.publish import BatchTooLargeError, publish_events, refused_retry_after
from serving.rules import load_rules
from serving.schemas import (
    MAX_EVENTS,
    PERSON_REQUIRED,
    STORE_UNAVAILABLE,
    EventsResponse,
    IdentifyRequest,
    IdentifyResponse,
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

EventsPayload = Annotated[
    list[dict[str, Any]] | dict[str, Any],
    Field(description=f"One event, or a list of at most {MAX_EVENTS}, in the event schema."),
]
#: BentoML's logger that writes every failed request as ERROR with a traceback.
BENTOML_REQUEST_ERROR_LOGGER = "bentoml._internal.server.http_app"

DESCRIPTION = f"""Tailor's personalization API: recommendations for a person in a request context
(`/recommend`), similar items (`/similar_items`), behavioural segments (`/segment`), event
ingestion (`/events`) and logins (`/identify`: an anonymous id's history becomes the user's).

Every API below needs an API key, sent as `Authorization: Bearer <key>` (`tailor keys create
--role R`): `app` for `/recommend`, `/similar_items` and `/segment`, `collector` for `/events`
and `/identify`, `admin` for all; no valid key: `401`, another role: `403`, over the rate limit:
`429` with `Retry-After`. `/recommend`'s `features` (raw online state) are only in an admin's
debug view (`X-Tailor-Debug: 1`).

Every error is a JSON object `{{"error": text, "detail": object}}`; `error` names the fields at
fault, `detail` (when present) carries them as `{{"errors": [{{"field", "message", "type"}}]}}`
or the limit that was exceeded. Request bodies are JSON (else 415), nested at most
{MAX_JSON_DEPTH} levels (else 400), and at most 64 KiB, or 1 MiB and {MAX_EVENTS} events for
`/events` (else 413; the byte limits are the defaults of `TAILOR_MAX_REQUEST_BYTES` and
`TAILOR_MAX_EVENTS_BYTES`). An answer that fell back to popularity carries a fixed reason in
`degraded`.

`/events` answers `202` once the event broker confirmed the valid events (`accepted`; the
invalid ones are in `rejections`, each with its row, field and reason): the consumer then
appends them to the event log, once per `event_id` (a repeat is skipped, an `event_id` stored
with other content quarantined), and updates the online features and personas, usually within
milliseconds; those outcomes are counted in `/metrics` (`tailor_events_total`). When the broker
cannot take the events (unreachable and its spool full) the answer is `503` with a
`Retry-After` header and nothing of the batch is accepted."""


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
    shape :mod:`serving.error_bodies` answers, the bearer-key security scheme and the 401, 403,
    413, 415 and 429 answers of every API (:mod:`serving.auth`)."""
    errors = {"InvalidArgument": "Bad Request", "NotFound": "Not Found"}
    errors |= {"InternalServerError": "Internal Server Error"}
    errors |= {"PayloadTooLarge": "Request body over the limit"}
    errors |= {"UnsupportedMediaType": "Body not JSON"}
    errors |= {"ServiceUnavailable": "Events not accepted now (see the Retry-After header)"}
    errors |= {"Unauthorized": "No valid API key (send Authorization: Bearer <key>)"}
    errors |= {"Forbidden": "The key's role may not call this endpoint"}
    errors |= {"TooManyRequests": "Rate limit reached (see the Retry-After header)"}
    for title, description in errors.items():
        spec.components["schemas"][title] = _error_schema(title, description)
    spec.components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    extra = {
        401: ("Unauthorized", "No valid API key (send Authorization: Bearer <key>)"),
        403: ("Forbidden", "The key's role may not call this endpoint"),
        429: ("TooManyRequests", "Rate limit reached (see the Retry-After header)"),
        413: ("PayloadTooLarge", "Request body over the limit"),
        415: ("UnsupportedMediaType", "Body not JSON"),
    }
    for route, item in spec.paths.items():
        post = item.post
        if not isinstance(post, dict) or "requestBody" not in post:
            continue
        post["requestBody"]["required"] = True
        post["security"] = [{"apiKey": []}]
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
            # queued, not yet stored: 202; the broker unable to take them: 503 (Retry-After)
            responses = post["responses"]
            accepted = responses.pop(200, None) or responses.pop("200", None)
            if "EventsResponseIODescriptor" in spec.components["schemas"]:
                ref = Reference("#/components/schemas/EventsResponseIODescriptor")
                accepted = Response(
                    description="Events queued (the broker confirmed them)",
                    content={"application/json": MediaType(schema=ref)},
                )
            if accepted is not None:
                responses[202] = accepted
            responses[503] = Response(
                description="The event queue cannot take events now: nothing was accepted; "
                "send them again after the Retry-After header's seconds",
                content={
                    "application/json": MediaType(
                        schema=Reference("#/components/schemas/ServiceUnavailable")
                    )
                },
            )
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
        self.sessions = SessionStore.for_workspace(ws)
        self.quarantine_dir = ws.quarantine_dir
        try:  # the browser collector (/collect, /collect.gif; mounted below the class)
            self.collector = Collector.from_settings(
                settings,
                ws.secrets_dir,
                self._collected,
                lambda reason, count: self.metrics.rejected(COLLECT_PATH, reason, count),
            )
        except ConfigError as exc:
            raise ServingStartupError(str(exc)) from None
        # issue #13: API keys and roles, rate limits, the audit log (AuthMiddleware, below)
        self.guard = guard_for(settings, ws, lambda: self.collector.cookies, self.body_limits.other)
        self._has_segments = False
        self._segments_checked = -math.inf
        self._segments_recheck = settings.model_poll_seconds
        self._off_loop_until = -math.inf  # see SLOW_READ_SECONDS
        self._off_loop: anyio.CapacityLimiter | None = None  # made on the event loop
        self.online = OnlineHealth(settings.online_retry_seconds)
        self.identity = IdentityGraph.for_workspace(ws)  # issue #11: one person, every key
        try:  # issue #12: the consent ledger and the one check (POST/GET /consent)
            policy = workspace_policy(ws)
        except ConfigError as exc:
            raise ServingStartupError(str(exc)) from None
        self.consent_check = ConsentCheck(
            ConsentLedger(database_engine(ws.database_url), policy, self.identity)
        )
        self.ws = ws  # DELETE /persons/{id} erases in this workspace (issue #13)
        self.consent = ConsentEndpoint(
            self.consent_check,
            settings.country_header,
            self.metrics.consent_counted,
            cookies=self.collector.cookies,  # POST /consent's own-cookie form, /privacy
        )
        # enforced at /events, /collect, /recommend, /segment and the persona folds
        self.consent_gate = ConsentGate(self.consent_check if settings.consent_checks else None)
        self.country_header = settings.country_header
        try:
            self.broker = open_broker(ws)
        except ConfigError as exc:
            raise ServingStartupError(str(exc)) from None
        # The consumer's machinery always lives here: /identify rebuilds merged people through its
        # pending set, retried in the background. Its queue loop runs here only with the
        # embedded queue (one command for `tailor serve`, `make demo`); with a broker URL the
        # operator runs `tailor consume`.
        self.consumer = EventConsumer.for_workspace(
            ws,
            self.store,
            self.personas,
            log=self.log,
            identity=self.identity,
            sessions=self.sessions,
            metrics=self.metrics,
            consent=self.consent_gate,
        )
        self._consumer_thread: ConsumerThread | None = None
        self._consume_here = not settings.broker_url and settings.serve_consumer
        self._stop_retry = threading.Event()
        if not self._consume_here:  # the consumer thread runs its own retry
            threading.Thread(
                target=self.consumer.retry_pending,
                args=(self._stop_retry,),
                name="persona-retry",
                daemon=True,
            ).start()

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
        if self._consume_here:
            self._consumer_thread = ConsumerThread(self.broker, self.consumer).start()
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
        if self._consumer_thread is not None:  # the batch in hand is finished and acknowledged
            self._consumer_thread.stop()
        self._stop_retry.set()
        self.broker.close()

    def _features(self, person: str, device: str, service: str, country: str | None) -> dict:
        """``country``: the request's, so the store's consent check (issue #12) applies the same
        regime as the service's own check did."""
        rows = [{"user_id": person, "device_type": device}]
        started = time.perf_counter()
        features = feature_store.online_features(self.store, rows, service, country=country)[0]
        self.metrics.feature_read.labels(service=service).observe(time.perf_counter() - started)
        segment = self._segment(person, country)
        if segment.get("segment_label"):
            features["segment"] = segment["segment_label"]
        return features

    def _segment(self, person: str, country: str | None = None) -> dict:
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
        service = feature_store.SEGMENT_SERVICE
        row = feature_store.online_features(self.store, rows, service, country=country)[0]
        return logic.known_segment(row)

    def _where(self, ctx: bentoml.Context, country: str | None = None) -> tuple[str | None, bool]:
        """The request's country (``country`` given in the body, else the country header) and
        whether it carries ``Sec-GPC: 1``: what picks the consent regime (issue #12)."""
        headers = ctx.request.headers
        gpc = headers.get("sec-gpc", "").strip() == "1"
        return country or header_country(headers, self.country_header), gpc

    @bentoml.api(route="/recommend")
    async def recommend(
        self, request: RecommendRequest, /, ctx: bentoml.Context
    ) -> RecommendResponse:
        """Top-k items for one person (user_id or anonymous_id) in a request context, with the
        strategy and rule behind each item, the rules that fired and the content variant; not
        personalized (``consent`` says why) for a person without ``personalization`` consent;
        the online features read only for an admin key with `X-Tailor-Debug: 1` (issue #13)."""
        ctx.response.headers["cache-control"] = "no-store"  # consent may change by the next one
        debug = debug_view(ctx.request.scope)
        where = self._where(ctx, request.context.country)
        if not self.online.should_read():  # the store failed a moment ago: popularity at once
            return for_caller(self._recommend(request, where, read=False), debug)
        if time.monotonic() < self._off_loop_until:
            if self._off_loop is None:
                self._off_loop = anyio.CapacityLimiter(1)  # one thread: no read contention
            answer = await anyio.to_thread.run_sync(
                self._recommend, request, where, limiter=self._off_loop
            )
            return for_caller(answer, debug)
        return for_caller(self._recommend(request, where), debug)

    def _recommend(
        self, request: RecommendRequest, where: tuple[str | None, bool], read: bool = True
    ) -> RecommendResponse:
        started = time.perf_counter()
        request = self._canonical_request(request)
        model = self.models.current  # one read: a swap mid-request does not mix models
        # issue #12: checked on every request (no cache), before anything of the person is read
        consent = self.consent_gate.personalization(request.person, *where)
        if consent is not None:  # context and popularity only: no feature, segment, session
            answer = logic.recommend(model.scorer, request, {}, self.rules, consent=consent)
            self.metrics.observe("/recommend", "consent", time.perf_counter() - started, False)
            return answer
        if read:
            features, degraded = logic.read_features(
                lambda: self._features(
                    request.person, request.device, model.feature_service, where[0]
                )
            )
            if degraded:
                self.online.failed()
            else:
                self.online.succeeded()
        else:
            features, degraded = {}, STORE_UNAVAILABLE
        if time.perf_counter() - started > SLOW_READ_SECONDS:
            self._off_loop_until = time.monotonic() + OFF_LOOP_SECONDS
        session = self._live_session(request, model) if not degraded else None
        answer = logic.recommend(model.scorer, request, features, self.rules, degraded, session)
        self.metrics.observe(
            "/recommend", answer.strategy, time.perf_counter() - started, bool(answer.degraded)
        )
        return answer

    def _live_session(self, request: RecommendRequest, model: LoadedModel) -> LiveSession | None:
        """The request's live session (``session_id``, else the person's latest), read only for
        people the model has not seen; a store failure means no session, never an error."""
        if model.scorer.user_idx(request.person) >= 0:
            return None
        try:
            if request.session_id:
                return self.sessions.get(request.session_id)
            return self.sessions.latest_for(request.person)
        except Exception as exc:
            logger.warning("live session read failed: %s", type(exc).__name__)
            return None

    @bentoml.api(route="/segment")
    def segment(self, request: SegmentRequest, /, ctx: bentoml.Context) -> SegmentResponse:
        """The person's behavioural segment from the last `tailor segment` run (Feast online);
        none for a person without ``personalization`` consent (``source`` says so)."""
        started = time.perf_counter()
        person = request.user_id
        try:
            where = self._where(ctx)
            consent = self.consent_gate.personalization(person, *where)
            row = {} if consent else self._segment(person, where[0])
            source = consent or (
                feature_store.SEGMENT_SERVICE if row else "no segmentation run yet"
            )
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

    @bentoml.api(route="/events")
    def events(self, payload: EventsPayload, /, ctx: bentoml.Context) -> EventsResponse:
        """Validate events and queue them on the broker: 202 once it confirmed (the consumer
        appends them to the log, idempotently by event_id, and updates the online store);
        counts and per-row reasons; 503 with Retry-After when the broker cannot take them."""
        started = time.perf_counter()
        try:
            answer = publish_events(
                payload,
                self.broker,
                self.quarantine_dir,
                gate=self.consent_gate,
                country=header_country(ctx.request.headers, self.country_header),
            )
        except BatchTooLargeError as exc:
            raise BentoMLException(
                str(exc), error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            ) from None
        except Exception as exc:
            retry_after = refused_retry_after(exc)
            if retry_after is None:
                raise
            logger.warning("/events: the broker refused a batch: %s", type(exc).__name__)
            self.metrics.observe("/events", "refused", time.perf_counter() - started, True)
            ctx.response.status_code = HTTPStatus.SERVICE_UNAVAILABLE
            ctx.response.headers["Retry-After"] = str(retry_after)
            body = error_json(
                "events not accepted: the event queue cannot take them now; "
                f"send them again after {retry_after} s",
                {"retry_after_seconds": retry_after},
            )
            # BentoML sends a starlette Response as it is, with the status and headers above
            return HTTPResponse(body, media_type="application/json")  # type: ignore[return-value]
        for outcome in ("accepted", "rejected", "suppressed"):
            self.metrics.events.labels(outcome=outcome).inc(getattr(answer, outcome))
        ctx.response.status_code = HTTPStatus.ACCEPTED
        self.metrics.observe("/events", "queued", time.perf_counter() - started, False)
        return answer

    def _collected(self, events: list[Any]) -> Delivery:
        """The collector's sink: the events filled in by :mod:`serving.collector`, validated and
        queued as ``/events`` queues them (202 once the broker confirmed; a refusal is a 503
        with Retry-After)."""
        started = time.perf_counter()
        try:
            answer = publish_events(
                events,
                self.broker,
                self.quarantine_dir,
                source="api:/collect",
                gate=self.consent_gate,  # the collector put the country header in the events
            )
        except Exception as exc:
            retry_after = refused_retry_after(exc)
            if retry_after is None:
                raise
            logger.warning("/collect: the broker refused a batch: %s", type(exc).__name__)
            self.metrics.observe(COLLECT_PATH, "refused", time.perf_counter() - started, True)
            raise SinkFullError("the event queue cannot take events now", retry_after) from None
        for outcome in ("accepted", "rejected", "suppressed"):
            self.metrics.events.labels(outcome=outcome).inc(getattr(answer, outcome))
        self.metrics.observe(COLLECT_PATH, "queued", time.perf_counter() - started, False)
        return Delivery(answer.model_dump(), status=202, rejected=answer.rejected)

    # -- identity (issue #11): /identify, canonical keys on every read ---------------------------
    def _canonical_request(self, request: RecommendRequest) -> RecommendRequest:
        """The request under the person's canonical key (a logged-in user's anonymous device
        reads the user's features; a user merged into another reads that user's)."""
        canonical = resolve_person(self.identity, request.person)
        if canonical == request.person or canonical.startswith("anon:"):
            return request
        return request.model_copy(update={"user_id": canonical})

    def _read_people(self, people: list[str]):
        return self.log.read_people(people, self.identity.aliases)

    def _refresh_person(self, canonical: str) -> str | None:
        degraded = refresh_person(
            canonical,
            self._read_people,
            self.consumer.read_personas,
            self.consumer.push_personas,
            self.consumer.push_activity,
            self.personas,
            self.identity.canonical_keys,
        )
        if degraded:  # rebuilt from the log by the consumer's retry once the store answers
            self.consumer.pending.add([canonical])
        return degraded

    @bentoml.api(route="/identify")
    def identify(self, request: IdentifyRequest, /) -> IdentifyResponse:
        """Link an anonymous id to a user id (a login): the anonymous history becomes the
        user's, in the online store at once. 400 for bad ids, 409 for a device of another user
        (unless TAILOR_ALLOW_USER_MERGE=1)."""
        started = time.perf_counter()
        try:
            with self.log.writer():  # no /events fold between the re-fold and its push
                answer = identify(request, self.identity, self._refresh_person)
        except UserMergeRefused as exc:
            self.metrics.identify.labels(outcome="refused_user_merge").inc()
            raise BentoMLException(str(exc), error_code=HTTPStatus.CONFLICT) from None
        except IdentityError as exc:
            self.metrics.identify.labels(outcome="rejected").inc()
            raise BentoMLException(str(exc), error_code=HTTPStatus.BAD_REQUEST) from None
        outcome = answer.kind or "unchanged"
        self.metrics.identify.labels(outcome="linked" if outcome == "link" else outcome).inc()
        if answer.degraded:
            self.metrics.identify.labels(outcome="degraded").inc()
        self.metrics.observe(
            "/identify", outcome, time.perf_counter() - started, bool(answer.degraded)
        )
        return answer


def _body_limits() -> BodyLimits:
    """The running service's limits (read by its constructor), per request."""
    try:
        return bentoml.get_current_service().body_limits
    except BentoMLException:  # not constructed yet: no API request gets this far then
        return BodyLimits()


def _guard():
    """The running service's access checks; None before its constructor has run."""
    try:
        return getattr(bentoml.get_current_service(), "guard", None)
    except BentoMLException:
        return None


# first added, outermost: keys, roles and rate limits before any body is read (issue #13)
Tailor.add_asgi_middleware(AuthMiddleware, guard_of=_guard)
Tailor.add_asgi_middleware(ErrorShapeMiddleware, limits=_body_limits, own_checks=COLLECT_PATHS)
Tailor.add_asgi_middleware(
    ReadinessNoteMiddleware,
    health_of=lambda: getattr(bentoml.get_current_service(), "online", None),
)


def _collector() -> Collector | None:
    """The running service's collector; None before its constructor has run."""
    try:
        return getattr(bentoml.get_current_service(), "collector", None)
    except BentoMLException:
        return None


def _consent() -> ConsentEndpoint | None:
    """The running service's ``/consent`` logic; None before its constructor has run."""
    try:
        return getattr(bentoml.get_current_service(), "consent", None)
    except BentoMLException:
        return None


Tailor.mount_asgi_app(consent_app(_consent), path="/", name="consent")
# /privacy (the consent page), /privacy/privacy.js and /privacy/banner.js (issue #12)
Tailor.mount_asgi_app(privacy_app(_consent), path="/", name="privacy")


def _workspace() -> Workspace | None:
    """The running service's workspace; None before its constructor has run."""
    try:
        return getattr(bentoml.get_current_service(), "ws", None)
    except BentoMLException:
        return None


Tailor.mount_asgi_app(persons_app(_workspace), path="/", name="persons")

# /collect and /collect.gif: a Starlette app; BentoML's PassiveMount at "/" only takes the
# paths it routes, so every other route stays the service's
Tailor.mount_asgi_app(collector_app(_collector), path="/", name="collector")
