"""The health/metrics HTTP server, over real loopback connections."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from helpers import eventually, free_port
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bot.feeds.health import FeedHealth
from bot.observe.checks import feeds_fresh, redis_ping
from bot.observe.http import DEFAULT_HOST, DEFAULT_PORT, ListenError, ObserveServer
from bot.observe.metrics import Metrics, Sample
from bot.observe.redact import Redactor


class ManualClock:
    """Wall time that only moves when a test says so."""

    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1000.0

    async def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read the whole response (the server closes), return status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split(" ")[1]), headers, body


async def get(port: int, path: str, *extra_headers: str) -> tuple[int, dict[str, str], bytes]:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra_headers]
    return await exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode())


@pytest.fixture
async def server() -> AsyncIterator[ObserveServer]:
    metrics = Metrics(process_metrics=False)
    metrics.add_source("test", lambda: [Sample("arbbot_opportunities_total", (), 7)])
    srv = ObserveServer(metrics.registry, port=free_port(), read_timeout_s=0.3, check_timeout_s=0.2)
    await srv.start()
    yield srv
    await srv.stop()


async def test_defaults_listen_on_loopback_port_8787() -> None:
    srv = ObserveServer(CollectorRegistry())
    assert (srv.host, srv.port) == (DEFAULT_HOST, DEFAULT_PORT) == ("127.0.0.1", 8787)


async def test_healthz_answers_ok(server: ObserveServer) -> None:
    status, headers, body = await get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["content-type"].startswith("text/plain")
    assert headers["content-length"] == "3"
    assert (await get(server.port, "/healthz?probe=1"))[0] == 200


async def test_metrics_serves_the_registry_in_the_asked_format(server: ObserveServer) -> None:
    status, headers, body = await get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"  # the text format, no Accept
    assert b"arbbot_opportunities_total 7.0" in body
    status, headers, body = await get(server.port, "/metrics", "Accept: application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")


async def test_unknown_path_is_404_and_other_methods_405(server: ObserveServer) -> None:
    assert (await get(server.port, "/admin"))[0] == 404
    status, headers, _ = await exchange(server.port, b"POST /healthz HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd")
    assert status == 405
    assert headers["allow"] == "GET"
    assert (await exchange(server.port, b"HEAD /metrics HTTP/1.1\r\n\r\n"))[0] == 405


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz\r\n\r\n",
        b"GET /healthz SPDY/3\r\n\r\n",
        b"GET http://evil/ HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01 TLS? HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400(server: ObserveServer, raw: bytes) -> None:
    assert (await exchange(server.port, raw))[0] == 400
    assert (await get(server.port, "/healthz"))[0] == 200


async def test_oversized_request_head_gets_431() -> None:
    srv = ObserveServer(CollectorRegistry(), port=free_port(), max_request_bytes=1024)
    async with srv:
        raw = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 4000 + b"\r\n\r\n"
        assert (await exchange(srv.port, raw))[0] == 431
        assert (await get(srv.port, "/healthz"))[0] == 200


async def test_a_slow_client_gets_408_and_does_not_hold_others(server: ObserveServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /heal")  # and then nothing
    await writer.drain()
    assert (await get(server.port, "/healthz"))[0] == 200  # served while the slow one waits
    response = await asyncio.wait_for(reader.read(), 5.0)
    assert response.startswith(b"HTTP/1.1 408 ")
    writer.close()
    await writer.wait_closed()


async def test_connections_beyond_the_limit_are_refused_with_503() -> None:
    srv = ObserveServer(CollectorRegistry(), port=free_port(), max_connections=2, read_timeout_s=5.0)
    async with srv:
        idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
        try:
            status, headers, _ = await get(srv.port, "/healthz")
            assert status == 503
            assert headers["retry-after"] == "1"
        finally:
            for _, writer in idle:
                writer.close()
                await writer.wait_closed()


async def test_stop_ends_open_connections_quickly_and_stops_listening() -> None:
    srv = ObserveServer(CollectorRegistry(), port=free_port(), read_timeout_s=60.0)
    await srv.start()
    port = srv.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # and never sends its request
    await eventually(lambda: srv.open_connections == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await srv.stop(timeout_s=2.0)
    assert loop.time() - started < 2.5
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed without an answer
    writer.close()
    await writer.wait_closed()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_taken_port_is_a_clear_listen_error(server: ObserveServer) -> None:
    other = ObserveServer(CollectorRegistry(), port=server.port)
    with pytest.raises(ListenError, match=rf"127\.0\.0\.1:{server.port}.*free the port"):
        await other.start()


async def test_readyz_without_checks_is_ready(server: ObserveServer) -> None:
    status, headers, body = await get(server.port, "/readyz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body) == {"ready": True, "checks": {}}


async def test_readyz_lists_each_check_and_why_it_failed(server: ObserveServer, redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    never = asyncio.Event()

    async def hangs() -> str | None:
        await never.wait()
        return None

    async def raises() -> str | None:
        raise RuntimeError("lost redis://arb:hunter2@127.0.0.1:6379/0")

    async def says_no() -> str | None:
        return "model file missing"

    server.add_check("redis", redis_ping(client))
    server.add_check("hangs", hangs)
    server.add_check("raises", raises)
    server.add_check("says_no", says_no)
    try:
        status, _, body = await get(server.port, "/readyz")
    finally:
        await client.aclose()
    assert status == 503
    assert b"hunter2" not in body
    assert orjson.loads(body) == {
        "ready": False,
        "checks": {
            "redis": {"ok": True},
            "hangs": {"ok": False, "reason": "no answer within 0.2 s"},
            "raises": {"ok": False, "reason": "RuntimeError: lost redis://arb:***@127.0.0.1:6379/0"},
            "says_no": {"ok": False, "reason": "model file missing"},
        },
    }


async def test_readyz_reasons_mask_configured_secrets() -> None:
    srv = ObserveServer(CollectorRegistry(), port=free_port(), redactor=Redactor(["s3cr3t-key"]))

    async def leaky() -> str | None:
        return "signing key s3cr3t-key rejected"

    srv.add_check("leaky", leaky)
    async with srv:
        _, _, body = await get(srv.port, "/readyz")
    assert orjson.loads(body)["checks"]["leaky"]["reason"] == "signing key *** rejected"


async def test_redis_check_fails_when_nothing_answers() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        reason = await redis_ping(client)()
    finally:
        await client.aclose()
    assert reason is not None
    assert reason.startswith("PING failed: ")


async def test_feeds_check_names_each_venue_that_is_not_live() -> None:
    clock = ManualClock()
    health = FeedHealth()
    check = feeds_fresh(health, ["alpha", "beta", "gamma"], clock)
    health.register("alpha", "BTC/USDT", clock.now)
    health.register("beta", "BTC/USDT", clock.now)
    health.on_book("alpha", "BTC/USDT", clock.now, None)
    clock.now += 2_500
    assert await check() == "beta: connecting for 2.5 s; gamma: no stream yet"
    health.register("gamma", "ETH/USDT", clock.now)
    health.on_book("beta", "BTC/USDT", clock.now, None)
    health.on_book("gamma", "ETH/USDT", clock.now, None)
    assert await check() is None
    clock.now += 10_000
    health.mark_stale("alpha", clock.now, 5_000)
    clock.now += 1_000
    assert await check() == "alpha: stale for 1.0 s"


async def test_a_standard_http_client_reads_the_endpoints(server: ObserveServer) -> None:
    async def not_ready() -> str | None:
        return "feeds: alpha stale"

    def fetch(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    assert await asyncio.to_thread(fetch, "/healthz") == (200, b"ok\n")
    server.add_check("feeds", not_ready)
    status, body = await asyncio.to_thread(fetch, "/readyz")
    assert status == 503
    assert orjson.loads(body)["checks"]["feeds"] == {"ok": False, "reason": "feeds: alpha stale"}
    assert server.requests[200] >= 1
    assert server.requests[503] == 1
