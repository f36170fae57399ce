"""`tunnel.plain_metrics` against prometheus_client: the same metric, updated the same way, gives
the same exposition byte for byte; labels, bounds and refusals behave as prometheus_client's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import tunnel.role_metrics  # noqa: F401  # turns `_created` off, as in every role's process
from tunnel.plain_metrics import PlainCounter, PlainGauge, PlainHistogram

Update = Callable[[Any], None]


def pages(
    theirs: Callable[[CollectorRegistry], Any],
    ours: Callable[[CollectorRegistry], Any],
    update: Update,
) -> tuple[str, str]:
    """prometheus_client's exposition and ours, each metric in a registry of its own, after
    `update` was applied to each."""
    their_registry, our_registry = CollectorRegistry(), CollectorRegistry(auto_describe=True)
    update(theirs(their_registry))
    update(ours(our_registry))
    return generate_latest(their_registry).decode(), generate_latest(our_registry).decode()


def counted(metric: Any) -> None:
    metric.labels("ns/a", "2xx").inc()
    metric.labels("ns/a", "2xx").inc(2.5)
    metric.labels("ns/b", "5xx").inc(0)
    metric.labels(plane="ns/c", code="4xx").inc(1e12)


@pytest.mark.parametrize("name", ["test_requests_total", "test_upstream_requests"])
def test_a_counter_shows_as_prometheus_clients(name: str) -> None:
    labels = ["plane", "code"]
    theirs, ours = pages(
        lambda r: Counter(name, "requests, by plane and code", labels, registry=r),
        lambda r: PlainCounter(name, "requests, by plane and code", labels, registry=r),
        counted,
    )
    assert ours == theirs
    assert f'{name.removesuffix("_total")}_total{{code="2xx",plane="ns/a"}} 3.5' in ours


def test_an_unlabelled_counter_shows_as_prometheus_clients() -> None:
    def update(metric: Any) -> None:
        metric.inc()
        metric.inc(7)

    for update_or_none in (update, lambda metric: None):  # a fresh one shows 0 in both
        theirs, ours = pages(
            lambda r: Counter("test_dials_total", "dials", registry=r),
            lambda r: PlainCounter("test_dials_total", "dials", registry=r),
            update_or_none,
        )
        assert ours == theirs


def test_a_labelled_metric_without_children_shows_its_help_and_type_alone() -> None:
    theirs, ours = pages(
        lambda r: Histogram("test_seconds", "time", ["code"], registry=r),
        lambda r: PlainHistogram("test_seconds", "time", ["code"], registry=r),
        lambda metric: None,
    )
    assert ours == theirs == "# HELP test_seconds time\n# TYPE test_seconds histogram\n"


def test_a_gauge_shows_as_prometheus_clients() -> None:
    def update(metric: Any) -> None:
        metric.labels("active").inc()
        metric.labels("active").inc(3)
        metric.labels("active").dec()
        metric.labels("idle").set(2)
        metric.labels("idle").dec(5)

    theirs, ours = pages(
        lambda r: Gauge("test_connections", "connections, by state", ["state"], registry=r),
        lambda r: PlainGauge("test_connections", "connections, by state", ["state"], registry=r),
        update,
    )
    assert ours == theirs
    assert 'test_connections{state="idle"} -3.0' in ours


def test_an_unlabelled_gauge_shows_as_prometheus_clients() -> None:
    def update(metric: Any) -> None:
        metric.inc()
        metric.inc()
        metric.dec(0.5)

    theirs, ours = pages(
        lambda r: Gauge("test_streams_active", "streams", registry=r),
        lambda r: PlainGauge("test_streams_active", "streams", registry=r),
        update,
    )
    assert ours == theirs


ON_AND_BETWEEN_BOUNDS = (0.0, 0.001, 0.0011, 0.005, 0.7, 1, 60, 61, float("inf"), -1)


@pytest.mark.parametrize(
    "buckets",
    [
        (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        (0.005, 0.01, 1.0, float("inf")),  # +Inf given, not added
        Histogram.DEFAULT_BUCKETS,
    ],
)
def test_a_histogram_shows_as_prometheus_clients(buckets: tuple[float, ...]) -> None:
    def update(metric: Any) -> None:
        for value in ON_AND_BETWEEN_BOUNDS:
            metric.labels("ns/a", "2xx").observe(value)
        metric.labels("ns/b", "error").observe(0.02)

    labels = ["plane", "code"]
    theirs, ours = pages(
        lambda r: Histogram("test_duration_seconds", "time", labels, buckets=buckets, registry=r),
        lambda r: PlainHistogram(
            "test_duration_seconds", "time", labels, buckets=buckets, registry=r
        ),
        update,
    )
    assert ours == theirs


def test_an_unlabelled_histogram_shows_as_prometheus_clients() -> None:
    def update(metric: Any) -> None:
        for value in ON_AND_BETWEEN_BOUNDS:
            metric.observe(value)

    theirs, ours = pages(
        lambda r: Histogram("test_seconds", "time", registry=r),
        lambda r: PlainHistogram("test_seconds", "time", registry=r),
        update,
    )
    assert ours == theirs


def test_a_value_on_a_bound_is_in_that_bucket() -> None:
    registry = CollectorRegistry()
    histogram = PlainHistogram("test_seconds", "time", buckets=(0.05, 0.1, 0.25), registry=registry)
    histogram.observe(0.1)

    def bucket(le: str) -> float | None:
        return registry.get_sample_value("test_seconds_bucket", {"le": le})

    assert (bucket("0.05"), bucket("0.1"), bucket("0.25"), bucket("+Inf")) == (0, 1, 1, 1)
    assert registry.get_sample_value("test_seconds_count") == 1
    assert registry.get_sample_value("test_seconds_sum") == 0.1


def test_sample_values_are_read_through_the_registry() -> None:
    registry = CollectorRegistry()
    counter = PlainCounter("test_bytes_total", "bytes", ["direction"], registry=registry)
    gauge = PlainGauge("test_streams_active", "streams", registry=registry)
    counter.labels("to_agent").inc(100)
    gauge.set(4)
    assert registry.get_sample_value("test_bytes_total", {"direction": "to_agent"}) == 100
    assert registry.get_sample_value("test_bytes_total", {"direction": "to_caller"}) is None
    assert registry.get_sample_value("test_streams_active") == 4


def test_labels_are_looked_up_once_made() -> None:
    counter = PlainCounter("test_total", "t", ["plane", "code"], registry=CollectorRegistry())
    child = counter.labels("ns/a", "2xx")
    assert counter.labels("ns/a", "2xx") is child
    assert counter.labels(code="2xx", plane="ns/a") is child


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda c: c.labels("ns/a"), id="too few"),
        pytest.param(lambda c: c.labels("ns/a", "2xx", "extra"), id="too many"),
        pytest.param(lambda c: c.labels(plane="ns/a"), id="a name missing"),
        pytest.param(lambda c: c.labels(plane="ns/a", status="2xx"), id="a wrong name"),
        pytest.param(lambda c: c.labels("ns/a", code="2xx"), id="by place and by name"),
        pytest.param(lambda c: c.inc(), id="no child"),
    ],
)
def test_wrong_labels_are_refused(wrong: Callable[[PlainCounter], object]) -> None:
    registry = CollectorRegistry()
    counter = PlainCounter("test_total", "t", ["plane", "code"], registry=registry)
    with pytest.raises(ValueError):  # noqa: PT011  # prometheus_client's messages vary
        wrong(counter)
    assert generate_latest(registry) == b"# HELP test_total t\n# TYPE test_total counter\n"


def test_an_unlabelled_metric_has_no_labels() -> None:
    for metric in (
        PlainCounter("test_total", "t", registry=CollectorRegistry()),
        PlainGauge("test", "t", registry=CollectorRegistry()),
        PlainHistogram("test_seconds", "t", registry=CollectorRegistry()),
    ):
        with pytest.raises(ValueError, match="No label names"):
            metric.labels()


def test_a_counter_does_not_go_down() -> None:
    registry = CollectorRegistry()
    counter = PlainCounter("test_total", "t", ["code"], registry=registry)
    counter.labels("2xx").inc(2)
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("2xx").inc(-1)
    assert registry.get_sample_value("test_total", {"code": "2xx"}) == 2


def test_buckets_are_checked_as_prometheus_client_does() -> None:
    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="sorted"):
        PlainHistogram("test_a_seconds", "t", buckets=(1, 0.5), registry=registry)
    with pytest.raises(ValueError, match="two buckets"):
        PlainHistogram("test_b_seconds", "t", buckets=(float("inf"),), registry=registry)
    with pytest.raises(ValueError, match="le"):
        PlainHistogram("test_c_seconds", "t", ["le"], registry=registry)


def test_registering_describes_without_collecting() -> None:
    """A registry with auto_describe takes the names from `describe()`: a duplicate is refused,
    as for prometheus_client's metrics."""
    registry = CollectorRegistry(auto_describe=True)
    histogram = PlainHistogram("test_seconds", "t", ["code"], registry=registry)
    [described] = histogram.describe()
    assert (described.name, described.type, described.samples) == ("test_seconds", "histogram", [])
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("test_seconds_count", "t", registry=registry)
    PlainCounter("test_requests_total", "t", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Gauge("test_requests", "t", registry=registry)
