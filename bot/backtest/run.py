"""Drive recordings through the whole chain (replay → strategies → scorer → Redis → risk → paper), deterministically.

The roles are the real ones and talk through a real Redis, under a key prefix of their own. What makes the run
deterministic, however fast the machine replays, is that nothing depends on wall time:

- the signals pipeline runs on the replay clock (the recording's receive times);
- risk and paper run on the time of the newest market event they have received (MarketTimeClock), and the paper
  trader waits for books in market time, so a book that never comes is given up when the market has moved on;
- before any signal is published, the run waits until both roles have received every market event so far, the
  paper trader has acted on everything it can (its waits need later books) and risk has applied every fill;
  then the signal goes out and the run waits until risk has decided it and the paper trader has taken the
  decision in. Each signal is therefore decided on exactly the market, fills and balances of its moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from bot.backtest.clock import MarketTimeClock
from bot.bus.channels import Channels
from bot.bus.client import RedisAccess, redis_client
from bot.bus.local_redis import LocalRedis, redis_answers
from bot.bus.publisher import Publisher, SignalPublisher, route_by_type
from bot.config import RootConfig
from bot.engine import EngineStats
from bot.events import BookEvent, GasEvent, MarketEvent, PoolEvent
from bot.messages import BookMessage, GasMessage, MarketMessage, PoolMessage, Signal
from bot.paper.service import PaperRole
from bot.recording import merge_events
from bot.rejections import RejectionCounter
from bot.replay import Replayer
from bot.risk.forecast_window import spread_forecast
from bot.risk.service import RiskService

LEDGER = "ledger.sqlite"

MARKET_SYNC_EVERY = 500
"""Market events between two catch-ups of the roles when no signal forces one (bounds Redis's buffers)."""

STALL_TIMEOUT_S = 120.0
"""Longest wall time one catch-up may take before the run gives up (a role died or Redis went away)."""


class BacktestError(RuntimeError):
    """A backtest that cannot run or could not finish; the message says why."""


@dataclass(slots=True)
class BacktestStats:
    """What the run pushed through the chain."""

    events: int = 0
    market_messages: int = 0
    signals: int = 0
    signals_by_status: Counter[str] = field(default_factory=Counter)
    first_ts: int | None = None
    last_ts: int | None = None


def _market_message(event: MarketEvent) -> MarketMessage | None:
    if isinstance(event, BookEvent):
        return BookMessage.of(event)
    if isinstance(event, GasEvent):
        return GasMessage.of(event)
    if isinstance(event, PoolEvent):
        return PoolMessage.of(event)
    return None


async def _until(condition: Callable[[], bool], what: str, died: Callable[[], str | None]) -> None:
    """Wait until `condition()` holds; BacktestError if a role died or it takes longer than STALL_TIMEOUT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STALL_TIMEOUT_S
    spins = 0
    while not condition():
        if (why := died()) is not None:
            raise BacktestError(f"{why} (while waiting for {what})")
        if loop.time() > deadline:
            raise BacktestError(f"the chain stalled for {STALL_TIMEOUT_S:.0f} s waiting for {what}")
        spins += 1
        # Spin through the event loop first (the common case settles in a few round trips), then poll gently.
        await asyncio.sleep(0 if spins < 200 else 0.001)


class Chain:
    """The roles of one backtest on one Redis client; `feed` events, then `finish`."""

    def __init__(self, config: RootConfig, client: aioredis.Redis) -> None:
        self.config = config
        self.stats = BacktestStats()
        self.rejections = RejectionCounter()
        self._pending: list[Signal] = []
        self._replayer = Replayer(config, self._pending.append, self.rejections)
        channels = Channels(config.redis.prefix)
        redis = config.redis
        self._market: Publisher[MarketMessage] = Publisher(
            client, route_by_type(channels), stream_maxlen=100, queue_size=MARKET_SYNC_EVERY * 4, name="bt:market"
        )
        self._signals = SignalPublisher(client, channels, redis.stream_maxlen, redis.publish_queue)
        self._replayer.engine.add_market_listener(self._on_market_event)
        self.risk_clock = MarketTimeClock()
        forecast = spread_forecast(config, self.risk_clock)
        self.risk = RiskService(config, client, self.risk_clock, forecast, bus_time_from_clock=True)
        self.risk.market.add_listener(self.risk_clock.observe)
        self.paper_clock = MarketTimeClock()
        self.paper = PaperRole(config, client, clock=self.paper_clock, market_time=True)
        self.paper.market.add_listener(self.paper_clock.observe)
        self._since_sync = 0

    @property
    def engine_stats(self) -> EngineStats:
        return self._replayer.engine.stats

    async def start(self) -> None:
        await self.risk.start()
        await self.paper.start()
        self._market.start()
        self._signals.start()

    async def stop(self) -> None:
        try:
            await self.risk.stop()
        finally:
            try:
                await self.paper.stop()
            finally:
                await self._signals.close()
                await self._market.close()

    def _on_market_event(self, event: MarketEvent) -> None:
        message = _market_message(event)
        if message is not None and self._market.submit(message):
            self.stats.market_messages += 1

    async def feed(self, event: MarketEvent) -> None:
        """One recorded event through the chain (signals it raises are decided before this returns)."""
        if not self._replayer.feed(event):
            return
        self.stats.events += 1
        ts = self._replayer.clock.now_ms()
        self.stats.first_ts = ts if self.stats.first_ts is None else self.stats.first_ts
        self.stats.last_ts = ts
        self._since_sync += 1
        if self._pending:
            await self._decide_pending()
        elif self._since_sync >= MARKET_SYNC_EVERY:
            await self._sync_market()

    async def finish(self) -> None:
        """Close the open opportunities, decide what that raises, then let the paper trader finish: waits that
        need a later book end now (missed), and the run returns once everything is in the ledger."""
        self._replayer.finish()
        await self._decide_pending()
        self.paper.history.close()
        trader = self.paper.trader
        await _until(
            lambda: not trader.handling
            and trader.unwinds_running == 0
            and trader.stats.received >= self.risk.publisher.stats.published,
            "the paper trader's last decisions",
            self._died,
        )
        await _until(
            lambda: self.risk.fills_applied >= trader.stats.published, "risk to read the last fills", self._died
        )

    def _died(self) -> str | None:
        consumer = self.paper.consumer
        if consumer is not None and consumer.done():
            error = None if consumer.cancelled() else consumer.exception()
            return f"the paper trader stopped: {error!r}"
        for name, publisher in (("market", self._market), ("signal", self._signals), ("decision", self.risk.publisher)):
            if publisher.dropped:
                return f"the {name} publisher's queue overflowed ({publisher.dropped} dropped)"
        return None

    async def _sync_market(self) -> None:
        """Wait until both roles hold every market event published so far and the paper trader has done all it
        can with them; then until risk has applied every fill that produced."""
        self._since_sync = 0
        sent = self.stats.market_messages
        await _until(
            lambda: self.risk.market.stats.received >= sent and self.paper.market.stats.received >= sent,
            "the roles to receive the market",
            self._died,
        )
        await _until(self._paper_settled, "the paper trader to settle", self._died)
        await _until(
            lambda: self.risk.fills_applied >= self.paper.trader.stats.published, "risk to read fills", self._died
        )

    def _paper_settled(self) -> bool:
        """Every paper worker (the consumer, each unwind) is idle or waiting for a market event yet to come."""
        trader = self.paper.trader
        if not trader.handling and trader.stats.received < self.risk.publisher.stats.published:
            return False  # decisions published and not yet read
        busy = trader.unwinds_running + (1 if trader.handling else 0)
        return self.paper.history.stalled_waiters() == busy

    async def _decide_pending(self) -> None:
        signals = list(self._pending)
        self._pending.clear()  # the replayer's sink appends to this very list
        await self._sync_market()
        for signal in signals:
            self._signals.submit(signal)
            self.stats.signals += 1
            self.stats.signals_by_status[signal.status] += 1
        published = self.stats.signals
        risk = self.risk
        await _until(lambda: risk.signals_handled >= published, "risk to decide the signals", self._died)
        await _until(
            lambda: risk.publisher.stats.published >= risk.engine.stats.decided, "risk to publish decisions", self._died
        )
        await _until(self._paper_settled, "the paper trader to take the decisions", self._died)


def backtest_config(config: RootConfig, out: Path, model_dir: Path | None, redis_url: str) -> RootConfig:
    """The config of one run: its own key prefix, its ledger in `out`, risk from a clean slate, the chosen model."""
    prefix = f"bt{uuid.uuid4().hex[:12]}"
    scorer = config.scorer if model_dir is None else config.scorer.model_copy(update={"model_dir": model_dir})
    return config.model_copy(
        update={
            "redis": config.redis.model_copy(update={"url": redis_url, "prefix": prefix}),
            "paper": config.paper.model_copy(update={"ledger_path": str(out / LEDGER), "start_from": "oldest"}),
            "risk": config.risk.model_copy(update={"start_from": "new"}),
            "scorer": scorer,
        }
    )


def prepare_out(out: Path, model: Path | None) -> Path | None:
    """Create `out` and drop an earlier run's ledger; return the model folder the scorer reads: `model` itself if a
    folder; a file is copied into `out/model/` (its name must say which kind and symbol it serves: `{kind}.npz` or
    `{kind}__{BASE}-{QUOTE}.npz`)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{LEDGER}*"):
        stale.unlink()
    if model is None:
        return None
    if model.is_dir():
        return model.resolve()
    if not model.is_file():
        raise BacktestError(f"--model {model}: no such file or folder")
    kind = model.name.split("__", 1)[0].removesuffix(".npz")
    if model.suffix != ".npz" or kind not in ("cex_cex", "cex_dex", "dex_dex"):
        raise BacktestError(
            f"--model {model}: name a model file {{kind}}.npz or {{kind}}__{{BASE}}-{{QUOTE}}.npz "
            "(kind cex_cex, cex_dex or dex_dex), or give its folder"
        )
    folder = out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, folder / model.name)
    return folder.resolve()


async def _delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@dataclass(slots=True)
class BacktestRun:
    """A finished run: its chain (stats, roles' counters) and the ledger it wrote."""

    chain: Chain
    ledger_path: Path
    redis_started: bool


async def run_chain(
    config: RootConfig,
    files: Sequence[Path],
    out: Path,
    model_dir: Path | None = None,
    progress: Callable[[BacktestStats], None] | None = None,
    progress_every: int = 20_000,
    access: RedisAccess | None = None,
) -> BacktestRun:
    """Replay `files` through the whole chain (after `prepare_out`); the ledger is written to `out/ledger.sqlite`.

    `access`: the Redis to use with its credentials (default: the config's URL, none); a private one is started
    when it does not answer.
    """
    local: LocalRedis | None = None
    access = access or RedisAccess(config.redis.url)
    if not await redis_answers(access):
        local = await LocalRedis.start()
        access = RedisAccess(local.url)
    cfg = backtest_config(config, out, model_dir, access.url)
    client = redis_client(access)
    chain: Chain | None = None
    try:
        chain = Chain(cfg, client)
        await chain.start()
        for event in merge_events(files, chain.rejections):
            await chain.feed(event)
            if progress is not None and chain.stats.events % progress_every == 0 and chain.stats.events:
                progress(chain.stats)
        await chain.finish()
        return BacktestRun(chain, out / LEDGER, local is not None)
    finally:
        try:
            if chain is not None:
                await chain.stop()
        finally:
            with contextlib.suppress(Exception):
                await _delete_prefix(client, cfg.redis.prefix)
            await client.aclose()
            if local is not None:
                await local.stop()
