"""`arbbot subscribe PATTERN --since ID`: catch up from the stream, then follow it; none lost, none twice, also
across a Redis restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from helpers import eventually, make_signal

import bot.bus.subscriber as subscriber_module
from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, encode
from bot.bus.publisher import route_by_type
from bot.bus.subscriber import CatchUp, SubscriberStats, _Dispatch, _StreamReader, follow
from bot.drills.redis_server import DurableRedis
from bot.messages import Message, Signal


def _signal(n: int, kind: str = "cex_cex") -> Signal:
    venues = {"sell_venue": "beta"} if kind == "cex_cex" else {"sell_venue": "ethereum:0xabc"}
    return make_signal(opportunity_id=f"opp-{n}", net_edge_bps=float(n), kind=kind, **venues)


def _publish(client: redis.Redis, channels: Channels, message: Message) -> str:
    """PUBLISH and XADD as the publisher does; the stream id."""
    channel, stream = route_by_type(channels)(message)
    assert stream is not None
    payload = encode(message)
    client.publish(channel, payload)
    return str(client.xadd(stream, {"data": payload}).decode())


@pytest.fixture
def sync_bus(redis_url: str) -> Iterator[tuple[redis.Redis, Channels]]:
    client = redis.Redis.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    yield client, channels
    client.delete(channels.signal_stream())
    client.close()


async def test_catch_up_then_live_without_duplicates_or_gaps(
    redis_url: str, sync_bus: tuple[redis.Redis, Channels], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriber_module, "CATCH_UP_PAGE", 2)  # several pages, so publishing lands mid-read
    sync, channels = sync_bus
    before = [_signal(i) for i in range(5)]
    for message in before:
        _publish(sync, channels, message)
    at_ready = [_signal(10 + i) for i in range(3)]  # Redis answered, the stream not read yet
    during = [_signal(20 + i) for i in range(3)]  # published while the stream is being read
    after = [_signal(30 + i) for i in range(4)]  # published once the reader reached the stream's end
    expected = [*before, *at_ready, *during, *after]
    got: list[str] = []

    def on_ready() -> None:
        for message in at_ready:
            _publish(sync, channels, message)

    def on_message(_payload: bytes, message: Message) -> None:
        got.append(message.id)
        if message.id == before[1].id:
            for late in during:
                _publish(sync, channels, late)

    def on_reject(payload: bytes, error: DecodeError) -> None:
        raise AssertionError(f"rejected {payload!r}: {error}")

    client = aioredis.from_url(redis_url)
    read_page = client.xrange

    async def xrange_then_go_live(*args: Any, **kwargs: Any) -> Any:
        page = await read_page(*args, **kwargs)
        if not page:  # the stream is read to its end: what comes now is read as it is added
            for live in after:
                _publish(sync, channels, live)
        return page

    monkeypatch.setattr(client, "xrange", xrange_then_go_live)
    stats = await asyncio.wait_for(
        follow(
            client, channels.signal_pattern(), on_message, on_reject, count=len(expected), expected_type="signal",
            on_ready=on_ready, catch_up=CatchUp(channels.signal_stream(), "0", channels),
        ),
        30,
    )  # fmt: skip
    await client.aclose()
    assert got == [m.id for m in expected]
    assert stats.caught_up == len(before) + len(at_ready) + len(during)
    assert stats.rejected == 0 and stats.resumes == 0


async def test_since_is_exclusive_and_the_pattern_filters_the_stream(
    redis_url: str, sync_bus: tuple[redis.Redis, Channels]
) -> None:
    sync, channels = sync_bus
    sent = [_signal(0), _signal(1, kind="cex_dex"), _signal(2), _signal(3, kind="cex_dex"), _signal(4)]
    ids = [_publish(sync, channels, m) for m in sent[:3]]
    sync.xadd(channels.signal_stream(), {"other": b"x"})  # an entry without `data`: rejected, counted
    sync.xadd(channels.signal_stream(), {"data": b"{broken"})
    ids += [_publish(sync, channels, m) for m in sent[3:]]
    got: list[str] = []
    rejected: list[str] = []
    client = aioredis.from_url(redis_url)
    stats = await asyncio.wait_for(
        follow(
            client, f"{channels.prefix}:signal:cex_cex:*", lambda _p, m: got.append(m.id),
            lambda _p, e: rejected.append(e.reason), count=2,
            catch_up=CatchUp(channels.signal_stream(), ids[0], channels),
        ),
        30,
    )  # fmt: skip
    await client.aclose()
    assert got == [sent[2].id, sent[4].id]  # after ids[0], cex_cex only
    assert stats.caught_up == 2
    assert rejected == ["invalid_entry", "malformed_json"]


async def test_following_the_stream_resumes_after_its_last_entry_when_redis_comes_back() -> None:
    """Redis killed (SIGKILL) and started again on the same data while a reader follows: what was published
    before, between the restart and the reader's return, and after, arrives once each, in order."""
    server = DurableRedis()
    await server.start()
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    sync = redis.Redis.from_url(server.url)
    client = aioredis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=2.0)
    got: list[str] = []
    lost: list[BaseException | None] = []
    stats = SubscriberStats()
    batches = [[_signal(10 * b + i) for i in range(3)] for b in range(3)]
    reader = asyncio.ensure_future(
        follow(
            client, channels.signal_pattern(), lambda _p, m: got.append(m.id), lambda _p, e: None,
            count=9, expected_type="signal", catch_up=CatchUp(channels.signal_stream(), "0", channels),
            on_lost=lost.append, stats=stats,
        )
    )  # fmt: skip
    try:
        for message in batches[0]:
            _publish(sync, channels, message)
        await eventually(lambda: len(got) == 3, timeout=10.0, message="the first batch never arrived")
        await server.stop(signal.SIGKILL)
        await eventually(lambda: len(lost) == 1, timeout=10.0, message="the reader never saw Redis go")
        await server.start()
        sync = redis.Redis.from_url(server.url)
        for message in batches[1]:  # likely before the reader is back: pub/sub would lose these
            _publish(sync, channels, message)
        await eventually(lambda: len(lost) == 2, timeout=10.0, message="the reader never came back")
        for message in batches[2]:
            _publish(sync, channels, message)
        final = await asyncio.wait_for(reader, timeout=10.0)
    finally:
        reader.cancel()
        sync.close()
        await client.aclose()
        await server.close()
    assert got == [m.id for batch in batches for m in batch]
    assert final is stats and stats.resumes == 1 and stats.trimmed == 0
    assert lost[0] is not None and lost[1] is None


async def test_a_resume_says_when_the_capped_stream_was_trimmed_past_the_last_entry_read(
    redis_url: str, sync_bus: tuple[redis.Redis, Channels]
) -> None:
    sync, channels = sync_bus
    ids = [_publish(sync, channels, _signal(i)) for i in range(5)]
    client = aioredis.from_url(redis_url)
    stats = SubscriberStats()
    reader = _StreamReader(
        client, channels.signal_pattern(), CatchUp(channels.signal_stream(), ids[1], channels),
        _Dispatch(stats, lambda _p, _m: None, lambda _p, _e: None, None, "signal", None),
    )  # fmt: skip
    try:
        assert not await reader.was_trimmed()  # nothing read yet
        await reader.catch_up()
        assert stats.last_stream_id == ids[4]
        sync.xadd(channels.signal_stream(), {"data": b"{}"}, id="*")
        stream = channels.signal_stream()
        sync.xtrim(stream, minid=ids[4], approximate=False)  # the last entry read is still there: none lost
        assert not await reader.was_trimmed()
        sync.xtrim(stream, maxlen=1, approximate=False)  # it is gone: what came right after it may be too
        assert await reader.was_trimmed()
    finally:
        await client.aclose()


async def test_an_entry_appended_twice_is_delivered_once(
    redis_url: str, sync_bus: tuple[redis.Redis, Channels]
) -> None:
    sync, channels = sync_bus
    sent = [_signal(i) for i in range(3)]
    _publish(sync, channels, sent[0])
    _publish(sync, channels, sent[1])
    sync.xadd(channels.signal_stream(), {"data": encode(sent[1])})  # a publisher's retry after a lost reply
    _publish(sync, channels, sent[2])
    got: list[str] = []
    client = aioredis.from_url(redis_url)
    stats = await asyncio.wait_for(
        follow(
            client, channels.signal_pattern(), lambda _p, m: got.append(m.id), lambda _p, e: None, count=3,
            catch_up=CatchUp(channels.signal_stream(), "0", channels),
        ),
        30,
    )  # fmt: skip
    await client.aclose()
    assert got == [m.id for m in sent]
    assert stats.duplicates == 1


def _arbbot(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "subscribe", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_cli_subscribe_since_prints_each_message_once(
    sync_bus: tuple[redis.Redis, Channels], subprocess_env: dict[str, str]
) -> None:
    sync, channels = sync_bus
    before = [_signal(i) for i in range(4)]
    for message in before:
        _publish(sync, channels, message)
    after = [_signal(100 + i) for i in range(3)]
    total = len(before) + len(after)
    process = _arbbot(channels.signal_pattern(), "--since", "0", "--count", str(total), env=subprocess_env)
    assert process.stderr is not None
    assert b"listening" in process.stderr.readline()
    for message in after:  # subscribed already; the catch-up may or may not see these in the stream too
        _publish(sync, channels, message)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    lines = stdout.decode().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == [m.id for m in [*before, *after]]
    assert lines == [encode(m).decode() for m in [*before, *after]]
    assert b"Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["arb:book:*", "--since", "0"], "no stream holds"),
        (["arb:signal:*", "--since", "yesterday"], "--since must be a stream id"),
    ],
)
def test_cli_subscribe_since_user_errors(args: list[str], says: str, subprocess_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "subscribe", *args], env=subprocess_env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_cli_subscribe_since_waits_out_a_redis_restart(subprocess_env: dict[str, str]) -> None:
    server = DurableRedis()
    await server.start()
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    sent = [_signal(i) for i in range(6)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "subscribe", channels.signal_pattern(), "--since", "0", "--count", "6",
        env={**subprocess_env, "ARBBOT_REDIS_URL": server.url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        sync = redis.Redis.from_url(server.url)
        for message in sent[:3]:
            _publish(sync, channels, message)
        sync.close()
        first = [await asyncio.wait_for(process.stdout.readline(), 20) for _ in range(3)]
        await server.stop(signal.SIGKILL)
        await server.start()
        sync = redis.Redis.from_url(server.url)
        for message in sent[3:]:
            _publish(sync, channels, message)
        sync.close()
        rest, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.close()
    assert process.returncode == 0, stderr
    lines = [line.decode().strip() for line in first] + rest.decode().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == [m.id for m in sent]
    messages = stderr.decode()
    assert "lost Redis" in messages and "Redis answers again; reading on after" in messages
    assert "Traceback" not in messages
