"""`paper.enforce_balances`: a leg its account cannot pay misses as insufficient_balance, so no balance goes
negative; off (the default), balances may go negative as before."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.bus.channels import Channels
from bot.bus.codec import encode
from bot.events import BookEvent, GasEvent, PoolEvent
from bot.messages import Decision
from bot.paper.executor import Executor
from bot.paper.ledger import Ledger, OpenPosition
from bot.paper.market import MarketHistory
from bot.paper.settings import PaperConfig
from bot.paper.trader import PaperTrader

TS = 1_763_700_000_000
FEES = {"alpha": 10.0, "beta": 20.0}
POOL_VENUE = "uniswap_v2:0x" + "ab" * 20


def _decision(**overrides: Any) -> Decision:
    fields: dict[str, Any] = {
        "ts": TS, "signal_id": "s1", "opportunity_id": "o1", "action": "execute", "reasons": [], "size": 0.5,
        "slippage_bps": {"buy": 1.0, "sell": 2.0}, "expected_pnl": 0.4,
        "window": {"not_before_ts": TS, "deadline_ts": TS + 5_000}, "gas": None, "risk_state": "ACTIVE",
        "symbol": "BTC/USDT", "kind": "cex_cex", "buy_venue": "alpha", "sell_venue": "beta",
        "buy_price": 100.0, "sell_price": 102.0,
    }  # fmt: skip
    fields.update(overrides)
    return Decision.model_validate(fields)


def _market() -> MarketHistory:
    market = MarketHistory()
    market.on_event(BookEvent(venue="alpha", symbol="BTC/USDT", ts=TS + 120, bids=((99.5, 5.0),), asks=((100.0, 5.0),)))
    market.on_event(BookEvent(venue="beta", symbol="BTC/USDT", ts=TS + 130, bids=((102.0, 5.0),), asks=((102.5, 5.0),)))
    return market


def _config(**settings: Any) -> PaperConfig:
    return PaperConfig.model_validate(
        {"default_latency_ms": 100, "max_book_wait_ms": 200, "unwind": "hold", **settings}
    )


async def test_off_by_default_a_leg_trades_whatever_the_balances() -> None:
    assert PaperConfig().enforce_balances is False
    execution, _ = await Executor(_market(), _config(), FEES).execute(_decision(), balances={})
    assert execution.status == "filled"


async def test_a_buy_short_of_quote_and_a_sell_short_of_base_miss_as_insufficient_balance() -> None:
    executor = Executor(_market(), _config(enforce_balances=True), FEES)
    # The buy costs 50 USDT + 0.05 fee: 50 is not enough. The sell needs 0.5 BTC on beta: 0.4 is not.
    execution, fill = await executor.execute(_decision(), balances={"alpha": {"USDT": 50.0}, "beta": {"BTC": 0.4}})
    assert fill is not None and fill.status == execution.status == "missed"
    assert [(leg.leg.status, leg.leg.reason) for leg in execution.legs] == [("missed", "insufficient_balance")] * 2
    assert execution.detail == "buy:insufficient_balance,sell:insufficient_balance"
    enough = {"alpha": {"USDT": 50.05}, "beta": {"BTC": 0.5}}
    execution, _ = await executor.execute(_decision(), balances=enough)
    assert execution.status == "filled"


async def test_legs_of_one_decision_on_one_account_cannot_spend_the_same_funds_twice() -> None:
    market = _market()
    market.on_event(BookEvent(venue="alpha", symbol="BTC/USDT", ts=TS + 140, bids=((99.5, 5.0),), asks=((100.0, 5.0),)))
    executor = Executor(market, _config(enforce_balances=True), {"alpha": 0.0, "beta": 0.0})
    # Buy on alpha pays 50 USDT; the sell on alpha needs 0.5 BTC that alpha does not hold before the trade.
    execution, _ = await executor.execute(_decision(sell_venue="alpha"), balances={"alpha": {"USDT": 50.0}})
    assert [leg.leg.status for leg in execution.legs] == ["filled", "missed"]


async def test_a_swap_whose_wallet_cannot_pay_the_gas_is_not_sent() -> None:
    market = MarketHistory()
    market.on_event(PoolEvent(
        chain="ethereum", dex="uniswap_v2", pool="0x" + "ab" * 20, symbol="ETH/USDT", base="ETH", quote="USDT",
        reserve_base=100.0, reserve_quote=200_000.0, fee_bps=30.0, block=99, ts=TS - 5_000,
    ))  # fmt: skip
    for block, ts in ((101, TS + 500), (102, TS + 12_500)):
        market.on_event(GasEvent(chain="ethereum", block=block, ts=ts, base_fee_gwei=20.0, priority_fee_gwei=1.0,
                                 gas_used_ratio=0.5))  # fmt: skip
    market.on_event(
        BookEvent(venue="beta", symbol="ETH/USDT", ts=TS + 150, bids=((2040.0, 5.0),), asks=((2041.0, 5.0),))
    )
    decision = _decision(
        symbol="ETH/USDT", kind="cex_dex", buy_venue=POOL_VENUE, buy_price=2026.4, sell_price=2040.0, size=1.0,
        gas={"max_fee_gwei": 30.0, "priority_fee_gwei": 2.0},
    )  # fmt: skip
    executor = Executor(market, _config(enforce_balances=True), FEES)
    wallet_without_gas = {"ethereum": {"USDT": 10_000.0}, "beta": {"ETH": 1.0}}
    execution, _ = await executor.execute(decision, balances=wallet_without_gas)
    pool_leg = execution.legs[0]
    assert (pool_leg.leg.status, pool_leg.leg.reason) == ("missed", "insufficient_balance")
    assert pool_leg.leg.gas_native == 0.0
    funded = {"ethereum": {"USDT": 10_000.0, "ETH": 0.01}, "beta": {"ETH": 1.0}}
    execution, _ = await executor.execute(decision, balances=funded)
    assert execution.status == "filled"


async def test_an_unwind_its_account_cannot_pay_does_not_trade() -> None:
    executor = Executor(_market(), _config(enforce_balances=True, unwind="complete"), FEES)
    short_on_beta = OpenPosition("d1", "alpha", "alpha", "BTC/USDT", 0.5, 100.0, "beta", TS + 120)
    assert await executor.unwind(short_on_beta, TS, balances={"beta": {"BTC": 0.1}}) is None
    done = await executor.unwind(short_on_beta, TS, balances={"beta": {"BTC": 0.5}})
    assert done is not None and done.leg.leg.size == 0.5


async def test_the_trader_checks_the_ledgers_balances_so_none_goes_negative(tmp_path: Path, redis_url: str) -> None:
    config = _config(enforce_balances=True)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    client = aioredis.from_url(redis_url)
    ledger = Ledger(tmp_path / "l.sqlite", {"alpha": {"USDT": 80.0}, "beta": {"BTC": 2.0}})
    trader = PaperTrader(client, channels, config, Executor(_market(), config, FEES), ledger, 100)
    first, second = _decision(), _decision()
    try:
        await trader.handle("1-0", {b"data": encode(first)})
        await trader.handle("2-0", {b"data": encode(second)})  # 29.95 USDT left on alpha: short of 50.05
    finally:
        await client.delete(channels.fill_stream())
        await client.aclose()
    statuses = {row.decision_id: row.status for row in ledger.decisions()}
    assert statuses == {first.id: "filled", second.id: "partial"}
    assert ledger.balances()["alpha"]["USDT"] == pytest.approx(80.0 - 50.05)
    assert all(amount >= 0.0 for assets in ledger.balances().values() for amount in assets.values())
    ledger.close()
