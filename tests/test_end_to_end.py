"""End to end on loopback: simulated OKX-protocol venues → ccxt.pro feeds → cex_cex → Redis → `arbbot subscribe`
in another process. Every signal is recomputed from the books the venue servers really sent."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml

from bot.bus.codec import decode_message
from bot.config import RootConfig, parse_config
from bot.events import Level
from bot.messages import Signal
from bot.signals_role import SignalsRole
from bot.venues.local import LocalVenues
from strategies.depth_walk import cost_of, walk_cross

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
SIGNALS_WANTED = 8

BookHistory = dict[tuple[str, str, int], tuple[tuple[Level, ...], tuple[Level, ...]]]


def _config(redis_url: str, prefix: str) -> RootConfig:
    data: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    data["redis"] = {"url": redis_url, "prefix": prefix}
    return parse_config(data, "test")


def _record(history: BookHistory, venue: str) -> Any:
    def listener(symbol: str, ts: int, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None:
        history[(venue, symbol, ts)] = (bids, asks)

    return listener


def _check_against_books(signal: Signal, config: RootConfig, history: BookHistory) -> None:
    depth = config.book_depth
    buy_asks = history[(signal.buy_venue, signal.symbol, signal.buy_book_ts)][1][:depth]
    sell_bids = history[(signal.sell_venue, signal.symbol, signal.sell_book_ts)][0][:depth]
    buy_fee = config.venues[signal.buy_venue].taker_fee_bps / 1e4
    sell_fee = config.venues[signal.sell_venue].taker_fee_bps / 1e4
    if signal.status == "closed":
        assert signal.buy_price == buy_asks[0][0]
        assert signal.sell_price == sell_bids[0][0]
        assert signal.net_edge_bps < config.strategies.cex_cex.min_net_edge_bps
        return
    cost = cost_of(buy_asks, signal.size)
    proceeds = cost_of(sell_bids, signal.size)
    assert cost is not None and proceeds is not None
    fees = cost * buy_fee + proceeds * sell_fee
    assert signal.buy_price == pytest.approx(cost / signal.size, rel=1e-9)
    assert signal.sell_price == pytest.approx(proceeds / signal.size, rel=1e-9)
    assert signal.costs.fees == pytest.approx(fees, rel=1e-9)
    assert signal.net_edge_bps == pytest.approx((proceeds - cost - fees) / cost * 1e4, rel=1e-6, abs=1e-9)
    assert signal.gross_edge_bps == pytest.approx((proceeds - cost) / cost * 1e4, rel=1e-6, abs=1e-9)
    assert signal.net_edge_bps >= config.strategies.cex_cex.min_net_edge_bps
    best = walk_cross(buy_asks, sell_bids, buy_fee, sell_fee, config.strategies.cex_cex.max_notional)
    assert best is not None
    assert signal.size == pytest.approx(best.size, rel=1e-9)


async def test_signals_reach_a_subscriber_process_and_match_the_books(
    redis_url: str, subprocess_env: dict[str, str]
) -> None:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    config = _config(redis_url, prefix)
    history: BookHistory = {}
    subscriber = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot", "subscribe", f"{prefix}:signal:*", "--count", str(SIGNALS_WANTED)),
        env=subprocess_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert subscriber.stderr is not None
    ready = await asyncio.wait_for(subscriber.stderr.readline(), 30)
    assert b"listening" in ready

    venues = LocalVenues(config)
    for name, server in venues.servers.items():
        server.add_listener(_record(history, name))
    client = aioredis.from_url(redis_url)
    role: SignalsRole | None = None
    try:
        await venues.start()
        role = SignalsRole(config, client, {name: venues.endpoint(name) for name in venues.servers})
        await role.start()
        stdout, stderr = await asyncio.wait_for(subscriber.communicate(), 90)
    finally:
        if subscriber.returncode is None:
            subscriber.kill()
            await subscriber.wait()
        if role is not None:
            await role.stop()
        await venues.stop()
        stream = await client.xrange(f"{prefix}:stream:signal")
        await client.delete(f"{prefix}:stream:signal")
        await client.aclose()

    assert subscriber.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    assert len(lines) == SIGNALS_WANTED
    signals = [decode_message(line) for line in lines]
    assert all(isinstance(signal, Signal) for signal in signals)
    for signal in signals:
        _check_against_books(signal, config, history)
    statuses = {signal.status for signal in signals}
    assert "open" in statuses
    streamed_ids = {orjson.loads(fields[b"data"])["id"] for _, fields in stream}
    assert {signal.id for signal in signals} <= streamed_ids
    assert role is not None
    assert role.rejections.total == 0
    assert role.publisher.dropped == 0
