"""Tick → signal latency: from a book frame leaving a local venue server to the signal it triggered arriving at a
subscriber in another process, beside raw Redis pub/sub latency between two processes, in the same run.

Processes: this one runs the venue servers and publishes the books (`BookDriver`, paced at `rate_per_s` in all);
a `signals` child runs the real signals role (ccxt.pro feeds, engine, scorer, publisher); a `signal-probe` child
subscribes to the signals. A signal's `ts` is the `ts` of the book that triggered it, unique per symbol, so
(symbol, ts) finds the time that book's frame left the venue server (written to the role's socket); latency = the
probe's arrival time minus that, both `time.time_ns()` of one host. A book may trigger several signals (one per
venue pair it crosses): each is a sample. The raw Redis reference: a `raw-pub` child PUBLISHes `{"t": time_ns}`
at the same rate, a `raw-sub` child PSUBSCRIBEs as the signal subscriber does and takes arrival − t.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot.bench.books import BookDriver, MarketShape
from bot.bench.pace import paced
from bot.bench.procs import CpuMeter, Worker
from bot.bench.stack import VenueSet, signals_config
from bot.bus.channels import Channels

RAW_PREFIX = "benchraw"
READY_S = 30.0


@dataclass(frozen=True, slots=True)
class LatencySettings:
    """What the latency part measures, and for how long."""

    shape: MarketShape = field(default_factory=lambda: MarketShape(venues=3, symbols=10))
    rate_per_s: float = 2_000.0
    duration_s: float = 30.0
    warmup_s: float = 3.0
    scorers: tuple[str, ...] = ("rule", "model")
    """Each gets a run of its own, in this order; the first one's figures are the headline."""
    model_dir: Path | None = None
    live_timeout_s: float = 120.0
    """How long the signals role may take until every book stream is live."""
    grace_s: float = 1.0
    """How long signals may still arrive after the last measured book."""


def summarise(latencies_ns: Sequence[int]) -> dict[str, Any]:
    """Percentiles (ms) of latency samples given in ns."""
    if not latencies_ns:
        raise RuntimeError("no latency samples: nothing arrived")
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p99, p999 = np.percentile(ms, [50.0, 90.0, 99.0, 99.9])
    return {
        "samples": len(ms),
        "p50_ms": round(float(p50), 4),
        "p90_ms": round(float(p90), 4),
        "p99_ms": round(float(p99), 4),
        "p999_ms": round(float(p999), 4),
        "max_ms": round(float(ms.max()), 4),
        "mean_ms": round(float(ms.mean()), 4),
    }


async def measure_latency(
    settings: LatencySettings, redis_url: str, workdir: Path, watch: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Run the raw Redis reference, then tick → signal once per scorer; return the `tick_to_signal` result.

    `watch` names more processes (the Redis server) whose CPU share each run reports.
    """
    raw = await raw_redis(settings, redis_url, workdir)
    by_scorer = {
        scorer: await tick_to_signal(settings, scorer, redis_url, workdir, watch) for scorer in settings.scorers
    }
    for row in by_scorer.values():
        row["p50_vs_raw_redis"] = round(row["p50_ms"] / raw["p50_ms"], 2)
    head = by_scorer[settings.scorers[0]]
    return {
        "p50_ms": head["p50_ms"],
        "p99_ms": head["p99_ms"],
        "p999_ms": head["p999_ms"],
        "raw_redis_p50_ms": raw["p50_ms"],
        "raw_redis_p99_ms": raw["p99_ms"],
        "raw_redis_p999_ms": raw["p999_ms"],
        "p50_vs_raw_redis": head["p50_vs_raw_redis"],
        "scorer": settings.scorers[0],
        "rate_per_s": settings.rate_per_s,
        "duration_s": settings.duration_s,
        "grace_s": settings.grace_s,
        "venues": settings.shape.venues,
        "symbols": settings.shape.symbols,
        "levels": settings.shape.levels,
        "raw_redis": raw,
        "by_scorer": by_scorer,
    }


async def raw_redis(settings: LatencySettings, redis_url: str, workdir: Path) -> dict[str, Any]:
    """Plain PUBLISH → PSUBSCRIBE latency between two processes at `rate_per_s` (the warm-up's samples dropped)."""
    channels = Channels(RAW_PREFIX)
    subscriber = await Worker.start("raw-sub", {"redis_url": redis_url, "pattern": channels.signal_pattern()}, workdir)
    publisher: Worker | None = None
    try:
        await subscriber.ready(READY_S)
        spec = {
            "redis_url": redis_url,
            "channel": channels.signal("raw", "RAW/USDT"),
            "rate_per_s": settings.rate_per_s,
            "duration_s": settings.warmup_s + settings.duration_s,
        }
        publisher = await Worker.start("raw-pub", spec, workdir)
        await publisher.ready(READY_S)
        sent = await publisher.result(settings.warmup_s + settings.duration_s + READY_S)
        await asyncio.sleep(settings.grace_s)
        received = await subscriber.stop()
    finally:
        await subscriber.close()
        if publisher is not None:
            await publisher.close()
    latencies = received["latency_ns"][round(settings.warmup_s * settings.rate_per_s) :]
    summary = summarise(latencies)
    return {**summary, "sent": sent["sent"], "received": len(received["latency_ns"]), "rate_per_s": sent["rate_per_s"]}


async def tick_to_signal(
    settings: LatencySettings, scorer: str, redis_url: str, workdir: Path, watch: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """One run of venue servers → signals role → probe with the given scorer (`rule` or `model`)."""
    if scorer not in ("rule", "model"):
        raise ValueError(f"unknown scorer {scorer!r} (rule or model)")
    if scorer == "model" and settings.model_dir is None:
        raise ValueError("the model scorer needs a model folder")
    shape = settings.shape
    prefix = f"bench{scorer}"
    venues = VenueSet(shape)
    await venues.start()
    driver = BookDriver(shape, venues.servers)
    driver.publish_all()
    workers: list[Worker] = []
    stop_driving = asyncio.Event()
    driving: asyncio.Task[Any] | None = None
    try:
        probe_spec = {"redis_url": redis_url, "pattern": Channels(prefix).signal_pattern()}
        probe = await Worker.start("signal-probe", probe_spec, workdir)
        workers.append(probe)
        await probe.ready(READY_S)
        model_dir = settings.model_dir if scorer == "model" else None
        config = signals_config(shape, redis_url, prefix, model_dir)
        role = await Worker.start("signals", {"config": config, "endpoints": venues.endpoints()}, workdir)
        workers.append(role)
        driving = asyncio.get_running_loop().create_task(paced(settings.rate_per_s, driver, stop_driving))
        await role.ready(settings.live_timeout_s)
        await asyncio.sleep(settings.warmup_s)
        meter = CpuMeter({"venues": os.getpid(), "signals": role.pid, "probe": probe.pid, **(watch or {})})
        driver.recording = True
        await asyncio.sleep(settings.duration_s)
        driver.recording = False
        cpu = meter.read()
        stop_driving.set()
        await driving
        await asyncio.sleep(settings.grace_s)
        # The probe first: the role's shutdown closes open opportunities with signals of its own.
        signals = await probe.stop()
        counters = await role.stop()
    finally:
        stop_driving.set()
        if driving is not None:
            with contextlib.suppress(Exception):
                await driving
        for worker in workers:
            await worker.close()
        await venues.stop()
    return {**_match(driver, signals, counters, settings), "cpu_pct": cpu}


def _match(
    driver: BookDriver, signals: dict[str, Any], counters: dict[str, Any], settings: LatencySettings
) -> dict[str, Any]:
    stamps = driver.stamps
    latencies: list[int] = []
    books: set[tuple[str, int]] = set()
    for symbol, ts, arrival in zip(signals["symbol"], signals["ts"], signals["arrival_ns"], strict=True):
        sent = stamps.get((symbol, ts))
        if sent is not None:
            latencies.append(arrival - sent)
            books.add((symbol, ts))
    return {
        **summarise(latencies),
        "updates": driver.recorded_updates,
        "rate_per_s": round(driver.recorded_updates / settings.duration_s, 1),
        "triggering_updates": len(driver.triggering),
        "triggering_share": round(len(driver.triggering) / max(1, driver.recorded_updates), 4),
        "triggering_without_signal": len(driver.triggering - books),
        "updates_with_signals": len(books),
        "signals_received": len(signals["ts"]),
        "statuses": signals["statuses"],
        "models": signals["models"],
        "role": counters,
    }
