"""Drill `malformed-flood`: bad frames from the venues and garbage on every bus channel the roles read.

The signals, risk and paper roles run in this process and talk only through a private Redis (as `arbbot demo`
hosts them), so their rejection counters can be read. During the flood every venue server sends crossed books
and NaN sizes at a high rate, and a frame cut in half (not JSON) whenever its feed is live (one such frame stops
ccxt's reader; arbbot must notice and reconnect, so more would only pile onto a dead connection). Meanwhile
garbage (`bot.drills.garbage`) goes to the signal, decision and fill streams and to the signal, book and control
channels, and keeps going after the venues calm down. Every garbage message must be counted by each of its
readers under the reason it deserves, while the venues heal and good signals are still decided and filled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.bus.codec import DecodeError
from bot.bus.subscriber import follow
from bot.drills.errors import ErrorCounter, LoopErrors
from bot.drills.garbage import Expected, Spewer, catalogue
from bot.drills.report import DrillReport
from bot.drills.setup import BUSY_PAPER, BUSY_RISK, drill_config
from bot.drills.stack import Stack, local_stack, wait_for
from bot.drills.venue_drops import StaleAudit
from bot.messages import Message
from bot.tasks import cancel_and_wait
from bot.venues.base import Fault

START_TIMEOUT_S = 60.0
HEAL_TIMEOUT_S = 45.0
COUNT_TIMEOUT_S = 15.0
MALFORMED_GAP_S = 2.5  # longer than a feed takes to call a silent venue stale (2 s)


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how hard the flood is."""

    flood_s: float  # venues and bus
    calm_s: float  # bus garbage only, at least; until the venues are live and a new decision came
    book_fault_every_s: float  # a crossed book or a NaN size, at one venue in turn
    garbage_per_s: float


SHORT = Plan(flood_s=8.0, calm_s=4.0, book_fault_every_s=0.05, garbage_per_s=200.0)
FULL = Plan(flood_s=90.0, calm_s=30.0, book_fault_every_s=0.02, garbage_per_s=500.0)


@dataclass(slots=True)
class Subscriber:
    """An `arbbot subscribe` on the signal channels: counts valid signals and rejections by reason."""

    valid: int = 0
    rejected: Counter[Expected] = field(default_factory=Counter)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, _payload: bytes, _message: Message) -> None:
        self.valid += 1

    def on_reject(self, _payload: bytes, error: DecodeError) -> None:
        self.rejected[("subscriber", "signal", error.reason)] += 1


@dataclass(slots=True)
class VenueFlood:
    """Fire crossed/NaN books at the venues in turn; with `frames`, also a malformed frame at each venue whenever
    it is live (a malformed frame stops the venue's reader, so bad books only reach a live connection)."""

    stack: Stack
    every_s: float
    frames: bool = False
    fired: Counter[str] = field(default_factory=Counter)
    _last_malformed: dict[str, float] = field(default_factory=dict)

    async def run(self) -> None:
        """Fire until cancelled."""
        names = sorted(self.stack.venues.servers)
        kinds = (Fault.CROSSED, Fault.NAN)
        n = 0
        while True:
            venue = names[n % len(names)]
            self._fire(venue, kinds[(n // len(names)) % len(kinds)])
            for name in names if self.frames else ():
                ready = time.monotonic() - self._last_malformed.get(name, 0.0) >= MALFORMED_GAP_S
                if ready and self.stack.all_live(name):
                    self._fire(name, Fault.MALFORMED)
                    self._last_malformed[name] = time.monotonic()
            n += 1
            await asyncio.sleep(self.every_s)  # pacing the flood

    def _fire(self, venue: str, kind: Fault) -> None:
        self.stack.venues.servers[venue].inject(kind)
        self.fired[kind.value] += 1


def counted(stack: Stack, subscriber: Subscriber, key: Expected) -> int:
    """How many rejections the reader in `key` counted for its source and reason."""
    reader, source, reason = key
    assert stack.risk is not None and stack.paper is not None
    counters = {
        "risk": stack.risk.rejections,
        "risk-market": stack.risk.market.rejections,
        "paper": stack.paper.trader.rejections,
        "paper-market": stack.paper.market.rejections,
    }
    if reader == "subscriber":
        return subscriber.rejected[key]
    return counters[reader].count(source, reason)


async def run_malformed_flood(report: DrillReport, short: bool, workdir: Path) -> None:
    """Run the drill, filling `report`."""
    plan = SHORT if short else FULL
    audit = StaleAudit()
    subscriber = Subscriber()
    with ErrorCounter() as errors, LoopErrors() as loop_errors:
        async with local_stack(
            lambda url: drill_config(workdir, url, risk=BUSY_RISK, paper=BUSY_PAPER),
            downstream=True,
            on_signal=audit.on_signal,
        ) as stack:
            audit.health = stack.role.health
            await _flood(report, plan, stack, subscriber, audit)
    report.counts["ccxt_reader_exceptions"] = loop_errors.from_ccxt
    report.counts["crashes"] = errors.count + len(loop_errors.other)
    if errors.first or loop_errors.other:
        report.counts["errors_logged"] = errors.first + loop_errors.other[:5]
    _verdict(report)


async def _flood(report: DrillReport, plan: Plan, stack: Stack, subscriber: Subscriber, audit: StaleAudit) -> None:
    assert stack.risk is not None and stack.paper is not None
    risk, paper = stack.risk, stack.paper
    tasks: list[asyncio.Task[Any]] = []
    channels = risk.channels
    follower = follow(
        stack.client, channels.signal_pattern(), subscriber.on_message, subscriber.on_reject, None, "signal",
        subscriber.ready.set,
    )  # fmt: skip
    tasks.append(asyncio.create_task(follower, name="drill:subscriber"))
    report.step(
        f"signals, risk and paper in this process on a private Redis ({stack.redis_url}); waiting for live feeds"
    )
    started = await wait_for(lambda: stack.every_venue_live() and risk.engine.stats.decided > 0, START_TIMEOUT_S)
    report.check(
        "live and deciding at start", started, f"every venue live and a decision within {START_TIMEOUT_S:.0f} s"
    )
    if not started:
        await _cancel(tasks)
        return
    spewer = Spewer(stack.client, catalogue(channels, time.time_ns() // 1_000_000), plan.garbage_per_s)
    flood = VenueFlood(stack, plan.book_fault_every_s)
    decided, recorded, signals = risk.engine.stats.decided, _recorded(stack), audit.signals
    try:
        tasks.append(asyncio.create_task(spewer.run(), name="drill:garbage"))
        venue_task = asyncio.create_task(flood.run(), name="drill:venue-flood")
        report.step(
            f"flood for {plan.flood_s:g} s: {plan.garbage_per_s:g} garbage messages/s on the bus ({len(spewer.items)} "
            f"kinds); a crossed book or NaN size every {plan.book_fault_every_s * 1000:g} ms"
        )
        await asyncio.sleep(plan.flood_s / 2)  # the flood itself
        invalid = stack.role.rejections.by_reason().get("invalid_book", 0)
        flood.frames = True
        report.step(f"{invalid} invalid books rejected so far; now also a frame cut in half at each live venue")
        await asyncio.sleep(plan.flood_s / 2)  # the flood goes on
        await _cancel([venue_task])
        report.step(f"venues calm ({dict(flood.fired)} fired); bus garbage goes on; waiting for live feeds")
        calm_from = time.monotonic()
        decided_calm = risk.engine.stats.decided
        healed = await wait_for(stack.every_venue_live, HEAL_TIMEOUT_S)
        deciding = await wait_for(
            lambda: risk.engine.stats.decided > decided_calm and time.monotonic() - calm_from >= plan.calm_s,
            HEAL_TIMEOUT_S,
        )
        report.step(f"every venue live again: {healed}; new decisions under bus garbage: {deciding}")
    finally:
        await _cancel(tasks[1:])
    all_counted = await wait_for(
        lambda: all(counted(stack, subscriber, key) >= n for key, n in spewer.expected.items()), COUNT_TIMEOUT_S
    )
    report.step(f"garbage stopped after {spewer.sent} messages; every rejection counted: {all_counted}")
    await _cancel(tasks)
    _count(report, stack, subscriber, spewer, flood, audit)
    report.counts.update(
        {
            "healed": healed,
            "decisions_during_flood_and_calm": risk.engine.stats.decided - decided,
            "decisions_after_venues_calm": risk.engine.stats.decided - decided_calm,
            "ledger_rows_during": _recorded(stack) - recorded,
            "signals_during": audit.signals - signals,
            "risk_state": risk.engine.limits.state,
            "paper_consumer_running": paper.consumer is not None and not paper.consumer.done(),
        }
    )


def _recorded(stack: Stack) -> int:
    assert stack.paper is not None
    return sum(stack.paper.trader.stats.recorded.values())


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    # cancel_and_wait: a cancellation that lands inside redis-py's own timeouts can be swallowed (Python 3.11).
    await asyncio.gather(*(cancel_and_wait(task) for task in tasks))


def _count(
    report: DrillReport, stack: Stack, subscriber: Subscriber, spewer: Spewer, flood: VenueFlood, audit: StaleAudit
) -> None:
    assert stack.risk is not None and stack.paper is not None
    health = stack.role.health
    injected: Counter[str] = Counter()
    for server in stack.venues.servers.values():
        injected.update(server.fault_counts)
    detected: Counter[str] = Counter()
    for venue in health.venues.values():
        detected.update(venue.faults)
    rejections = {
        f"{reader}/{source}/{reason}": {"sent": n, "counted": counted(stack, subscriber, (reader, source, reason))}
        for (reader, source, reason), n in sorted(spewer.expected.items())
    }
    report.counts.update(
        {
            "venue_faults_injected": dict(injected),
            "venue_faults_detected": dict(detected),
            "feed_rejections": stack.role.rejections.by_reason(),
            "reconnects": sum(v.reconnects for v in health.venues.values()),
            "stale_intervals": sum(v.stale_intervals for v in health.venues.values()),
            "garbage_sent": spewer.sent,
            "garbage_send_errors": spewer.redis_errors,
            "garbage_kinds": len(spewer.items),
            "rejections": rejections,
            "rejections_missing": sum(max(0, v["sent"] - v["counted"]) for v in rejections.values()),
            "risk_rejections_by_reason": stack.risk.rejections.by_reason(),
            "paper_rejections_by_reason": stack.paper.trader.rejections.by_reason(),
            "signals": stack.role.engine.stats.signals,
            "signals_from_stale_books": stack.role.engine.stats.signals_from_stale_books,
            "signals_from_unusable_books_audit": audit.from_unusable,
            "subscriber_valid_signals": subscriber.valid,
            "decisions": stack.risk.engine.stats.decided,
            "fills": stack.paper.trader.stats.published,
        }
    )


def _verdict(report: DrillReport) -> None:
    c = report.counts
    if "rejections" not in c:
        return
    report.check(
        "every garbage message rejected and counted by reason",
        c["rejections_missing"] == 0,
        f"{c['rejections_missing']} of {c['garbage_sent']} not counted where expected",
    )
    wrong = {key: v for key, v in c["rejections"].items() if v["counted"] != v["sent"]}
    report.check("no rejection counted twice or under another reason", not wrong, f"mismatches: {wrong or '-'}")
    report.check("crashes = 0", c["crashes"] == 0, f"{c['crashes']} ERROR records from the roles")
    report.check("venues live again after the flood", c["healed"], f"within {HEAL_TIMEOUT_S:.0f} s")
    report.check(
        "good signals still decided under garbage",
        c["decisions_after_venues_calm"] > 0 and c["ledger_rows_during"] > 0,
        f"{c['decisions_after_venues_calm']} decisions after the venues calmed, {c['ledger_rows_during']} "
        "ledger rows during the drill",
    )
    stale = c["signals_from_stale_books"] + c["signals_from_unusable_books_audit"]
    report.check("no signal from a bad book", stale == 0, f"engine audit + drill audit = {stale}")
    report.check("malformed halts ignored", c["risk_state"] == "ACTIVE", f"risk state {c['risk_state']}")
    report.check("paper trader still consuming", c["paper_consumer_running"], "its consumer task is running")
