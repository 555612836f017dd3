"""`arbbot demo`: simulated venues over their real websocket protocol, ccxt.pro feeds, strategy,
scorer and Redis publisher, all on this machine with nothing to configure."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from rich.console import Console

from bot.bus.local_redis import LocalRedis, redis_answers
from bot.bus.redis_url import redact_url
from bot.config import RootConfig
from bot.signals_role import SignalsRole
from bot.venues.local import LocalVenues


@dataclass(slots=True)
class DemoSummary:
    """What a demo run did; written with `--json`."""

    updates: int = 0
    opportunities: int = 0
    signals: int = 0
    published: int = 0
    dropped: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    venues: dict[str, int] = field(default_factory=dict)
    redis_url: str = ""
    redis_started: bool = False
    duration_s: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "updates": self.updates,
                "opportunities": self.opportunities,
                "signals": self.signals,
                "published": self.published,
                "dropped": self.dropped,
                "rejected": self.rejected,
                "venues": self.venues,
                "redis_url": self.redis_url,
                "redis_started": self.redis_started,
                "duration_s": round(self.duration_s, 3),
            },
            option=orjson.OPT_INDENT_2,
        )


def _summarise(role: SignalsRole, summary: DemoSummary) -> None:
    stats = role.engine.stats
    summary.updates = stats.updates
    summary.opportunities = stats.opportunities
    summary.signals = stats.signals
    summary.published = role.publisher.stats.published
    summary.dropped = role.publisher.dropped + role.engine.dropped_updates
    summary.rejected = role.rejections.by_reason()
    summary.venues = {name: venue.updates for name, venue in role.health.venues.items()}


def _status_line(elapsed: float, role: SignalsRole) -> str:
    stats = role.engine.stats
    return (
        f"[{elapsed:5.1f}s] updates {stats.updates:>7} | opportunities {stats.opportunities:>4} "
        f"(open {role.engine.open_opportunities:>2}) | signals {stats.signals:>5} | rejected {role.rejections.total}"
    )


async def _resolve_redis(url: str, console: Console) -> tuple[str, LocalRedis | None]:
    if await redis_answers(url):
        return url, None
    console.print(f"No Redis answers at {redact_url(url)}; starting a private redis-server on loopback.")
    local = await LocalRedis.start()
    console.print(f"Started redis-server at {local.url} (stopped when the demo exits).")
    return local.url, local


async def run_demo(config: RootConfig, duration_s: float | None, console: Console) -> DemoSummary:
    """Run the demo until `duration_s` elapses or SIGINT/SIGTERM; return the summary."""
    summary = DemoSummary()
    url, local_redis = await _resolve_redis(config.redis.url, console)
    summary.redis_url = redact_url(url)
    summary.redis_started = local_redis is not None
    client = aioredis.from_url(url)
    venues = LocalVenues(config)
    role: SignalsRole | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await venues.start()
        endpoints = {name: venues.endpoint(name) for name in venues.servers}
        role = SignalsRole(config, client, endpoints)
        await role.start()
        console.print(
            f"arbbot demo: {len(venues.servers)} simulated venues ({', '.join(venues.servers)}) over OKX's "
            f"websocket protocol, symbols {', '.join(config.symbols)}; signals on "
            f"{config.redis.prefix}:signal:* at {summary.redis_url}"
        )
        started = loop.time()
        while not stop.is_set():
            elapsed = loop.time() - started
            if duration_s is not None and elapsed >= duration_s:
                break
            wait = 1.0 if duration_s is None else min(1.0, duration_s - elapsed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            console.print(_status_line(loop.time() - started, role))
        summary.duration_s = loop.time() - started
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if role is not None:
            await role.stop()
            _summarise(role, summary)
        await venues.stop()
        await client.aclose()
        if local_redis is not None:
            await local_redis.stop()
    return summary


def write_summary(summary: DemoSummary, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(summary.to_json() + b"\n")


def summary_table(summary: DemoSummary) -> Any:
    """A rich table of the summary for the terminal."""
    from rich.table import Table

    table = Table(title="arbbot demo summary", show_header=False)
    for key in ("updates", "opportunities", "signals", "published", "dropped", "redis_url"):
        table.add_row(key, str(getattr(summary, key)))
    table.add_row("duration_s", f"{summary.duration_s:.1f}")
    for venue, updates in summary.venues.items():
        table.add_row(f"updates from {venue}", str(updates))
    for reason, count in summary.rejected.items():
        table.add_row(f"rejected ({reason})", str(count))
    return table
