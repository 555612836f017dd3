"""The benchmark's child processes (`python -m bot.bench.workers KIND SPEC OUT`, see bot.bench.procs).

- `signals`: the real signals role (ccxt.pro feeds → engine → scorer → Redis publisher) against the local venue
  servers its spec names; ready once every book stream is live.
- `signal-probe`: a subscriber in another process (bot.bus.subscriber.follow): the arrival time of every signal.
- `raw-pub` / `raw-sub`: plain Redis pub/sub between two processes, timestamped small messages at a set rate.
- `feeds`: the feeds benchmark (bot.bench.feeds) with the model scorer's passes, on one BLAS thread.

Times are `time.time_ns()`: one host clock for every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bot.bench.pace import paced
from bot.bench.procs import rss_mb
from bot.bus.codec import DecodeError
from bot.bus.subscriber import follow
from bot.config import RootConfig
from bot.feeds.health import StreamState
from bot.messages import Message, Signal
from bot.signals_role import SignalsRole
from bot.tasks import cancel_and_wait

LOOP_WATCH_S = 0.1


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines until the first ends (raising what it raised), then cancel the others."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            await cancel_and_wait(task)


class _LoopWatch:
    """How late the role's event loop runs a timer, and how many messages wait in its publishers' queues."""

    def __init__(self, role: SignalsRole) -> None:
        self._role = role
        self.lags_ms: list[float] = []
        self.signal_backlog = 0
        self.market_backlog = 0

    async def run(self) -> None:
        while True:
            due = time.perf_counter() + LOOP_WATCH_S
            await asyncio.sleep(LOOP_WATCH_S)
            self.lags_ms.append((time.perf_counter() - due) * 1e3)
            self.signal_backlog = max(self.signal_backlog, self._role.publisher.pending)
            if self._role.market_publisher is not None:
                self.market_backlog = max(self.market_backlog, self._role.market_publisher.publisher.pending)

    def summary(self) -> dict[str, Any]:
        lags = sorted(self.lags_ms) or [0.0]
        return {
            "loop_lag_p50_ms": round(lags[len(lags) // 2], 2),
            "loop_lag_max_ms": round(lags[-1], 2),
            "signal_queue_max": self.signal_backlog,
            "market_queue_max": self.market_backlog,
        }


async def signals(spec: dict[str, Any], ready: Callable[[], None], stop: asyncio.Event) -> dict[str, Any]:
    """Run the signals role until stopped; report its counters."""
    config = RootConfig.model_validate(spec["config"])
    endpoints = {name: (urls, rows) for name, (urls, rows) in spec["endpoints"].items()}
    client = aioredis.from_url(config.redis.url)
    role = SignalsRole(config, client, endpoints)
    streams = [(venue, symbol) for venue in config.venues for symbol in config.symbols_of(venue)]
    live = asyncio.Event()

    def on_state(venue: str, symbol: str, state: StreamState) -> None:
        if all(role.health.is_live(v, s) for v, s in streams):
            live.set()

    role.health.add_listener(on_state)
    started = time.monotonic()
    await role.start()
    await _first(live.wait(), stop.wait())
    ready_s = time.monotonic() - started
    ready_mb = rss_mb()
    ready()
    loop = _LoopWatch(role)
    watching = asyncio.get_running_loop().create_task(loop.run(), name="loop-watch")
    await stop.wait()
    await cancel_and_wait(watching)
    await role.stop()
    await client.aclose()
    stats = role.engine.stats
    return {
        **loop.summary(),
        "live_after_s": round(ready_s, 3),
        "ready_rss_mb": round(ready_mb, 1),
        "end_rss_mb": round(rss_mb(), 1),
        "updates": stats.updates,
        "opportunities": stats.opportunities,
        "signals": stats.signals,
        "published": role.publisher.stats.published,
        "dropped": role.publisher.dropped + role.engine.dropped_updates,
        "books_dropped": role.market_publisher.publisher.dropped if role.market_publisher is not None else 0,
        "rejected": role.rejections.total,
        "reconnects": sum(health.reconnects for health in role.health.venues.values()),
        "errors": stats.strategy_errors + stats.scorer_errors + stats.listener_errors + stats.event_errors,
    }


async def signal_probe(spec: dict[str, Any], ready: Callable[[], None], stop: asyncio.Event) -> dict[str, Any]:
    """Record (symbol, ts, arrival) of every signal on the spec's pattern until stopped."""
    client = aioredis.from_url(spec["redis_url"])
    symbols: list[str] = []
    stamps: list[int] = []
    arrivals: list[int] = []
    statuses: Counter[str] = Counter()
    models: Counter[str] = Counter()

    def on_message(payload: bytes, message: Message) -> None:
        arrival = time.time_ns()
        if isinstance(message, Signal):
            symbols.append(message.symbol)
            stamps.append(message.ts)
            arrivals.append(arrival)
            statuses[message.status] += 1
            models[message.model] += 1

    def on_reject(payload: bytes, error: DecodeError) -> None:
        statuses["rejected"] += 1

    await _first(follow(client, spec["pattern"], on_message, on_reject, on_ready=ready), stop.wait())
    await client.aclose()
    return {"symbol": symbols, "ts": stamps, "arrival_ns": arrivals, "statuses": statuses, "models": models}


async def raw_publisher(spec: dict[str, Any], ready: Callable[[], None], stop: asyncio.Event) -> dict[str, Any]:
    """PUBLISH `{"t": time_ns}` on the spec's channel at its rate for its duration."""
    client = aioredis.from_url(spec["redis_url"])
    await client.ping()
    channel = spec["channel"]
    ready()

    def send() -> Any:
        return client.publish(channel, orjson.dumps({"t": time.time_ns()}))

    stats = await paced(float(spec["rate_per_s"]), send, stop, float(spec["duration_s"]))
    await client.aclose()
    return {"sent": stats.calls, "rate_per_s": round(stats.rate_per_s, 1), "dropped_backlog": stats.dropped_backlog}


async def raw_subscriber(spec: dict[str, Any], ready: Callable[[], None], stop: asyncio.Event) -> dict[str, Any]:
    """PSUBSCRIBE to the spec's pattern, as bot.bus.subscriber does, and record each message's latency."""
    client = aioredis.from_url(spec["redis_url"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(spec["pattern"])
    latencies: list[int] = []

    async def listen() -> None:
        async for raw in pubsub.listen():
            if raw.get("type") == "pmessage":
                arrival = time.time_ns()
                latencies.append(arrival - orjson.loads(raw["data"])["t"])

    task = asyncio.get_running_loop().create_task(listen(), name="raw-subscriber")
    ready()
    await stop.wait()
    await cancel_and_wait(task)
    with contextlib.suppress(Exception):
        await pubsub.punsubscribe()
    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    await client.aclose()
    return {"latency_ns": latencies}


async def feeds(spec: dict[str, Any], ready: Callable[[], None], stop: asyncio.Event) -> dict[str, Any]:
    """Run the feeds benchmark, with the model scorer's passes when the spec names a model folder."""
    from bot.bench.feeds import measure_feeds

    ready()
    model_dir = spec.get("model_dir")
    return await measure_feeds(bool(spec["quick"]), model_dir=Path(model_dir) if model_dir else None)


WORKERS = {
    "signals": signals,
    "signal-probe": signal_probe,
    "raw-pub": raw_publisher,
    "raw-sub": raw_subscriber,
    "feeds": feeds,
}


if __name__ == "__main__":
    from bot.bench.procs import serve

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(serve(WORKERS, sys.argv[1:]))
