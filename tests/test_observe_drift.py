"""Model drift: signal scores joined to realised fills, in process and from real Redis channels."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from helpers import eventually, make_signal

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, encode
from bot.messages import Decision, Fill, FillLeg, Signal, SlippageBps, Window
from bot.observe.drift import DriftTracker, follow_outcomes
from bot.tasks import cancel_and_wait

TS = 1_763_700_000_123


def decision(signal: Signal, action: str = "execute", **overrides: object) -> Decision:
    fields: dict[str, object] = {
        "ts": TS + 5,
        "signal_id": signal.id,
        "opportunity_id": signal.opportunity_id,
        "action": action,
        "reasons": [] if action == "execute" else ["edge_too_small"],
        "size": 0.25 if action == "execute" else 0.0,
        "slippage_bps": SlippageBps(buy=0.1, sell=0.1),
        "expected_pnl": 1.0,
        "window": Window(not_before_ts=TS + 5, deadline_ts=TS + 500),
        "gas": None,
        "risk_state": "ACTIVE",
        "symbol": signal.symbol,
        "kind": signal.kind,
    }
    fields.update(overrides)
    return Decision.model_validate(fields)


def fill(decision_: Decision, pnl: float, status: str = "filled") -> Fill:
    legs = [FillLeg(venue="alpha", side="buy", price=97000.1, size=0.25, fee=1.0)] if status != "missed" else []
    return Fill(
        ts=TS + 50, decision_id=decision_.id, legs=legs, realised_pnl=pnl, status=status, symbol=decision_.symbol
    )


def test_only_executed_decisions_with_a_known_signal_count() -> None:
    tracker = DriftTracker()
    win, lose, missed, skipped = (make_signal(opportunity_id=f"o{i}", score=0.7) for i in range(4))
    for signal in (win, lose, missed, skipped):
        tracker.on_signal(signal)
    decisions = [decision(win), decision(lose), decision(missed), decision(skipped, "skip")]
    for d in decisions:
        tracker.on_decision(d)
    tracker.on_fill(fill(decisions[0], 3.2))
    tracker.on_fill(fill(decisions[1], -0.4))
    tracker.on_fill(fill(decisions[2], 0.0, "missed"))
    tracker.on_fill(fill(decisions[3], 0.0, "missed"))  # a skip has no fill to judge: unmatched
    tracker.on_fill(fill(decision(make_signal(opportunity_id="unseen")), 1.0))  # its signal was never seen

    [stats] = tracker.stats()
    assert (stats.kind, stats.model, stats.samples) == ("cex_cex", "rule", 3)
    assert stats.score_mean == pytest.approx(0.7)
    assert stats.hit_rate == pytest.approx(1 / 3)
    assert stats.gap == pytest.approx(0.7 - 1 / 3)
    assert stats.brier == pytest.approx((0.3**2 + 0.7**2 + 0.7**2) / 3)
    assert tracker.outcomes == {("cex_cex", "rule", "profitable"): 1, ("cex_cex", "rule", "unprofitable"): 2}
    assert tracker.unmatched_fills == 2


def test_closed_signals_are_not_scores_and_memory_is_bounded() -> None:
    tracker = DriftTracker(max_pending=2)
    signals = [make_signal(opportunity_id=f"o{i}") for i in range(3)]
    for signal in signals:
        tracker.on_signal(signal)
    tracker.on_decision(decision(signals[0]))  # forgotten: only the two newest signals are kept
    tracker.on_signal(make_signal(status="closed", size=0.0, opportunity_id="c"))
    assert tracker.stats() == []
    d = decision(signals[2])
    tracker.on_decision(d)
    tracker.on_fill(fill(d, 1.0))
    assert [s.samples for s in tracker.stats()] == [1]
    with pytest.raises(ValueError):
        DriftTracker(window=0)


async def test_follow_outcomes_reads_the_channels(redis_url: str) -> None:
    channels = Channels(f"test-drift-{uuid.uuid4().hex}")
    client = aioredis.Redis.from_url(redis_url)
    tracker = DriftTracker()
    ready = asyncio.Event()
    rejected: list[DecodeError] = []
    task = asyncio.create_task(follow_outcomes(client, channels, tracker, ready.set, rejected.append))
    try:
        await asyncio.wait_for(ready.wait(), 10.0)
        signal = make_signal(score=0.9, model="lstm@1")
        d = decision(signal)
        await client.publish(channels.signal(signal.kind, signal.symbol), encode(signal))
        await client.publish(channels.decision(signal.symbol), encode(d))
        await client.publish(channels.fill(signal.symbol), b'{"type": "fill", "schema_version": 9}')
        await client.publish(channels.fill(signal.symbol), encode(fill(d, 2.0)))
        await eventually(lambda: tracker.outcomes[("cex_cex", "lstm@1", "profitable")] == 1)
        assert [e.reason for e in rejected] == ["unknown_schema_version"]
        assert tracker.stats()[0].score_mean == pytest.approx(0.9)
    finally:
        await cancel_and_wait(task)
        await client.aclose()
