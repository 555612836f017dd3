"""Limits and the risk state: balances and realised PnL from fills, open exposure, trade rate, daily loss."""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from bot.messages import Fill, RiskState
from bot.risk.settings import RiskConfig

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
MAX_FILL_IDS = 100_000
"""Fill ids remembered to apply each fill once (a stream re-read after a restart repeats the newest ones)."""


@dataclass(frozen=True, slots=True)
class OperatorState:
    """What the last operator command left: the state, its reason, and for a resume the day and the loss it
    acknowledged (only further losses that day halt or reduce again)."""

    state: RiskState
    reason: str
    day: int = -1
    acknowledged_loss: float = 0.0


@dataclass(slots=True)
class _Open:
    notional: float
    until_ms: int


@dataclass(slots=True)
class Limits:
    """Everything the service must not exceed, and the state it is in (`ACTIVE`, `REDUCING`, `HALTED`).

    Balances start from `starting_balances` and move with each Fill (a buy leg adds base and pays
    price × size + fee in quote; a sell leg the reverse). An account is the leg's venue, or for a pool leg
    (`dex:address`) the chain named by `account_of`. Realised PnL counts per UTC day of the fill's `ts`.
    """

    config: RiskConfig
    balances: dict[str, dict[str, float]] = field(default_factory=dict)
    state: RiskState = "ACTIVE"
    reason: str = ""
    day: int = -1
    realised_today: float = 0.0
    fills_seen: int = 0
    fills_unaccounted: int = 0
    acknowledged_loss: float = 0.0
    """The day's loss when an operator resumed: only further losses halt or reduce again."""
    _open: dict[str, _Open] = field(default_factory=dict)
    _trades: deque[int] = field(default_factory=deque)
    _fill_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        for account, assets in self.config.starting_balances.items():
            self.balances[account] = dict(assets)

    # ------------------------------------------------------------ state

    def halt(self, reason: str) -> None:
        """Enter HALTED: every signal is skipped until `resume`."""
        if self.state != "HALTED":
            log.warning("risk state HALTED: %s", reason)
        self.state, self.reason = "HALTED", reason

    def resume(self, reason: str) -> None:
        """Enter ACTIVE; the day's loss so far is acknowledged, so only further losses halt or reduce again."""
        log.warning("risk state ACTIVE (resumed): %s", reason)
        self.state, self.reason = "ACTIVE", reason or "resumed"
        self.acknowledged_loss = max(0.0, -self.realised_today)

    def operator_state(self) -> OperatorState:
        """The state an operator command just set, to be saved and restored after a restart."""
        return OperatorState(self.state, self.reason, self.day, self.acknowledged_loss)

    def restore(self, saved: OperatorState) -> None:
        """Take back a saved operator state (before the day's fills are replayed, which then re-apply the loss
        rules above the acknowledged loss: a resume after a loss-limit halt holds for the rest of its day)."""
        self.state, self.reason = saved.state, saved.reason
        if saved.state != "HALTED" and saved.day >= self.day:
            self.day, self.acknowledged_loss = saved.day, saved.acknowledged_loss

    def roll_day(self, now_ms: int) -> None:
        """A new UTC day starts with no realised PnL; REDUCING (from losses) ends; HALTED waits for `resume`."""
        day = now_ms // DAY_MS
        if day > self.day:
            self.day = day
            self.realised_today = 0.0
            self.acknowledged_loss = 0.0
            if self.state == "REDUCING":
                self.state, self.reason = "ACTIVE", "new day"

    def _apply_loss_rules(self) -> None:
        loss = -self.realised_today
        if loss <= self.acknowledged_loss:
            return
        if loss >= self.config.daily_loss_limit:
            self.halt(f"daily_loss_limit: lost {loss:.2f} today (limit {self.config.daily_loss_limit:g})")
        elif loss >= self.config.reduce_at_loss_fraction * self.config.daily_loss_limit and self.state == "ACTIVE":
            self.state, self.reason = "REDUCING", f"daily_loss: lost {loss:.2f} today"

    # ------------------------------------------------------------ fills

    def on_fill(self, fill: Fill, account_of: dict[str, str], symbol: str | None, move_balances: bool = True) -> None:
        """Apply a fill once (by id): PnL, balances (unless `move_balances` is False), exposure; then the loss
        rules."""
        if fill.id in self._fill_ids:
            return
        self._fill_ids[fill.id] = None
        while len(self._fill_ids) > MAX_FILL_IDS:
            self._fill_ids.popitem(last=False)
        self.fills_seen += 1
        self._open.pop(fill.decision_id, None)
        day = fill.ts // DAY_MS
        if day > self.day:
            self.roll_day(fill.ts)
        if day == self.day:
            self.realised_today += fill.realised_pnl
        if move_balances:
            self._move_legs(fill, account_of, symbol or fill.symbol)
        self._apply_loss_rules()

    def _move_legs(self, fill: Fill, account_of: dict[str, str], symbol: str | None) -> None:
        if symbol is None or "/" not in symbol:
            self.fills_unaccounted += 1
            return
        base, quote = symbol.split("/", 1)
        for leg in fill.legs:
            account = account_of.get(leg.venue, leg.venue)
            sign = 1.0 if leg.side == "buy" else -1.0
            self._move(account, base, sign * leg.size)
            self._move(account, quote, -sign * leg.price * leg.size - leg.fee)

    def _move(self, account: str, asset: str, amount: float) -> None:
        # Only accounts with a known starting balance are tracked: others are not limited.
        assets = self.balances.get(account)
        if assets is not None:
            assets[asset] = assets.get(asset, 0.0) + amount

    def balance(self, account: str, asset: str) -> float | None:
        """The balance, or None for an account without a configured starting balance (no limit)."""
        assets = self.balances.get(account)
        return None if assets is None else assets.get(asset, 0.0)

    # ------------------------------------------------------------ exposure and rate

    def open_exposure(self, now_ms: int) -> float:
        """Notional executed but neither filled nor timed out."""
        for key in [k for k, held in self._open.items() if held.until_ms < now_ms]:
            del self._open[key]
        return sum(held.notional for held in self._open.values())

    def trades_last_minute(self, now_ms: int) -> int:
        """Executes decided in the last 60 s."""
        while self._trades and self._trades[0] <= now_ms - 60_000:
            self._trades.popleft()
        return len(self._trades)

    def record_execute(self, decision_id: str, notional: float, now_ms: int, deadline_ts: int) -> None:
        """Count an execute towards open exposure (until its fill, or deadline + timeout) and the trade rate."""
        self._open[decision_id] = _Open(notional, max(now_ms, deadline_ts) + self.config.exposure_timeout_ms)
        self._trades.append(now_ms)
