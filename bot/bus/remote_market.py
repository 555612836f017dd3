"""The markets as a role in another process sees them: the latest books, gas and pools from the bus."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message
from bot.bus.signing import Verifier
from bot.clock import Clock, SystemClock
from bot.events import BookEvent, GasEvent, PoolEvent
from bot.market_state import MarketState
from bot.rejections import RejectionCounter
from bot.tasks import TaskSet

log = logging.getLogger(__name__)

RemoteEvent = BookEvent | GasEvent | PoolEvent
Listener = Callable[[RemoteEvent], object]


@dataclass(slots=True)
class RemoteMarketStats:
    """What the view received: `rejected` counts bad payloads and out-of-order events alike."""

    received: int = 0
    accepted: int = 0
    rejected: int = 0
    redis_errors: int = 0


class RemoteMarket:
    """Follow `arb:book:*`, `arb:gas:*` and `arb:pool:*`; keep the latest valid book, gas and pools.

    Usage::

        market = RemoteMarket(redis_client, Channels(prefix))
        market.add_listener(on_event)    # called with each accepted BookEvent / GasEvent / PoolEvent
        await market.start()             # returns once subscribed: nothing published after it is missed
        market.book("okx", "BTC/USDT")   # latest BookEvent or None
        market.gas("ethereum")           # latest GasEvent or None
        market.pools_for("ETH/USDT")     # latest PoolEvent of every pool of the pair
        await market.close()

    A payload that does not decode, is not a book/gas/pool message, or is older than what is held (a book by
    `ts`, gas and pools by `block`) is rejected and counted (`stats`, `rejections.by_reason()`), never raised.
    The events handed out are BookMessage/GasMessage/PoolMessage instances (subclasses of the events).
    `apply_event` feeds an event in directly (one process hosting several roles needs no Redis round trip).
    A listener that raises is logged and counted; the view goes on. Redis errors: resubscribe with backoff.
    With a `verifier`, unsigned and badly signed payloads are rejected too (`unsigned`, `bad_signature`).
    """

    def __init__(
        self, client: aioredis.Redis, channels: Channels, clock: Clock | None = None, verifier: Verifier | None = None
    ) -> None:
        self.stats = RemoteMarketStats()
        self.rejections = RejectionCounter()
        self.listener_errors = 0
        self._client = client
        self._channels = channels
        self._clock = clock or SystemClock()
        self._verifier = verifier
        self._state = MarketState(self.rejections)
        self._listeners: list[Listener] = []
        self._patterns = (channels.book_pattern(), channels.gas_pattern(), channels.pool_pattern())
        self.tasks = TaskSet()
        self._rng = random.Random()

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` with every accepted event, after the view has stored it."""
        self._listeners.append(listener)

    def book(self, venue: str, symbol: str) -> BookEvent | None:
        """The latest book of `symbol` on `venue`, or None before the first."""
        return self._state.book(venue, symbol)

    def gas(self, chain: str) -> GasEvent | None:
        """The chain's latest gas, or None before the first."""
        return self._state.gas(chain)

    def pool(self, chain: str, address: str) -> PoolEvent | None:
        return self._state.pool(chain, address)

    def pools_for(self, symbol: str) -> list[PoolEvent]:
        """The latest state of every pool of a canonical pair."""
        return self._state.pools_for(symbol)

    def venues_for(self, symbol: str) -> list[str]:
        return list(self._state.venues_for(symbol))

    def apply_payload(self, payload: bytes | str) -> bool:
        """Decode and apply one message from the bus; False (counted) when rejected."""
        self.stats.received += 1
        try:
            message = decode_message(payload, verifier=self._verifier)
        except DecodeError as exc:
            self._reject(exc.reason, exc.detail)
            return False
        if not isinstance(message, BookEvent | GasEvent | PoolEvent):
            self._reject("wrong_type", message.type)
            return False
        return self._apply(message)

    def apply_event(self, event: RemoteEvent) -> bool:
        """Apply an event from this process (no decoding); False (counted) when out of order."""
        self.stats.received += 1
        return self._apply(event)

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.rejected += 1
        self.rejections.reject("bus", reason, detail)

    def _apply(self, event: RemoteEvent) -> bool:
        if isinstance(event, BookEvent):
            ok = self._state.apply(event)
        elif isinstance(event, GasEvent):
            ok = self._state.apply_gas(event)
        else:
            ok = self._state.apply_pool(event)
        if not ok:
            self.stats.rejected += 1
            return False
        self.stats.accepted += 1
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self.listener_errors += 1
                log.exception("remote market listener failed on %s", event.type)
        return True

    async def start(self) -> None:
        """Subscribe, then follow in a (supervised) background task; returns once subscribed."""
        first = [await self._subscribe()]
        self.tasks.supervise(lambda: self._follow(first.pop() if first else None), "remote-market")

    async def close(self) -> None:
        await self.tasks.cancel_all()

    async def _subscribe(self) -> aioredis.client.PubSub:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.psubscribe(*self._patterns)
        return pubsub

    async def _follow(self, pubsub: aioredis.client.PubSub | None) -> None:
        # Books missed while disconnected are not replayed (no stream): the next book of each pair replaces them.
        attempt = 0
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = await self._subscribe()
                    async for raw in pubsub.listen():
                        attempt = 0
                        if raw.get("type") == "pmessage":
                            self.apply_payload(raw["data"])
                except RedisError as exc:
                    self.stats.redis_errors += 1
                    log.warning("remote market: redis error (%s); resubscribing", exc)
                if pubsub is not None:
                    await _drop(pubsub)
                    pubsub = None
                await self._clock.sleep(min(5.0, 0.1 * 2.0**attempt) * self._rng.uniform(0.5, 1.0))
                attempt += 1
        finally:
            if pubsub is not None:
                await _drop(pubsub)


async def _drop(pubsub: aioredis.client.PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
