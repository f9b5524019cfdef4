"""Counters, histograms and gauges cheap enough for every request, exported two ways.

The OpenTelemetry SDK's synchronous instruments validate and hash their attributes on every
measurement (20 to 30 µs each here, five of them per request). These keep one plain dict per
instrument, keyed by a tuple of label values in a fixed order, so recording is a dict lookup
and a few integer additions. The work of turning them into data is done only when they are
read: by ``/metrics`` (a ``prometheus_client`` collector over this registry), and by the OTLP
exporter, which receives the SDK's own ``MetricsData`` built from the same tuples
(cumulative temporality), so any OTLP collector sees ordinary OpenTelemetry metrics.

Readers run in other threads while the event loop keeps recording: every series is copied
with one ``list()`` call (atomic under the GIL), and a histogram's count is taken from its
buckets, so a scrape never sees a torn series.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.core import (
    Metric as PromMetric,
)

__all__ = ["Counter", "Histogram", "Registry", "prometheus_name"]

LabelValues = tuple[str | int, ...]
Reading = Iterable[tuple[LabelValues, float]]
_INVALID = re.compile(r"[^A-Za-z0-9_]")
_UNIT_SUFFIX = {"s": "_seconds"}
_SCOPE = InstrumentationScope("sentinel")


def prometheus_name(name: str, unit: str) -> str:
    """The Prometheus name: ``gen_ai.client.operation.duration`` (``s``) becomes
    ``gen_ai_client_operation_duration_seconds``."""
    base = _INVALID.sub("_", name)
    suffix = _UNIT_SUFFIX.get(unit, "")
    return base if base.endswith(suffix) else base + suffix


@dataclass(frozen=True, slots=True)
class _Meta:
    name: str
    unit: str
    description: str
    labels: tuple[str, ...]

    @property
    def prometheus(self) -> str:
        return prometheus_name(self.name, self.unit)

    @property
    def prometheus_labels(self) -> list[str]:
        return [_INVALID.sub("_", label) for label in self.labels]

    def attributes(self, values: LabelValues) -> dict[str, str | int]:
        return dict(zip(self.labels, values, strict=True))


class Counter:
    """A monotonic count per label-value tuple."""

    def __init__(self, meta: _Meta) -> None:
        self.meta = meta
        self._counts: dict[LabelValues, int] = {}

    def add(self, *values: str | int, amount: int = 1) -> None:
        """Count ``amount`` for the series ``values`` (in the order of the labels)."""
        counts = self._counts
        counts[values] = counts.get(values, 0) + amount

    def read(self) -> list[tuple[LabelValues, float]]:
        return list(self._counts.items())


class Histogram:
    """Bucket counts, sum, min and max per label-value tuple, on fixed bucket bounds."""

    def __init__(self, meta: _Meta, bounds: Sequence[float]) -> None:
        self.meta = meta
        self.bounds = tuple(bounds)
        self._series: dict[LabelValues, list[float]] = {}
        # layout of a series: [sum, min, max, bucket 0, …, bucket n (above the last bound)]

    def record(self, value: float, *values: str | int) -> None:
        """Add one observation of ``value`` to the series ``values``."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = [0.0, value, value] + [0] * (len(self.bounds) + 1)
        series[0] += value
        if value < series[1]:
            series[1] = value
        if value > series[2]:
            series[2] = value
        series[3 + bisect_left(self.bounds, value)] += 1

    def read(self) -> list[tuple[LabelValues, list[float]]]:
        return [(values, list(series)) for values, series in list(self._series.items())]


@dataclass(frozen=True, slots=True)
class _Observed:
    meta: _Meta
    read: Callable[[], Reading]
    monotonic: bool


class Registry:
    """Every instrument of one process, readable as Prometheus families or OTLP data."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self._started_ns = time.time_ns()
        self._counters: list[Counter] = []
        self._histograms: list[Histogram] = []
        self._observed: list[_Observed] = []

    def counter(self, name: str, unit: str, description: str, labels: tuple[str, ...]) -> Counter:
        counter = Counter(_Meta(name, unit, description, labels))
        self._counters.append(counter)
        return counter

    def histogram(
        self,
        name: str,
        unit: str,
        description: str,
        labels: tuple[str, ...],
        bounds: Sequence[float],
    ) -> Histogram:
        histogram = Histogram(_Meta(name, unit, description, labels), bounds)
        self._histograms.append(histogram)
        return histogram

    def observe(
        self,
        name: str,
        unit: str,
        description: str,
        labels: tuple[str, ...],
        read: Callable[[], Reading],
        *,
        monotonic: bool = False,
    ) -> None:
        """A value read when collected: a gauge, or a monotonic count kept elsewhere."""
        self._observed.append(_Observed(_Meta(name, unit, description, labels), read, monotonic))

    # --- Prometheus ------------------------------------------------------------------------

    def collect(self) -> Iterator[PromMetric]:
        """``prometheus_client``'s collector protocol: every instrument as a metric family."""
        info = InfoMetricFamily("target", "Target metadata")
        info.add_metric(
            [], {_INVALID.sub("_", k): str(v) for k, v in self.resource.attributes.items()}
        )
        yield info
        for counter in self._counters:
            meta = counter.meta
            family = CounterMetricFamily(
                meta.prometheus, meta.description, labels=meta.prometheus_labels
            )
            for values, count in counter.read():
                family.add_metric([str(v) for v in values], count)
            yield family
        for histogram in self._histograms:
            meta = histogram.meta
            family_h = HistogramMetricFamily(
                meta.prometheus, meta.description, labels=meta.prometheus_labels
            )
            bounds = [_le(b) for b in histogram.bounds] + ["+Inf"]
            for values, series in histogram.read():
                running = 0.0
                buckets = []
                for bound, count in zip(bounds, series[3:], strict=True):
                    running += count
                    buckets.append((bound, running))
                family_h.add_metric([str(v) for v in values], buckets, sum_value=series[0])
            yield family_h
        for observed in self._observed:
            meta = observed.meta
            family_o: CounterMetricFamily | GaugeMetricFamily
            if observed.monotonic:
                family_o = CounterMetricFamily(
                    meta.prometheus, meta.description, labels=meta.prometheus_labels
                )
            else:
                family_o = GaugeMetricFamily(
                    meta.prometheus, meta.description, labels=meta.prometheus_labels
                )
            for values, value in observed.read():
                family_o.add_metric([str(v) for v in values], value)
            yield family_o

    # --- OTLP ------------------------------------------------------------------------------

    def metrics_data(self) -> MetricsData:
        """Everything as the SDK's cumulative ``MetricsData``, for an OTLP exporter."""
        now, start = time.time_ns(), self._started_ns
        metrics: list[Metric] = []
        for counter in self._counters:
            meta = counter.meta
            points = [
                NumberDataPoint(meta.attributes(values), start, now, int(count))
                for values, count in counter.read()
            ]
            metrics.append(_sum(meta, points, monotonic=True))
        for histogram in self._histograms:
            meta = histogram.meta
            points_h = [
                HistogramDataPoint(
                    attributes=meta.attributes(values),
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    count=int(sum(series[3:])),
                    sum=series[0],
                    bucket_counts=[int(c) for c in series[3:]],
                    explicit_bounds=list(histogram.bounds),
                    min=series[1],
                    max=series[2],
                )
                for values, series in histogram.read()
            ]
            metrics.append(
                Metric(
                    meta.name,
                    meta.description,
                    meta.unit,
                    HistogramData(points_h, AggregationTemporality.CUMULATIVE),
                )
            )
        for observed in self._observed:
            meta = observed.meta
            points = [
                NumberDataPoint(meta.attributes(values), start, now, value)
                for values, value in observed.read()
            ]
            if observed.monotonic:
                metrics.append(_sum(meta, points, monotonic=True))
            else:
                metrics.append(Metric(meta.name, meta.description, meta.unit, Gauge(points)))
        scope = ScopeMetrics(_SCOPE, [m for m in metrics if m.data.data_points], "")
        return MetricsData([ResourceMetrics(self.resource, [scope], "")])


def _sum(meta: _Meta, points: list[NumberDataPoint], *, monotonic: bool) -> Metric:
    data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=monotonic)
    return Metric(meta.name, meta.description, meta.unit, data)


def _le(bound: float) -> str:
    return repr(float(bound))
