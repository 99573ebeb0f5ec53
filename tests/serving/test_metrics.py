"""The service's own metrics: bounded labels, and one ``labels()`` look-up per label set."""

from collections import Counter

from serving.prometheus import ServiceMetrics, strategy_kind


class _Child:
    def __init__(self, calls: Counter, labels: tuple) -> None:
        self.calls, self.labels = calls, labels

    def inc(self) -> None:
        self.calls[("inc", self.labels)] += 1

    def observe(self, seconds: float) -> None:
        self.calls[("observe", self.labels)] += 1


class _Metric:
    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.lookups = 0

    def labels(self, **labels: str) -> _Child:
        self.lookups += 1
        return _Child(self.calls, tuple(sorted(labels.items())))


def test_strategy_kind_is_bounded() -> None:
    assert strategy_kind("popular_in_country:US") == "popular_in_country"
    assert strategy_kind("popular (fallback: no country table)") == "popular"
    assert strategy_kind("") == "none"


def test_observe_counts_each_request_and_looks_labels_up_once() -> None:
    requests, latency = _Metric(), _Metric()
    metrics = ServiceMetrics(
        requests, latency, events=None, model_info=None, feature_read=None, persona_updates=None
    )
    for strategy in ("popular_in_country:US", "popular_in_country:DE", "model:ease"):
        metrics.observe("/recommend", strategy, 0.001, False)
    metrics.observe("/recommend", "model:ease", 0.001, True)
    country = (
        ("degraded", "false"),
        ("endpoint", "/recommend"),
        ("strategy", "popular_in_country"),
    )
    assert requests.calls[("inc", country)] == 2
    degraded = (("degraded", "true"), ("endpoint", "/recommend"), ("strategy", "model"))
    assert requests.calls[("inc", degraded)] == 1
    assert sum(latency.calls.values()) == 4
    assert (requests.lookups, latency.lookups) == (3, 3)  # one per (endpoint, kind, degraded)


class _Counter:
    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def labels(self, **labels: str):
        counts, key = self.counts, tuple(sorted(labels.items()))

        class Child:
            def inc(self, amount: float = 1) -> None:
                counts[key] += amount

        return Child()


def test_rejections_are_counted_by_endpoint_and_reason() -> None:
    rejections = _Counter()
    metrics = ServiceMetrics(None, None, None, None, None, None, rejections=rejections)
    metrics.rejected("/collect", "cookie_forged")
    metrics.rejected("/collect", "invalid_event", 3)
    metrics.rejected("/collect", "invalid_event", 0)  # nothing to count
    assert rejections.counts == {
        (("endpoint", "/collect"), ("reason", "cookie_forged")): 1,
        (("endpoint", "/collect"), ("reason", "invalid_event")): 3,
    }
