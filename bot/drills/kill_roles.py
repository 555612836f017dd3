"""Drill `kill-roles`: signals, risk and paper as three processes on one private Redis; each killed with SIGKILL
mid-run, in turn, and started again.

The signals role (`arbbot run`, roles: [signals]) hosts the simulated venues; `arbbot risk` resumes after the
last signal it handled; `arbbot paper` re-reads what it had not acknowledged. The paper trader is killed while
it holds an unacknowledged decision when one comes within a few seconds. At the end the roles are stopped in
order (signals, then risk once it has handled every signal, then paper once it has every decision) and the
streams and the ledger are audited (`bot.drills.audit`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bot.bus.channels import Channels
from bot.bus.local_redis import LocalRedis
from bot.bus.streams import as_text
from bot.drills.audit import LedgerAudit, StreamAudit, audit_ledger, read_all, read_stream
from bot.drills.processes import RoleProcess
from bot.drills.report import DrillReport
from bot.drills.setup import BUSY_PAPER, BUSY_RISK, DRILL_PREFIX, role_env, write_drill_config
from bot.drills.stack import wait_for

PROGRESS_TIMEOUT_S = 45.0
DRAIN_TIMEOUT_S = 45.0
IN_FLIGHT_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How many rounds of kills, and how long a killed role stays down."""

    rounds: int
    down_s: float  # how long a killed role stays down
    pause_s: float  # how long risk is paused before its kill, so that it dies catching up


SHORT = Plan(rounds=1, down_s=1.0, pause_s=2.0)
FULL = Plan(rounds=8, down_s=2.0, pause_s=3.0)
CATCH_UP_S = 0.05


@dataclass(slots=True)
class Roles:
    """The three role processes."""

    signals: RoleProcess
    risk: RoleProcess
    paper: RoleProcess

    def all(self) -> tuple[RoleProcess, ...]:
        """Signals, risk, paper: the order they are killed in."""
        return (self.signals, self.risk, self.paper)


class Probe:
    """What the drill reads from Redis and the ledger to tell that a role made progress."""

    def __init__(self, client: aioredis.Redis, channels: Channels, ledger: Path, group: str) -> None:
        self.client = client
        self.channels = channels
        self.ledger = ledger
        self.group = group
        self.lost_decisions: list[tuple[str, str]] = []
        """(opportunity, signal id) that a killed risk process had saved as decided but never published."""

    async def length(self, stream: str) -> int:
        """Entries in `stream` (0 while Redis does not answer)."""
        try:
            return int(await self.client.xlen(stream))
        except RedisError:
            return 0

    def recorded(self) -> int:
        """Decisions the ledger holds (0 before it exists)."""
        if not self.ledger.exists():
            return 0
        with sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    async def pending(self) -> int:
        """Decisions the paper group read and has not acknowledged."""
        try:
            info: Any = await self.client.xpending(self.channels.decision_stream(), self.group)
        except ResponseError:
            return 0
        return int(info["pending"])

    async def group_lag(self) -> int | None:
        """Decisions the paper group has not read yet (Redis ≥ 7), or None when Redis does not say."""
        groups: list[Any] = await self.client.xinfo_groups(self.channels.decision_stream())
        for group in groups:
            name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
            if name == self.group:
                lag = group.get("lag")
                return None if lag is None else int(lag)
        return None

    async def saved_not_published(self) -> list[tuple[str, str]]:
        """(opportunity, signal id) pairs risk saved as decided (`acted`) whose decision is not in the stream."""
        acted: dict[Any, Any] = await self.client.hgetall(self.channels.key("risk", "acted"))
        decisions, _ = await read_stream(self.client, self.channels.decision_stream(), "decision")
        decided = {decision.signal_id for decision in decisions}
        pairs = [(as_text(opportunity), as_text(signal_id)) for opportunity, signal_id in acted.items()]
        return sorted(pair for pair in pairs if pair[1] not in decided)

    async def risk_caught_up(self) -> bool:
        """Risk has handled the last entry of the signal stream."""
        last: list[Any] = await self.client.xrevrange(self.channels.signal_stream(), count=1) or []
        if not last:
            return True
        saved = await self.client.get(self.channels.key("risk", "last_signal_id"))
        return saved is not None and saved == last[0][0]


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def run_kill_roles(report: DrillReport, short: bool, workdir: Path) -> None:
    """Run the drill, filling `report`."""
    plan = SHORT if short else FULL
    redis = await LocalRedis.start()
    client = aioredis.from_url(redis.url)
    config_path = write_drill_config(workdir, redis.url, roles=["signals"], risk=BUSY_RISK, paper=BUSY_PAPER)
    env = role_env(redis.url)
    config_args = ("-c", str(config_path))
    roles = Roles(
        RoleProcess("signals", ("run", *config_args), "signals on", env, workdir),
        RoleProcess("risk", ("risk", *config_args), "arbbot risk: following", env, workdir),
        RoleProcess("paper", ("paper", *config_args), "arbbot paper: consuming", env, workdir),
    )
    channels = Channels(DRILL_PREFIX)
    probe = Probe(client, channels, workdir / "paper-ledger.sqlite", "paper")
    try:
        report.step(f"private Redis {redis.url}; starting risk and paper, then signals, as processes")
        started = await roles.risk.start() and await roles.paper.start()
        report.step(f"risk (pid {roles.risk.pid}) and paper (pid {roles.paper.pid}) ready")
        started = started and await roles.signals.start()
        report.check("roles started", started, _pids(roles))
        if not started:
            return
        warm = await _eventually(lambda: _more(probe.length(channels.fill_stream()), 0), PROGRESS_TIMEOUT_S)
        report.step(f"signals ready (pid {roles.signals.pid}); first fill published: {warm}")
        progressed = warm
        for round_no in range(1, plan.rounds + 1):
            for role in roles.all():
                progressed = await _kill_and_restart(report, roles, role, probe, plan, round_no) and progressed
        report.check("each role made progress after its restart", progressed, "signals, decisions, ledger rows")
        drained = await _drain(report, roles, probe)
        report.check("drained and stopped cleanly", drained, "risk handled every signal; paper every decision")
        audit = await read_all(client, channels)
        ledger = audit_ledger(probe.ledger, audit)
        _count(report, roles, audit, ledger, probe)
        _verdict(report)
    finally:
        for role in roles.all():
            await role.kill()
        await client.aclose()
        await redis.stop()


def _pids(roles: Roles) -> str:
    return ", ".join(f"{role.name} pid {role.pid}" for role in roles.all())


async def _more(length: Awaitable[int], than: int) -> bool:
    return await length > than


async def _kill_and_restart(
    report: DrillReport, roles: Roles, role: RoleProcess, probe: Probe, plan: Plan, round_no: int
) -> bool:
    """SIGKILL `role` (the paper trader while it holds a decision, if one comes), restart it after `plan.down_s`,
    and wait until it has done something new; whether it did."""
    channels = probe.channels
    for other in roles.all():
        other.check_alive()  # a role that ended on its own since the last look is a crash
    in_flight = ""
    if role.name == "paper":
        holding = await _eventually(lambda: _more(probe.pending(), 0), IN_FLIGHT_WAIT_S)
        in_flight = f", {await probe.pending()} decision(s) unacknowledged" if holding else ", none in flight"
    elif role.name == "risk":
        in_flight = await _busy(role, probe, plan)
    pid = role.pid
    await role.kill()
    report.step(f"round {round_no}: SIGKILL {role.name} (pid {pid}){in_flight}; down for {plan.down_s:g} s")
    if role.name == "risk":
        # What the dead process left: opportunities saved as decided whose decision never reached the stream.
        lost = [pair for pair in await probe.saved_not_published() if pair not in probe.lost_decisions]
        probe.lost_decisions.extend(lost)
        if lost:
            report.step(f"round {round_no}: risk had saved {len(lost)} decision(s) as made, never published: {lost}")
    await asyncio.sleep(plan.down_s)  # the role stays down a while: the others go on without it
    mark = await _progress_mark(role, probe)
    if not await role.start():
        report.step(f"round {round_no}: {role.name} did not start again")
        return False
    if role.name == "signals":
        progressed = await _eventually(lambda: _more(probe.length(channels.signal_stream()), mark), PROGRESS_TIMEOUT_S)
    elif role.name == "risk":
        progressed = await _eventually(
            lambda: _more(probe.length(channels.decision_stream()), mark), PROGRESS_TIMEOUT_S
        )
    else:
        progressed = await wait_for(lambda: probe.recorded() > mark, PROGRESS_TIMEOUT_S)
    report.step(f"round {round_no}: {role.name} restarted (pid {role.pid}); made progress: {progressed}")
    return progressed


async def _busy(role: RoleProcess, probe: Probe, plan: Plan) -> str:
    """Pause risk while signals pile up in the stream, let it go, and return just as it is catching up: the kill
    then lands in the middle of a burst of decisions, between deciding, saving its progress and publishing."""
    role.pause()
    signals = await probe.length(probe.channels.signal_stream())
    await asyncio.sleep(plan.pause_s)  # the backlog builds while risk is paused
    backlog = await probe.length(probe.channels.signal_stream()) - signals
    role.resume()
    await asyncio.sleep(CATCH_UP_S)  # it is catching up now
    return f", {backlog} signals behind after a {plan.pause_s:g} s pause, {CATCH_UP_S * 1000:g} ms into catching up"


async def _progress_mark(role: RoleProcess, probe: Probe) -> int:
    if role.name == "signals":
        return await probe.length(probe.channels.signal_stream())
    if role.name == "risk":
        return await probe.length(probe.channels.decision_stream())
    return probe.recorded()


async def _drain(report: DrillReport, roles: Roles, probe: Probe) -> bool:
    """Stop signals, then risk once it handled every signal, then paper once it holds every decision."""
    for role in roles.all():
        role.check_alive()
    codes: dict[str, int | None] = {}
    codes["signals"] = await roles.signals.stop()
    risk_done = await _eventually(probe.risk_caught_up, DRAIN_TIMEOUT_S)
    codes["risk"] = await roles.risk.stop()

    async def paper_done() -> bool:
        return await probe.pending() == 0 and await probe.group_lag() == 0

    paper_drained = await _eventually(paper_done, DRAIN_TIMEOUT_S)
    codes["paper"] = await roles.paper.stop()
    report.step(
        f"stopped in order with SIGTERM: exit codes {codes}; risk caught up: {risk_done}; paper drained: "
        f"{paper_drained}"
    )
    report.counts["exit_codes"] = codes
    return risk_done and paper_drained and all(code == 0 for code in codes.values())


def _count(report: DrillReport, roles: Roles, streams: StreamAudit, ledger: LedgerAudit, probe: Probe) -> None:
    report.counts.update(
        {
            "kills": {role.name: role.kills for role in roles.all()},
            "restarts": {role.name: role.starts - 1 for role in roles.all()},
            "crashes": sum(len(role.unexpected_exits) for role in roles.all()),
            "errors_logged": {role.name: len(role.errors_logged()) for role in roles.all()},
            "signals": streams.signals,
            "opportunity_episodes": streams.episodes,
            "decisions": streams.decisions,
            "decisions_execute": streams.executes,
            "skip_reasons": streams.skip_reasons,
            "signals_decided_twice": streams.signals_decided_twice,
            "episodes_decided_twice": streams.episodes_decided_twice,
            "undecided_episodes": streams.undecided_episodes,
            "decisions_lost_in_risk_kills": len(probe.lost_decisions),
            "lost_in_risk_kills": [f"opportunity {o}, signal {sid}" for o, sid in probe.lost_decisions],
            "decisions_without_signal": streams.decisions_without_signal,
            "fills_published": streams.fills_published,
            "fills_unique": streams.fills_unique,
            "fills_republished_same_id": streams.fills_republished,
            "fills_conflicting": streams.fills_conflicting,
            "decisions_filled_twice": ledger.decisions_filled_twice,
            "undecodable_entries": streams.undecodable,
            "ledger_decisions": ledger.decisions,
            "ledger_by_status": ledger.by_status,
            "ledger_legs": ledger.legs,
            "ledger_open_positions": ledger.open_positions,
            "ledger_rejections": ledger.rejections,
            "lost": ledger.lost,
            "phantom": ledger.phantom,
            "duplicates": streams.signals_decided_twice
            + streams.episodes_decided_twice
            + ledger.decisions_filled_twice,
            "balance_gap_vs_legs": ledger.balances_vs_legs,
            "balance_gap_vs_fills": ledger.balances_vs_fills,
        }
    )


def _verdict(report: DrillReport) -> None:
    c = report.counts
    every = all(n > 0 for n in c["kills"].values())
    report.check("every role killed and restarted", every, f"kills {c['kills']}, restarts {c['restarts']}")
    report.check("crashes = 0", c["crashes"] == 0, f"{c['crashes']} roles exited on their own")
    errors = sum(c["errors_logged"].values())
    report.check("no errors logged by the roles", errors == 0, f"ERROR records: {c['errors_logged']}")
    report.check(
        "each opportunity decided at most once",
        c["signals_decided_twice"] == 0 and c["episodes_decided_twice"] == 0,
        f"{c['signals_decided_twice']} signals, {c['episodes_decided_twice']} episodes decided twice",
    )
    report.check(
        "every opportunity decided",
        c["undecided_episodes"] == 0,
        f"{c['undecided_episodes']} of {c['opportunity_episodes']} episodes with no decision in the stream; "
        f"{c['decisions_lost_in_risk_kills']} saved as decided by a killed risk process that never published them",
    )
    report.check(
        "no decision filled twice",
        c["decisions_filled_twice"] == 0 and c["fills_conflicting"] == 0,
        f"{c['decisions_filled_twice']} decisions with a side filled twice in the ledger, {c['fills_conflicting']} "
        "fill ids published with different contents",
    )
    report.check("lost = 0", c["lost"] == 0, f"{c['lost']} of {c['decisions']} decisions not in the ledger")
    report.check("no phantom decisions", c["phantom"] == 0, f"{c['phantom']} ledger decisions not in the stream")
    report.check("fills flowed", c["fills_unique"] > 0, f"{c['fills_unique']} fills")
    gap = max(c["balance_gap_vs_legs"], c["balance_gap_vs_fills"])
    report.check(
        "balances = starting + sum of fills",
        gap <= 1e-6,
        f"largest relative gap {gap:.2e} (ledger legs {c['balance_gap_vs_legs']:.2e}, "
        f"published fills {c['balance_gap_vs_fills']:.2e})",
    )
