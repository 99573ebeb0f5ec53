"""The service's own Prometheus metrics, beside BentoML's request counts and latencies.

``prometheus_client`` is imported inside :func:`service_metrics`, called from the service's
``__init__``: BentoML sets the multiprocess directory in each worker after importing the service
module, and a client imported before that would write metrics ``/metrics`` never shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The online feature read is sub-millisecond when healthy; its target is p99 < 2 ms.
FEATURE_READ_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0)
FEATURE_READ_METRIC = "tailor_feature_read_seconds"


def strategy_kind(strategy: str) -> str:
    """A bounded label: ``popular_in_country:US`` → ``popular_in_country``."""
    return strategy.split(" ", 1)[0].split(":", 1)[0] or "none"


@dataclass(frozen=True)
class ServiceMetrics:
    requests: Any  # Counter(endpoint, strategy, degraded)
    latency: Any  # Histogram(endpoint, strategy)
    events: Any  # Counter(outcome)
    model_info: Any  # Gauge(model, model_name, version): 1 for the model being served
    feature_read: Any  # Histogram(service): the online feature read inside /recommend
    persona_updates: Any  # Counter(outcome): people updated; calls whose update failed
    #: Counter(endpoint, reason): refused requests, ignored cookies and rejected events (#11)
    rejections: Any = None
    identify: Any = None  # Counter(outcome): /identify links, repeats and rejections by reason
    consent: Any = None  # Counter(outcome, purpose): /consent choices and refused requests (#12)
    #: (endpoint, strategy kind, degraded) -> its (request counter, latency histogram) children;
    #: bounded, as the labels are, and saves two ``labels()`` look-ups per request
    _children: dict[tuple[str, str, bool], tuple[Any, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def observe(self, endpoint: str, strategy: str, seconds: float, degraded: bool) -> None:
        key = (endpoint, strategy_kind(strategy), degraded)
        children = self._children.get(key)
        if children is None:
            kind = key[1]
            children = (
                self.requests.labels(
                    endpoint=endpoint, strategy=kind, degraded=str(degraded).lower()
                ),
                self.latency.labels(endpoint=endpoint, strategy=kind),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def rejected(self, endpoint: str, reason: str, count: int = 1) -> None:
        """Count ``count`` rejections of one bounded ``reason`` on ``endpoint``."""
        if count > 0 and self.rejections is not None:
            self.rejections.labels(endpoint=endpoint, reason=reason).inc(count)

    def consent_counted(self, outcome: str, purpose: str = "") -> None:
        """Count one ``/consent`` outcome: ``accepted``/``refused`` per purpose of a stored
        record, ``rejected`` (400) and ``unavailable`` (503) per request."""
        if self.consent is not None:
            self.consent.labels(outcome=outcome, purpose=purpose).inc()

    def serving(self, label: str, old_label: str | None = None) -> None:
        """Mark ``name@version`` as served (and the one it replaced as not)."""
        if old_label:
            self.model_info.labels(**_model_labels(old_label)).set(0)
        self.model_info.labels(**_model_labels(label)).set(1)


def _model_labels(label: str) -> dict[str, str]:
    name, _, version = label.rpartition("@")
    return {"model": label, "model_name": name, "version": version}


@lru_cache(maxsize=1)
def service_metrics() -> ServiceMetrics:
    """Create the metrics once per process (a second registration would raise)."""
    import prometheus_client as prom

    return ServiceMetrics(
        requests=prom.Counter(
            "tailor_requests",
            "Answered requests by endpoint, main strategy and degraded mode.",
            ["endpoint", "strategy", "degraded"],
        ),
        latency=prom.Histogram(
            "tailor_request_latency_seconds",
            "Time spent in the service's own logic per endpoint and strategy.",
            ["endpoint", "strategy"],
            buckets=LATENCY_BUCKETS,
        ),
        events=prom.Counter(
            "tailor_events",
            "Events by outcome: on /events accepted (queued) and rejected; in the consumer "
            "stored, duplicate, conflict, poison (undecodable deliveries) and not_pushed "
            "(stored, online store update failed: rebuilt from the log later).",
            ["outcome"],
        ),
        model_info=prom.Gauge(
            "tailor_model_info",
            "1 for the registered model version being served, 0 for ones it replaced.",
            ["model", "model_name", "version"],
            multiprocess_mode="livemostrecent",
        ),
        feature_read=prom.Histogram(
            FEATURE_READ_METRIC,
            "Time of the online feature read inside /recommend, by Feast feature service.",
            ["service"],
            buckets=FEATURE_READ_BUCKETS,
        ),
        persona_updates=prom.Counter(
            "tailor_persona_updates",
            "Real-time persona updates by the event consumer: people updated (outcome=updated) "
            "and batches whose update failed, events kept (outcome=failed).",
            ["outcome"],
        ),
        rejections=prom.Counter(
            "tailor_rejections",
            "Refused requests, ignored (forged or malformed) cookies and rejected events, by "
            "endpoint and reason.",
            ["endpoint", "reason"],
        ),
        identify=prom.Counter(
            "tailor_identify",
            "/identify calls and identify events by outcome: linked, unchanged (already one "
            "person), user_merge (two users merged, when allowed), refused_user_merge, "
            "rejected (bad ids), degraded (merged, online store not updated).",
            ["outcome"],
        ),
        consent=prom.Counter(
            "tailor_consent",
            "/consent: choices stored per purpose (outcome=accepted or refused) and refused "
            "requests (outcome=rejected: bad input; unavailable: the ledger failed, purpose "
            "empty).",
            ["outcome", "purpose"],
        ),
    )
