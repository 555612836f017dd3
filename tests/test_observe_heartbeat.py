"""Heartbeats on `arb:heartbeat:{role}`, read by a real Redis subscriber."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import orjson
import pytest
import redis.asyncio as aioredis
from helpers import eventually, free_port
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message, encode
from bot.messages import Heartbeat
from bot.observe.heartbeat import HeartbeatPublisher, package_version


@pytest.fixture
def channels() -> Channels:
    return Channels(f"test-hb-{uuid.uuid4().hex}")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def subscriber(client: aioredis.Redis, channels: Channels) -> AsyncIterator[PubSub]:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.psubscribe(channels.heartbeat_pattern())
    confirmation = await pubsub.get_message(timeout=5.0)  # the subscription is in place once this came back
    assert confirmation is None or confirmation["type"] == "psubscribe"
    yield pubsub
    await pubsub.aclose()


async def next_heartbeat(pubsub: PubSub, timeout_s: float = 10.0) -> tuple[str, Heartbeat]:
    """The next heartbeat published under the test's prefix, decoded by the real codec."""
    async with asyncio.timeout(timeout_s):
        while True:
            raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)
            if raw is not None and raw["type"] == "pmessage":
                message = decode_message(raw["data"], expected_type="heartbeat")
                assert isinstance(message, Heartbeat)
                return raw["channel"].decode(), message


async def test_beats_carry_role_pid_counters_and_start(
    client: aioredis.Redis, channels: Channels, subscriber: PubSub
) -> None:
    seen = {"signals": 0}

    def counters() -> dict[str, float]:
        seen["signals"] += 1
        return {"signals": seen["signals"], "pnl": 1.5}

    heartbeat = HeartbeatPublisher(client, channels, "signals", counters, interval_s=0.05)
    heartbeat.start()
    try:
        channel, first = await next_heartbeat(subscriber)
        _, second = await next_heartbeat(subscriber)
        await eventually(lambda: heartbeat.stats.beats >= 2)
    finally:
        await heartbeat.stop()
    assert channel == channels.heartbeat("signals") == f"{channels.prefix}:heartbeat:signals"
    assert (first.role, first.pid, first.interval_s, first.version) == ("signals", os.getpid(), 0.05, package_version())
    assert first.host
    assert first.counters == {"signals": 1, "pnl": 1.5}
    assert second.counters["signals"] == 2
    assert first.started_ts == second.started_ts == heartbeat.started_ms <= first.ts <= second.ts
    assert first.id != second.id
    assert not heartbeat.running


async def test_redis_down_skips_beats_and_they_resume_when_it_is_back(
    redis_url: str, channels: Channels, subscriber: PubSub
) -> None:
    port = free_port()  # nothing listens here yet
    flaky = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    heartbeat = HeartbeatPublisher(flaky, channels, "paper", interval_s=0.05, publish_timeout_s=0.5)
    heartbeat.start()
    proxy: asyncio.Server | None = None
    try:
        await eventually(lambda: heartbeat.stats.skipped >= 3)
        assert heartbeat.running
        assert heartbeat.stats.beats == 0
        proxy = await forward_to(redis_url, port)  # Redis is reachable again
        _, beat = await next_heartbeat(subscriber)
        assert beat.role == "paper"
        await eventually(lambda: heartbeat.stats.beats >= 1)  # the subscriber may hear it before the task counts it
        assert heartbeat.running
    finally:
        await heartbeat.stop()
        await flaky.aclose()
        if proxy is not None:
            proxy.close()
            await proxy.wait_closed()


async def test_failing_or_bad_counters_do_not_stop_the_beat(
    client: aioredis.Redis, channels: Channels, subscriber: PubSub
) -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("counter hook bug")

    heartbeat = HeartbeatPublisher(client, channels, "risk", broken)
    assert await heartbeat.beat()
    assert (await next_heartbeat(subscriber))[1].counters == {}
    assert heartbeat.stats.counter_errors == 1

    partly = HeartbeatPublisher(client, channels, "risk", lambda: {"ok": 3, "nan": float("nan")})
    assert await partly.beat()
    assert (await next_heartbeat(subscriber))[1].counters == {"ok": 3}
    assert partly.stats.counter_errors == 1


def test_bad_settings_are_refused(client: aioredis.Redis, channels: Channels) -> None:
    with pytest.raises(ValueError, match="interval"):
        HeartbeatPublisher(client, channels, "risk", interval_s=0)
    with pytest.raises(ValueError, match="role"):
        HeartbeatPublisher(client, channels, "")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"schema_version": 2}, "unknown_schema_version"),
        ({"role": None}, "invalid_fields"),
        ({"pid": -1}, "invalid_fields"),
        ({"interval_s": 0}, "invalid_fields"),
        ({"counters": {"x": "many"}}, "invalid_fields"),
    ],
)
def test_bad_heartbeats_are_rejected_by_the_codec(change: dict[str, object], reason: str) -> None:
    good = Heartbeat(ts=1, role="risk", pid=1, started_ts=1, interval_s=5.0, version="1", counters={"a": 1})
    assert decode_message(encode(good)) == good
    obj = {**orjson.loads(encode(good)), **change}
    obj = {k: v for k, v in obj.items() if v is not None}
    with pytest.raises(DecodeError) as info:
        decode_message(orjson.dumps(obj))
    assert info.value.reason == reason


async def forward_to(redis_url: str, port: int) -> asyncio.Server:
    """A loopback TCP forwarder from `port` to the test Redis."""
    target = urlsplit(redis_url)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)
