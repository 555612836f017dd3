"""Books, gas and pools over the bus: the market publisher's rate limit and the remote market view, on real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from helpers import eventually

from bot.bus.channels import Channels
from bot.bus.codec import encode
from bot.bus.market_publisher import MarketPublisher
from bot.bus.remote_market import RemoteEvent, RemoteMarket
from bot.events import BookEvent, GasEvent, PoolEvent, TradeEvent
from bot.messages import BookMessage, GasMessage, PoolMessage

TS = 1_763_700_000_000


class FrozenClock:
    """Monotonic time that moves only when told (timers still run on the loop's own clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def now_ms(self) -> int:
        return int(self.now * 1000)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def book(ts: int, bid: float = 100.0, venue: str = "okx", symbol: str = "BTC/USDT") -> BookEvent:
    return BookEvent(venue=venue, symbol=symbol, ts=ts, bids=((bid, 1.0),), asks=((bid + 0.1, 1.0),))


def gas(block: int) -> GasEvent:
    return GasEvent(
        chain="ethereum", block=block, ts=TS + block, base_fee_gwei=10.0, priority_fee_gwei=1.0, gas_used_ratio=0.5
    )


def pool(block: int, reserve_base: float = 100.0) -> PoolEvent:
    return PoolEvent(
        chain="ethereum", dex="uniswap_v2", pool="0xabc", symbol="ETH/USDT", base="ETH", quote="USDT",
        reserve_base=reserve_base, reserve_quote=300_000.0, fee_bps=30, block=block, ts=TS + block,
    )  # fmt: skip


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, Channels]]:
    client = aioredis.from_url(redis_url)
    yield client, Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    await client.aclose()


async def test_remote_market_sees_what_the_market_publisher_sends(bus: tuple[aioredis.Redis, Channels]) -> None:
    client, channels = bus
    remote = RemoteMarket(client, channels)
    heard: list[RemoteEvent] = []
    remote.add_listener(heard.append)
    await remote.start()
    publisher = MarketPublisher.for_redis(client, channels, 100, book_rate_per_s=1000.0, clock=None)
    publisher.start()
    sent = [book(TS, venue="okx"), book(TS, venue="bybit", bid=101.0), gas(7), pool(7), pool(8, reserve_base=90.0)]
    for event in sent:
        publisher.on_event(event)
    publisher.on_event(TradeEvent(venue="okx", symbol="BTC/USDT", ts=TS, price=1.0, size=1.0, side="buy"))
    await eventually(lambda: len(heard) == len(sent), message=f"heard {len(heard)} of {len(sent)}")
    await publisher.close()
    await remote.close()
    assert [e.model_dump(exclude={"id", "schema_version", "sig"}) for e in heard] == [e.model_dump() for e in sent]
    assert remote.book("okx", "BTC/USDT") == heard[0]
    assert remote.book("bybit", "BTC/USDT") is not None
    assert remote.book("bybit", "BTC/USDT").best_bid == 101.0  # type: ignore[union-attr]
    assert remote.book("okx", "ETH/USDT") is None
    assert sorted(remote.venues_for("BTC/USDT")) == ["bybit", "okx"]
    assert remote.gas("ethereum") is not None
    assert remote.gas("ethereum").block == 7  # type: ignore[union-attr]
    assert [p.reserve_base for p in remote.pools_for("ETH/USDT")] == [90.0]
    assert remote.pools_for("BTC/USDT") == []
    assert publisher.stats.gas_sent == 1
    assert publisher.stats.pools_sent == 2
    assert remote.stats.rejected == 0


async def test_book_rate_limit_drops_intermediate_books_but_sends_the_latest(
    bus: tuple[aioredis.Redis, Channels],
) -> None:
    client, channels = bus
    clock = FrozenClock()
    remote = RemoteMarket(client, channels)
    heard: list[RemoteEvent] = []
    remote.add_listener(heard.append)
    await remote.start()
    publisher = MarketPublisher.for_redis(client, channels, 1000, book_rate_per_s=20.0, clock=clock)
    publisher.start()
    burst = [book(TS + i, bid=100.0 + i) for i in range(50)]
    for event in burst:
        publisher.on_event(event)
    publisher.on_event(book(TS, venue="bybit"))  # another book has its own budget
    # The monotonic clock is frozen: within one 50 ms slot only the first book goes out; the timer sends the last.
    assert publisher.stats.books_sent == 2
    assert publisher.stats.books_coalesced == len(burst) - 2
    await eventually(lambda: publisher.stats.books_sent == 3, message="the held-back book was never sent")
    await eventually(lambda: len(heard) == 3)
    await publisher.close()
    await remote.close()
    okx = [e for e in heard if isinstance(e, BookEvent) and e.venue == "okx"]
    assert [e.ts for e in okx] == [TS, TS + 49]
    assert remote.book("okx", "BTC/USDT") == okx[-1]


async def test_flush_pending_sends_held_back_books_at_shutdown(bus: tuple[aioredis.Redis, Channels]) -> None:
    client, channels = bus
    clock = FrozenClock()
    publisher = MarketPublisher.for_redis(client, channels, 100, book_rate_per_s=0.001, clock=clock)
    publisher.on_event(book(TS))
    publisher.on_event(book(TS + 1))
    assert publisher.stats.books_sent == 1
    publisher.flush_pending()
    assert publisher.stats.books_sent == 2
    assert publisher.publisher.pending == 2


async def test_remote_market_rejects_and_counts_bad_messages(bus: tuple[aioredis.Redis, Channels]) -> None:
    client, channels = bus
    remote = RemoteMarket(client, channels)
    heard: list[RemoteEvent] = []
    remote.add_listener(heard.append)
    await remote.start()
    newer, older = BookMessage.of(book(TS + 10)), BookMessage.of(book(TS + 5))
    crossed = {**orjson.loads(encode(newer)), "bids": [[200.0, 1.0]]}
    channel = channels.book("okx", "BTC/USDT")
    bad: list[bytes] = [
        b"{not json",
        orjson.dumps(crossed),
        orjson.dumps({**orjson.loads(encode(newer)), "schema_version": 7}),
        orjson.dumps({"type": "control", "schema_version": 1, "id": "x", "ts": 1, "role": "r", "command": "halt",
                      "reason": ""}),
    ]  # fmt: skip
    for payload in [encode(newer), *bad, encode(older)]:
        await client.publish(channel, payload)
    await client.publish(channels.gas("ethereum"), encode(GasMessage.of(gas(9))))
    await client.publish(channels.gas("ethereum"), encode(GasMessage.of(gas(8))))  # older block
    await client.publish(channels.pool("ethereum", "0xabc"), encode(PoolMessage.of(pool(3))))
    await eventually(lambda: remote.stats.received == 1 + len(bad) + 1 + 3, message=str(remote.stats))
    await remote.close()
    assert remote.stats.accepted == 3
    assert remote.stats.rejected == len(bad) + 2
    assert remote.rejections.by_reason() == {
        "malformed_json": 1,
        "invalid_fields": 1,
        "unknown_schema_version": 1,
        "wrong_type": 1,
        "out_of_order": 2,
    }
    assert [e.type for e in heard] == ["book", "gas", "pool"]
    assert remote.book("okx", "BTC/USDT") == newer
    assert remote.gas("ethereum").block == 9  # type: ignore[union-attr]


async def test_a_listener_that_raises_does_not_stop_the_view(bus: tuple[aioredis.Redis, Channels]) -> None:
    client, channels = bus
    remote = RemoteMarket(client, channels)

    def broken(_event: RemoteEvent) -> None:
        raise RuntimeError("boom")

    remote.add_listener(broken)
    assert remote.apply_event(book(TS))
    assert remote.apply_event(book(TS + 1))
    assert remote.listener_errors == 2
    assert remote.book("okx", "BTC/USDT").ts == TS + 1  # type: ignore[union-attr]
