"""The paper trader as its own process: Redis, the remote market view, the ledger and the consumer loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.redis_url import redact_url
from bot.bus.remote_market import RemoteMarket
from bot.config import RootConfig
from bot.paper.executor import Executor
from bot.paper.ledger import Ledger
from bot.paper.market import MarketHistory
from bot.paper.trader import PaperTrader, TraderStats

log = logging.getLogger(__name__)


class PaperError(RuntimeError):
    """A problem the user must fix (Redis down, ledger not writable); the message says what to do."""


def ledger_path(cfg: RootConfig) -> Path:
    """The ledger file; a relative `paper.ledger_path` is taken from the current directory (it is run-time
    state, not something shipped next to the config)."""
    return Path(cfg.paper.ledger_path).resolve()


def open_ledger(cfg: RootConfig) -> Ledger:
    """Open (creating if needed) the configured ledger, seeding starting balances; PaperError if it cannot."""
    path = ledger_path(cfg)
    try:
        return Ledger(path, cfg.paper.balances)
    except (OSError, sqlite3.Error) as exc:
        raise PaperError(f"cannot open the paper ledger {path} ({exc}); check paper.ledger_path") from None


async def run_paper(
    cfg: RootConfig,
    duration_s: float | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> TraderStats:
    """Run the paper trader until SIGINT/SIGTERM (or `duration_s`); PaperError when Redis does not answer."""
    client = aioredis.from_url(cfg.redis.url)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise PaperError(
            f"cannot reach Redis at {redact_url(cfg.redis.url)} ({exc}); is it running? set ARBBOT_REDIS_URL"
        ) from None
    ledger = open_ledger(cfg)
    channels = Channels(cfg.redis.prefix)
    history = MarketHistory(cfg.paper.book_history)
    market = RemoteMarket(client, channels)
    history.attach(market)
    executor = Executor(history, cfg.paper, {name: venue.taker_fee_bps for name, venue in cfg.venues.items()})
    trader = PaperTrader(client, channels, cfg.paper, executor, ledger, cfg.redis.stream_maxlen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await market.start()
        consumer = asyncio.create_task(trader.run(), name="paper:consumer")
        ready = asyncio.create_task(trader.ready.wait(), name="paper:ready")
        await asyncio.wait({consumer, ready}, return_when=asyncio.FIRST_COMPLETED)
        if trader.ready.is_set() and on_ready is not None:
            on_ready(
                f"consuming {channels.decision_stream()} as {cfg.paper.group}/{cfg.paper.consumer}, "
                f"ledger {ledger.path}"
            )
        waiter = asyncio.create_task(stop.wait(), name="paper:stop")
        await asyncio.wait({consumer, waiter}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
        for task in (consumer, ready, waiter):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await market.close()
        ledger.close()
        await client.aclose()
    return trader.stats
