"""The publisher's Redis pipe against real Redis servers: a message is on the wire when `submit` returns; ACL users,
passwords, databases and TLS reach the Redis the client reaches; refusals and error replies lose nothing."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from pathlib import Path

import orjson
import redis
import redis.asyncio as aioredis
from helpers import eventually, free_port, make_signal
from private_redis import make_tls_files, private_redis, tls_config

from bot.bus.channels import Channels
from bot.bus.client import RedisAccess, redis_client
from bot.bus.publisher import Publisher, SignalPublisher, route_by_type
from bot.bus.secrets import Secrets
from bot.config import RedisConfig
from bot.messages import Signal

PASSWORD = "redis-pipe-test-Pw-17"


def _signals(count: int) -> list[Signal]:
    return [make_signal(opportunity_id=uuid.uuid4().hex, net_edge_bps=1.0 + i) for i in range(count)]


def _started(client: aioredis.Redis, channels: Channels) -> SignalPublisher:
    publisher = SignalPublisher(client, channels, stream_maxlen=1000, queue_size=100)
    publisher.start()
    return publisher


async def _stream_ids(client: aioredis.Redis, stream: str) -> list[str]:
    return [orjson.loads(fields[b"data"])["id"] for _, fields in await client.xrange(stream)]


async def test_a_submitted_signal_reaches_redis_without_the_event_loop_running(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    publisher = _started(client, channels)
    first, second = _signals(2)
    assert publisher.submit(first)
    await eventually(lambda: publisher.stats.published == 1, message="the first signal was never confirmed")
    # The connection is up: the next submit writes on the spot. A blocking client polls Redis while this
    # coroutine holds the event loop, so no task of the publisher can run until the signal is found.
    assert publisher.submit(second)
    blocking = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5.0
    try:
        while blocking.xlen(channels.signal_stream()) < 2 and time.monotonic() < deadline:
            pass
        stored = [orjson.loads(fields[b"data"])["id"] for _, fields in blocking.xrange(channels.signal_stream())]
    finally:
        blocking.close()
    assert stored == [first.id, second.id]
    await publisher.close()
    assert (publisher.stats.published, publisher.pending, publisher.stats.redis_errors) == (2, 0, 0)
    await client.delete(channels.signal_stream())
    await client.aclose()


async def test_the_pipe_authenticates_as_an_acl_user_and_selects_the_database(tmp_path: Path) -> None:
    with private_redis(tmp_path, password=PASSWORD) as server:
        url = f"redis://127.0.0.1:{server.port}/3"
        admin = redis_client(RedisAccess.of(RedisConfig(url=url), Secrets(PASSWORD)))
        await admin.acl_setuser("signals", enabled=True, passwords=["+signals-pw-0042"], keys=["*"], channels=["*"],
                                commands=["+@all"])  # fmt: skip
        client = redis_client(RedisAccess.of(RedisConfig(url=url, username="signals"), Secrets("signals-pw-0042")))
        channels = Channels("arbtest")
        publisher = _started(client, channels)
        sent = _signals(5)
        try:
            assert all(publisher.submit(signal) for signal in sent)
            await eventually(lambda: publisher.stats.published == len(sent), message="not all delivered")
            clients = await admin.client_list()  # the pipe is still open
            await publisher.close()
            assert await _stream_ids(admin, channels.signal_stream()) == [s.id for s in sent]  # in db 3
            await admin.select(0)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            assert not await admin.exists(channels.signal_stream())
        finally:
            await client.aclose()
            await admin.aclose()
    assert (publisher.stats.published, publisher.stats.redis_errors) == (5, 0)
    assert {(c["user"], c["db"]) for c in clients} >= {("signals", "3")}


async def test_the_pipe_speaks_tls_with_a_client_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    with private_redis(tmp_path, password=PASSWORD, tls=tls) as server:
        config = tls_config(server, tls)
        client = redis_client(RedisAccess.of(config, Secrets(PASSWORD)))
        channels = Channels("arbtest")
        publisher = _started(client, channels)
        sent = _signals(3)
        try:
            assert all(publisher.submit(signal) for signal in sent)
            await publisher.close()
            stored = await _stream_ids(client, channels.signal_stream())
        finally:
            await client.aclose()
    assert stored == [s.id for s in sent]
    assert publisher.stats.redis_errors == 0


async def test_refused_credentials_keep_the_messages_and_count_the_errors(tmp_path: Path) -> None:
    with private_redis(tmp_path, password=PASSWORD) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        client = redis_client(RedisAccess.of(RedisConfig(url=url), Secrets("not-the-password")))
        publisher = _started(client, Channels("arbtest"))
        try:
            assert all(publisher.submit(signal) for signal in _signals(3))
            await eventually(lambda: publisher.stats.redis_errors >= 2, message="the refusal was never counted")
            await publisher.close(timeout_s=0.2)
        finally:
            await client.aclose()
    assert (publisher.stats.published, publisher.pending, publisher.dropped) == (0, 3, 0)


async def test_an_error_reply_sends_the_unconfirmed_messages_again_in_order(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    stream = channels.signal_stream()
    await client.set(stream, "not a stream")  # every XADD fails with WRONGTYPE until the key is gone
    publisher = _started(client, channels)
    sent = _signals(4)
    try:
        assert all(publisher.submit(signal) for signal in sent)
        await eventually(lambda: publisher.stats.redis_errors >= 1, message="the error reply was never counted")
        assert publisher.stats.published == 0 and publisher.pending == len(sent)
        await client.delete(stream)
        await eventually(lambda: publisher.stats.published == len(sent), timeout=15, message="not all delivered")
        await publisher.close()
        stored = await _stream_ids(client, stream)
    finally:
        await client.delete(stream)
        await client.aclose()
    assert stored == [s.id for s in sent]


async def test_a_burst_goes_out_message_by_message_or_in_one_write_without_write_now(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    batches: dict[bool, int] = {}
    for write_now in (True, False):
        publisher: Publisher[Signal] = Publisher(
            client, route_by_type(channels), stream_maxlen=1000, queue_size=100, write_now=write_now
        )
        publisher.start()
        assert publisher.submit(_signals(1)[0])
        await eventually(lambda p=publisher: p.stats.published == 1, message="the connection never came up")
        assert all(publisher.submit(signal) for signal in _signals(20))  # one burst, no await in between
        await publisher.close()
        assert publisher.stats.published == 21
        batches[write_now] = publisher.stats.batches - 1
    await client.delete(channels.signal_stream())
    await client.aclose()
    assert batches == {True: 20, False: 1}


async def test_a_connection_reset_while_logging_in_is_a_counted_redis_error() -> None:
    """Not Redis (nothing here can reset a real Redis's login on cue): a loopback server that answers the login with
    a TCP reset. The publisher counts it and retries; its writer task does not die."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the AUTH has arrived
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    port = free_port()
    server = await asyncio.start_server(reset, "127.0.0.1", port)
    client = aioredis.from_url(f"redis://:secret@127.0.0.1:{port}/0")
    publisher = _started(client, Channels("arbtest"))
    try:
        assert publisher.submit(_signals(1)[0])
        await eventually(lambda: publisher.stats.redis_errors >= 2, message="the resets were never counted")
        await publisher.close(timeout_s=0.2)
    finally:
        server.close()
        await server.wait_closed()
        await client.aclose()
    assert publisher.tasks.failures == 0
    assert (publisher.stats.published, publisher.pending) == (0, 1)
