"""The local Binance spot venue server against real Binance frames, a raw websocket client and the ccxt.pro client."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from ccxt.base.errors import ChecksumError, OperationFailed
from helpers import eventually

from bot.config import SimSymbolConfig, SimulatorConfig, SimVenueConfig
from bot.events import Level
from bot.feeds.ccxt_adapter import CcxtProClient, TradeCopy
from bot.sim.driver import SimulationDriver
from bot.sim.market import MarketSimulator
from bot.venues.base import Instrument
from bot.venues.binance import BinanceVenueServer

FIXTURE = Path(__file__).parent / "fixtures" / "binance_venue" / "spot_btcusdt_20240808_head.txt"
BTC = Instrument("BTC/USDT", tick_size=0.01, lot_size=0.00001, min_size=0.00001)
SYMBOL = "BTC/USDT"
TS = 1_723_161_255_208
WIRE_DECIMAL = re.compile(r"^\d+\.\d{8}$")


def _client(server: BinanceVenueServer) -> CcxtProClient:
    # No market rows: ccxt's parse_markets needs options that only its own load_markets sets, and load_markets
    # works against this server (its spot, USD-M and COIN-M exchangeInfo are all served here).
    return CcxtProClient("binance", server.ccxt_urls())


def _shape(value: Any) -> Any:
    """The JSON shape of a frame: key order, value types, 8-decimal strings; a list by its first item."""
    if isinstance(value, dict):
        return [(key, _shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, str):
        return "decimal8" if WIRE_DECIMAL.match(value) else "str"
    return type(value).__name__


def _real_frames() -> dict[str, Any]:
    """The first real frame of each stream kind (`depth@100ms`, `trade`, `bookTicker`) and the REST snapshot."""
    frames: dict[str, Any] = {}
    for line in FIXTURE.read_text().splitlines():
        message = orjson.loads(line.split(" ", 1)[1])
        kind = message["stream"].split("@", 1)[1] if "stream" in message else "snapshot"
        frames.setdefault(kind, message.get("data", message))
    return frames


def _as_levels(rows: list[list[str]]) -> tuple[Level, ...]:
    return tuple((float(price), float(size)) for price, size in rows)


@pytest.fixture
async def server() -> AsyncIterator[BinanceVenueServer]:
    venue = BinanceVenueServer("alpha", [BTC])
    await venue.start()
    yield venue
    await venue.stop()


async def _request(ws: aiohttp.ClientWebSocketResponse, method: str, request_id: int, *streams: str) -> Any:
    message: dict[str, Any] = {"method": method, "id": request_id}
    if streams:
        message["params"] = list(streams)
    await ws.send_str(orjson.dumps(message).decode())
    return orjson.loads(await ws.receive_str())


async def _depth(server: BinanceVenueServer, query: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{server.http_url}/api/v3/depth?{query}") as resp:
        return resp.status, await resp.json()


async def test_frames_have_the_shape_of_real_binance_frames(server: BinanceVenueServer) -> None:
    """Depth diff, trade, bookTicker and REST snapshot: same keys in the same order, types and decimals as Binance's."""
    real = _real_frames()
    server.publish_book(SYMBOL, TS, [(61737.63, 3.78826)], [(61837.64, 1.54698)])
    async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url + "/ws/0") as ws:
        ack = await _request(ws, "SUBSCRIBE", 1, "btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@trade")
        assert ack == {"result": None, "id": 1}
        server.publish_book(SYMBOL, TS + 100, [(61737.62, 0.617)], [(61837.65, 0.5)])
        ours = {"depth@100ms": orjson.loads(await ws.receive_str()), "bookTicker": orjson.loads(await ws.receive_str())}
        server.publish_trade(SYMBOL, TS + 135, 61837.63, 0.02, "sell")
        ours["trade"] = orjson.loads(await ws.receive_str())
    status, ours["snapshot"] = await _depth(server, "symbol=BTCUSDT&limit=1000")
    assert status == 200
    assert set(real) == set(ours)
    for kind, frame in ours.items():
        assert _shape(frame) == _shape(real[kind]), kind
    assert ours["trade"]["m"] is True  # the buyer was the maker: a taker sell, as `m` means on Binance


async def test_raw_protocol_ack_consecutive_diffs_and_rest_snapshot(server: BinanceVenueServer) -> None:
    server.publish_book(SYMBOL, TS, [(100.0, 1.0), (99.9, 2.0)], [(100.1, 1.5)])
    async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url + "/ws") as ws:
        assert await _request(ws, "SUBSCRIBE", 7, "btcusdt@depth@100ms") == {"result": None, "id": 7}
        assert await _request(ws, "LIST_SUBSCRIPTIONS", 8) == {"result": ["btcusdt@depth@100ms"], "id": 8}
        status, snapshot = await _depth(server, "symbol=BTCUSDT&limit=1000")
        server.publish_book(SYMBOL, TS + 1, [(100.0, 1.0)], [(100.1, 1.5), (100.2, 0.5)])
        server.publish_book(SYMBOL, TS + 2, [(100.0, 1.25)], [(100.1, 1.5), (100.2, 0.5)])
        first, second = orjson.loads(await ws.receive_str()), orjson.loads(await ws.receive_str())
        assert await _request(ws, "UNSUBSCRIBE", 9, "btcusdt@depth@100ms") == {"result": None, "id": 9}
        server.publish_book(SYMBOL, TS + 3, [(100.0, 2.0)], [(100.1, 1.5)])
        assert await _request(ws, "LIST_SUBSCRIPTIONS", 10) == {"result": [], "id": 10}  # nothing sent in between
    assert status == 200
    assert snapshot == {
        "lastUpdateId": 1,
        "bids": [["100.00000000", "1.00000000"], ["99.90000000", "2.00000000"]],
        "asks": [["100.10000000", "1.50000000"]],
    }
    assert first == {
        "e": "depthUpdate",
        "E": TS + 1,
        "s": "BTCUSDT",
        "U": 2,
        "u": 2,
        "b": [["99.90000000", "0.00000000"]],
        "a": [["100.20000000", "0.50000000"]],
    }
    assert (second["U"], second["u"]) == (first["u"] + 1, first["u"] + 1)
    assert second["b"] == [["100.00000000", "1.25000000"]]
    status, snapshot = await _depth(server, "symbol=BTCUSDT")
    update_id, bids, asks = server.book_state(SYMBOL)
    assert snapshot["lastUpdateId"] == update_id
    assert (_as_levels(snapshot["bids"]), _as_levels(snapshot["asks"])) == (bids, asks)


async def test_bad_requests_get_binance_errors(server: BinanceVenueServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.ws_url + "/ws") as ws:
            unknown = await _request(ws, "SUBSCRIBE", 1, "btcusdt@depth@100ms", "nopeusdt@depth")
            assert unknown == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 1}
            assert (await _request(ws, "LIST_SUBSCRIPTIONS", 2))["result"] == []  # all or nothing
            assert (await _request(ws, "SET_PROPERTY", 3))["error"]["code"] == 2
            assert (await _request(ws, "SUBSCRIBE", -4, "btcusdt@trade"))["error"]["code"] == 2
            await ws.send_str("{not json")
            assert orjson.loads(await ws.receive_str())["error"]["code"] == 3
        async with session.get(server.ws_url.replace("ws:", "http:") + "/ws/btcusdt@trade") as resp:
            assert resp.status == 501  # URL-named streams are refused, not silently ignored
    assert await _depth(server, "symbol=NOPEUSDT") == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert (await _depth(server, "limit=5"))[1]["code"] == -1102


async def test_markets_load_from_this_server_as_the_rows_parse(server: BinanceVenueServer) -> None:
    """ccxt's own load_markets reaches this server alone; the markets equal those parsed from `market_rows()`."""
    client = _client(server)
    exchange = client._exchange
    try:
        await client.load_markets()
        parsed = exchange.parse_markets(server.market_rows())
    finally:
        await client.close()
    market = exchange.market(SYMBOL)
    fields = ("id", "lowercaseId", "symbol", "type", "spot", "active", "precision", "limits")
    assert [{key: row[key] for key in fields} for row in parsed] == [{key: market[key] for key in fields}]
    assert (market["id"], market["spot"], market["lowercaseId"]) == ("BTCUSDT", True, "btcusdt")
    assert market["precision"]["price"] == pytest.approx(0.01)
    assert market["precision"]["amount"] == pytest.approx(0.00001)
    assert market["limits"]["amount"]["min"] == pytest.approx(0.00001)
    assert market["limits"]["cost"]["min"] == pytest.approx(5.0)


async def test_ccxt_client_ends_with_exactly_the_server_book(server: BinanceVenueServer) -> None:
    """Pace a simulated market into the server while ccxt.pro watches; the final books agree level by level."""
    driver = _driver(server)
    driver.step()
    client = _client(server)
    seen: list[int] = []
    errors: list[Exception] = []
    watcher = asyncio.create_task(_watch_book(client, seen, errors))
    try:
        await eventually(lambda: len(seen) > 0, message="ccxt never synced to the REST snapshot")
        await driver.run(ticks=400)
        final_id, bids, asks = server.book_state(SYMBOL)
        await eventually(lambda: seen[-1] == final_id, message="ccxt did not reach the server's last update id")
        book = client.current_book(SYMBOL, depth=1_000)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()
    assert errors == []
    assert server.snapshots_served == 1
    assert final_id > 300
    assert book is not None
    assert book.bids == bids
    assert book.asks == asks
    assert len(bids) == 30


async def test_ccxt_watch_trades_gets_side_price_and_amount(server: BinanceVenueServer) -> None:
    client = _client(server)
    received: list[TradeCopy] = []

    async def watch() -> None:
        while True:
            received.extend(await client.watch_trades(SYMBOL))

    def probe_received() -> bool:
        # Trades published before the server has the subscription reach nobody: probe until one arrives.
        server.publish_trade(SYMBOL, TS, 100.0, 0.001, "buy")
        return bool(received)

    watcher = asyncio.create_task(watch())
    try:
        await eventually(probe_received, message="ccxt never received a trade")
        server.publish_trade(SYMBOL, TS + 1, 100.05, 0.25, "sell")
        server.publish_trade(SYMBOL, TS + 2, 100.1, 0.5, "buy")
        await eventually(lambda: received[-1].timestamp == TS + 2, message="ccxt missed the trades")
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()
    assert received[-2:] == [
        TradeCopy(SYMBOL, TS + 1, 100.05, 0.25, "sell"),
        TradeCopy(SYMBOL, TS + 2, 100.1, 0.5, "buy"),
    ]


async def test_gap_makes_ccxt_resync_from_a_new_snapshot(server: BinanceVenueServer) -> None:
    """A skipped diff fails ccxt's `U == previous u + 1` check; watching again resubscribes and refetches the book."""
    driver = _driver(server)
    driver.step()
    client = _client(server)
    seen: list[int] = []
    errors: list[Exception] = []
    watcher = asyncio.create_task(_watch_book(client, seen, errors))
    try:
        await eventually(lambda: len(seen) > 0, message="ccxt never synced to the REST snapshot")
        await driver.run(ticks=100)
        server.inject("gap")
        await driver.run(ticks=200)
        final_id, bids, asks = server.book_state(SYMBOL)
        await eventually(lambda: seen[-1] == final_id, message="ccxt did not resync to the server's last update id")
        book = client.current_book(SYMBOL, depth=1_000)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()
    assert [type(error) for error in errors] == [ChecksumError]
    assert server.snapshots_served == 2
    assert book is not None
    assert (book.bids, book.asks) == (bids, asks)


async def test_one_failed_snapshot_is_retried_by_ccxt(server: BinanceVenueServer) -> None:
    """ccxt retries a failed depth request (options.watchOrderBook.maxRetries, 3) before giving up."""
    server.publish_book(SYMBOL, TS, [(100.0, 1.0)], [(100.1, 1.5)])
    server.inject("snapshot_fail")
    client = _client(server)
    try:
        book = await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
    finally:
        await client.close()
    assert (server.snapshots_failed, server.snapshots_served) == (1, 1)
    assert (book.nonce, book.bids, book.asks) == server.book_state(SYMBOL)


async def test_failed_sync_raises_and_a_later_watch_succeeds(server: BinanceVenueServer) -> None:
    """Three failed depth requests exhaust ccxt's retries: the watch raises; watching again resubscribes and syncs."""
    server.publish_book(SYMBOL, TS, [(100.0, 1.0)], [(100.1, 1.5)])
    for _ in range(3):
        server.inject("snapshot_fail")
    client = _client(server)
    try:
        with pytest.raises(OperationFailed, match="-1001"):
            await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
        server.publish_book(SYMBOL, TS + 1, [(100.0, 2.0)], [(100.1, 1.5)])
        book = await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
    finally:
        await client.close()
    assert (server.snapshots_failed, server.snapshots_served) == (3, 1)
    assert (book.nonce, book.bids, book.asks) == server.book_state(SYMBOL)


async def test_client_close_leaves_no_connection(server: BinanceVenueServer) -> None:
    server.publish_book(SYMBOL, TS, [(100.0, 1.0)], [(100.1, 1.5)])
    client = _client(server)
    await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
    assert server.connection_count == 1
    await client.close()
    await eventually(lambda: server.connection_count == 0, message="server still holds the closed client")


def _driver(server: BinanceVenueServer) -> SimulationDriver:
    sim_config = SimulatorConfig(
        seed=11,
        tick_ms=5,
        symbols={SYMBOL: SimSymbolConfig(start_price=97_000.0, volatility_bps=20.0, top_size=0.5)},
        venues={"alpha": SimVenueConfig(lag_ms=0, depth_levels=30, level_gap_bps=0.3)},
    )
    return SimulationDriver(MarketSimulator(sim_config, {"alpha": [SYMBOL]}), {"alpha": server})


async def _watch_book(client: CcxtProClient, seen: list[int], errors: list[Exception]) -> None:
    """Watch the book for good, noting each update id and each sequence error (after which ccxt resubscribes)."""
    while True:
        try:
            book = await client.watch_book(SYMBOL, depth=1_000)
        except ChecksumError as error:
            errors.append(error)
            continue
        assert book.nonce is not None
        seen.append(book.nonce)
