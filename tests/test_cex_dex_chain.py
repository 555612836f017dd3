"""cex_dex end to end on a real node: the pool pushed away from the CEX price signals when the gap beats fees and
gas, and the same gap under a high base fee does not (the gas-blind bot's mistake)."""

from __future__ import annotations

from typing import Any

from helpers import eventually

from bot.chain.local import LocalChain, PoolSpec
from bot.clock import SystemClock
from bot.config import parse_config
from bot.events import BookEvent, GasEvent, MarketEvent
from bot.feeds.chain import ChainFeed, PoolConfig
from bot.feeds.health import FeedHealth
from bot.messages import Signal
from bot.rejections import RejectionCounter
from bot.signals_role import build_engine

GWEI = 10**9


def _config() -> Any:
    return parse_config(
        {
            "symbols": ["ETH/USDT"],
            "venues": {
                "cexa": {"exchange": "okx", "taker_fee_bps": 10},
                "cexb": {"exchange": "okx", "taker_fee_bps": 10},
            },
            "chain": {"name": "local", "ws_url": "ws://127.0.0.1:1", "stale_after_ms": 60_000},
            "strategies": {"cex_dex": {"min_net_edge_bps": 5, "max_notional": 100_000}},
        },
        "test",
    )


def _cex_book(ts: int) -> BookEvent:
    bids = tuple((3_399.5 - i * 0.5, 5.0) for i in range(20))
    asks = tuple((3_400.5 + i * 0.5, 5.0) for i in range(20))
    return BookEvent(venue="cexa", symbol="ETH/USDT", ts=ts, recv_ts=ts, bids=bids, asks=asks)


async def _signals_after_push(base_fee_wei: int) -> tuple[list[tuple[Signal, GasEvent | None]], list[GasEvent]]:
    """Seed a pool at the CEX price, push it ~3% up with a real swap; return each signal with the gas then current."""
    clock = SystemClock()
    signals: list[tuple[Signal, GasEvent | None]] = []
    current_gas: list[GasEvent] = []
    engine = build_engine(
        _config(), lambda s: signals.append((s, current_gas[-1] if current_gas else None)), RejectionCounter(), clock
    )
    chain = LocalChain(
        [PoolSpec("ETH/USDT", price=3_400.0, base_liquidity=50.0)],
        block_time=None,  # blocks on demand: the base fee moves only with our transactions
        base_fee_wei=base_fee_wei,
        with_activity=False,
    )
    events: list[MarketEvent] = []

    def sink(event: MarketEvent) -> None:
        events.append(event)
        if isinstance(event, GasEvent):
            current_gas.append(event)
        engine.on_event(event)

    await chain.start()
    try:
        pools = [PoolConfig(p.dex, str(p.address).lower(), p.symbol, float(p.fee_bps)) for p in chain.pools]
        feed = ChainFeed("local", chain.ws_url, pools, sink, FeedHealth(), RejectionCounter(), clock,
                         token_aliases=chain.token_aliases)  # fmt: skip
        feed.start()
        try:
            engine.on_event(_cex_book(clock.now_ms()))
            deployed = chain.pools[0].deployed
            await eventually(lambda: any(e.type == "pool" for e in events), timeout=20, message="no pool state")
            await deployed.swap(chain.w3, "quote_in", 2_600 * 10**6, trader=chain.trader, mine_now=True)
            await eventually(lambda: sum(e.type == "pool" for e in events) >= 2, timeout=20, message="no push")
            await eventually(lambda: any(isinstance(e, GasEvent) for e in events), timeout=20, message="no gas")
            engine.on_event(_cex_book(clock.now_ms()))  # the CEX book again, now against the pushed pool and gas
        finally:
            await feed.close()
    finally:
        await chain.stop()
    return signals, [e for e in events if isinstance(e, GasEvent)]


async def test_a_pushed_pool_signals_at_low_gas_and_not_at_high_gas() -> None:
    cheap, _ = await _signals_after_push(GWEI)
    opened = [(s, gas) for s, gas in cheap if s.kind == "cex_dex" and s.status == "open"]
    assert opened, "no cex_dex signal for a ~3% gap at ~1 gwei"
    for signal, gas in opened:
        assert signal.buy_venue == "cexa" and signal.sell_venue.startswith("uniswap_v2:")  # pool rich: sell into it
        assert gas is not None  # the gas of the block current when the signal went out, never a constant
        assert (signal.costs.base_fee_gwei, signal.costs.priority_fee_gwei) == (
            gas.base_fee_gwei,
            gas.priority_fee_gwei,
        )
        assert signal.costs.gas > 0.0

    dear, dear_gas = await _signals_after_push(1_000 * GWEI)
    assert dear_gas[-1].base_fee_gwei > 500.0
    assert [s for s, _ in dear if s.kind == "cex_dex" and s.status != "closed"] == []
