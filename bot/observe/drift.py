"""Model drift: the scores the model gave the trades that were executed, against what those trades realised.

A signal's `score` is the probability that the trade is still profitable when executed. Joining each executed
decision's signal to its fill gives (score, profitable) pairs; over the last `window` of them, per (kind,
model), a calibrated model has mean score ≈ hit rate. `gap = mean score − hit rate` is what to alert on: it
grows when the market moved away from what the model learnt (positive: overconfident).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message
from bot.bus.signing import Verifier
from bot.clock import Clock, SystemClock
from bot.messages import Decision, Fill, Signal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriftStats:
    """Calibration of one (kind, model) over its last `samples` executed trades."""

    kind: str
    model: str
    samples: int
    score_mean: float
    hit_rate: float
    brier: float
    """Mean squared difference between score and outcome (0 is perfect; 0.25 is a coin flip's)."""

    @property
    def gap(self) -> float:
        """Mean score minus hit rate: positive when the model promises more than the trades deliver."""
        return self.score_mean - self.hit_rate


_Key = tuple[str, str]


class DriftTracker:
    """Join signals → executed decisions → fills, and keep a rolling window of (score, profitable) per key.

    Memory is bounded: at most `max_pending` signals and decisions wait for their next step (oldest dropped).
    A trade counts as profitable when its fill realised a PnL above zero (a missed fill realises nothing).
    """

    def __init__(self, window: int = 200, max_pending: int = 10_000) -> None:
        if window < 1 or max_pending < 1:
            raise ValueError("window and max_pending must be at least 1")
        self.outcomes: Counter[tuple[str, str, str]] = Counter()
        """Outcomes so far by (kind, model, `profitable` | `unprofitable`)."""
        self.unmatched_fills = 0
        self._window = window
        self._max_pending = max_pending
        self._signals: OrderedDict[str, tuple[_Key, float]] = OrderedDict()
        self._decisions: OrderedDict[str, tuple[_Key, float]] = OrderedDict()
        self._recent: dict[_Key, deque[tuple[float, bool]]] = {}

    def on_signal(self, signal: Signal) -> None:
        """Remember the score of an open or updated signal."""
        if signal.status != "closed":
            self._remember(self._signals, signal.id, ((signal.kind, signal.model), signal.score))

    def on_decision(self, decision: Decision) -> None:
        """An executed decision carries its signal's score on to the fill."""
        if decision.action != "execute":
            return
        known = self._signals.get(decision.signal_id)
        if known is not None:
            self._remember(self._decisions, decision.id, known)

    def on_fill(self, fill: Fill) -> None:
        """Record the outcome of an executed decision whose signal was seen."""
        known = self._decisions.pop(fill.decision_id, None)
        if known is None:
            self.unmatched_fills += 1
            return
        (kind, model), score = known
        self.record(kind, model, score, fill.realised_pnl > 0.0)

    def record(self, kind: str, model: str, score: float, profitable: bool) -> None:
        """Record one executed trade's score and outcome directly (backtests, or a caller that joins itself)."""
        key = (kind, model)
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=self._window)
        recent.append((score, profitable))
        self.outcomes[(kind, model, "profitable" if profitable else "unprofitable")] += 1

    def stats(self) -> list[DriftStats]:
        """Calibration per (kind, model) over each one's window."""
        out = []
        for (kind, model), recent in self._recent.items():
            n = len(recent)
            scores = sum(score for score, _ in recent)
            hits = sum(1 for _, hit in recent if hit)
            brier = sum((score - float(hit)) ** 2 for score, hit in recent)
            out.append(DriftStats(kind, model, n, scores / n, hits / n, brier / n))
        return out

    def _remember(self, table: OrderedDict[str, tuple[_Key, float]], key: str, value: tuple[_Key, float]) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._max_pending:
            table.popitem(last=False)


async def follow_outcomes(
    client: aioredis.Redis,
    channels: Channels,
    tracker: DriftTracker,
    on_ready: Callable[[], None] | None = None,
    on_reject: Callable[[DecodeError], None] | None = None,
    clock: Clock | None = None,
    verifier: Verifier | None = None,
) -> None:
    """Feed `tracker` from the signal, decision and fill channels until cancelled (off every role's hot path).

    A message that does not decode (or, with a `verifier`, is unsigned or badly signed) goes to `on_reject`
    (count it) and is skipped. A lost subscription is
    renewed after a jittered backoff (up to 30 s); `on_ready` is called each time the patterns are subscribed.
    """
    clock = clock or SystemClock()
    rng = random.Random()
    failures = 0

    def subscribed() -> None:
        nonlocal failures
        failures = 0
        if on_ready is not None:
            on_ready()

    while True:
        try:
            await _follow_once(client, channels, tracker, subscribed, on_reject, verifier)
        except (RedisError, OSError) as exc:
            delay = min(30.0, 0.5 * 2.0**failures) * rng.uniform(0.5, 1.0)
            failures += 1
            log.warning("drift: subscription lost (%s); subscribing again in %.1f s", exc, delay)
            await clock.sleep(delay)


async def _follow_once(
    client: aioredis.Redis,
    channels: Channels,
    tracker: DriftTracker,
    on_ready: Callable[[], None],
    on_reject: Callable[[DecodeError], None] | None,
    verifier: Verifier | None,
) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.psubscribe(channels.signal_pattern(), channels.decision_pattern(), channels.fill_pattern())
        on_ready()
        async for item in pubsub.listen():
            data = item.get("data")
            if item.get("type") != "pmessage" or not isinstance(data, bytes):
                continue
            try:
                message = decode_message(data, verifier=verifier)
            except DecodeError as exc:
                if on_reject is not None:
                    on_reject(exc)
                continue
            if isinstance(message, Signal):
                tracker.on_signal(message)
            elif isinstance(message, Decision):
                tracker.on_decision(message)
            elif isinstance(message, Fill):
                tracker.on_fill(message)
    finally:
        await _close_quietly(pubsub)


async def _close_quietly(pubsub: PubSub) -> None:
    # Closing must not hang or fail a shutdown when Redis went away.
    try:
        async with asyncio.timeout(2.0):
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except (RedisError, OSError, TimeoutError) as exc:
        log.debug("drift: subscription did not close cleanly: %r", exc)
