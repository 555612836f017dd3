"""The risk decision for one signal: at most once per opportunity, window, slippage, size, limits, state."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bot.events import BookEvent, GasEvent, PoolEvent
from bot.messages import Control, Decision, Fill, Signal, SlippageBps, Window
from bot.risk.limits import Limits
from bot.risk.settings import RiskConfig
from bot.risk.sizing import SizingInputs, choose_size, round_price
from bot.risk.slippage import LegCost, walk_book
from bot.risk.slippage import swap as pool_swap
from bot.risk.window import FeedLag, SpreadForecast, UpdateIntervals, WindowPlan, is_on_chain, plan_window

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000


class MarketView(Protocol):
    """What the risk engine reads of the markets (RemoteMarket provides it)."""

    def book(self, venue: str, symbol: str) -> BookEvent | None: ...

    def gas(self, chain: str) -> GasEvent | None: ...

    def pools_for(self, symbol: str) -> list[PoolEvent]: ...


@dataclass(slots=True)
class RiskStats:
    """What the engine did with the signals it was given."""

    signals: int = 0
    decided: int = 0
    executed: int = 0
    skipped: int = 0
    ignored: int = 0
    """Updates of an opportunity already decided, closes, duplicate opens."""
    controls: int = 0
    forecasts: int = 0
    """Windows that ended at a spread forecast's lifetime (the others used the signal's)."""
    forecast_errors: int = 0


class RiskEngine:
    """Decide each signal; no I/O (RiskService feeds it from Redis and publishes what it returns).

    At most one decision per `opportunity_id`: the first `open` (or, joining late, `update`) is decided, later
    updates are ignored, `closed` forgets the opportunity, so an `open` after it (a reopen) is decided again.
    """

    def __init__(
        self,
        config: RiskConfig,
        market: MarketView,
        taker_fee_bps: Mapping[str, float],
        forecast: SpreadForecast | None = None,
    ) -> None:
        self.config = config
        self.stats = RiskStats()
        self.limits = Limits(config)
        self.lag = FeedLag(config)
        self.intervals = UpdateIntervals()
        self._market = market
        self._fees = {venue: bps / 1e4 for venue, bps in taker_fee_bps.items()}
        self._forecast = forecast
        self._acted: OrderedDict[str, str] = OrderedDict()
        self._decision_symbols: OrderedDict[str, str] = OrderedDict()
        self.account_of: dict[str, str] = {}
        """Pool venue (`dex:address`) → the chain whose wallet trades it, learnt from the pools seen."""

    # ------------------------------------------------------------ inputs besides signals

    def remember(self, opportunity_id: str, signal_id: str) -> None:
        """Mark an opportunity as decided (restored from Redis after a restart)."""
        self._acted[opportunity_id] = signal_id
        while len(self._acted) > MAX_REMEMBERED:
            self._acted.popitem(last=False)

    def acted_on(self, opportunity_id: str) -> bool:
        """Whether the opportunity was decided (and not closed since)."""
        return opportunity_id in self._acted

    def on_market_event(self, event: BookEvent | GasEvent | PoolEvent, now_ms: int) -> None:
        """Measure feed lag (from books' `recv_ts` only, see FeedLag) and each stream's update interval."""
        if isinstance(event, BookEvent):
            if event.recv_ts is not None:
                self.lag.observe(event.venue, now_ms - event.recv_ts)
            self.intervals.observe(event.venue, event.symbol, event.ts)
        elif isinstance(event, PoolEvent):
            venue = f"{event.dex}:{event.pool}"
            self.account_of[venue] = event.chain
            self.intervals.observe(venue, event.symbol, event.ts)

    def on_fill(self, fill: Fill, replayed: bool = False) -> None:
        """Apply a fill to the limits; `replayed` (read from the stream at start) moves balances only when
        `balances_from` is `fills`."""
        move_balances = not replayed or self.config.balances_from == "fills"
        self.limits.on_fill(fill, self.account_of, self._decision_symbols.get(fill.decision_id), move_balances)

    def on_control(self, control: Control) -> None:
        """Apply an operator's `halt` or `resume`."""
        self.stats.controls += 1
        if control.command == "halt":
            self.limits.halt(f"operator: {control.reason}" if control.reason else "operator")
        else:
            self.limits.resume(f"operator: {control.reason}" if control.reason else "operator")

    # ------------------------------------------------------------ signals

    def on_signal(self, signal: Signal, now_ms: int, published_ms: int) -> Decision | None:
        """The decision for `signal`, or None when the engine does not act on it (see the class docstring)."""
        self.stats.signals += 1
        if signal.status == "closed":
            self._acted.pop(signal.opportunity_id, None)
            self.stats.ignored += 1
            return None
        if signal.opportunity_id in self._acted:
            self.stats.ignored += 1
            return None
        self.remember(signal.opportunity_id, signal.id)
        self.limits.roll_day(now_ms)
        decision = self._decide(signal, now_ms, published_ms)
        self.stats.decided += 1
        if decision.action == "execute":
            self.stats.executed += 1
            notional = decision.size * (decision.buy_price or signal.buy_price)
            self.limits.record_execute(decision.id, notional, now_ms, decision.window.deadline_ts)
            if signal.symbol:
                self._decision_symbols[decision.id] = signal.symbol
                while len(self._decision_symbols) > MAX_REMEMBERED:
                    self._decision_symbols.popitem(last=False)
        else:
            self.stats.skipped += 1
        return decision

    def _decide(self, signal: Signal, now_ms: int, published_ms: int) -> Decision:
        gas = self._gas_for(signal)
        window = plan_window(signal, now_ms, published_ms, self.lag, self.config, gas, self._lifetime(signal))
        limits = self.limits
        state_reason = f"{limits.state.lower()}: {limits.reason}" if limits.state != "ACTIVE" else None

        def skip(
            reason: str, legs: tuple[LegCost, LegCost] | None = None, size: float = 0.0, pnl: float = 0.0
        ) -> Decision:
            reasons = [reason] if state_reason is None or reason.startswith("halted") else [reason, state_reason]
            return self._decision(signal, now_ms, "skip", reasons, size, legs, pnl, window)

        if limits.state == "HALTED":
            return skip(f"halted: {limits.reason}")
        if window.closed or window.deadline_ts - window.not_before_ts < self.config.min_window_ms:
            return skip("expired")
        if any(is_on_chain(v) for v in (signal.buy_venue, signal.sell_venue)) and window.gas is None:
            return skip("no_gas")
        if limits.trades_last_minute(now_ms) >= self.config.max_trades_per_minute:
            return skip("rate_limit")
        buy, sell = self._pricer(signal, "buy"), self._pricer(signal, "sell")
        if buy is None or sell is None:
            return skip(f"no_market: {signal.buy_venue if buy is None else signal.sell_venue}")
        cap, cap_name = self._cap(signal, now_ms)
        if cap_name == "reducing_to_target" and cap <= 0.0:
            return skip("reducing: increases inventory")
        cap_reason = f"capped: {cap_name}"
        buy_rules, sell_rules = self.config.rules(signal.buy_venue), self.config.rules(signal.sell_venue)
        inputs = SizingInputs(
            probability=signal.score,
            buy=buy,
            sell=sell,
            buy_fee=0.0 if is_on_chain(signal.buy_venue) else self._fees.get(signal.buy_venue, 0.0),
            sell_fee=0.0 if is_on_chain(signal.sell_venue) else self._fees.get(signal.sell_venue, 0.0),
            fixed_cost=signal.costs.gas,
            max_buy_quote=self.limits.balance(self._account(signal.buy_venue), signal.symbol.partition("/")[2]),
            inventory_cost=lambda size, bp, sp: self._inventory_cost(signal, size, bp, sp),
            lot=max(buy_rules.lot_size, sell_rules.lot_size),
            min_notional=max(buy_rules.min_notional, sell_rules.min_notional),
            cap=cap,
            hint=signal.size,
        )
        choice, reason = choose_size(inputs, self.config.size_candidates)
        if choice is None:
            if reason == "size_cap":
                reason = "insufficient_balance" if cap_name == "balance" else cap_reason
            return skip(reason or "no_size")
        legs = (choice.buy, choice.sell)
        if choice.expected_pnl <= self.config.min_expected_pnl:
            return skip("unprofitable", legs, choice.size, choice.expected_pnl)
        reasons = ["ok"] if state_reason is None else ["ok", state_reason]
        if choice.size >= cap * 0.999:
            reasons.append(cap_reason)
        return self._decision(signal, now_ms, "execute", reasons, choice.size, legs, choice.expected_pnl, window)

    def _decision(
        self,
        signal: Signal,
        now_ms: int,
        action: str,
        reasons: list[str],
        size: float,
        legs: tuple[LegCost, LegCost] | None,
        pnl: float,
        window: WindowPlan,
    ) -> Decision:
        buy, sell = legs if legs is not None else (None, None)
        limit_buy = limit_sell = None
        if buy is not None and not is_on_chain(signal.buy_venue):
            limit_buy = round_price(buy.worst_price, self.config.rules(signal.buy_venue).tick_size, "buy")
        if sell is not None and not is_on_chain(signal.sell_venue):
            limit_sell = round_price(sell.worst_price, self.config.rules(signal.sell_venue).tick_size, "sell")
        return Decision.model_validate(
            {
                "ts": now_ms,
                "signal_id": signal.id,
                "opportunity_id": signal.opportunity_id,
                "action": action,
                "reasons": reasons,
                "size": size,
                "slippage_bps": SlippageBps(
                    buy=buy.slippage_bps if buy else 0.0, sell=sell.slippage_bps if sell else 0.0
                ),
                "expected_pnl": pnl,
                "window": Window(not_before_ts=max(1, window.not_before_ts), deadline_ts=max(1, window.deadline_ts)),
                "gas": window.gas,
                "risk_state": self.limits.state,
                "symbol": signal.symbol,
                "kind": signal.kind,
                "buy_venue": signal.buy_venue,
                "sell_venue": signal.sell_venue,
                "buy_price": buy.avg_price if buy else None,
                "sell_price": sell.avg_price if sell else None,
                "buy_limit_price": limit_buy or None,
                "sell_limit_price": limit_sell or None,
            }
        )

    # ------------------------------------------------------------ legs, caps, inventory

    def _pool(self, venue: str, symbol: str) -> PoolEvent | None:
        dex, _, address = venue.partition(":")
        for pool in self._market.pools_for(symbol):
            if pool.dex == dex and pool.pool == address:
                return pool
        return None

    def _gas_for(self, signal: Signal) -> GasEvent | None:
        for venue in (signal.buy_venue, signal.sell_venue):
            if is_on_chain(venue):
                pool = self._pool(venue, signal.symbol)
                return self._market.gas(pool.chain) if pool is not None else None
        return None

    def _pricer(self, signal: Signal, side: str) -> Callable[[float], LegCost | None] | None:
        venue = signal.buy_venue if side == "buy" else signal.sell_venue
        if is_on_chain(venue):
            pool = self._pool(venue, signal.symbol)
            if pool is None:
                return None
            return lambda size: pool_swap(pool, "buy" if side == "buy" else "sell", size)
        book = self._market.book(venue, signal.symbol)
        if book is None:
            return None
        levels = book.asks if side == "buy" else book.bids
        return lambda size: walk_book(levels, size)

    def _lifetime(self, signal: Signal) -> float | None:
        """The spread forecast's remaining lifetime of the gap, or None (no forecast, or it failed) for the signal's."""
        if self._forecast is None:
            return None
        try:
            lifetime = self._forecast(signal, self.intervals.of_signal(signal))
        except Exception:
            # A forecast that raises costs this signal its forecast, never its decision.
            self.stats.forecast_errors += 1
            log.exception("risk: spread forecast failed for signal %s", signal.id)
            return None
        if lifetime is None or not math.isfinite(lifetime):
            return None
        self.stats.forecasts += 1
        return lifetime

    def _account(self, venue: str) -> str:
        return self.account_of.get(venue, venue)

    def _cap(self, signal: Signal, now_ms: int) -> tuple[float, str]:
        """Largest size every limit allows (base units) and the name of the binding limit.

        `balance` binds when an account with a starting balance lacks the quote to buy or the base to sell;
        `reducing_to_target` (REDUCING with `target_inventory`) at 0 means the trade would move inventory away.
        """
        price = signal.buy_price
        now_room = self.config.max_open_exposure - self.limits.open_exposure(now_ms)
        caps = {
            "max_notional_per_trade": self.config.max_notional_per_trade / price,
            "max_open_exposure": max(0.0, now_room) / price,
        }
        base, _, quote = signal.symbol.partition("/")
        quote_left = self.limits.balance(self._account(signal.buy_venue), quote)
        if quote_left is not None:
            fee = self._fees.get(signal.buy_venue, 0.0)
            caps["balance"] = max(0.0, quote_left) / (price * (1.0 + fee))
        base_left = self.limits.balance(self._account(signal.sell_venue), base)
        if base_left is not None:
            caps["balance"] = min(caps.get("balance", float("inf")), max(0.0, base_left))
        name = min(caps, key=lambda k: caps[k])
        cap = caps[name]
        if self.limits.state == "REDUCING":
            cap *= self.config.reducing_size_factor
            toward = self._toward_target(signal)
            if toward is not None and toward < cap:
                return max(0.0, toward), "reducing_to_target"
        return cap, name

    def _unit_moves(self, signal: Signal) -> dict[tuple[str, str], float]:
        """(account, asset) → how much one unit of base traded moves it (fees included, pool fees are in price)."""
        base, _, quote = signal.symbol.partition("/")
        buy, sell = self._account(signal.buy_venue), self._account(signal.sell_venue)
        buy_fee = 0.0 if is_on_chain(signal.buy_venue) else self._fees.get(signal.buy_venue, 0.0)
        sell_fee = 0.0 if is_on_chain(signal.sell_venue) else self._fees.get(signal.sell_venue, 0.0)
        moves: dict[tuple[str, str], float] = {}
        for key, amount in (
            ((buy, base), 1.0),
            ((buy, quote), -signal.buy_price * (1.0 + buy_fee)),
            ((sell, base), -1.0),
            ((sell, quote), signal.sell_price * (1.0 - sell_fee)),
        ):
            moves[key] = moves.get(key, 0.0) + amount
        return moves

    def _toward_target(self, signal: Signal) -> float | None:
        """The largest size that moves no targeted balance away from (or past) its target: 0 when any would move
        away; None when the trade touches no balance with a target (REDUCING then only shrinks sizes)."""
        targets = self.config.target_inventory
        if not targets:
            return None
        limit: float | None = None
        for (account, asset), per_unit in self._unit_moves(signal).items():
            target = targets.get(account, {}).get(asset)
            held = self.limits.balance(account, asset)
            if target is None or held is None or per_unit == 0.0:
                continue
            distance = target - held
            if distance * per_unit <= 0.0:
                return 0.0
            room = distance / per_unit
            limit = room if limit is None else min(limit, room)
        return limit

    def _inventory_cost(self, signal: Signal, size: float, buy_price: float, sell_price: float) -> float:
        """inventory_cost_bps × the notional moved away from target (negative when it moves towards it)."""
        targets = self.config.target_inventory
        if not targets or self.config.inventory_cost_bps == 0.0:
            return 0.0
        base, _, quote = signal.symbol.partition("/")
        moves = (
            (self._account(signal.buy_venue), base, size, buy_price),
            (self._account(signal.buy_venue), quote, -size * buy_price, 1.0),
            (self._account(signal.sell_venue), base, -size, sell_price),
            (self._account(signal.sell_venue), quote, size * sell_price, 1.0),
        )
        away = 0.0
        for account, asset, amount, value in moves:
            target = targets.get(account, {}).get(asset)
            held = self.limits.balance(account, asset)
            if target is None or held is None:
                continue
            away += (abs(held + amount - target) - abs(held - target)) * value
        return away * self.config.inventory_cost_bps / 1e4
