"""Resident memory of the signals role over a long run: many venues × symbols with deep books, at a steady rate.

This process runs the venue servers and publishes the books (`BookDriver`, a share of them crossing, so signals
flow); a `signals` child runs the real signals role. Its RSS (/proc) is sampled every `sample_s` from the end of the
warm-up (`start_mb`) to the end of the run (`end_mb`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.bench.books import BookDriver, MarketShape
from bot.bench.pace import PaceStats, paced
from bot.bench.procs import CpuMeter, Worker, rss_mb
from bot.bench.stack import VenueSet, signals_config

PREFIX = "benchrss"


@dataclass(frozen=True, slots=True)
class RssSettings:
    """What the memory part runs, and for how long."""

    shape: MarketShape = field(default_factory=lambda: MarketShape(venues=10, symbols=50))
    rate_per_s: float = 2_000.0
    duration_s: float = 600.0
    warmup_s: float = 30.0
    sample_s: float = 10.0
    scorer: str = "model"
    model_dir: Path | None = None
    live_timeout_s: float = 300.0


async def measure_rss(
    settings: RssSettings, redis_url: str, workdir: Path, watch: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Run the signals role for `warmup_s` + `duration_s` and return its RSS figures (and the CPU shares of this
    process, the role, and the processes `watch` names)."""
    if settings.scorer == "model" and settings.model_dir is None:
        raise ValueError("the model scorer needs a model folder")
    shape = settings.shape
    venues = VenueSet(shape)
    await venues.start()
    driver = BookDriver(shape, venues.servers)
    driver.publish_all()
    model_dir = settings.model_dir if settings.scorer == "model" else None
    config = signals_config(shape, redis_url, PREFIX, model_dir)
    stop_driving = asyncio.Event()
    driving: asyncio.Task[PaceStats] | None = None
    role = await Worker.start("signals", {"config": config, "endpoints": venues.endpoints()}, workdir)
    started = time.monotonic()
    try:
        driving = asyncio.get_running_loop().create_task(paced(settings.rate_per_s, driver, stop_driving))
        await role.ready(settings.live_timeout_s)
        await asyncio.sleep(settings.warmup_s)
        meter = CpuMeter({"venues": os.getpid(), "signals": role.pid, **(watch or {})})
        samples = await _sample(role.pid, settings)
        cpu = meter.read()
        stop_driving.set()
        pace = await driving
        counters = await role.stop()
        ran_s = time.monotonic() - started
    finally:
        stop_driving.set()
        if driving is not None:
            with contextlib.suppress(Exception):
                await driving
        await role.close()
        await venues.stop()
    start_mb, end_mb = samples[0][1], samples[-1][1]
    return {
        "start_mb": start_mb,
        "end_mb": end_mb,
        "peak_mb": max(mb for _, mb in samples),
        "growth_pct": round((end_mb - start_mb) / start_mb * 100.0, 2),
        "ready_mb": counters["ready_rss_mb"],
        "duration_s": settings.duration_s,
        "warmup_s": settings.warmup_s,
        "venues": shape.venues,
        "symbols": shape.symbols,
        "levels": shape.levels,
        "scorer": settings.scorer,
        "rate_per_s": round(pace.rate_per_s, 1),
        "engine_updates_per_s": round(counters["updates"] / ran_s, 1),
        "samples": samples,
        "cpu_pct": cpu,
        "role": counters,
    }


async def _sample(pid: int, settings: RssSettings) -> list[tuple[float, float]]:
    """(seconds since the warm-up ended, RSS MB) every `sample_s`, from 0 to `duration_s`."""
    start = time.monotonic()
    samples = [(0.0, round(rss_mb(pid), 1))]
    while (elapsed := time.monotonic() - start) < settings.duration_s:
        await asyncio.sleep(min(settings.sample_s, settings.duration_s - elapsed))
        samples.append((round(time.monotonic() - start, 1), round(rss_mb(pid), 1)))
    return samples
