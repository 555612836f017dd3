"""Turn one decision into legs filled against the market of its execution time, and unwind what a lone leg left."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from bot.bus.codec import encode
from bot.messages import Decision, Fill, FillLeg
from bot.paper.fills import (
    GasPlan,
    LegResult,
    LegStatus,
    Side,
    gas_native,
    gas_price_gwei,
    missed,
    pool_reference_price,
    swap,
    walk_book,
)
from bot.paper.ledger import Balances, DecisionStatus, Execution, LegRecord, OpenPosition
from bot.paper.market import MarketHistory, local_ts
from bot.paper.settings import PaperConfig
from bot.risk.window import is_on_chain

_FILL_NAMESPACE = uuid.UUID("6f1c3c52-8d7e-4f0a-9a55-2b3f7f7f4a10")


def fill_id(decision_id: str) -> str:
    """The Fill id of a decision: the same on every run, so a Fill published twice is dropped by id."""
    return uuid.uuid5(_FILL_NAMESPACE, decision_id).hex


def unwind_fill_id(decision_id: str, step: int) -> str:
    """The Fill id of a decision's `step`-th unwind trade (from 1): the same on every run, distinct from the
    decision's own Fill and from every other step."""
    return uuid.uuid5(_FILL_NAMESPACE, f"{decision_id}:unwind:{step}").hex


class Rejected(ValueError):
    """A decision the trader cannot act on; `reason` is a short, countable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Leg:
    """A filled (or not) leg with its accounting: where its balances live and what it was measured against."""

    record: LegRecord
    planned_price: float | None

    @property
    def result(self) -> LegResult:
        return self.record.leg

    @property
    def gas_quote(self) -> float:
        """Gas in quote units (0.0 when none was paid, or when nothing priced it: see `LegRecord.gas_unpriced`)."""
        return self.record.gas_quote or 0.0


@dataclass(frozen=True, slots=True)
class Unwind:
    """One unwind attempt that cost something: its leg (traded, or a reverted swap that paid gas), the PnL it
    realised and the base still open after it."""

    leg: LegRecord
    pnl: float
    remaining: float
    ts: int


def unwind_fill(position: OpenPosition, done: Unwind, step: int) -> Fill:
    """The Fill of an unwind trade: the original decision's id, `filled` / `partial` (or `reverted`: gas only)."""
    leg = done.leg.leg
    status: LegStatus = "reverted" if leg.size <= 0.0 else ("filled" if leg.status == "filled" else "partial")
    price = leg.price or done.leg.reference_price or position.entry_price
    fee = leg.fee + (done.leg.gas_quote or 0.0)
    return Fill(
        id=unwind_fill_id(position.decision_id, step), ts=done.ts, decision_id=position.decision_id,
        legs=(FillLeg(venue=leg.venue, side=leg.side, price=price, size=leg.size, fee=fee),),
        realised_pnl=done.pnl, status=status, symbol=position.symbol, kind=position.kind,
        opportunity_id=position.opportunity_id,
    )  # fmt: skip


class _Funds:
    """What each account may still spend on one decision (`enforce_balances`): its balance less what the legs
    before took (the legs of a decision are simultaneous, so one leg's proceeds do not fund another)."""

    def __init__(self, balances: Balances | None) -> None:
        self._left: dict[tuple[str, str], float] | None = None
        if balances is not None:
            self._left = {(acct, asset): amount for acct, held in balances.items() for asset, amount in held.items()}

    def take(self, record: LegRecord) -> bool:
        """Reserve what `record` spends; False (and nothing reserved) when its account lacks any of it."""
        if self._left is None:
            return True
        spends = record.spends
        left = self._left
        if any(left.get((record.account, a), 0.0) < amount * (1.0 - 1e-12) for a, amount in spends.items()):
            return False
        for asset, amount in spends.items():
            left[(record.account, asset)] = left.get((record.account, asset), 0.0) - amount
        return True


def _split(symbol: str) -> tuple[str, str]:
    base, sep, quote = symbol.partition("/")
    if not sep or not base or not quote:
        raise Rejected("bad_symbol", repr(symbol))
    return base, quote


class Executor:
    """Fill decisions on a MarketHistory with the paper config's latencies, limits, gas and unwind rule."""

    def __init__(self, market: MarketHistory, config: PaperConfig, taker_fee_bps: Mapping[str, float]) -> None:
        self._market = market
        self._config = config
        self._fee = {venue: bps / 1e4 for venue, bps in taker_fee_bps.items()}
        self._wait_s = config.max_book_wait_ms / 1000.0

    def check(self, decision: Decision) -> None:
        """Raise Rejected for an execute decision that names no symbol or venues, or a venue nobody knows."""
        if decision.action != "execute":
            return
        if decision.symbol is None or decision.buy_venue is None or decision.sell_venue is None:
            raise Rejected("missing_route", f"decision {decision.id} names no symbol or venues")
        _split(decision.symbol)
        for venue in (decision.buy_venue, decision.sell_venue):
            if venue not in self._fee and not is_on_chain(venue):
                raise Rejected("unknown_venue", venue)

    async def execute(
        self, decision: Decision, entry_id: str | None = None, balances: Balances | None = None
    ) -> tuple[Execution, Fill | None]:
        """Simulate a decision; the Execution to record and the Fill to publish (None for a skip).

        `balances` (the ledger's, now) is needed with `enforce_balances`: a leg its account cannot pay misses.
        """
        self.check(decision)
        if decision.action != "execute":
            skipped = Execution(
                decision.id, decision.ts, decision.action, "skipped", 0.0, (), decision.symbol,
                decision.expected_pnl, entry_id, ",".join(decision.reasons),
            )  # fmt: skip
            return skipped, None
        assert decision.symbol is not None and decision.buy_venue is not None and decision.sell_venue is not None
        funds = self._funds(balances)
        buy = await self._leg(decision, decision.buy_venue, "buy", decision.buy_price, funds)
        sell = await self._leg(decision, decision.sell_venue, "sell", decision.sell_price, funds)
        both_swaps = is_on_chain(buy.result.venue) and is_on_chain(sell.result.venue)
        if both_swaps and "reverted" in (buy.result.status, sell.result.status):
            # Both swaps of a dex_dex trade are one transaction: either reverts, both do.
            buy, sell = _atomic(buy), _atomic(sell)
        return self._settle(decision, buy, sell, entry_id)

    def _funds(self, balances: Balances | None) -> _Funds:
        if not self._config.enforce_balances:
            return _Funds(None)
        if balances is None:
            raise ValueError("paper.enforce_balances is on but the executor was given no balances")
        return _Funds(balances)

    def _settle(self, decision: Decision, buy: Leg, sell: Leg, entry_id: str | None) -> tuple[Execution, Fill]:
        b, s = buy.result, sell.result
        matched = min(b.size, s.size)
        pnl = matched * (s.price - b.price) - b.fee - s.fee - buy.gas_quote - sell.gas_quote
        statuses = {b.status, s.status}
        status: DecisionStatus
        if "reverted" in statuses:
            status = "reverted"
        elif statuses == {"filled"}:
            status = "filled"
        elif statuses == {"missed"}:
            status = "missed"
        else:
            status = "partial"
        position = self._position(decision, buy, sell)
        ts = max(b.market_ts, s.market_ts)
        legs = [
            FillLeg(
                venue=x.result.venue, side=x.result.side, price=price, size=x.result.size,
                fee=x.result.fee + x.gas_quote,
            )
            for x in (buy, sell)
            if (price := x.result.price or x.record.reference_price or x.planned_price)
        ]  # fmt: skip
        fill = Fill(
            id=fill_id(decision.id), ts=ts, decision_id=decision.id, legs=tuple(legs), realised_pnl=pnl,
            status=status, symbol=decision.symbol, kind=decision.kind, opportunity_id=decision.opportunity_id,
        )  # fmt: skip
        reasons = ",".join(f"{x.result.side}:{x.result.reason}" for x in (buy, sell) if x.result.reason)
        execution = Execution(
            decision.id, decision.ts, decision.action, status, pnl, (buy.record, sell.record), decision.symbol,
            decision.expected_pnl, entry_id, reasons, encode(fill), position,
        )  # fmt: skip
        return execution, fill

    def _position(self, decision: Decision, buy: Leg, sell: Leg) -> OpenPosition | None:
        b, s = buy.result, sell.result
        excess = b.size - s.size
        if abs(excess) <= max(b.requested, s.requested) * 1e-9:
            return None
        held, other = (buy, sell) if excess > 0 else (sell, buy)
        rule = self._config.unwind
        unwind_venue = {"hold": None, "reverse": held.result.venue, "complete": other.result.venue}[rule]
        assert decision.symbol is not None
        return OpenPosition(
            decision.id, held.record.account, held.result.venue, decision.symbol, excess, held.result.price,
            unwind_venue, held.result.market_ts, decision.kind, decision.opportunity_id,
        )  # fmt: skip

    def _exec_ts(self, decision: Decision, venue_or_chain: str) -> int:
        return max(decision.ts + self._config.latency_of(venue_or_chain), decision.window.not_before_ts)

    def _late(self, decision: Decision, market_ts: int) -> bool:
        return self._config.respect_deadline and market_ts > decision.window.deadline_ts

    async def _leg(self, decision: Decision, venue: str, side: Side, planned: float | None, funds: _Funds) -> Leg:
        leg = await self._simulate_leg(decision, venue, side, planned)
        if funds.take(leg.record):
            return leg
        r = leg.result
        short = missed(r.venue, r.side, r.requested, r.market_ts, "insufficient_balance")
        return Leg(dataclasses.replace(leg.record, leg=short, gas_quote=0.0), planned)

    async def _simulate_leg(self, decision: Decision, venue: str, side: Side, planned: float | None) -> Leg:
        assert decision.symbol is not None
        if is_on_chain(venue):
            return await self._pool_leg(decision, venue, side, planned)
        base, quote = _split(decision.symbol)
        ts = self._exec_ts(decision, venue)
        record = LegRecord(missed(venue, side, decision.size, ts, "no_book"), venue, base, quote)
        book = await self._market.wait_for(
            lambda: self._market.book_at_or_after(venue, decision.symbol or "", ts), self._wait_s, ts
        )
        if book is None:
            return Leg(record, planned)
        reference = book.best_ask if side == "buy" else book.best_bid
        limit = None
        # The limit bounds each level taken, so it starts from the worst level risk walked, not from the
        # average price: measured from the average, a multi-level walk on an unchanged book would stop short.
        worst = decision.buy_limit_price if side == "buy" else decision.sell_limit_price
        anchor = worst if worst is not None else planned
        if anchor is not None and self._config.cex_limit_bps is not None:
            slack = self._config.cex_limit_bps / 1e4
            limit = anchor * (1.0 + slack) if side == "buy" else anchor * (1.0 - slack)
        if self._late(decision, local_ts(book)):
            result = missed(venue, side, decision.size, book.ts, "deadline")
        else:
            levels = book.asks if side == "buy" else book.bids
            result = walk_book(venue, side, levels, decision.size, self._fee[venue], book.ts, limit)
        predicted = decision.slippage_bps.buy if side == "buy" else decision.slippage_bps.sell
        return Leg(LegRecord(result, venue, base, quote, None, reference, predicted), planned)

    async def _pool_leg(self, decision: Decision, venue: str, side: Side, planned: float | None) -> Leg:
        assert decision.symbol is not None
        base, quote = _split(decision.symbol)
        native = self._config.native_asset
        latest = await self._market.wait_for(lambda: self._market.latest_pool(venue), self._wait_s, decision.ts)
        if latest is None:
            result = missed(venue, side, decision.size, decision.ts, "no_pool")
            return Leg(LegRecord(result, venue, base, quote), planned)
        ts = self._exec_ts(decision, latest.chain)
        target = decision.gas.target_block if decision.gas is not None else None
        block = await self._market.wait_for(lambda: self._market.block_for(venue, ts, target), self._wait_s, ts)
        predicted = decision.slippage_bps.buy if side == "buy" else decision.slippage_bps.sell
        if block is None:
            result = missed(venue, side, decision.size, ts, "no_block")
            return Leg(LegRecord(result, latest.chain, base, quote, native, None, predicted), planned)
        plan = GasPlan(decision.gas.max_fee_gwei, decision.gas.priority_fee_gwei) if decision.gas else None
        price_gwei = gas_price_gwei(block.gas, plan)
        if self._late(decision, block.gas.ts):
            result = missed(venue, side, decision.size, block.gas.ts, "deadline")
        elif price_gwei is None:
            result = missed(venue, side, decision.size, block.gas.ts, "base_fee_above_max_fee")
        else:
            limit = None
            if planned is not None:
                slack = self._config.dex_tolerance_bps / 1e4
                limit = planned * (1.0 + slack) if side == "buy" else planned * (1.0 - slack)
            paid = gas_native(self._config.gas_units_per_swap, price_gwei)
            result = swap(venue, side, block.pool, decision.size, paid, block.gas.ts, limit)
        reference = pool_reference_price(block.pool, side)
        gas = self._gas_quote(result.gas_native, quote)
        return Leg(LegRecord(result, block.pool.chain, base, quote, native, reference, predicted, gas), planned)

    def native_price(self, quote: str) -> float | None:
        """The native asset's price in `quote`: a book's mid or a pool's price of `{native}/{quote}` (or of the
        inverse pair), else `native_price_fallback[quote]`; None when nothing prices it."""
        native = self._config.native_asset
        if quote == native:
            return 1.0
        price = self._market.mid_price(f"{native}/{quote}")
        if price is None and (inverse := self._market.mid_price(f"{quote}/{native}")):
            price = 1.0 / inverse
        return price if price is not None else self._config.native_price_fallback.get(quote)

    def _gas_quote(self, native_amount: float, quote: str) -> float | None:
        """Gas in quote units; None when gas was paid that nothing prices (recorded as unpriced, not as free)."""
        if native_amount == 0.0:
            return 0.0
        price = self.native_price(quote)
        return native_amount * price if price is not None else None

    async def unwind(
        self, position: OpenPosition, not_before_ts: int, balances: Balances | None = None
    ) -> Unwind | None:
        """Trade an open position back at market on its unwind venue, at the first book at or after
        `not_before_ts`; None when nothing was spent (no book in time, an empty book, an account that cannot pay
        with `enforce_balances`). A swap that reverts is returned: it traded nothing but paid gas."""
        venue = position.unwind_venue
        if venue is None:
            return None
        side: Side = "sell" if position.quantity > 0 else "buy"
        size = abs(position.quantity)
        base, quote = _split(position.symbol)
        if is_on_chain(venue):
            latest = await self._market.wait_for(lambda: self._market.latest_pool(venue), self._wait_s, not_before_ts)
            block = None
            if latest is not None:
                block = await self._market.wait_for(
                    lambda: self._market.block_for(venue, not_before_ts), self._wait_s, not_before_ts
                )
            if latest is None or block is None:
                return None
            paid = gas_native(self._config.gas_units_per_swap, gas_price_gwei(block.gas, None) or 0.0)
            result = swap(venue, side, block.pool, size, paid, block.gas.ts)
            reference = pool_reference_price(block.pool, side)
            gas = self._gas_quote(result.gas_native, quote)
            record = LegRecord(result, latest.chain, base, quote, self._config.native_asset, reference, None, gas)
        else:
            book = await self._market.wait_for(
                lambda: self._market.book_at_or_after(venue, position.symbol, not_before_ts),
                self._wait_s,
                not_before_ts,
            )
            if book is None:
                return None
            levels = book.bids if side == "sell" else book.asks
            result = walk_book(venue, side, levels, size, self._fee.get(venue, 0.0), book.ts)
            record = LegRecord(result, venue, base, quote, None, levels[0][0])
        if (result.size <= 0.0 and result.gas_native <= 0.0) or not self._funds(balances).take(record):
            return None
        sign = 1.0 if position.quantity > 0 else -1.0
        pnl = sign * result.size * (result.price - position.entry_price) - result.fee - (record.gas_quote or 0.0)
        return Unwind(record, pnl, position.quantity - sign * result.size, result.market_ts)


def _atomic(leg: Leg) -> Leg:
    """A swap undone because the other swap of its transaction reverted: gas paid, nothing traded."""
    r = leg.result
    if r.status != "filled":
        return leg
    undone = LegResult(r.venue, r.side, r.requested, 0.0, 0.0, 0.0, r.gas_native, "reverted", r.market_ts, "atomic")
    return Leg(dataclasses.replace(leg.record, leg=undone), leg.planned_price)
