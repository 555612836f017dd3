"""What legs cost on chain, by hand: gas valued (or marked unpriced, never free), a reverted unwind's gas, pool
slippage measured from the price risk predicts from, and pool legs named as risk names them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.codec import encode
from bot.bus.publisher import publish_and_append
from bot.events import BookEvent, GasEvent, PoolEvent
from bot.messages import Decision
from bot.paper.executor import Executor, unwind_fill, unwind_fill_id
from bot.paper.ledger import Execution, Ledger, OpenPosition
from bot.paper.market import MarketHistory
from bot.paper.report import build_report
from bot.paper.settings import PaperConfig
from bot.paper.trader import PaperTrader
from bot.risk import slippage

TS = 1_763_700_000_000
POOL = "0x" + "ab" * 20
POOL_VENUE = f"uniswap_v2:{POOL}"
FEES = {"alpha": 10.0, "beta": 20.0}
GAS = {"max_fee_gwei": 30.0, "priority_fee_gwei": 2.0}
GAS_NATIVE = 110_000 * 22.0 * 1e-9  # min(max fee 30, base 20 + tip 2) gwei


def _pool(symbol: str = "ETH/USDT", reserve_base: float = 100.0, reserve_quote: float = 200_000.0) -> PoolEvent:
    base, quote = symbol.split("/")
    return PoolEvent(
        chain="ethereum", dex="uniswap_v2", pool=POOL, symbol=symbol, base=base, quote=quote,
        reserve_base=reserve_base, reserve_quote=reserve_quote, fee_bps=30.0, block=99, ts=TS - 5_000,
    )  # fmt: skip


def _gas(block: int, ts: int) -> GasEvent:
    return GasEvent(chain="ethereum", block=block, ts=ts, base_fee_gwei=20.0, priority_fee_gwei=1.0, gas_used_ratio=0.5)


def _book(venue: str, symbol: str, bid: float, ask: float, ts: int = TS + 150) -> BookEvent:
    return BookEvent(venue=venue, symbol=symbol, ts=ts, bids=((bid, 50.0),), asks=((ask, 50.0),))


def _market(pool: PoolEvent, *books: BookEvent) -> MarketHistory:
    """A pool as of block 99, the transaction's block 101 (after ts + latency) and block 102 that settles it."""
    market = MarketHistory()
    market.on_event(pool)
    market.on_event(_gas(101, TS + 500))
    market.on_event(_gas(102, TS + 12_500))
    for book in books:
        market.on_event(book)
    return market


def _decision(**overrides: Any) -> Decision:
    fields: dict[str, Any] = {
        "ts": TS, "signal_id": "s1", "opportunity_id": "o1", "action": "execute", "reasons": [], "size": 1.0,
        "slippage_bps": {"buy": 0.0, "sell": 0.0}, "expected_pnl": 1.0,
        "window": {"not_before_ts": TS, "deadline_ts": TS + 60_000}, "gas": GAS, "risk_state": "ACTIVE",
        "kind": "cex_dex",
    }  # fmt: skip
    fields.update(overrides)
    return Decision.model_validate(fields)


def _executor(market: MarketHistory, **config: Any) -> Executor:
    settings = {"default_latency_ms": 100, "max_book_wait_ms": 200, "unwind": "hold", **config}
    return Executor(market, PaperConfig.model_validate(settings), FEES)


# ---------------------------------------------------------------- gas in quote units


def _uni_decision() -> Decision:
    # 1 UNI out of 10,000 UNI / 100,000 USDT costs 100,000 / (9,999 × 0.997) = 10.031 USDT.
    return _decision(symbol="UNI/USDT", buy_venue=POOL_VENUE, sell_venue="beta", buy_price=10.05, sell_price=10.2)


def _uni_market() -> MarketHistory:
    return _market(_pool("UNI/USDT", 10_000.0, 100_000.0), _book("beta", "UNI/USDT", 10.2, 10.3))


async def test_gas_nothing_prices_is_valued_at_the_configured_fallback() -> None:
    execution, fill = await _executor(_uni_market(), native_price_fallback={"USDT": 3_000.0}).execute(_uni_decision())
    assert fill is not None and fill.status == "filled"
    pool_leg = execution.legs[0]
    assert pool_leg.leg.gas_native == pytest.approx(GAS_NATIVE)
    assert pool_leg.gas_quote == pytest.approx(GAS_NATIVE * 3_000.0) and not pool_leg.gas_unpriced
    assert fill.legs[0].fee == pytest.approx(GAS_NATIVE * 3_000.0)
    cost = 100_000.0 / (9_999.0 * 0.997)
    assert fill.realised_pnl == pytest.approx(10.2 - cost - 10.2 * 0.002 - GAS_NATIVE * 3_000.0)


async def test_a_book_or_pool_price_of_the_native_asset_comes_before_the_fallback() -> None:
    market = _uni_market()
    market.on_event(_book("alpha", "ETH/USDT", 2_999.0, 3_001.0))
    executor = _executor(market, native_price_fallback={"USDT": 1.0})
    assert executor.native_price("USDT") == pytest.approx(3_000.0)
    inverse = MarketHistory()
    inverse.on_event(_book("alpha", "USDT/ETH", 1 / 2_010.0, 1 / 1_990.0))
    assert _executor(inverse).native_price("USDT") == pytest.approx(2 / (1 / 2_010.0 + 1 / 1_990.0))
    assert _executor(MarketHistory()).native_price("ETH") == 1.0
    assert _executor(MarketHistory()).native_price("USDT") is None


async def test_gas_nothing_prices_is_counted_and_marked_unpriced_not_valued_zero(
    tmp_path: Path, redis_url: str
) -> None:
    config = PaperConfig.model_validate({"default_latency_ms": 100, "max_book_wait_ms": 200, "unwind": "hold"})
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    client = aioredis.from_url(redis_url)
    ledger = Ledger(tmp_path / "l.sqlite")
    trader = PaperTrader(client, channels, config, Executor(_uni_market(), config, FEES), ledger, 100)
    decision = _uni_decision()
    try:
        await trader.handle("1-0", {b"data": encode(decision)})
    finally:
        await client.delete(channels.fill_stream())
        await client.aclose()
    assert trader.stats.unpriced_gas == 1
    [pool_leg, _] = ledger.legs()
    assert (pool_leg["gas_unpriced"], pool_leg["gas_quote"]) == (1, None)
    report = build_report(ledger)
    assert report["gas"]["unpriced_legs"] == 1
    assert report["gas"]["unpriced_native"] == {"ethereum": {"ETH": pytest.approx(GAS_NATIVE)}}
    assert report["gas"]["native"] == {"ethereum": {"ETH": pytest.approx(GAS_NATIVE)}}
    assert report["gas"]["quote"] == {}
    assert ledger.balances()["ethereum"]["ETH"] == pytest.approx(-GAS_NATIVE)  # paid, just not valued
    ledger.close()


# ---------------------------------------------------------------- a reverted unwind swap pays gas


async def test_an_unwind_swap_that_reverts_records_its_gas_in_balances_and_pnl(tmp_path: Path) -> None:
    # Sold 150 ETH on beta while the pool leg missed; completing it means buying 150 out of a 100 ETH reserve.
    market = _market(_pool(), _book("beta", "ETH/USDT", 2_001.0, 2_002.0))
    position = OpenPosition("d1", "beta", "beta", "ETH/USDT", -150.0, 2_001.0, POOL_VENUE, TS + 150)
    ledger = Ledger(tmp_path / "l.sqlite", {"ethereum": {"ETH": 1.0}})
    ledger.record(Execution("d1", TS, "execute", "partial", 0.0, (), "ETH/USDT", 1.0, position=position))
    done = await _executor(market).unwind(position, TS + 200)
    assert done is not None
    assert (done.leg.leg.status, done.leg.leg.reason, done.leg.leg.size) == ("reverted", "liquidity", 0.0)
    gas = 110_000 * 21.0 * 1e-9  # no plan: the block's base fee + its median tip
    gas_quote = gas * 2_001.5  # at the ETH/USDT mid
    assert done.leg.leg.gas_native == pytest.approx(gas)
    assert done.pnl == pytest.approx(-gas_quote)
    assert done.remaining == -150.0
    assert ledger.unwind(position, (done.leg,), done.pnl, done.remaining, done.ts)
    assert ledger.balances()["ethereum"]["ETH"] == pytest.approx(1.0 - gas)
    [still_open] = ledger.open_positions()
    assert still_open.quantity == -150.0
    assert ledger.positions()[0]["unwind_pnl"] == pytest.approx(-gas_quote)
    fill = unwind_fill(position, done, 1)
    assert (fill.id, fill.status, fill.decision_id) == (unwind_fill_id("d1", 1), "reverted", "d1")
    assert fill.realised_pnl == pytest.approx(-gas_quote)
    assert [(leg.venue, leg.side, leg.size) for leg in fill.legs] == [(POOL_VENUE, "buy", 0.0)]
    assert fill.legs[0].fee == pytest.approx(gas_quote)
    ledger.close()


# ---------------------------------------------------------------- pool slippage: the same reference as risk


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_pool_slippage_is_price_impact_from_the_fee_inclusive_price_as_risk_predicts_it(
    side: str, tmp_path: Path
) -> None:
    pool = _pool()  # 100 ETH / 200,000 USDT, 30 bps
    # Buying 1 ETH pays 200,000 / (99 × 0.997) against a zero-size price of 200,000 / (100 × 0.997): 1/99 worse.
    # Selling 1 ETH gets 0.997 × 200,000 / 100.997 against 0.997 × 2,000: 0.997 / 100.997 worse.
    by_hand = 1e4 / 99.0 if side == "buy" else 1e4 * 0.997 / 100.997
    predicted = slippage.swap(pool, "buy" if side == "buy" else "sell", 1.0)
    assert predicted is not None and predicted.slippage_bps == pytest.approx(by_hand)
    market = _market(pool, _book("alpha", "ETH/USDT", 1_960.0, 1_961.0), _book("beta", "ETH/USDT", 2_040.0, 2_041.0))
    routes = {
        "buy": {"buy_venue": POOL_VENUE, "sell_venue": "beta", "buy_price": 2_026.4, "sell_price": 2_040.0},
        "sell": {"buy_venue": "alpha", "sell_venue": POOL_VENUE, "buy_price": 1_961.0, "sell_price": 1_974.2},
    }
    decision = _decision(
        symbol="ETH/USDT", slippage_bps={"buy": 0.0, "sell": 0.0, side: predicted.slippage_bps}, **routes[side]
    )
    execution, fill = await _executor(market).execute(decision)
    assert fill is not None and fill.status == "filled"
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record(execution)
    report = build_report(ledger)["slippage"][side]
    assert report["realised_bps_mean"] == pytest.approx(by_hand)
    assert report["predicted_bps_mean"] == pytest.approx(by_hand)
    ledger.close()


# ---------------------------------------------------------------- one rule names a pool leg


async def test_a_leg_risk_plans_as_on_chain_is_a_pool_leg_whatever_its_address_looks_like() -> None:
    short = "0xpool1"  # not a 40-digit address, still `dex:address` as strategies and risk name pools
    pool = _pool().model_copy(update={"pool": short})
    market = _market(pool, _book("beta", "ETH/USDT", 2_040.0, 2_041.0))
    decision = _decision(
        symbol="ETH/USDT", buy_venue=f"uniswap_v2:{short}", sell_venue="beta", buy_price=2_026.4, sell_price=2_040.0
    )
    execution, fill = await _executor(market).execute(decision)
    assert fill is not None and fill.status == "filled"
    assert (execution.legs[0].account, execution.legs[0].leg.fee) == ("ethereum", 0.0)


async def test_the_publish_helper_raises_what_redis_raises(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    channels = Channels(f"arbtest{uuid.uuid4().hex[:8]}")
    stream = channels.fill_stream()
    try:
        await client.set(stream, b"not a stream")
        with pytest.raises(RedisError):
            await publish_and_append(client, channels.fill("X/Y"), stream, b"{}", 10)
        await client.delete(stream)
        await publish_and_append(client, channels.fill("X/Y"), stream, b"{}", 10)
        assert [fields[b"data"] for _, fields in await client.xrange(stream)] == [b"{}"]
    finally:
        await client.delete(stream)
        await client.aclose()
