"""The risk engine on real market state: feed lag clocks, the next-block clamp, REDUCING towards target
inventory, the funds check, and fills applied once within a bounded memory."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import make_signal

from bot.events import BookEvent, GasEvent, PoolEvent
from bot.market_state import MarketState
from bot.messages import Costs, Decision, Fill, FillLeg, Signal
from bot.rejections import RejectionCounter
from bot.risk import limits as limits_module
from bot.risk.engine import RiskEngine
from bot.risk.settings import RiskConfig
from bot.risk.window import SpreadForecast

NOW = 1_763_700_000_000
FEES = {"alpha": 1.0, "beta": 1.0}


def _engine(
    books: tuple[BookEvent, ...] = (), forecast: SpreadForecast | None = None, **risk: Any
) -> tuple[RiskEngine, MarketState]:
    market = MarketState(RejectionCounter())
    market.as_of_ms = NOW
    settings: dict[str, Any] = {"default_feed_lag_ms": 10.0, "max_trades_per_minute": 1000, **risk}
    engine = RiskEngine(RiskConfig.model_validate(settings), market, FEES, forecast)
    for book in books:
        market.apply(book)
        engine.on_market_event(book, NOW)
    return engine, market


def _book(venue: str, bids: tuple[tuple[float, float], ...], asks: tuple[tuple[float, float], ...]) -> BookEvent:
    return BookEvent(venue=venue, symbol="BTC/USDT", ts=NOW, recv_ts=NOW, bids=bids, asks=asks)


DEEP = (_book("alpha", ((99.0, 50.0),), ((100.0, 50.0),)), _book("beta", ((101.0, 50.0),), ((102.0, 50.0),)))


def _signal(**overrides: object) -> Signal:
    fields: dict[str, object] = {
        "ts": NOW,
        "buy_price": 100.0,
        "sell_price": 101.0,
        "size": 1.0,
        "score": 0.9,
        "expected_lifetime_ms": 60_000.0,
        "net_edge_bps": 80.0,
    }
    fields.update(overrides)
    return make_signal(**fields)


def _decide(engine: RiskEngine, signal: Signal) -> Decision:
    decision = engine.on_signal(signal, NOW, NOW)
    assert decision is not None
    return decision


def _loss(engine: RiskEngine, pnl: float) -> None:
    engine.on_fill(Fill(ts=NOW, decision_id="d-loss", legs=(), realised_pnl=pnl, status="filled", symbol="BTC/USDT"))


# ---------------------------------------------------------------- feed lag


LEVEL, ASK = ((99.0, 1.0),), ((100.0, 1.0),)


def test_feed_lag_is_measured_from_receive_time_only() -> None:
    engine, _ = _engine()
    for i in range(20):
        # The venue's clock runs 5 s behind ours: without recv_ts that is clock offset, not lag.
        venue_clock = BookEvent(venue="alpha", symbol="BTC/USDT", ts=NOW - 5_000 + i, bids=LEVEL, asks=ASK)
        engine.on_market_event(venue_clock, NOW)
        received = BookEvent(
            venue="beta", symbol="BTC/USDT", ts=NOW - 9_000 + i, recv_ts=NOW - 40, bids=LEVEL, asks=ASK
        )
        engine.on_market_event(received, NOW)
    assert engine.lag.of("alpha") == 10.0  # unmeasured: the default
    assert engine.lag.of("beta") == pytest.approx(40.0)


# ---------------------------------------------------------------- next block


POOL = PoolEvent(
    chain="ethereum", dex="uniswap_v2", pool="0xabc", symbol="BTC/USDT", base="BTC", quote="USDT",
    reserve_base=1_000.0, reserve_quote=100_000.0, fee_bps=30, block=100, ts=NOW,
)  # fmt: skip


def _chain_engine(gas_seen_ms: int) -> RiskEngine:
    engine, market = _engine(DEEP, block_time_ms=12_000.0, blocks_ahead=1)
    gas = GasEvent(
        chain="ethereum", block=100, ts=gas_seen_ms - 1_300, recv_ts=gas_seen_ms,
        base_fee_gwei=10.0, priority_fee_gwei=1.0, gas_used_ratio=0.5,
    )  # fmt: skip
    for event in (POOL, gas):
        market.apply_pool(event) if isinstance(event, PoolEvent) else market.apply_gas(event)
        engine.on_market_event(event, NOW)
    return engine


def _chain_signal(lifetime_ms: float) -> Signal:
    return _signal(
        kind="cex_dex", buy_venue="uniswap_v2:0xabc", sell_venue="beta", buy_price=100.3, sell_price=101.0,
        costs=Costs(fees=0.1, gas=0.05), expected_lifetime_ms=lifetime_ms,
    )  # fmt: skip


def test_an_on_chain_leg_opens_no_earlier_than_its_target_block() -> None:
    engine = _chain_engine(gas_seen_ms=NOW - 2_000)
    decision = _decide(engine, _chain_signal(60_000.0))
    assert decision.gas is not None
    assert decision.gas.target_block == 101
    # The latest block was received 2 s ago, on our clock: the next one is due in 10 s (its chain `ts` is not used).
    assert decision.window.not_before_ts == NOW + 10_000
    assert decision.window.deadline_ts == NOW - 10 + 60_000 - 30


def test_a_gap_ending_before_the_target_block_is_expired() -> None:
    engine = _chain_engine(gas_seen_ms=NOW - 2_000)
    decision = _decide(engine, _chain_signal(5_000.0))
    assert decision.action == "skip"
    assert decision.reasons == ("expired",)
    assert decision.window.not_before_ts == NOW + 10_000


# ---------------------------------------------------------------- REDUCING


def _reducing_engine(alpha_btc: float, beta_btc: float, targets: bool = True) -> RiskEngine:
    engine, _ = _engine(
        DEEP,
        daily_loss_limit=500.0,
        reducing_size_factor=0.5,
        starting_balances={"alpha": {"BTC": alpha_btc, "USDT": 1e6}, "beta": {"BTC": beta_btc, "USDT": 1e6}},
        target_inventory={"alpha": {"BTC": 1.0}, "beta": {"BTC": 2.0}} if targets else {},
        inventory_cost_bps=0.0,
    )
    _loss(engine, -300.0)
    assert engine.limits.state == "REDUCING"
    return engine


def test_reducing_skips_a_trade_that_moves_inventory_away_from_target() -> None:
    # alpha holds more BTC than its target and beta less: buying on alpha and selling on beta moves both away.
    decision = _decide(_reducing_engine(alpha_btc=2.0, beta_btc=1.0), _signal())
    assert decision.action == "skip"
    assert decision.reasons[0] == "reducing: increases inventory"
    assert decision.reasons[1].startswith("reducing: daily_loss")


def test_reducing_allows_a_trade_back_towards_target_but_not_past_it() -> None:
    # alpha is 1 BTC under target, beta 1 over: the trade may move 1 BTC, though the size factor allows 1.5.
    decision = _decide(_reducing_engine(alpha_btc=0.0, beta_btc=3.0), _signal())
    assert decision.action == "execute"
    assert decision.size == pytest.approx(1.0)
    assert "capped: reducing_to_target" in decision.reasons


def test_reducing_without_targets_only_shrinks_sizes() -> None:
    decision = _decide(_reducing_engine(alpha_btc=2.0, beta_btc=3.0, targets=False), _signal())
    assert decision.action == "execute"
    assert decision.size == pytest.approx(1.5)  # the base balance on beta (3) × reducing_size_factor


# ---------------------------------------------------------------- funds


def test_a_buy_is_sized_down_to_the_quote_the_account_holds() -> None:
    # The book moved up since the signal: the buy costs 100.5, not the signal's 100.
    books = (_book("alpha", ((99.0, 50.0),), ((100.5, 50.0),)), DEEP[1])
    engine, _ = _engine(books, starting_balances={"alpha": {"USDT": 50.0}, "beta": {"BTC": 10.0}})
    decision = _decide(engine, _signal())
    assert decision.action == "execute"
    assert decision.buy_price == pytest.approx(100.5)
    assert decision.size * 100.5 * (1.0 + 1e-4) <= 50.0
    assert decision.size == pytest.approx(50.0 / (100.5 * (1.0 + 1e-4)), abs=2e-6)  # to the lot below


@pytest.mark.parametrize(
    ("balances", "reason"),
    [
        ({"alpha": {"USDT": 0.0}, "beta": {"BTC": 10.0}}, "insufficient_balance"),
        ({"alpha": {"USDT": 1e6}, "beta": {"BTC": 0.0}}, "insufficient_balance"),
        ({"alpha": {"USDT": -3.0}, "beta": {"BTC": 10.0}}, "insufficient_balance"),
        ({"alpha": {"USDT": 20.0}, "beta": {"BTC": 10.0}}, "below_min_notional"),  # lots fit, not 25 USDT's worth
    ],
)
def test_a_trade_the_balances_cannot_pay_is_skipped(balances: dict[str, dict[str, float]], reason: str) -> None:
    engine, _ = _engine(DEEP, starting_balances=balances, default_venue={"min_notional": 25.0})
    decision = _decide(engine, _signal())
    assert decision.action == "skip"
    assert decision.reasons == (reason,)


def test_an_account_without_starting_balance_is_not_limited() -> None:
    engine, _ = _engine(DEEP, starting_balances={"gamma": {"USDT": 0.0}})
    decision = _decide(engine, _signal())
    assert decision.action == "execute"


# ---------------------------------------------------------------- fills


def _buy_fill(fill_id: str, size: float = 1.0) -> Fill:
    leg = FillLeg(venue="alpha", side="buy", price=100.0, size=size, fee=0.0)
    return Fill(
        id=fill_id, ts=NOW, decision_id=f"d-{fill_id}", legs=(leg,), realised_pnl=0.0, status="filled",
        symbol="BTC/USDT",
    )  # fmt: skip


def test_each_fill_is_applied_once_within_a_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits_module, "MAX_FILL_IDS", 3)
    engine, _ = _engine(starting_balances={"alpha": {"BTC": 0.0}})
    for i in range(5):
        engine.on_fill(_buy_fill(f"f{i}"))
    engine.on_fill(_buy_fill("f4"))  # remembered: not applied again
    assert engine.limits.fills_seen == 5
    assert engine.limits.balance("alpha", "BTC") == pytest.approx(5.0)
    engine.on_fill(_buy_fill("f0"))  # forgotten, the oldest of 5 with room for 3
    assert engine.limits.fills_seen == 6


def test_replayed_fills_move_balances_only_when_balances_come_from_fills() -> None:
    from_fills, _ = _engine(starting_balances={"alpha": {"BTC": 0.0}}, balances_from="fills")
    from_config, _ = _engine(starting_balances={"alpha": {"BTC": 0.0}}, balances_from="config")
    for engine in (from_fills, from_config):
        engine.on_fill(_buy_fill("old"), replayed=True)
        engine.on_fill(_buy_fill("live", size=0.5))
    assert from_fills.limits.balance("alpha", "BTC") == pytest.approx(1.5)
    assert from_config.limits.balance("alpha", "BTC") == pytest.approx(0.5)
    assert from_config.limits.fills_seen == 2  # the replayed fill still counts for the day's PnL
