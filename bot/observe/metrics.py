"""Prometheus metrics of the daemon, read from the components' own counters at each scrape.

Nothing here runs on the hot path: the engine, feeds, publishers, risk and paper trader keep their plain
counters as they do anyway, and the registry reads them (through small "sources") when `/metrics` is scraped.
Scrapes run on the event loop, so sources read the same objects the tasks write without locks.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.clock import Clock, SystemClock
from bot.feeds.health import FeedHealth, StreamState
from bot.observe.drift import DriftTracker
from bot.observe.heartbeat import package_version

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 60.0
"""A failing source is logged at most this often (it is counted at every scrape)."""


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: counters are named with their `_total` suffix."""

    name: str
    kind: Literal["counter", "gauge"]
    doc: str
    labels: tuple[str, ...] = ()


METRICS: tuple[MetricDef, ...] = (
    MetricDef("arbbot_build_info", "gauge", "Always 1; the arbbot version in a label.", ("version",)),
    # feeds
    MetricDef("arbbot_feed_updates_total", "counter", "Valid books received per venue (rate() gives updates/s).",
              ("venue",)),
    MetricDef("arbbot_feed_reconnects_total", "counter", "New connections opened to a venue.", ("venue",)),
    MetricDef("arbbot_feed_faults_total", "counter", "Feed faults per venue and kind (gap, disconnect, ...).",
              ("venue", "kind")),
    MetricDef("arbbot_feed_lag_p50_seconds", "gauge",
              "Median receive time minus exchange time over the recent books (includes the venue clock offset).",
              ("venue",)),
    MetricDef("arbbot_feed_lag_p99_seconds", "gauge", "99th percentile of the same lag.", ("venue",)),
    MetricDef("arbbot_feed_stale_seconds", "gauge",
              "How long the venue's longest-unusable stream has been unusable (stale, resyncing, ...); 0 if all live.",
              ("venue",)),
    MetricDef("arbbot_feed_last_update_age_seconds", "gauge", "Seconds since the venue's newest book arrived.",
              ("venue",)),
    MetricDef("arbbot_feed_up", "gauge", "1 when every stream of the venue is live, else 0.", ("venue",)),
    MetricDef("arbbot_feed_streams", "gauge", "Streams of a venue per state.", ("venue", "state")),
    # inputs
    MetricDef("arbbot_rejected_inputs_total", "counter", "Inputs rejected (counted, never fatal) by role and reason.",
              ("role", "reason")),
    # signals role
    MetricDef("arbbot_opportunities_total", "counter", "Opportunities the strategies found (before scoring)."),
    MetricDef("arbbot_signals_total", "counter", "Signals emitted, by strategy kind.", ("kind",)),
    MetricDef("arbbot_engine_errors_total", "counter", "Strategy, listener, scorer or event work that raised.",
              ("kind",)),
    # risk role
    MetricDef("arbbot_decisions_total", "counter", "Decisions taken, by action.", ("action",)),
    MetricDef("arbbot_risk_state", "gauge", "1 for the risk service's current state.", ("state",)),
    # paper role
    MetricDef("arbbot_fills_total", "counter", "Paper fills recorded, by status.", ("status",)),
    MetricDef("arbbot_pnl_quote", "gauge", "Realised PnL so far, in quote units.", ("role",)),
    # plumbing
    MetricDef("arbbot_published_total", "counter", "Messages a publisher got into Redis.", ("publisher",)),
    MetricDef("arbbot_redis_errors_total", "counter", "Redis errors (retried or skipped) per component.",
              ("component",)),
    MetricDef("arbbot_queue_depth", "gauge", "Items waiting in a bounded queue.", ("queue",)),
    MetricDef("arbbot_queue_dropped_total", "counter", "Items a full bounded queue dropped.", ("queue",)),
    MetricDef("arbbot_heartbeat_age_seconds", "gauge", "Seconds since this process's last heartbeat reached Redis.",
              ("role",)),
    MetricDef("arbbot_heartbeats_skipped_total", "counter", "Heartbeats skipped because Redis failed or was slow.",
              ("role",)),
    # model drift (see bot/observe/drift.py)
    MetricDef("arbbot_model_outcomes_total", "counter", "Executed trades whose outcome is known, by outcome.",
              ("kind", "model", "outcome")),
    MetricDef("arbbot_model_window_samples", "gauge", "Executed trades in the drift window.", ("kind", "model")),
    MetricDef("arbbot_model_score_mean", "gauge", "Mean model score of the executed trades in the window.",
              ("kind", "model")),
    MetricDef("arbbot_model_hit_rate", "gauge", "Share of the executed trades in the window that were profitable.",
              ("kind", "model")),
    MetricDef("arbbot_model_calibration_gap", "gauge",
              "Mean score minus hit rate over the window: alert when far from 0 (positive: overconfident).",
              ("kind", "model")),
    MetricDef("arbbot_model_brier", "gauge", "Mean squared error of score vs outcome over the window.",
              ("kind", "model")),
    # the collector itself
    MetricDef("arbbot_task_deaths_total", "counter", "Background tasks that died with an error, by task.", ("task",)),
    MetricDef("arbbot_task_restarts_total", "counter", "Supervised tasks started again after dying.", ("task",)),
    MetricDef("arbbot_metrics_source_errors_total", "counter", "Scrapes at which a metrics source raised.",
              ("source",)),
)  # fmt: skip
_BY_NAME = {metric.name: metric for metric in METRICS}


class Sample(NamedTuple):
    """One value of a metric of METRICS, with its label values in the metric's label order."""

    name: str
    labels: tuple[str, ...]
    value: float


Source = Callable[[], Iterable[Sample]]
"""Read some component's counters; called at each scrape."""


class SourceCollector(Collector):
    """Collect METRICS from registered sources at scrape time.

    A source that raises is skipped for that scrape (counted in `arbbot_metrics_source_errors_total`);
    samples of unknown metrics, with the wrong label count or not finite are dropped. Two sources giving the
    same counter series add up (e.g. two components of one role); for a gauge the last one wins.
    """

    def __init__(self) -> None:
        self._sources: dict[str, Source] = {}
        self.source_errors: Counter[str] = Counter()
        self.bad_samples = 0
        self._last_logged: dict[str, float] = {}

    def add(self, name: str, source: Source) -> None:
        """Read `source` at every scrape; `name` (unique) labels its errors."""
        if name in self._sources:
            raise ValueError(f"a metrics source named {name!r} is already registered")
        self._sources[name] = source

    def describe(self) -> Iterable[Metric]:
        return [_family(metric) for metric in METRICS]

    def collect(self) -> Iterable[Metric]:
        values: dict[str, dict[tuple[str, ...], float]] = {metric.name: {} for metric in METRICS}
        for name, source in list(self._sources.items()):
            try:
                samples = list(source())
            except Exception:  # one broken source must not take /metrics down
                self.source_errors[name] += 1
                now = time.monotonic()
                if now - self._last_logged.get(name, -math.inf) >= ERROR_LOG_INTERVAL_S:
                    self._last_logged[name] = now
                    log.exception("metrics source %s failed (%d times so far)", name, self.source_errors[name])
                continue
            for sample in samples:
                self._put(values, sample)
        for name, count in self.source_errors.items():
            values["arbbot_metrics_source_errors_total"][(name,)] = float(count)
        for metric in METRICS:
            family = _family(metric)
            for labels, value in values[metric.name].items():
                family.add_metric(list(labels), value)
            yield family

    def _put(self, values: dict[str, dict[tuple[str, ...], float]], sample: Sample) -> None:
        metric = _BY_NAME.get(sample.name)
        value = float(sample.value)
        if metric is None or len(sample.labels) != len(metric.labels) or not math.isfinite(value):
            self.bad_samples += 1
            return
        series = values[metric.name]
        if metric.kind == "counter":
            series[sample.labels] = series.get(sample.labels, 0.0) + value
        else:
            series[sample.labels] = value


def _family(metric: MetricDef) -> CounterMetricFamily | GaugeMetricFamily:
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.doc, labels=metric.labels)
    return GaugeMetricFamily(metric.name, metric.doc, labels=metric.labels)


# ---------------------------------------------------------------- what the sources read (structural types)


class EngineCounters(Protocol):
    """The signal engine's `stats` (bot.engine.EngineStats)."""

    @property
    def opportunities(self) -> int: ...
    @property
    def signals_by_kind(self) -> Mapping[str, int]: ...
    @property
    def strategy_errors(self) -> int: ...
    @property
    def listener_errors(self) -> int: ...
    @property
    def scorer_errors(self) -> int: ...
    @property
    def event_errors(self) -> int: ...


class RejectionCounts(Protocol):
    """A bot.rejections.RejectionCounter."""

    def by_reason(self) -> Mapping[str, int]: ...


class PublisherCounters(Protocol):
    """A publisher's `stats` (bot.bus.publisher.PublisherStats)."""

    @property
    def published(self) -> int: ...
    @property
    def redis_errors(self) -> int: ...


class PublisherLike(Protocol):
    """A bot.bus.publisher.Publisher."""

    @property
    def name(self) -> str: ...
    @property
    def stats(self) -> PublisherCounters: ...
    @property
    def pending(self) -> int: ...
    @property
    def dropped(self) -> int: ...


class RiskCounters(Protocol):
    """The risk engine's `stats` (bot.risk.engine.RiskStats)."""

    @property
    def executed(self) -> int: ...
    @property
    def skipped(self) -> int: ...


class TraderCounters(Protocol):
    """The paper trader's `stats` (bot.paper.trader.TraderStats)."""

    @property
    def recorded(self) -> Mapping[str, int]: ...
    @property
    def redis_errors(self) -> int: ...


class HeartbeatLike(Protocol):
    """A bot.observe.heartbeat.HeartbeatPublisher."""

    @property
    def role(self) -> str: ...
    def age_s(self) -> float: ...
    @property
    def stats(self) -> HeartbeatCounters: ...


class HeartbeatCounters(Protocol):
    @property
    def skipped(self) -> int: ...


RISK_STATES = ("ACTIVE", "REDUCING", "HALTED")


class Metrics:
    """The daemon's metrics: a private registry (not the global one), filled by the sources registered here.

    Register what the process hosts (`add_feeds`, `add_engine`, `add_risk`, ...), then serve `render()`
    (or hand `registry` to the HTTP server). Every adapter reads existing counters only at scrape time.
    """

    def __init__(self, clock: Clock | None = None, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.collector = SourceCollector()
        self.registry.register(self.collector)
        if process_metrics:
            ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, …
        self._clock = clock or SystemClock()
        version = package_version()
        self.add_source("build", lambda: [Sample("arbbot_build_info", (version,), 1.0)])

    def add_source(self, name: str, source: Source) -> None:
        """Read `source` at every scrape (for components without an adapter below)."""
        self.collector.add(name, source)

    def render(self) -> bytes:
        """The text exposition of every metric (what `/metrics` serves)."""
        return generate_latest(self.registry)

    def add_feeds(self, health: FeedHealth, name: str = "feeds") -> None:
        """Per venue: updates, reconnects, faults, lag, staleness and stream states of a FeedHealth."""

        def read() -> Iterator[Sample]:
            now_ms = self._clock.now_ms()
            for venue, vh in list(health.venues.items()):
                yield Sample("arbbot_feed_updates_total", (venue,), vh.updates)
                yield Sample("arbbot_feed_reconnects_total", (venue,), vh.reconnects)
                for kind, count in vh.faults.items():
                    yield Sample("arbbot_feed_faults_total", (venue, kind), count)
                latency = vh.latency.stats()
                if latency is not None:
                    yield Sample("arbbot_feed_lag_p50_seconds", (venue,), latency.p50_ms / 1000.0)
                    yield Sample("arbbot_feed_lag_p99_seconds", (venue,), latency.p99_ms / 1000.0)
                streams = list(vh.streams.values())
                if not streams:
                    continue
                yield Sample("arbbot_feed_stale_seconds", (venue,), health.unhealthy_for(venue, now_ms) / 1000.0)
                received = [s.last_recv_ms for s in streams if s.last_recv_ms is not None]
                if received:
                    yield Sample("arbbot_feed_last_update_age_seconds", (venue,), max(0, now_ms - max(received)) / 1e3)
                live = all(s.state is StreamState.LIVE for s in streams)
                yield Sample("arbbot_feed_up", (venue,), 1.0 if live else 0.0)
                states = Counter(s.state for s in streams)
                for state in StreamState:
                    yield Sample("arbbot_feed_streams", (venue, state.value), states[state])

        self.add_source(name, read)

    def add_rejections(self, role: str, rejections: RejectionCounts, name: str | None = None) -> None:
        """Rejected inputs of one component, by reason, under `role`."""
        self.add_source(
            name or f"rejections:{role}",
            lambda: [Sample("arbbot_rejected_inputs_total", (role, r), n) for r, n in rejections.by_reason().items()],
        )

    def add_engine(self, stats: EngineCounters, name: str = "engine") -> None:
        """Opportunities, signals by kind and guarded errors of the signal engine."""

        def read() -> Iterator[Sample]:
            yield Sample("arbbot_opportunities_total", (), stats.opportunities)
            for kind, count in stats.signals_by_kind.items():
                yield Sample("arbbot_signals_total", (kind,), count)
            yield Sample("arbbot_engine_errors_total", ("strategy",), stats.strategy_errors)
            yield Sample("arbbot_engine_errors_total", ("listener",), stats.listener_errors)
            yield Sample("arbbot_engine_errors_total", ("scorer",), stats.scorer_errors)
            yield Sample("arbbot_engine_errors_total", ("event",), stats.event_errors)

        self.add_source(name, read)

    def add_publisher(self, publisher: PublisherLike) -> None:
        """Published messages, Redis errors, queue depth and drops of a Publisher (named by its `name`)."""
        label = publisher.name

        def read() -> Iterator[Sample]:
            yield Sample("arbbot_published_total", (label,), publisher.stats.published)
            yield Sample("arbbot_redis_errors_total", (label,), publisher.stats.redis_errors)
            yield Sample("arbbot_queue_depth", (label,), publisher.pending)
            yield Sample("arbbot_queue_dropped_total", (label,), publisher.dropped)

        self.add_source(f"publisher:{label}", read)

    def add_queue(self, queue: str, depth: Callable[[], int], dropped: Callable[[], int] | None = None) -> None:
        """Depth (and drops) of any bounded queue, read through callables."""

        def read() -> Iterator[Sample]:
            yield Sample("arbbot_queue_depth", (queue,), depth())
            if dropped is not None:
                yield Sample("arbbot_queue_dropped_total", (queue,), dropped())

        self.add_source(f"queue:{queue}", read)

    def add_risk(self, stats: RiskCounters, state: Callable[[], str] | None = None, name: str = "risk") -> None:
        """Decisions by action, and the risk state (`state()` returns ACTIVE, REDUCING or HALTED)."""

        def read() -> Iterator[Sample]:
            yield Sample("arbbot_decisions_total", ("execute",), stats.executed)
            yield Sample("arbbot_decisions_total", ("skip",), stats.skipped)
            if state is not None:
                current = state()
                for candidate in RISK_STATES:
                    yield Sample("arbbot_risk_state", (candidate,), 1.0 if candidate == current else 0.0)

        self.add_source(name, read)

    def add_trader(self, stats: TraderCounters, pnl: Callable[[], float] | None = None, name: str = "paper") -> None:
        """Fills by status and Redis errors of the paper trader, and its realised PnL (`pnl()`, e.g. the
        ledger's `total_pnl`: a small SQLite query per scrape)."""

        def read() -> Iterator[Sample]:
            for status, count in stats.recorded.items():
                yield Sample("arbbot_fills_total", (status,), count)
            yield Sample("arbbot_redis_errors_total", (name,), stats.redis_errors)
            if pnl is not None:
                yield Sample("arbbot_pnl_quote", (name,), pnl())

        self.add_source(name, read)

    def add_heartbeat(self, heartbeat: HeartbeatLike) -> None:
        """Age of the last heartbeat that reached Redis, and skipped beats."""
        role = heartbeat.role

        def read() -> Iterator[Sample]:
            yield Sample("arbbot_heartbeat_age_seconds", (role,), heartbeat.age_s())
            yield Sample("arbbot_heartbeats_skipped_total", (role,), heartbeat.stats.skipped)

        self.add_source(f"heartbeat:{role}", read)

    def add_drift(self, tracker: DriftTracker, name: str = "drift") -> None:
        """Model score vs realised outcome of executed trades (see bot/observe/drift.py)."""

        def read() -> Iterator[Sample]:
            for (kind, model, outcome), count in tracker.outcomes.items():
                yield Sample("arbbot_model_outcomes_total", (kind, model, outcome), count)
            for stats in tracker.stats():
                labels = (stats.kind, stats.model)
                yield Sample("arbbot_model_window_samples", labels, stats.samples)
                yield Sample("arbbot_model_score_mean", labels, stats.score_mean)
                yield Sample("arbbot_model_hit_rate", labels, stats.hit_rate)
                yield Sample("arbbot_model_calibration_gap", labels, stats.gap)
                yield Sample("arbbot_model_brier", labels, stats.brier)

        self.add_source(name, read)
