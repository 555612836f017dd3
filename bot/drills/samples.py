"""Valid messages of every type the drills send (and spoil): built through the message models, encoded by the codec."""

from __future__ import annotations

from typing import Any

import orjson

from bot.bus.codec import encode
from bot.messages import BookMessage, Control, Costs, Decision, Fill, Signal

SYMBOL = "BTC/USDT"


def sample_signal(n: int, now_ms: int) -> Signal:
    """A valid open cex_cex signal, the n-th of a run (its own opportunity)."""
    return Signal.model_validate(
        {
            "ts": now_ms, "opportunity_id": f"drill-{n}", "status": "open", "kind": "cex_cex",
            "symbol": SYMBOL, "buy_venue": "alpha", "sell_venue": "beta", "buy_price": 97_000.0,
            "sell_price": 97_010.0, "buy_book_ts": now_ms, "sell_book_ts": now_ms, "size": 0.1,
            "gross_edge_bps": 1.03, "net_edge_bps": 0.5, "costs": Costs(fees=4.85), "score": 0.5,
            "expected_lifetime_ms": 200.0, "expected_edge_bps": 0.25, "model": "rule",
        }
    )  # fmt: skip


def sample_decision(now_ms: int) -> Decision:
    """A valid execute decision (alpha → beta)."""
    return Decision.model_validate(
        {
            "ts": now_ms, "signal_id": "drill-signal", "opportunity_id": "drill-opportunity", "action": "execute",
            "reasons": ["ok"], "size": 0.01, "slippage_bps": {"buy": 0.5, "sell": 0.5}, "expected_pnl": 0.1,
            "window": {"not_before_ts": now_ms, "deadline_ts": now_ms + 1_000}, "gas": None, "risk_state": "ACTIVE",
            "symbol": SYMBOL, "kind": "cex_cex", "buy_venue": "alpha", "sell_venue": "beta",
            "buy_price": 97_000.0, "sell_price": 97_010.0,
        }
    )  # fmt: skip


def sample_fill(now_ms: int) -> Fill:
    """A valid fill of one leg."""
    return Fill.model_validate(
        {
            "ts": now_ms, "decision_id": "drill-decision", "realised_pnl": 0.05, "status": "filled",
            "symbol": SYMBOL, "legs": [{"venue": "alpha", "side": "buy", "price": 97_000.0, "size": 0.01, "fee": 0.2}],
        }
    )  # fmt: skip


def sample_book(now_ms: int) -> BookMessage:
    """A valid book of alpha's BTC/USDT."""
    return BookMessage(
        venue="alpha", symbol=SYMBOL, ts=now_ms, bids=((97_000.0, 1.0),), asks=((97_000.5, 1.0),), recv_ts=now_ms
    )


def sample_control(now_ms: int) -> Control:
    """A `halt` for the risk role: spoiled, it must never halt anything."""
    return Control(ts=now_ms, role="risk", command="halt", reason="drill: this halt is malformed and must be ignored")


def spoiled(message: Any, **changes: Any) -> bytes:
    """`message` encoded, with fields replaced (or removed, for a value of None)."""
    fields = orjson.loads(encode(message))
    for name, value in changes.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    return orjson.dumps(fields)
