"""The Prometheus metrics: read from the real components' counters at scrape time, in a private registry."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from helpers import make_signal
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bot.bus.channels import Channels
from bot.bus.publisher import SignalPublisher
from bot.engine import EngineStats
from bot.feeds.health import FeedHealth
from bot.observe.drift import DriftTracker
from bot.observe.heartbeat import HeartbeatPublisher
from bot.observe.metrics import METRICS, Metrics, Sample
from bot.paper.trader import TraderStats
from bot.queues import BoundedQueue
from bot.rejections import RejectionCounter
from bot.risk.engine import RiskStats

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


class ManualClock:
    """Wall and monotonic time that only move when a test says so."""

    def __init__(self, now_ms: int = 1_763_700_000_000) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1000.0

    async def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def scrape(metrics: Metrics) -> Series:
    """Parse the exposition as a scraper would: (sample name, labels) → value."""
    series: Series = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def test_every_metric_is_arbbot_named_and_counters_end_in_total() -> None:
    for metric in METRICS:
        assert metric.name.startswith("arbbot_")
        assert metric.name.endswith("_total") == (metric.kind == "counter"), metric.name
        assert metric.doc


def test_feed_metrics_come_from_feed_health_at_scrape_time() -> None:
    clock = ManualClock()
    health = FeedHealth()
    metrics = Metrics(clock=clock, process_metrics=False)
    metrics.add_feeds(health)
    t0 = clock.now
    health.register("alpha", "BTC/USDT", t0)
    health.register("alpha", "ETH/USDT", t0)
    health.register("beta", "BTC/USDT", t0)
    for i, lag in enumerate([40, 50, 60]):
        health.on_book("alpha", "BTC/USDT", t0 + i, t0 + i - lag)
    health.on_book("alpha", "ETH/USDT", t0 + 2, None)
    health.on_book("beta", "BTC/USDT", t0 + 2, None)
    health.on_reconnect("beta", t0 + 3)  # beta resyncs from here
    health.on_fault("beta", None, "gap", health.state("beta", "BTC/USDT"), t0 + 3)
    clock.now = t0 + 4_003

    series = scrape(metrics)
    assert value(series, "arbbot_feed_updates_total", venue="alpha") == 4
    assert value(series, "arbbot_feed_updates_total", venue="beta") == 1
    assert value(series, "arbbot_feed_reconnects_total", venue="beta") == 1
    assert value(series, "arbbot_feed_faults_total", venue="beta", kind="gap") == 1
    assert value(series, "arbbot_feed_lag_p50_seconds", venue="alpha") == pytest.approx(0.050)
    assert ("arbbot_feed_lag_p50_seconds", frozenset({("venue", "beta")})) not in series  # no exchange times
    assert value(series, "arbbot_feed_up", venue="alpha") == 1
    assert value(series, "arbbot_feed_up", venue="beta") == 0
    assert value(series, "arbbot_feed_stale_seconds", venue="alpha") == 0
    assert value(series, "arbbot_feed_stale_seconds", venue="beta") == pytest.approx(4.0)
    assert value(series, "arbbot_feed_last_update_age_seconds", venue="alpha") == pytest.approx(4.001)
    assert value(series, "arbbot_feed_streams", venue="alpha", state="live") == 2
    assert value(series, "arbbot_feed_streams", venue="beta", state="resyncing") == 1

    health.on_book("beta", "BTC/USDT", clock.now, None)  # the counters move; the next scrape sees it
    series = scrape(metrics)
    assert value(series, "arbbot_feed_updates_total", venue="beta") == 2
    assert value(series, "arbbot_feed_up", venue="beta") == 1


def test_role_counters_are_read_from_their_stats_objects() -> None:
    engine, risk, trader = EngineStats(), RiskStats(), TraderStats()
    rejections = RejectionCounter()
    state = ["ACTIVE"]
    metrics = Metrics(process_metrics=False)
    metrics.add_engine(engine)
    metrics.add_risk(risk, lambda: state[0])
    metrics.add_trader(trader, pnl=lambda: -12.5)
    metrics.add_rejections("signals", rejections)

    engine.opportunities += 9
    engine.signals_by_kind["cex_cex"] += 4
    engine.scorer_errors += 1
    risk.executed, risk.skipped = 3, 5
    trader.recorded.update({"filled": 2, "missed": 1})
    trader.redis_errors += 1
    rejections.reject("alpha", "invalid_book")
    rejections.reject("beta", "invalid_book")
    rejections.reject("alpha", "out_of_order")
    state[0] = "HALTED"

    series = scrape(metrics)
    assert value(series, "arbbot_opportunities_total") == 9
    assert value(series, "arbbot_signals_total", kind="cex_cex") == 4
    assert value(series, "arbbot_engine_errors_total", kind="scorer") == 1
    assert value(series, "arbbot_engine_errors_total", kind="strategy") == 0
    assert value(series, "arbbot_decisions_total", action="execute") == 3
    assert value(series, "arbbot_decisions_total", action="skip") == 5
    assert value(series, "arbbot_risk_state", state="HALTED") == 1
    assert value(series, "arbbot_risk_state", state="ACTIVE") == 0
    assert value(series, "arbbot_fills_total", status="filled") == 2
    assert value(series, "arbbot_fills_total", status="missed") == 1
    assert value(series, "arbbot_pnl_quote", role="paper") == -12.5
    assert value(series, "arbbot_redis_errors_total", component="paper") == 1
    assert value(series, "arbbot_rejected_inputs_total", role="signals", reason="invalid_book") == 2
    assert value(series, "arbbot_rejected_inputs_total", role="signals", reason="out_of_order") == 1


async def test_publisher_and_queue_depths(redis_client: aioredis.Redis) -> None:
    channels = Channels(f"test-observe-{uuid.uuid4().hex}")
    publisher = SignalPublisher(redis_client, channels, stream_maxlen=100, queue_size=2)
    queue: BoundedQueue[int] = BoundedQueue("engine", 3, lambda: 0.0)
    metrics = Metrics(process_metrics=False)
    metrics.add_publisher(publisher)
    metrics.add_queue("engine", lambda: len(queue), lambda: queue.dropped)
    for i in range(3):  # the writer is not started: two wait, the third is dropped
        publisher.submit(make_signal(opportunity_id=f"opp-{i}"))
    for i in range(5):
        queue.offer(i)

    series = scrape(metrics)
    assert value(series, "arbbot_queue_depth", queue=publisher.name) == 2
    assert value(series, "arbbot_queue_dropped_total", queue=publisher.name) == 1
    assert value(series, "arbbot_published_total", publisher=publisher.name) == 0
    assert value(series, "arbbot_queue_depth", queue="engine") == 3
    assert value(series, "arbbot_queue_dropped_total", queue="engine") == 2

    publisher.start()
    await publisher.close()
    assert await redis_client.xlen(channels.signal_stream()) == 2
    await redis_client.delete(channels.signal_stream())
    series = scrape(metrics)
    assert value(series, "arbbot_published_total", publisher=publisher.name) == 2
    assert value(series, "arbbot_queue_depth", queue=publisher.name) == 0


async def test_heartbeat_age(redis_client: aioredis.Redis) -> None:
    clock = ManualClock()
    heartbeat = HeartbeatPublisher(redis_client, Channels("test-observe"), "risk", clock=clock)
    metrics = Metrics(process_metrics=False)
    metrics.add_heartbeat(heartbeat)
    assert await heartbeat.beat()
    clock.now += 7_000
    series = scrape(metrics)
    assert value(series, "arbbot_heartbeat_age_seconds", role="risk") == pytest.approx(7.0)
    assert value(series, "arbbot_heartbeats_skipped_total", role="risk") == 0


def test_drift_metrics() -> None:
    tracker = DriftTracker(window=4)
    metrics = Metrics(process_metrics=False)
    metrics.add_drift(tracker)
    for profitable in (True, False, False, False, False):  # the first falls out of the window
        tracker.record("cex_cex", "lstm@3", 0.8, profitable)
    tracker.record("cex_cex", "rule", 0.5, True)

    series = scrape(metrics)
    labels = {"kind": "cex_cex", "model": "lstm@3"}
    assert value(series, "arbbot_model_outcomes_total", **labels, outcome="profitable") == 1
    assert value(series, "arbbot_model_outcomes_total", **labels, outcome="unprofitable") == 4
    assert value(series, "arbbot_model_window_samples", **labels) == 4
    assert value(series, "arbbot_model_score_mean", **labels) == pytest.approx(0.8)
    assert value(series, "arbbot_model_hit_rate", **labels) == 0.0
    assert value(series, "arbbot_model_calibration_gap", **labels) == pytest.approx(0.8)
    assert value(series, "arbbot_model_brier", **labels) == pytest.approx(0.64)
    assert value(series, "arbbot_model_calibration_gap", kind="cex_cex", model="rule") == pytest.approx(-0.5)


def test_a_failing_source_is_counted_and_the_others_still_scrape() -> None:
    metrics = Metrics(process_metrics=False)
    calls = Counter[str]()

    def broken() -> list[Sample]:
        calls["broken"] += 1
        raise RuntimeError("source bug")

    metrics.add_source("broken", broken)
    metrics.add_source("fine", lambda: [Sample("arbbot_opportunities_total", (), 3)])
    scrape(metrics)
    series = scrape(metrics)
    assert calls["broken"] == 2
    assert value(series, "arbbot_metrics_source_errors_total", source="broken") == 2
    assert value(series, "arbbot_opportunities_total") == 3


def test_bad_samples_are_dropped_and_counted() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.add_source(
        "sloppy",
        lambda: [
            Sample("arbbot_no_such_metric", (), 1),
            Sample("arbbot_signals_total", (), 1),  # missing its `kind` label
            Sample("arbbot_pnl_quote", ("paper",), math.nan),
            Sample("arbbot_signals_total", ("cex_dex",), 2),
        ],
    )
    series = scrape(metrics)
    assert metrics.collector.bad_samples == 3
    assert value(series, "arbbot_signals_total", kind="cex_dex") == 2
    assert not any(name == "arbbot_pnl_quote" for name, _ in series)


def test_counters_of_two_sources_add_up_and_names_are_unique() -> None:
    metrics = Metrics(process_metrics=False)
    signals, risk = RejectionCounter(), RejectionCounter()
    metrics.add_rejections("node", signals, name="signals")
    metrics.add_rejections("node", risk, name="risk")
    signals.reject("alpha", "invalid_book")
    risk.reject("signal", "invalid_book")
    assert value(scrape(metrics), "arbbot_rejected_inputs_total", role="node", reason="invalid_book") == 2
    with pytest.raises(ValueError, match="already registered"):
        metrics.add_rejections("node", RejectionCounter(), name="risk")


def test_registries_are_private_so_two_can_live_in_one_process() -> None:
    first, second = Metrics(), Metrics()
    first.add_source("engine", lambda: [Sample("arbbot_opportunities_total", (), 1)])
    second.add_source("engine", lambda: [Sample("arbbot_opportunities_total", (), 2)])
    assert value(scrape(first), "arbbot_opportunities_total") == 1
    assert value(scrape(second), "arbbot_opportunities_total") == 2
    assert ("process_cpu_seconds_total", frozenset()) in scrape(first)
    assert REGISTRY.get_sample_value("arbbot_opportunities_total") is None
    version = next(dict(labels)["version"] for name, labels in scrape(first) if name == "arbbot_build_info")
    assert version
