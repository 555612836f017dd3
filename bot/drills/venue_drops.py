"""Drill `venue-drops`: the demo's three simulated venues dropped, reset and stalled again and again, server side.

After each fault it waits for the feeds to notice (a stream leaves `live`, or a fault or reconnect is counted) and
to heal (every stream of the venue live again), and times both. Every signal is audited as it is emitted: none
may be built on a book that is not live. Crashes are ERROR records from the roles (a dead task, a handler that
raised); at the end every venue must be live and still updating.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bot.drills.errors import ErrorCounter
from bot.drills.report import DrillReport
from bot.drills.setup import drill_config
from bot.drills.stack import Stack, local_stack, wait_for
from bot.feeds.health import FeedHealth
from bot.messages import Signal
from bot.venues.base import Fault

KINDS = (Fault.DROP, Fault.STALL, Fault.RESET)
NOTICE_TIMEOUT_S = 15.0
HEAL_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How many faults, how many bursts of drops, and how long stalls last."""

    faults: int
    bursts: int  # rounds of BURST drops in quick succession at one venue
    stalls_s: tuple[float, ...]  # stall lengths, in turn: past the venue's reconnect_after_ms the watchdog reconnects


SHORT = Plan(faults=9, bursts=1, stalls_s=(3.0,))
FULL = Plan(faults=60, bursts=10, stalls_s=(3.0, 7.0))
BURST = 5
BURST_GAP_S = 0.2


class StaleAudit:
    """Count signals (other than `closed`) emitted while one of their books was not live."""

    def __init__(self) -> None:
        self.health: FeedHealth | None = None
        self.signals = 0
        self.from_unusable = 0

    def on_signal(self, signal: Signal) -> None:
        """Audit one emitted signal."""
        self.signals += 1
        if signal.status == "closed" or self.health is None:
            return
        if not all(self.health.is_live(venue, signal.symbol) for venue in (signal.buy_venue, signal.sell_venue)):
            self.from_unusable += 1


@dataclass(frozen=True, slots=True)
class FaultOutcome:
    """One fault: where, what, and when (s after it) the feeds noticed it and healed."""

    venue: str
    kind: str
    noticed_s: float | None
    healed_s: float | None


async def _fire(stack: Stack, venue: str, kind: Fault, times: int = 1, stall_s: float = 3.0) -> FaultOutcome:
    server = stack.venues.servers[venue]
    server.stall_s = stall_s
    before = stack.trouble(venue)
    started = time.monotonic()
    for shot in range(times):
        if shot:
            await asyncio.sleep(BURST_GAP_S)  # pacing the burst, not waiting for anything
        server.inject(kind)
    noticed = await wait_for(lambda: stack.trouble(venue) > before, NOTICE_TIMEOUT_S)
    noticed_s = time.monotonic() - started if noticed else None
    healed = noticed and await wait_for(lambda: stack.all_live(venue), HEAL_TIMEOUT_S)
    healed_s = time.monotonic() - started if healed else None
    name = f"{kind.value} {stall_s:g} s" if kind is Fault.STALL else kind.value
    return FaultOutcome(venue, name if times == 1 else f"{name}×{times}", noticed_s, healed_s)


def _schedule(plan: Plan, venues: list[str]) -> list[tuple[str, Fault, int]]:
    """Every venue gets every kind in turn; a burst of drops follows every len(venues) × len(KINDS) faults."""
    order: list[tuple[str, Fault, int]] = []
    bursts = 0
    for i in range(plan.faults):
        order.append((venues[(i + i // len(KINDS)) % len(venues)], KINDS[i % len(KINDS)], 1))
        if (i + 1) % (plan.faults // max(plan.bursts, 1)) == 0 and bursts < plan.bursts:
            order.append((venues[bursts % len(venues)], Fault.DROP, BURST))
            bursts += 1
    return order


async def run_venue_drops(report: DrillReport, short: bool, workdir: Path) -> None:
    """Run the drill, filling `report`."""
    plan = SHORT if short else FULL
    audit = StaleAudit()
    outcomes: list[FaultOutcome] = []
    with ErrorCounter() as errors:
        async with local_stack(
            lambda url: drill_config(workdir, url, roles=["signals"]), on_signal=audit.on_signal
        ) as stack:
            audit.health = stack.role.health
            names = sorted(stack.venues.servers)
            report.step(f"venues {', '.join(names)} started (private Redis {stack.redis_url}); waiting for live feeds")
            live = await wait_for(stack.every_venue_live, START_TIMEOUT_S)
            report.check("feeds live at start", live, f"every venue live within {START_TIMEOUT_S:.0f} s: {live}")
            if not live:
                return
            signals_before = audit.signals
            stalls = 0
            for venue, kind, times in _schedule(plan, names):
                stall_s = plan.stalls_s[stalls % len(plan.stalls_s)]
                stalls += kind is Fault.STALL
                outcome = await _fire(stack, venue, kind, times, stall_s)
                outcomes.append(outcome)
                report.step(_describe(outcome))
                if outcome.healed_s is None:
                    break
            updates = {name: stack.role.health.venue(name).updates for name in names}
            still_updating = await wait_for(
                lambda: all(stack.role.health.venue(n).updates > updates[n] for n in names), HEAL_TIMEOUT_S
            )
            report.step(f"after the last fault every venue updates again: {still_updating}")
            _count(report, stack, audit, outcomes, signals_before)
    report.counts["crashes"] = errors.count
    if errors.first:
        report.counts["errors_logged"] = errors.first
    _verdict(report, outcomes, plan, still_updating)


def _describe(outcome: FaultOutcome) -> str:
    noticed = f"noticed after {outcome.noticed_s:.2f} s" if outcome.noticed_s is not None else "NEVER noticed"
    healed = f"live again after {outcome.healed_s:.2f} s" if outcome.healed_s is not None else "NOT live again"
    return f"{outcome.kind} at {outcome.venue}: {noticed}, {healed}"


def _count(report: DrillReport, stack: Stack, audit: StaleAudit, outcomes: list[FaultOutcome], before: int) -> None:
    health = stack.role.health
    injected: Counter[str] = Counter()
    for server in stack.venues.servers.values():
        injected.update(server.fault_counts)
    detected: Counter[str] = Counter()
    for venue in health.venues.values():
        detected.update(venue.faults)
    healed = [o.healed_s for o in outcomes if o.healed_s is not None]
    stats = stack.role.engine.stats
    report.counts.update(
        {
            "faults_injected": dict(injected),
            "faults_fired": len(outcomes),
            "faults_detected": dict(detected),
            "reconnects": sum(v.reconnects for v in health.venues.values()),
            "reconnects_by_venue": {name: v.reconnects for name, v in sorted(health.venues.items())},
            "stale_intervals": sum(v.stale_intervals for v in health.venues.values()),
            "stale_by_venue": {name: v.stale_intervals for name, v in sorted(health.venues.items())},
            "heal_s_median": round(statistics.median(healed), 3) if healed else None,
            "heal_s_max": round(max(healed), 3) if healed else None,
            "updates": stats.updates,
            "opportunities": stats.opportunities,
            "signals": stats.signals,
            "signals_during_faults": audit.signals - before,
            "signals_from_stale_books": stats.signals_from_stale_books,
            "signals_from_unusable_books_audit": audit.from_unusable,
            "published": stack.role.publisher.stats.published,
            "publisher_dropped": stack.role.publisher.dropped,
            "engine_dropped": stack.role.engine.dropped_updates,
        }
    )


def _verdict(report: DrillReport, outcomes: list[FaultOutcome], plan: Plan, still_updating: bool) -> None:
    counts = report.counts
    expected = len(_schedule(plan, ["a", "b", "c"]))
    report.check("every fault fired", len(outcomes) == expected, f"{len(outcomes)} of {expected}")
    unnoticed = [o for o in outcomes if o.noticed_s is None]
    report.check("every fault noticed by the feeds", not unnoticed, f"{len(unnoticed)} unnoticed")
    unhealed = [o for o in outcomes if o.healed_s is None]
    report.check(
        "feeds live again after each fault", not unhealed, f"{len(unhealed)} not live within {HEAL_TIMEOUT_S:.0f} s"
    )
    dropped = {o.venue for o in outcomes if o.kind.startswith(("drop", "reset"))}
    reconnects = counts.get("reconnects_by_venue", {})
    missing = sorted(v for v in dropped if reconnects.get(v, 0) == 0)
    report.check("reconnects counted at every dropped venue", not missing, f"no reconnect counted at {missing or '-'}")
    stale = counts.get("signals_from_stale_books", 0) + counts.get("signals_from_unusable_books_audit", 0)
    report.check("no signal from a stale book", stale == 0, f"engine audit + drill audit = {stale}")
    report.check("signals flowed", counts.get("signals", 0) > 0, f"{counts.get('signals', 0)} signals")
    report.check("crashes = 0", counts["crashes"] == 0, f"{counts['crashes']} ERROR records from the roles")
    report.check("still running at the end", still_updating, "every venue delivered updates after the last fault")
