"""The local OKX venue server against real OKX frames, a raw websocket client and the real ccxt.pro client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from helpers import eventually

from bot.config import SimSymbolConfig, SimulatorConfig, SimVenueConfig
from bot.feeds.ccxt_adapter import CcxtProClient
from bot.sim.driver import SimulationDriver
from bot.sim.market import MarketSimulator
from bot.venues.base import Instrument
from bot.venues.okx import OkxVenueServer, instrument_row, okx_checksum

FIXTURE = Path(__file__).parent / "fixtures" / "okx" / "books_btc_usdt_2022-05-13.jsonl"
BTC = Instrument("BTC/USDT", tick_size=0.1, lot_size=0.00001, min_size=0.00001)


def _real_book_messages() -> list[dict[str, object]]:
    messages = []
    for line in FIXTURE.read_text().splitlines():
        frame = orjson.loads(orjson.loads(line)["data"])
        if "action" in frame:
            messages.append(frame)
    return messages


def test_checksum_matches_real_okx_frames() -> None:
    """Rebuild the real 2022 BTC-USDT book from its snapshot and updates; our checksum equals OKX's each time."""
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    messages = _real_book_messages()
    assert messages[0]["action"] == "snapshot"
    for message in messages:
        data = message["data"][0]  # type: ignore[index]
        for side, levels in ((bids, data["bids"]), (asks, data["asks"])):
            for price, size, *_ in levels:
                if size == "0":
                    side.pop(price, None)
                else:
                    side[price] = size
        ordered_bids = sorted(bids.items(), key=lambda level: -float(level[0]))
        ordered_asks = sorted(asks.items(), key=lambda level: float(level[0]))
        assert okx_checksum(ordered_bids, ordered_asks) == data["checksum"]
    assert len(messages) >= 20


def test_instrument_row_parses_with_ccxt() -> None:
    """The rows the server would list give ccxt a spot market with the venue's tick and lot sizes."""
    client = CcxtProClient("okx", {"ws": "ws://127.0.0.1:1/ws/v5"}, [instrument_row(BTC)])
    market = client._exchange.market("BTC/USDT")
    assert market["id"] == "BTC-USDT"
    assert market["spot"] is True
    assert market["precision"]["price"] == pytest.approx(0.1)
    assert market["precision"]["amount"] == pytest.approx(0.00001)


@pytest.fixture
async def server() -> AsyncIterator[OkxVenueServer]:
    venue = OkxVenueServer("alpha", [BTC])
    await venue.start()
    yield venue
    await venue.stop()


async def test_raw_protocol_ack_snapshot_update_ping(server: OkxVenueServer) -> None:
    server.publish_book("BTC/USDT", 1_700_000_000_000, [(100.0, 1.0), (99.9, 2.0)], [(100.1, 1.5)])
    async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url + "/ws/v5/public") as ws:
        await ws.send_str("ping")
        assert await ws.receive_str() == "pong"
        await ws.send_str(
            orjson.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]}).decode()
        )
        ack = orjson.loads(await ws.receive_str())
        assert ack["event"] == "subscribe"
        assert ack["arg"] == {"channel": "books", "instId": "BTC-USDT"}
        assert ack["connId"]
        snapshot = orjson.loads(await ws.receive_str())
        assert snapshot["action"] == "snapshot"
        snap = snapshot["data"][0]
        assert snap["prevSeqId"] == -1
        assert snap["bids"][0][:2] == ["100.0", "1.00000"]
        server.publish_book("BTC/USDT", 1_700_000_000_001, [(100.0, 1.0)], [(100.1, 1.5), (100.2, 0.5)])
        update = orjson.loads(await ws.receive_str())
        data = update["data"][0]
        assert update["action"] == "update"
        assert data["prevSeqId"] == snap["seqId"]
        assert data["seqId"] == snap["seqId"] + 1
        assert ["99.9", "0", "0", "0"] in data["bids"]
        assert data["asks"] == [["100.2", "0.50000", "0", "1"]]
        assert data["ts"] == "1700000000001"


async def test_unknown_channel_and_bad_json_get_okx_errors(server: OkxVenueServer) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url + "/ws/v5/public") as ws:
        await ws.send_str(
            orjson.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": "NOPE-USDT"}]}).decode()
        )
        error = orjson.loads(await ws.receive_str())
        assert error["event"] == "error"
        assert error["code"] == "60018"
        await ws.send_str("{not json")
        error = orjson.loads(await ws.receive_str())
        assert error["code"] == "60012"


async def test_ccxt_client_ends_with_exactly_the_server_book(server: OkxVenueServer) -> None:
    """Pace a simulated market into the server while ccxt.pro watches; the final books agree level by level."""
    sim_config = SimulatorConfig(
        seed=11,
        tick_ms=5,
        symbols={"BTC/USDT": SimSymbolConfig(start_price=97_000.0, volatility_bps=20.0, top_size=0.5)},
        venues={"alpha": SimVenueConfig(lag_ms=0, depth_levels=30, level_gap_bps=0.3)},
    )
    driver = SimulationDriver(MarketSimulator(sim_config, {"alpha": ["BTC/USDT"]}), {"alpha": server})
    driver.step()
    client = CcxtProClient("okx", server.ccxt_urls(), server.market_rows())
    seen: list[int] = []

    async def watch() -> None:
        while True:
            book = await client.watch_book("BTC/USDT", depth=1_000)
            assert book.nonce is not None
            seen.append(book.nonce)

    watcher = asyncio.create_task(watch())
    try:
        await eventually(lambda: len(seen) > 0, message="ccxt never received the snapshot")
        await driver.run(ticks=400)
        final_seq, bids, asks = server.book_state("BTC/USDT")
        await eventually(lambda: seen[-1] == final_seq, message="ccxt did not reach the server's last seqId")
        book = client.current_book("BTC/USDT", depth=1_000)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()
    assert final_seq > 300
    assert book is not None
    assert book.bids == bids
    assert book.asks == asks
    assert len(bids) == 30


async def test_client_close_leaves_no_connection(server: OkxVenueServer) -> None:
    server.publish_book("BTC/USDT", 1_700_000_000_000, [(100.0, 1.0)], [(100.1, 1.5)])
    client = CcxtProClient("okx", server.ccxt_urls(), server.market_rows())
    await asyncio.wait_for(client.watch_book("BTC/USDT", 20), 10)
    assert server.connection_count == 1
    await client.close()
    await eventually(lambda: server.connection_count == 0, message="server still holds the closed client")
