"""After a run: what the signal, decision and fill streams and the paper ledger say, checked against each other.

- Each opportunity episode (an `open`, its updates, up to its `closed`) is decided at most once, every signal
  at most once; episodes with no decision are counted (a decision lost between risk and the stream).
- Every decision in the stream is in the ledger, and the ledger holds no decision the stream does not.
- A Fill id published twice carries the same Fill; the ledger applied each decision's legs once (one trade leg
  per side).
- The ledger's balances are its starting balances plus the sum of its legs, and plus the sum of the Fills
  published (deduplicated by id).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message
from bot.messages import Decision, Fill, Signal

Balances = dict[tuple[str, str], float]
TOLERANCE = 1e-6


async def read_stream(client: aioredis.Redis, stream: str, expected: str) -> tuple[list[Any], int]:
    """Every message of `stream` in order, and how many entries did not decode."""
    messages: list[Any] = []
    bad = 0
    start = "-"
    while True:
        entries: list[Any] = await client.xrange(stream, min=start, max="+", count=1_000) or []
        for _entry_id, fields in entries:
            try:
                messages.append(decode_message(fields.get(b"data", b""), expected))
            except DecodeError:
                bad += 1
        if len(entries) < 1_000:
            return messages, bad
        last = entries[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)


@dataclass(slots=True)
class StreamAudit:
    """What the signal, decision and fill streams say about each other."""

    signals: int = 0
    episodes: int = 0
    decisions: int = 0
    executes: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    signals_decided_twice: int = 0
    episodes_decided_twice: int = 0
    undecided_episodes: int = 0
    decisions_without_signal: int = 0
    fills_published: int = 0
    fills_unique: int = 0
    fills_republished: int = 0
    fills_conflicting: int = 0
    undecodable: int = 0
    fills: dict[str, Fill] = field(default_factory=dict)
    decision_ids: set[str] = field(default_factory=set)


def audit_streams(signals: list[Signal], decisions: list[Decision], fills: list[Fill]) -> StreamAudit:
    """Check the three streams against each other."""
    audit = StreamAudit(signals=len(signals), decisions=len(decisions), fills_published=len(fills))
    episode_of: dict[str, tuple[str, int]] = {}
    open_episode: dict[str, int] = {}
    count: Counter[str] = Counter()
    for signal in signals:
        opportunity = signal.opportunity_id
        if signal.status == "closed":
            open_episode.pop(opportunity, None)
            continue
        if opportunity not in open_episode:
            count[opportunity] += 1
            open_episode[opportunity] = count[opportunity]
            audit.episodes += 1
        episode_of[signal.id] = (opportunity, open_episode[opportunity])
    reasons = Counter(d.reasons[0].split(":")[0] if d.reasons else "-" for d in decisions if d.action == "skip")
    audit.skip_reasons = dict(reasons.most_common())
    by_signal = Counter(decision.signal_id for decision in decisions)
    audit.signals_decided_twice = sum(1 for n in by_signal.values() if n > 1)
    by_episode: Counter[tuple[str, int]] = Counter()
    for decision in decisions:
        audit.decision_ids.add(decision.id)
        audit.executes += decision.action == "execute"
        episode = episode_of.get(decision.signal_id)
        if episode is None:
            audit.decisions_without_signal += 1
        else:
            by_episode[episode] += 1
    audit.episodes_decided_twice = sum(1 for n in by_episode.values() if n > 1)
    audit.undecided_episodes = audit.episodes - len(by_episode)
    _audit_fills(audit, fills)
    return audit


def _audit_fills(audit: StreamAudit, fills: list[Fill]) -> None:
    for fill in fills:
        held = audit.fills.setdefault(fill.id, fill)
        if held is not fill:
            audit.fills_republished += 1
            audit.fills_conflicting += held != fill
    audit.fills_unique = len(audit.fills)


@dataclass(slots=True)
class LedgerAudit:
    """What the paper ledger says against the streams."""

    decisions: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    phantom: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    balances_vs_legs: float = 0.0
    balances_vs_fills: float = 0.0
    legs: int = 0
    decisions_filled_twice: int = 0
    open_positions: int = 0


def audit_ledger(path: Path, streams: StreamAudit) -> LedgerAudit:
    """Check the ledger against the decision and fill streams (read-only)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        recorded = {row[0]: row[1] for row in db.execute("SELECT decision_id, status FROM decisions")}
        legs = db.execute("SELECT account, base, quote, side, size, notional, fee FROM legs").fetchall()
        balances: Balances = {(a, s): v for a, s, v in db.execute("SELECT account, asset, amount FROM balances")}
        starting: Balances = {
            (a, s): v for a, s, v in db.execute("SELECT account, asset, amount FROM starting_balances")
        }
        rejections = dict(db.execute("SELECT reason, COUNT(*) FROM rejections GROUP BY reason").fetchall())
        open_positions = db.execute("SELECT COUNT(*) FROM positions WHERE status = 'open'").fetchone()[0]
        twice = db.execute(
            "SELECT COUNT(DISTINCT decision_id) FROM (SELECT decision_id FROM legs WHERE role = 'trade'"
            " GROUP BY decision_id, side HAVING COUNT(*) > 1)"
        ).fetchone()[0]
    from_legs = dict(starting)
    for account, base, quote, side, size, notional, fee in legs:
        sign = 1.0 if side == "buy" else -1.0
        _add(from_legs, account, base, sign * size)
        _add(from_legs, account, quote, -sign * notional - fee)
    from_fills = dict(starting)
    for fill in streams.fills.values():
        base, quote = (fill.symbol or "/").split("/")
        for leg in fill.legs:
            sign = 1.0 if leg.side == "buy" else -1.0
            _add(from_fills, leg.venue, base, sign * leg.size)
            _add(from_fills, leg.venue, quote, -sign * leg.size * leg.price - leg.fee)
    return LedgerAudit(
        decisions=len(recorded),
        by_status=dict(Counter(recorded.values())),
        lost=len(streams.decision_ids - set(recorded)),
        phantom=len(set(recorded) - streams.decision_ids),
        rejections=rejections,
        balances_vs_legs=_largest_gap(balances, from_legs),
        balances_vs_fills=_largest_gap(balances, from_fills),
        legs=len(legs),
        decisions_filled_twice=int(twice),
        open_positions=int(open_positions),
    )


def _add(balances: Balances, account: str, asset: str, amount: float) -> None:
    balances[(account, asset)] = balances.get((account, asset), 0.0) + amount


def _largest_gap(actual: Balances, expected: Balances) -> float:
    """The largest difference between two balance sheets, relative to the amount (absolute below 1)."""
    keys = set(actual) | set(expected)
    return max(
        (abs(actual.get(k, 0.0) - expected.get(k, 0.0)) / max(1.0, abs(expected.get(k, 0.0))) for k in keys),
        default=0.0,
    )


async def read_all(client: aioredis.Redis, channels: Channels) -> StreamAudit:
    """Read and audit the signal, decision and fill streams."""
    signals, bad_signals = await read_stream(client, channels.signal_stream(), "signal")
    decisions, bad_decisions = await read_stream(client, channels.decision_stream(), "decision")
    fills, bad_fills = await read_stream(client, channels.fill_stream(), "fill")
    audit = audit_streams(
        [s for s in signals if isinstance(s, Signal)],
        [d for d in decisions if isinstance(d, Decision)],
        [f for f in fills if isinstance(f, Fill)],
    )
    audit.undecodable = bad_signals + bad_decisions + bad_fills
    return audit
