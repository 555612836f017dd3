"""cex_dex through the engine: signals carry the gas they assumed, and close when gas or the pool stops backing them."""

from __future__ import annotations

from typing import Any

from bot.config import parse_config
from bot.events import BookEvent, GasEvent, PoolEvent
from bot.messages import Signal
from bot.rejections import RejectionCounter
from bot.signals_role import build_engine

T0 = 1_763_700_000_000
POOL = "0x" + "ab" * 20


class ManualClock:
    def __init__(self) -> None:
        self.now = T0

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1_000

    async def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1_000)


def _config() -> Any:
    return parse_config(
        {
            "symbols": ["ETH/USDT"],
            "venues": {name: {"exchange": "okx", "taker_fee_bps": 10} for name in ("cexa", "cexb")},
            "chain": {"name": "ethereum", "ws_url": "ws://127.0.0.1:1", "stale_after_ms": 5_000},
            "strategies": {"cex_dex": {"min_net_edge_bps": 5, "max_notional": 100_000}},
        },
        "test",
    )


def _book(venue: str, bid: float, ts: int) -> BookEvent:
    levels = range(10)
    bids = tuple((bid - i * 0.5, 5.0) for i in levels)
    asks = tuple((bid + 0.5 + i * 0.5, 5.0) for i in levels)
    return BookEvent(venue=venue, symbol="ETH/USDT", ts=ts, recv_ts=ts, bids=bids, asks=asks)


def _gas(block: int, base_fee: float, ts: int) -> GasEvent:
    return GasEvent(
        chain="ethereum",
        block=block,
        ts=ts,
        recv_ts=ts,
        base_fee_gwei=base_fee,
        priority_fee_gwei=1.0,
        gas_used_ratio=0.5,
    )


def _pool(block: int, price: float, ts: int) -> PoolEvent:
    base = 500.0
    return PoolEvent(
        chain="ethereum", dex="uniswap_v2", pool=POOL, symbol="ETH/USDT", base="ETH", quote="USDT",
        reserve_base=base, reserve_quote=base * price, fee_bps=30, block=block, ts=ts, recv_ts=ts,
    )  # fmt: skip


def test_cex_dex_signal_carries_gas_and_closes_when_gas_spikes_or_the_pool_goes_stale() -> None:
    clock = ManualClock()
    signals: list[Signal] = []
    engine = build_engine(_config(), signals.append, RejectionCounter(), clock)
    engine.on_event(_gas(1, 10.0, T0))
    engine.on_event(_book("cexa", 3_000.0, T0))
    engine.on_event(_pool(1, 2_940.0, T0))  # 2% under the CEX bid: buy on the pool, sell on cexa
    opened = [s for s in signals if s.kind == "cex_dex" and s.status == "open"]
    assert opened, signals
    signal = opened[0]
    assert signal.buy_venue == f"uniswap_v2:{POOL}" and signal.sell_venue == "cexa"
    assert signal.costs.base_fee_gwei == 10.0 and signal.costs.priority_fee_gwei == 1.0
    # gas in quote: 110,000 gas × 11 gwei × 1e-9 ETH × ~3,000 USDT per ETH (the CEX mid prices the gas token)
    assert 3.5 < signal.costs.gas < 3.8
    clock.now += 100
    engine.on_event(_gas(2, 50_000.0, clock.now))  # gas now costs far more than the edge
    assert signals[-1].status == "closed" and signals[-1].opportunity_id == signal.opportunity_id

    seen = len(signals)
    engine.on_event(_gas(3, 10.0, clock.now))  # gas back down: the same gap reopens as a new opportunity
    engine.on_event(_book("cexa", 3_000.0, clock.now))
    (reopened,) = [s for s in signals[seen:] if s.status == "open"]
    assert reopened.opportunity_id != signal.opportunity_id
    clock.now += 6_000  # the pool has not updated for longer than the chain's stale_after_ms
    engine.on_event(_gas(4, 10.0, clock.now))
    engine.on_event(_book("cexa", 3_000.0, clock.now))
    assert signals[-1].status == "closed" and signals[-1].opportunity_id == reopened.opportunity_id
    assert engine.stats.signals_from_stale_books == 0
