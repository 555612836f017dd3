"""The local Bybit venue server against real Bybit v5 spot frames, a raw websocket client and ccxt.pro."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from ccxt.base.errors import ExchangeError, InvalidNonce
from helpers import eventually

from bot.config import SimSymbolConfig, SimulatorConfig, SimVenueConfig
from bot.feeds.ccxt_adapter import BookCopy, CcxtProClient
from bot.sim.driver import SimulationDriver
from bot.sim.market import MarketSimulator
from bot.venues.base import Instrument
from bot.venues.bybit import BybitVenueServer, instrument_row

FIXTURE = Path(__file__).parent / "fixtures" / "bybit" / "spot_btcusdt_2026-08-09.jsonl"
BTC = Instrument("BTC/USDT", tick_size=0.1, lot_size=0.000001, min_size=0.000001)
ETH = Instrument("ETH/USDT", tick_size=0.01, lot_size=0.00001, min_size=0.00001)
SYMBOL = "BTC/USDT"
BOOK = "orderbook.50.BTCUSDT"
TRADES = "publicTrade.BTCUSDT"
T0 = 1_786_310_816_516

# Every instruments-info request ccxt 4.5.90's load_markets makes without API keys: (category, baseCoin, status).
LOAD_MARKETS_QUERIES = sorted(
    [
        ("spot", "", ""),
        ("linear", "", ""),
        ("linear", "", "PreLaunch"),
        ("inverse", "", ""),
        ("inverse", "", "PreLaunch"),
    ]
    + [("option", coin, "") for coin in ("BTC", "ETH", "SOL", "XRP", "MNT", "DOGE")]
)


def _recorded() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in FIXTURE.read_text().splitlines()]


def _real_frames() -> list[dict[str, Any]]:
    return [orjson.loads(line["data"]) for line in _recorded() if line["t"] == "recv"]


def _real_spot_row(symbol: str) -> dict[str, Any]:
    http = next(line for line in _recorded() if line["t"] == "http")
    rows: list[dict[str, Any]] = orjson.loads(http["data"])["result"]["list"]
    return next(row for row in rows if row["symbol"] == symbol)


def _shape(value: Any) -> Any:
    """Field names in order and value types, recursively: what two frames of one kind share."""
    if isinstance(value, dict):
        return [(key, _shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


async def _send(ws: aiohttp.ClientWebSocketResponse, **message: Any) -> None:
    await ws.send_str(orjson.dumps(message).decode())


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await ws.receive_str(timeout=10))
    return message


async def _reply(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next frame, an op reply, without its connection id (checked present)."""
    reply = await _receive(ws)
    assert reply.pop("conn_id")
    return reply


def _book_at(client: CcxtProClient, ts: int) -> BookCopy | None:
    book = client.current_book(SYMBOL, depth=1_000)
    return book if book is not None and book.timestamp == ts else None


@pytest.fixture
async def server() -> AsyncIterator[BybitVenueServer]:
    venue = BybitVenueServer("alpha", [BTC, ETH])
    await venue.start()
    yield venue
    await venue.stop()


@pytest.fixture
async def ws(server: BybitVenueServer) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url + "/v5/public/spot") as socket:
        yield socket


# --- real frames ------------------------------------------------------------------------------


def test_real_spot_book_keeps_one_u_chain_ordered_levels_and_its_window() -> None:
    """What the server reproduces, as real Bybit spot sends it: snapshot first, `u` +1 per delta, sorted, ≤ depth."""
    frames = [frame for frame in _real_frames() if frame.get("topic") == "orderbook.200.BTCUSDT"]
    assert frames[0]["type"] == "snapshot"
    assert all(frame["type"] == "delta" for frame in frames[1:])
    sides: tuple[dict[str, str], dict[str, str]] = ({}, {})
    last_u = frames[0]["data"]["u"] - 1
    for frame in frames:
        data = frame["data"]
        assert data["u"] == last_u + 1
        last_u = data["u"]
        for side, levels, descending in ((sides[0], data["b"], True), (sides[1], data["a"], False)):
            prices = [float(price) for price, _ in levels]
            assert prices == sorted(prices, reverse=descending)
            for price, size in levels:
                if size == "0":
                    del side[price]
                else:
                    side[price] = size
        assert max(map(len, sides)) <= 200
    assert len(frames) == 41


def test_instrument_row_has_the_fields_of_a_real_spot_row() -> None:
    real = _real_spot_row("BTCUSDT")
    ours = instrument_row(BTC)
    assert set(ours) <= set(real)
    assert set(ours["lotSizeFilter"]) <= set(real["lotSizeFilter"])
    assert ours["priceFilter"] == real["priceFilter"]
    assert ours["lotSizeFilter"]["basePrecision"] == real["lotSizeFilter"]["basePrecision"]
    assert (ours["symbol"], ours["baseCoin"], ours["quoteCoin"], ours["status"]) == (
        "BTCUSDT",
        "BTC",
        "USDT",
        "Trading",
    )


async def test_frames_have_the_shape_of_real_bybit_frames(
    server: BybitVenueServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    real = _real_frames()
    real_ack = next(frame for frame in real if frame.get("op") == "subscribe")
    real_book = [frame for frame in real if frame.get("topic") == "orderbook.200.BTCUSDT"]
    real_delta = next(
        frame for frame in real_book if frame["type"] == "delta" and frame["data"]["a"] and frame["data"]["b"]
    )
    real_trade = next(frame for frame in real if frame.get("topic") == TRADES)
    server.publish_book(SYMBOL, T0, [(65140.4, 0.885797), (65140.0, 0.014)], [(65140.5, 0.1)])
    await _send(ws, op="subscribe", args=["orderbook.200.BTCUSDT", TRADES])  # as the recorder sent it
    assert _shape(await _receive(ws)) == _shape(real_ack)
    assert _shape(await _receive(ws)) == _shape(real_book[0])
    server.publish_book(SYMBOL, T0 + 1, [(65140.4, 0.875077)], [(65140.5, 0.1), (65154.6, 0.09948)])
    assert _shape(await _receive(ws)) == _shape(real_delta)
    server.publish_trade(SYMBOL, T0 + 2, 65140.5, 0.002705, "buy")
    assert _shape(await _receive(ws)) == _shape(real_trade)


# --- raw protocol -----------------------------------------------------------------------------


async def test_raw_protocol_ack_snapshot_delta_ping_unsubscribe(
    server: BybitVenueServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    server.publish_book(SYMBOL, T0, [(100.0, 1.0), (99.9, 2.0)], [(100.1, 1.5)])
    await _send(ws, op="ping", req_id="p1")
    assert await _reply(ws) == {"success": True, "ret_msg": "pong", "req_id": "p1", "op": "ping"}
    await _send(ws, op="subscribe", args=[BOOK], req_id="s1")
    assert await _reply(ws) == {"success": True, "ret_msg": "subscribe", "req_id": "s1", "op": "subscribe"}
    snapshot = await _receive(ws)
    assert (snapshot["topic"], snapshot["type"], snapshot["ts"], snapshot["cts"]) == (BOOK, "snapshot", T0, T0)
    assert snapshot["data"]["s"] == "BTCUSDT"
    assert snapshot["data"]["b"] == [["100", "1"], ["99.9", "2"]]
    assert snapshot["data"]["a"] == [["100.1", "1.5"]]
    assert snapshot["data"]["u"] == server.book_state(SYMBOL)[0] == 1
    server.publish_book(SYMBOL, T0 + 1, [(100.0, 1.0)], [(100.1, 1.5), (100.2, 0.5)])
    delta = await _receive(ws)
    assert (delta["topic"], delta["type"], delta["ts"]) == (BOOK, "delta", T0 + 1)
    assert delta["data"]["u"] == snapshot["data"]["u"] + 1 == server.book_state(SYMBOL)[0]
    assert delta["data"]["seq"] > snapshot["data"]["seq"]
    assert delta["data"]["b"] == [["99.9", "0"]]
    assert delta["data"]["a"] == [["100.2", "0.5"]]
    await _send(ws, op="unsubscribe", args=[BOOK], req_id="u1")
    assert await _reply(ws) == {"success": True, "ret_msg": "", "req_id": "u1", "op": "unsubscribe"}
    server.publish_book(SYMBOL, T0 + 2, [(100.0, 3.0)], [(100.1, 1.5)])
    await _send(ws, op="ping")
    assert (await _reply(ws))["ret_msg"] == "pong"  # no delta after the unsubscribe


async def test_depth_windows_drop_levels_and_top_of_book_sends_snapshots(
    server: BybitVenueServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    """`orderbook.50` keeps a 50-level window; `orderbook.1` sends snapshots; each topic counts its own `u`."""
    bids = [(round(100.0 - 0.1 * i, 1), 1.0) for i in range(55)]
    server.publish_book(SYMBOL, T0, bids, [(100.2, 1.0)])
    await _send(ws, op="subscribe", args=["orderbook.1.BTCUSDT", BOOK])
    assert (await _reply(ws))["success"] is True
    top, window = await _receive(ws), await _receive(ws)
    assert (top["topic"], top["data"]["b"], top["data"]["a"], top["data"]["u"]) == (
        "orderbook.1.BTCUSDT",
        [["100", "1"]],
        [["100.2", "1"]],
        1,
    )
    assert window["topic"] == BOOK
    assert len(window["data"]["b"]) == 50
    assert window["data"]["b"][-1] == ["95.1", "1"]
    server.publish_book(SYMBOL, T0 + 1, [(100.1, 2.0), *bids], [(100.2, 1.0)])  # a new best bid
    top, window = await _receive(ws), await _receive(ws)
    assert (top["type"], top["data"]["b"], top["data"]["u"]) == ("snapshot", [["100.1", "2"]], 2)
    assert (window["type"], window["data"]["b"], window["data"]["u"]) == ("delta", [["100.1", "2"], ["95.1", "0"]], 2)
    server.publish_book(SYMBOL, T0 + 2, [(100.1, 2.0), *bids[:-1], (94.6, 5.0)], [(100.2, 1.0)])  # below both windows
    server.publish_book(SYMBOL, T0 + 3, [(100.1, 2.0), (100.0, 3.0), *bids[1:]], [(100.2, 1.0)])  # second level
    window = await _receive(ws)
    assert (window["topic"], window["data"]["b"], window["data"]["u"]) == (BOOK, [["100", "3"]], 3)
    assert server.book_state(SYMBOL)[0] == 4


async def test_unknown_topics_ops_and_text_get_bybit_errors(
    server: BybitVenueServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    server.publish_book(SYMBOL, T0, [(100.0, 1.0)], [(100.1, 1.0)])
    for topic in ("orderbook.50.NOPEUSDT", "orderbook.30.BTCUSDT", "orderbook.50.btcusdt", "tickers.BTCUSDT"):
        await _send(ws, op="subscribe", args=[topic], req_id="e1")
        assert await _reply(ws) == {
            "success": False,
            "ret_msg": f"error:handler not found,topic:{topic}",
            "req_id": "e1",
            "op": "subscribe",
        }
    await _send(ws, op="subscribe", args=[BOOK, "publicTrade.NOPEUSDT"])
    assert (await _reply(ws))["ret_msg"] == "error:handler not found,topic:publicTrade.NOPEUSDT"
    await _send(ws, op="subscribe", args=[BOOK])  # the refused request subscribed nothing
    assert (await _reply(ws))["success"] is True
    assert (await _receive(ws))["type"] == "snapshot"
    await _send(ws, op="subscribe", args=[BOOK])
    assert (await _reply(ws))["ret_msg"] == f"error:already subscribed,topic:{BOOK}"
    await _send(ws, op="nope")
    assert await _reply(ws) == {"success": False, "ret_msg": "error:invalid op", "op": "nope"}
    await ws.send_str("hello")
    reply = await _reply(ws)
    assert reply["success"] is False
    assert reply["ret_msg"].startswith("Failed to decode incoming data")


async def test_snapshot_fail_refuses_one_subscribe(
    server: BybitVenueServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    server.publish_book(SYMBOL, T0, [(100.0, 1.0)], [(100.1, 1.0)])
    server.inject("snapshot_fail")
    await _send(ws, op="subscribe", args=[TRADES])  # no snapshot to fail
    assert (await _reply(ws))["success"] is True
    await _send(ws, op="subscribe", args=[BOOK], req_id="s1")
    assert await _reply(ws) == {
        "success": False,
        "ret_msg": f"error:snapshot unavailable,topic:{BOOK}",
        "req_id": "s1",
        "op": "subscribe",
    }
    await _send(ws, op="subscribe", args=[BOOK], req_id="s2")
    assert (await _reply(ws))["success"] is True
    assert (await _receive(ws))["type"] == "snapshot"


# --- REST -------------------------------------------------------------------------------------


async def test_ccxt_load_markets_through_the_local_rest(server: BybitVenueServer) -> None:
    client = CcxtProClient("bybit", server.ccxt_urls())
    markets = await client._exchange.load_markets()
    server_time = await client._exchange.fetch_time()
    await client.close()
    assert sorted(markets) == ["BTC/USDT", "ETH/USDT"]
    market = markets[SYMBOL]
    assert (market["id"], market["type"], market["spot"], market["active"]) == ("BTCUSDT", "spot", True, True)
    assert market["precision"]["price"] == pytest.approx(0.1)
    assert market["precision"]["amount"] == pytest.approx(0.000001)
    assert market["limits"]["amount"]["min"] == pytest.approx(0.000001)
    assert markets["ETH/USDT"]["precision"]["price"] == pytest.approx(0.01)
    queries = [(q["category"], q.get("baseCoin", ""), q.get("status", "")) for q in server.instrument_queries]
    assert sorted(queries) == LOAD_MARKETS_QUERIES
    assert abs(server_time - time.time() * 1_000) < 60_000


async def test_rest_refuses_an_unknown_category(server: BybitVenueServer) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.get(server.http_url + "/v5/market/instruments-info", params={"category": "futures"})
        body = await response.json()
    assert response.status == 200
    assert (body["retCode"], body["retMsg"], body["result"]) == (10001, "Illegal category", {})


# --- ccxt.pro client --------------------------------------------------------------------------


async def test_ccxt_client_ends_with_exactly_the_server_book(server: BybitVenueServer) -> None:
    """Pace a simulated market into the server while ccxt.pro watches; the final books agree level by level."""
    sim_config = SimulatorConfig(
        seed=11,
        tick_ms=5,
        symbols={SYMBOL: SimSymbolConfig(start_price=97_000.0, volatility_bps=20.0, top_size=0.5)},
        venues={"alpha": SimVenueConfig(lag_ms=0, depth_levels=30, level_gap_bps=0.3)},
    )
    driver = SimulationDriver(MarketSimulator(sim_config, {"alpha": [SYMBOL]}), {"alpha": server})
    driver.step()
    client = CcxtProClient("bybit", server.ccxt_urls())
    await client._exchange.load_markets()
    seen: list[int] = []

    async def watch() -> None:
        while True:
            book = await client.watch_book(SYMBOL, depth=1_000)
            assert book.timestamp is not None
            seen.append(book.timestamp)

    watcher = asyncio.create_task(watch())
    try:
        await eventually(lambda: len(seen) > 0, message="ccxt never received the snapshot")
        await driver.run(ticks=400)
        final_id, bids, asks = server.book_state(SYMBOL)
        final_ts = server.books[SYMBOL].ts
        await eventually(lambda: seen[-1] == final_ts, message="ccxt did not reach the server's last book")
        book = client.current_book(SYMBOL, depth=1_000)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()
    assert final_id > 300
    assert book is not None
    assert book.bids == bids
    assert book.asks == asks
    assert len(bids) == 30


async def test_ccxt_watch_trades_gets_side_price_and_amount(server: BybitVenueServer) -> None:
    client = CcxtProClient("bybit", server.ccxt_urls())
    exchange = client._exchange
    watch = asyncio.create_task(exchange.watch_trades(SYMBOL))
    try:
        await eventually(lambda: server.frames_sent >= 1, message="ccxt never subscribed")  # the ack: subscribed
        server.publish_trade(SYMBOL, T0, 97_000.1, 0.25, "buy")
        trades = await asyncio.wait_for(watch, 10)
        server.publish_trade(SYMBOL, T0 + 1, 96_999.9, 0.000123, "sell")
        await eventually(lambda: len(exchange.trades[SYMBOL]) == 2, message="ccxt missed the second trade")
        stored = list(exchange.trades[SYMBOL])
    finally:
        watch.cancel()
        await client.close()
    assert [(t["timestamp"], t["side"], t["price"], t["amount"]) for t in trades] == [(T0, "buy", 97_000.1, 0.25)]
    assert [(t["symbol"], t["side"], t["price"], t["amount"]) for t in stored[1:]] == [
        (SYMBOL, "sell", 96_999.9, 0.000123)
    ]
    assert stored[0]["id"] != stored[1]["id"]
    with pytest.raises(ValueError, match="buy' or 'sell"):
        server.publish_trade(SYMBOL, T0 + 2, 97_000.0, 1.0, "Buy")


async def test_adapter_detects_a_gap_ccxt_misses_and_resyncs(
    server: BybitVenueServer, ws: aiohttp.ClientWebSocketResponse
) -> None:
    """The wire shows the gap in `u`; ccxt 4.5.90 would apply the next delta blindly and keep a wrong book.
    arbbot's bybit client fails the watch with InvalidNonce, and the next watch resubscribes and resyncs."""
    server.publish_book(SYMBOL, T0, [(100.0, 1.0), (99.9, 1.0), (99.8, 1.0)], [(100.1, 1.0), (100.2, 1.0)])
    await _send(ws, op="subscribe", args=[BOOK])
    await _reply(ws)
    snapshot = await _receive(ws)
    client = CcxtProClient("bybit", server.ccxt_urls())
    try:
        await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
        server.inject("gap")
        server.publish_book(SYMBOL, T0 + 1, [(100.0, 1.0), (99.9, 1.0)], [(100.1, 1.0), (100.2, 1.0)])  # lost
        server.publish_book(SYMBOL, T0 + 2, [(100.0, 1.0), (99.9, 1.0)], [(100.1, 2.0), (100.2, 1.0)])
        delta = await _receive(ws)
        assert delta["data"]["u"] == snapshot["data"]["u"] + 2
        with pytest.raises(InvalidNonce, match="order book gap"):
            await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
        assert client.current_book(SYMBOL, 20) is None  # the wrong book is gone, not kept
        resynced = await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
    finally:
        await client.close()
    _, bids, asks = server.book_state(SYMBOL)
    assert (resynced.bids, resynced.asks) == (bids, asks)
    assert server.fault_counts["gap"] == 1


async def test_ccxt_watch_fails_on_snapshot_fail_and_the_next_watch_recovers(server: BybitVenueServer) -> None:
    server.publish_book(SYMBOL, T0, [(100.0, 1.0)], [(100.1, 1.0)])
    server.inject("snapshot_fail")
    client = CcxtProClient("bybit", server.ccxt_urls())
    with pytest.raises(ExchangeError, match="snapshot unavailable"):
        await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
    book = await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
    await client.close()
    assert (book.bids, book.asks) == server.book_state(SYMBOL)[1:]


async def test_client_close_leaves_no_connection(server: BybitVenueServer) -> None:
    server.publish_book(SYMBOL, T0, [(100.0, 1.0)], [(100.1, 1.5)])
    client = CcxtProClient("bybit", server.ccxt_urls())
    await asyncio.wait_for(client.watch_book(SYMBOL, 20), 10)
    assert server.connection_count == 1
    await client.close()
    await eventually(lambda: server.connection_count == 0, message="server still holds the closed client")
