"""The Redis bus against real Redis servers: bad messages are counted, nothing accepted is lost."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from helpers import eventually, free_port, make_signal
from redis.exceptions import ConnectionError as RedisConnectionError
from test_messages import BOOK, make_control, make_decision, make_fill

from bot.bus.channels import Channels
from bot.bus.codec import encode
from bot.bus.publisher import Publisher, SignalPublisher, route_by_type
from bot.messages import BookMessage, Message, Signal


def _signal(symbol: str = "BTC/USDT", net_edge_bps: float = 3.0) -> Signal:
    return make_signal(opportunity_id=uuid.uuid4().hex, symbol=symbol, net_edge_bps=net_edge_bps)


async def test_subscriber_skips_and_counts_malformed_messages(redis_url: str, subprocess_env: dict[str, str]) -> None:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    channel = Channels(prefix).signal("cex_cex", "BTC/USDT")
    subscriber = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "subscribe", f"{prefix}:signal:*", "--count", "2",
        env=subprocess_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert subscriber.stderr is not None
    assert b"listening" in await asyncio.wait_for(subscriber.stderr.readline(), 30)
    good = [_signal(), _signal("ETH/USDT")]
    bad: list[bytes] = [
        b"{not json",
        b"[1, 2, 3]",
        orjson.dumps({**orjson.loads(encode(good[0])), "schema_version": 99}),
        orjson.dumps({**orjson.loads(encode(good[0])), "buy_price": -1.0}),
        orjson.dumps({"type": "decision", "schema_version": 1}),
    ]
    client = aioredis.from_url(redis_url)
    try:
        for payload in [*bad, encode(good[0]), encode(good[1])]:
            await client.publish(channel, payload)
        stdout, stderr = await asyncio.wait_for(subscriber.communicate(), 30)
    finally:
        await client.aclose()
    assert subscriber.returncode == 0
    assert stdout.decode().splitlines() == [encode(s).decode() for s in good]
    report = stderr.decode()
    assert report.count("skipped malformed message") == len(bad)
    assert f"{len(bad)} malformed message(s) skipped" in report


async def test_publisher_keeps_signals_while_redis_is_down_and_delivers_them_after() -> None:
    """Signals accepted while Redis is unreachable are published, in order, once it comes up."""
    server_binary = shutil.which("redis-server")
    if server_binary is None:
        pytest.fail("redis-server is not on PATH; install it (apt-get install redis-server)")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    client = aioredis.from_url(url, socket_connect_timeout=0.2)
    publisher = SignalPublisher(client, channels, stream_maxlen=1000, queue_size=100)
    publisher.start()
    sent = [_signal(net_edge_bps=1.0 + i) for i in range(5)]
    assert all(publisher.submit(signal) for signal in sent)
    await eventually(lambda: publisher.stats.redis_errors >= 2, message="publisher never tried the dead Redis")
    assert publisher.stats.published == 0
    server = await asyncio.create_subprocess_exec(
        server_binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(lambda: publisher.stats.published == len(sent), timeout=30, message="not all delivered")
        await publisher.close()
        entries = await client.xrange(channels.signal_stream())
    finally:
        server.terminate()
        await server.wait()
        await client.aclose()
    assert [orjson.loads(fields[b"data"])["id"] for _, fields in entries] == [s.id for s in sent]
    assert publisher.dropped == 0


async def test_publisher_counts_what_a_full_queue_drops(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = aioredis.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    publisher = SignalPublisher(client, channels, stream_maxlen=1000, queue_size=10)
    with caplog.at_level(logging.WARNING, logger="bot.bus.publisher"):
        accepted = [publisher.submit(_signal()) for _ in range(15)]
    assert accepted == [True] * 10 + [False] * 5
    assert publisher.dropped == 5
    # It says so, at a bounded rate: once for the five, in the words the redis-restart drill counts.
    assert [r.getMessage() for r in caplog.records] == ["publisher queue full: 1 items dropped so far"]
    publisher.start()
    await publisher.close()
    assert publisher.stats.published == 10
    assert await client.xlen(channels.signal_stream()) == 10
    await client.delete(channels.signal_stream())
    await client.aclose()


async def test_generic_publisher_routes_each_message_by_type(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    publisher: Publisher[Message] = Publisher(client, route_by_type(channels), stream_maxlen=1000, queue_size=10)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(f"{channels.prefix}:*")
    sent: list[Message] = [make_decision(), make_fill(), make_control(), BookMessage.of(BOOK)]
    assert all(publisher.submit(message) for message in sent)
    assert not publisher.submit(make_decision(symbol=None))  # no symbol, no channel: counted, not queued
    assert publisher.stats.unroutable == 1
    publisher.start()
    got: dict[str, bytes] = {}
    try:
        while len(got) < len(sent):
            raw = await asyncio.wait_for(pubsub.get_message(timeout=5.0), 10)
            if raw is not None:
                got[raw["channel"].decode()] = raw["data"]
        await publisher.close()
        decisions = await client.xrange(channels.decision_stream())
        fills = await client.xrange(channels.fill_stream())
        stream_keys = await client.keys(f"{channels.prefix}:stream:*")
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.delete(channels.decision_stream(), channels.fill_stream())
        await client.aclose()
    assert got == {
        channels.decision("BTC/USDT"): encode(sent[0]),
        channels.fill("BTC/USDT"): encode(sent[1]),
        channels.control("risk"): encode(sent[2]),
        channels.book("okx", "BTC/USDT"): encode(sent[3]),
    }
    assert [fields[b"data"] for _, fields in decisions] == [encode(sent[0])]
    assert [fields[b"data"] for _, fields in fills] == [encode(sent[1])]
    assert sorted(stream_keys) == sorted([channels.decision_stream().encode(), channels.fill_stream().encode()])


class _LosesOneReply(aioredis.Redis):
    """Fault injection (a dropped connection cannot be timed from outside): the first pipeline that executes goes
    through on the real Redis, and then its reply is lost (ConnectionError), as when a link dies after EXEC."""

    replies_lost = 0

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def execute_then_lose_the_reply(raise_on_error: bool = True) -> list[Any]:
            result = await execute(raise_on_error)
            if self.replies_lost == 0:
                self.replies_lost += 1
                raise RedisConnectionError("reply lost (injected)")
            return result

        pipe.execute = execute_then_lose_the_reply  # type: ignore[method-assign]
        return pipe


async def test_publish_with_writes_message_and_state_together_once_even_when_a_reply_is_lost(redis_url: str) -> None:
    client = _LosesOneReply.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    publisher: Publisher[Message] = Publisher(client, route_by_type(channels), stream_maxlen=1000, queue_size=10)
    state_key = channels.key("risk", "last_signal_id")
    decision = make_decision()

    async def applied() -> bool:
        return await client.get(state_key) == b"7-0"

    try:
        assert await publisher.publish_with(decision, lambda pipe: pipe.set(state_key, "7-0"), applied)
        assert not await publisher.publish_with(
            make_decision(symbol=None), lambda pipe: pipe.set(state_key, "8-0"), applied
        )
        entries = await client.xrange(channels.decision_stream())
        saved = await client.get(state_key)
    finally:
        await client.delete(channels.decision_stream(), state_key)
        await client.aclose()
    assert client.replies_lost == 1
    assert [fields[b"data"] for _, fields in entries] == [encode(decision)]  # applied once, not again on the retry
    assert saved == b"7-0"  # the unroutable message wrote nothing, its state included
    assert (publisher.stats.published, publisher.stats.redis_errors, publisher.stats.unroutable) == (1, 1, 1)


async def test_publisher_sends_what_queued_up_in_one_round_trip_in_order(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    publisher = SignalPublisher(client, channels, stream_maxlen=1000, queue_size=1000)
    burst = [_signal() for _ in range(300)]
    assert all(publisher.submit(signal) for signal in burst)
    publisher.start()
    await publisher.close()
    entries = await client.xrange(channels.signal_stream())
    await client.delete(channels.signal_stream())
    await client.aclose()
    assert [fields[b"data"] for _, fields in entries] == [encode(signal) for signal in burst]
    assert publisher.stats.published == 300
    assert publisher.stats.batches == 2  # 256 + 44: the queue drained in batches, not one write per message
