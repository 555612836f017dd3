"""The paper trader as its own process: Redis, the remote market view, the ledger and the consumer loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.client import RedisAccess, config_secrets, redis_client
from bot.bus.remote_market import RemoteMarket
from bot.bus.secrets import SecretError, Secrets
from bot.bus.signing import Signing
from bot.clock import Clock
from bot.config import RootConfig
from bot.paper.executor import Executor
from bot.paper.ledger import Ledger
from bot.paper.market import MarketHistory
from bot.paper.trader import PaperTrader, TraderError, TraderStats
from bot.tasks import cancel_and_wait

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


class PaperRole:
    """The paper trader as a role: the remote market view, the ledger and the consumer loop on one client.

    `start()` returns once the consumer group exists and pending decisions are handled (or the loop failed);
    `stop()` cancels the loop, closes the market view and the ledger (the client stays the caller's).
    """

    def __init__(
        self,
        cfg: RootConfig,
        client: aioredis.Redis,
        clock: Clock | None = None,
        market_time: bool = False,
        signing: Signing | None = None,
    ) -> None:
        """`clock` and `market_time=True`: a backtest's simulated clock, and waits for books measured in
        market time (see MarketHistory). `signing`: sign the fills, and reject decisions and market messages
        that are unsigned or badly signed (with a key)."""
        signing = signing or Signing()
        self.ledger = open_ledger(cfg)
        self.channels = Channels(cfg.redis.prefix)
        self.market = RemoteMarket(client, self.channels, clock, signing.verifier)
        self.history = MarketHistory(cfg.paper.book_history, market_time)
        self.history.attach(self.market)
        fees = {name: venue.taker_fee_bps for name, venue in cfg.venues.items()}
        executor = Executor(self.history, cfg.paper, fees)
        self.trader = PaperTrader(
            client, self.channels, cfg.paper, executor, self.ledger, cfg.redis.stream_maxlen, clock, signing
        )
        self._cfg = cfg
        self._consumer: asyncio.Task[None] | None = None

    @property
    def consumer(self) -> asyncio.Task[None] | None:
        """The consumer loop's task once started (it ends only when cancelled or on a bug)."""
        return self._consumer

    def describe(self) -> str:
        paper = self._cfg.paper
        return (
            f"consuming {self.channels.decision_stream()} as {paper.group}/{paper.consumer}, ledger {self.ledger.path}"
        )

    async def start(self) -> None:
        await self.market.start()
        self._consumer = asyncio.create_task(self.trader.run(), name="paper:consumer")
        ready = asyncio.create_task(self.trader.ready.wait(), name="paper:ready")
        await asyncio.wait({self._consumer, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._consumer.done() and not self._consumer.cancelled() and (died := self._consumer.exception()):
            raise PaperError(str(died) if isinstance(died, TraderError) else f"the paper trader stopped: {died!r}")

    async def stop(self) -> None:
        try:
            if self._consumer is not None:
                await cancel_and_wait(self._consumer)
            await self.market.close()
        finally:
            self.ledger.close()


async def run_paper(
    cfg: RootConfig,
    duration_s: float | None = None,
    on_ready: Callable[[str], None] | None = None,
    secrets: Secrets | None = None,
) -> TraderStats:
    """Run the paper trader until SIGINT/SIGTERM (or `duration_s`); PaperError when Redis does not answer or a
    secret cannot be read. `secrets`: the Redis password and signing key (default: those the config names)."""
    try:
        secrets = secrets or config_secrets(cfg)
        access = RedisAccess.of(cfg.redis, secrets)
    except SecretError as exc:
        raise PaperError(str(exc)) from None
    client = redis_client(access)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise PaperError(
            f"cannot reach Redis at {access.display} ({exc}); is it running? set ARBBOT_REDIS_URL "
            "(and ARBBOT_REDIS_PASSWORD if it needs one)"
        ) from None
    try:
        role = PaperRole(cfg, client, signing=secrets.signing())
    except PaperError:
        await client.aclose()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await role.start()
        if role.trader.ready.is_set() and on_ready is not None:
            on_ready(role.describe())
        assert role.consumer is not None
        waiter = asyncio.create_task(stop.wait(), name="paper:stop")
        await asyncio.wait({role.consumer, waiter}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        consumer = role.consumer
        if consumer.done() and not consumer.cancelled() and (died := consumer.exception()) is not None:
            raise PaperError(f"the paper trader stopped: {died!r}")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await role.stop()
        await client.aclose()
    return role.trader.stats
