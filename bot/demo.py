"""`arbbot demo`: simulated venues over their real websocket protocols, ccxt.pro feeds, strategy, scorer
and Redis publisher, all on this machine with nothing to configure; optional server-side faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from bot.bus.channels import Channels
from bot.bus.client import RedisAccess, config_secrets, redis_client
from bot.bus.local_redis import LocalRedis, RedisUnavailable, redis_answers
from bot.bus.redis_url import redact_url
from bot.bus.secrets import Secrets
from bot.bus.signing import Signing
from bot.chain.configured import ConfiguredChain, start_local_chain
from bot.config import RootConfig
from bot.daemon import Observability
from bot.paper.service import PaperRole, ledger_path
from bot.risk.forecast_window import spread_forecast
from bot.risk.service import RiskService
from bot.signals_role import ChainEndpoint, SignalsRole
from bot.tasks import cancel_and_wait
from bot.venues.base import Fault
from bot.venues.faults import FaultSchedule
from bot.venues.local import LocalVenues

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DemoSummary:
    """What a demo run did; written with `--json`."""

    updates: int = 0
    trades: int = 0
    gas_events: int = 0
    pool_events: int = 0
    opportunities: int = 0
    signals: int = 0
    signals_by_kind: dict[str, int] = field(default_factory=dict)
    published: int = 0
    dropped: int = 0
    reconnects: int = 0
    stale_intervals: int = 0
    signals_from_stale_books: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    faults_detected: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    decisions: int = 0
    decisions_execute: int = 0
    fills: int = 0
    paper_pnl: float = 0.0
    paper_ledger: str = ""
    venues: dict[str, dict[str, Any]] = field(default_factory=dict)
    redis_url: str = ""
    redis_started: bool = False
    duration_s: float = 0.0

    def to_json(self) -> bytes:
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields["duration_s"] = round(self.duration_s, 3)
        fields["paper_pnl"] = round(self.paper_pnl, 6)
        return orjson.dumps(fields, option=orjson.OPT_INDENT_2)


@dataclass(slots=True)
class _Downstream:
    """The risk and paper roles hosted next to the signals role (each None when the config leaves it out).

    They talk to the signals role only through Redis, as they would from other processes."""

    risk: RiskService | None = None
    paper: PaperRole | None = None

    def decisions(self) -> tuple[int, int]:
        """(decisions published, of which execute)."""
        if self.risk is None:
            return 0, 0
        stats = self.risk.engine.stats
        return stats.executed + stats.skipped, stats.executed

    def fills(self) -> int:
        return self.paper.trader.stats.published if self.paper is not None else 0

    def pnl(self) -> float:
        return self.paper.ledger.total_pnl() if self.paper is not None else 0.0

    def line(self) -> str:
        parts = []
        if self.risk is not None:
            decided, executed = self.decisions()
            parts.append(f"decisions {decided} (execute {executed}, skip {decided - executed})")
        if self.paper is not None:
            parts.append(f"fills {self.fills()} · paper PnL {self.pnl():,.2f}")
        return " | " + " · ".join(parts) if parts else ""

    async def stop(self) -> None:
        """Risk first (its publisher flushes the last decisions), then the paper trader (closes the ledger)."""
        try:
            if self.risk is not None:
                await self.risk.stop()
        finally:
            if self.paper is not None:
                await self.paper.stop()


def _summarise_downstream(downstream: _Downstream, summary: DemoSummary) -> None:
    summary.decisions, summary.decisions_execute = downstream.decisions()
    summary.fills = downstream.fills()
    if downstream.paper is not None:
        summary.paper_pnl = downstream.paper.ledger.total_pnl()
        summary.paper_ledger = str(downstream.paper.ledger.path)


def _summarise(role: SignalsRole, venues: LocalVenues | None, summary: DemoSummary) -> None:
    stats = role.engine.stats
    summary.updates = stats.updates
    summary.trades = stats.trades
    summary.gas_events = stats.gas_events
    summary.pool_events = stats.pool_events
    summary.opportunities = stats.opportunities
    summary.signals = stats.signals
    summary.signals_by_kind = dict(stats.signals_by_kind)
    summary.signals_from_stale_books = stats.signals_from_stale_books
    summary.published = role.publisher.stats.published
    summary.dropped = role.publisher.dropped + role.engine.dropped_updates
    summary.rejected = role.rejections.by_reason()
    injected: Counter[str] = Counter()
    for server in venues.servers.values() if venues else ():
        injected.update(server.fault_counts)
    summary.faults = dict(injected)
    detected: Counter[str] = Counter()
    for name, health in role.health.venues.items():
        detected.update(health.faults)
        summary.reconnects += health.reconnects
        summary.stale_intervals += health.stale_intervals
        latency = health.latency.stats()
        summary.venues[name] = {
            "updates": health.updates,
            "reconnects": health.reconnects,
            "stale_intervals": health.stale_intervals,
            "lag_p50_ms": round(latency.p50_ms, 3) if latency else None,
            "lag_p99_ms": round(latency.p99_ms, 3) if latency else None,
            "clock_offset_ms": round(latency.clock_offset_ms, 3) if latency else None,
        }
    summary.faults_detected = dict(detected)


class _LiveTable:
    """Per-venue rates, lag and state, plus the pipeline's counters."""

    def __init__(self, role: SignalsRole, downstream: _Downstream) -> None:
        self._role = role
        self._downstream = downstream
        self._last_updates: dict[str, int] = {}

    def render(self, elapsed: float, interval: float) -> Table:
        role = self._role
        table = Table(title=f"arbbot demo — {elapsed:5.1f} s", expand=False)
        for column in ("venue", "updates/s", "lag p50 ms", "state", "reconnects", "stale", "faults seen"):
            table.add_column(column, justify="left" if column in ("venue", "state") else "right")
        for name, health in sorted(role.health.venues.items()):
            rate = (health.updates - self._last_updates.get(name, 0)) / max(interval, 1e-9)
            self._last_updates[name] = health.updates
            latency = health.latency.stats()
            state = role.health.worst_state(name).value
            style = {"live": "green", "stale": "yellow"}.get(state, "red")
            table.add_row(
                name,
                f"{rate:.0f}",
                f"{latency.p50_ms:.1f}" if latency else "-",
                f"[{style}]{state}[/{style}]",
                str(health.reconnects),
                str(health.stale_intervals),
                str(sum(health.faults.values())),
            )
        stats = role.engine.stats
        table.caption = (
            f"opportunities {stats.opportunities} (open {role.engine.open_opportunities}) · signals {stats.signals} · "
            f"published {role.publisher.stats.published} · rejected {role.rejections.total}"
            f"{self._downstream.line()}{_chain_line(role)}"
        )
        return table


def _chain_line(role: SignalsRole) -> str:
    chain = role.config.chain
    if chain is None:
        return ""
    gas = role.engine.market.latest_gas(chain.name)
    pools = " ".join(f"{p.symbol} {p.price:,.2f}" for p in role.engine.market.latest_pools())
    if gas is None:
        return f" | {chain.name}: waiting for blocks"
    return f" | {chain.name} block {gas.block} base fee {gas.base_fee_gwei:.3f} gwei | pool {pools}"


def _status_line(elapsed: float, role: SignalsRole, downstream: _Downstream) -> str:
    stats = role.engine.stats
    states = " ".join(f"{name}:{role.health.worst_state(name).value}" for name in sorted(role.health.venues))
    return (
        f"[{elapsed:5.1f}s] updates {stats.updates:>7} | opportunities {stats.opportunities:>4} "
        f"(open {role.engine.open_opportunities:>2}) | signals {stats.signals:>5} | rejected {role.rejections.total}"
        f"{downstream.line()} | {states}{_chain_line(role)}"
    )


async def _resolve_redis(
    access: RedisAccess, console: Console, start_private: bool
) -> tuple[RedisAccess, LocalRedis | None]:
    if await redis_answers(access):
        return access, None
    if not start_private:
        raise RedisUnavailable(f"no Redis answers at {access.display}: start one or set ARBBOT_REDIS_URL")
    console.print(f"No Redis answers at {access.display}; starting a private redis-server on loopback.")
    local = await LocalRedis.start()
    console.print(f"Started redis-server at {local.url} (stopped when the demo exits).")
    return RedisAccess(local.url), local


def _describe_venues(config: RootConfig) -> str:
    described = []
    for name, venue in config.venues.items():
        where = f"simulated, {venue.exchange} protocol" if venue.simulated else venue.exchange
        described.append(f"{name} ({where})")
    return ", ".join(described)


async def _show_progress(
    role: SignalsRole | None,
    downstream: _Downstream,
    duration_s: float | None,
    stop: asyncio.Event,
    console: Console,
) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    table = _LiveTable(role, downstream) if role is not None else None
    live = None
    if table is not None and console.is_terminal:
        live = Live(table.render(0.0, 1.0), console=console, auto_refresh=False)
    with live or contextlib.nullcontext():
        while not stop.is_set():
            elapsed = loop.time() - started
            if duration_s is not None and elapsed >= duration_s:
                break
            wait = 1.0 if duration_s is None else min(1.0, duration_s - elapsed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            elapsed = loop.time() - started
            if live is not None and table is not None:
                live.update(table.render(elapsed, wait), refresh=True)
            elif role is not None:
                console.print(_status_line(elapsed, role, downstream))
            else:
                console.print(f"[{elapsed:5.1f}s]{downstream.line().removeprefix(' |')}")
    return loop.time() - started


async def _forget_pending_decisions(client: aioredis.Redis, config: RootConfig) -> None:
    """Drop the paper consumer's pending decisions left by an earlier run (stopped mid-batch), and skip the group
    past the decisions it never read: they belong to the ledger just moved aside, and each would wait for a book
    that never comes before this run's books flow. The fresh ledger starts with this run's decisions only."""
    paper = config.paper
    stream = Channels(config.redis.prefix).decision_stream()
    with contextlib.suppress(ResponseError):  # no stream or no group yet: nothing pending, nothing unread
        await client.xgroup_delconsumer(stream, paper.group, paper.consumer)
        await client.xgroup_setid(stream, paper.group, "$")


async def _start_downstream(
    config: RootConfig,
    client: aioredis.Redis,
    console: Console,
    fresh_ledger: bool,
    downstream: _Downstream,
    signing: Signing,
) -> None:
    """Start the risk and paper roles the config names, before the signals role so they miss nothing."""
    if "risk" in config.roles:
        downstream.risk = RiskService(config, client, forecast=spread_forecast(config), signing=signing)
        await downstream.risk.start()
    if "paper" in config.roles:
        if fresh_ledger:
            if (moved := rotate_ledger(ledger_path(config))) is not None:
                console.print(f"Previous paper ledger moved to {moved}")
            await _forget_pending_decisions(client, config)
        downstream.paper = PaperRole(config, client, signing=signing)
        await downstream.paper.start()
    if downstream.risk is not None or downstream.paper is not None:
        hosted = " and ".join(name for name in ("risk", "paper") if name in config.roles)
        console.print(
            f"arbbot: {hosted} in this process, through Redis: decisions on {config.redis.prefix}:decision:*, "
            f"fills on {config.redis.prefix}:fill:*"
            + (f", paper ledger {downstream.paper.ledger.path}" if downstream.paper is not None else "")
        )


async def run_demo(
    config: RootConfig,
    duration_s: float | None,
    console: Console,
    faults: Sequence[Fault] = (),
    fault_interval_s: float = 5.0,
    start_private_redis: bool = True,
    fresh_ledger: bool = False,
    observe: bool = False,
    secrets: Secrets | None = None,
) -> DemoSummary:
    """Run until `duration_s` elapses or SIGINT/SIGTERM; return the summary.

    The roles are `config.roles`. With `signals`, local venue servers are started for the config's simulated
    venues (all of them in the demo) and real venues are reached as configured; the risk and paper roles run
    when named. `fresh_ledger` moves an existing paper ledger aside first (`arbbot demo`: one ledger per run).
    `observe` (the daemon, `arbbot run`) adds health and metrics over HTTP and heartbeats (bot.daemon). Stopping
    takes at most `daemon.stop_timeout_s`: what has not stopped by then is abandoned, and said so.
    `secrets` (default: those the config names; SecretError if unreadable): the Redis password, and the key every
    role signs its messages with and checks the others' by.
    """
    summary = DemoSummary()
    secrets = secrets or config_secrets(config)
    signing = secrets.signing()
    access, local_redis = await _resolve_redis(RedisAccess.of(config.redis, secrets), console, start_private_redis)
    summary.redis_url = redact_url(access.url)
    summary.redis_started = local_redis is not None
    client = redis_client(access)
    hosts_signals = "signals" in config.roles
    simulated = any(v.simulated for v in config.venues.values())
    venues = LocalVenues(config) if hosts_signals and simulated else None
    role: SignalsRole | None = None
    observability = Observability(config, client, secrets.values(), signing) if observe else None
    local_chain: ConfiguredChain | None = None
    chain: ChainEndpoint | None = None
    schedule_task: asyncio.Task[None] | None = None
    downstream = _Downstream()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        servers = {}
        if venues is not None:
            await venues.start()
            servers = venues.servers
        if hosts_signals and config.chain is not None and config.chain.local:
            local_chain = await start_local_chain(config, venues.simulator if venues else None)
            console.print(local_chain.description)
            chain = local_chain.endpoint
        if hosts_signals:
            endpoints = {name: venues.endpoint(name) for name in servers} if venues else None
            role = SignalsRole(config, client, endpoints, chain=chain, signer=signing.signer)
        await _start_downstream(config, client, console, fresh_ledger, downstream, signing)
        if role is not None:
            await role.start()
            console.print(
                f"arbbot: venues {_describe_venues(config)}; symbols {', '.join(config.symbols)}; "
                f"signals on {config.redis.prefix}:signal:* at {summary.redis_url}"
            )
        if observability is not None:
            _observe(observability, role, downstream)
            await observability.start()
            if observability.address is not None:
                console.print(f"arbbot: /healthz, /readyz and /metrics on http://{observability.address}")
        if faults and venues is not None:
            schedule = FaultSchedule(
                venues.servers, faults, fault_interval_s, seed=config.simulator.seed if config.simulator else 0
            )
            schedule_task = loop.create_task(schedule.run(), name="fault-schedule")
            console.print(f"Injecting faults every {fault_interval_s:.0f} s: {', '.join(f.value for f in faults)}")
        summary.duration_s = await _show_progress(role, downstream, duration_s, stop, console)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        try:
            async with asyncio.timeout(config.daemon.stop_timeout_s):
                await _stop_all(schedule_task, observability, role, venues, downstream, local_chain, summary)
        except TimeoutError:
            log.error("stopping took longer than daemon.stop_timeout_s = %.0f s; exiting anyway",
                      config.daemon.stop_timeout_s)  # fmt: skip
        await client.aclose()
        if local_redis is not None:
            await local_redis.stop()
    return summary


def _observe(observability: Observability, role: SignalsRole | None, downstream: _Downstream) -> None:
    if role is not None:
        observability.add_signals(role)
    if downstream.risk is not None:
        observability.add_risk(downstream.risk)
    if downstream.paper is not None:
        observability.add_paper(downstream.paper)


async def _stop_all(
    schedule_task: asyncio.Task[None] | None,
    observability: Observability | None,
    role: SignalsRole | None,
    venues: LocalVenues | None,
    downstream: _Downstream,
    local_chain: ConfiguredChain | None,
    summary: DemoSummary,
) -> None:
    """Signals first (feeds closed, publisher flushed), then risk and paper (streams acknowledged, ledger closed),
    then the local chain and venue servers."""
    if schedule_task is not None:
        await cancel_and_wait(schedule_task)
    if observability is not None:
        await observability.stop()
    try:
        if role is not None:
            await role.stop()
            _summarise(role, venues, summary)
    finally:
        _summarise_downstream(downstream, summary)
        await downstream.stop()
    if local_chain is not None:
        await local_chain.chain.stop()
    if venues is not None:
        await venues.stop()


KEEP_LEDGERS = 10


def rotate_ledger(path: Path) -> Path | None:
    """Move a ledger (and its WAL files) aside as `{stem}.{mtime}{suffix}`; the new name, or None if none.

    Only the KEEP_LEDGERS most recent ledgers moved aside are kept; older ones are deleted."""
    if not path.exists():
        return None
    previous = sorted(path.parent.glob(f"{path.stem}.*{path.suffix}"))
    for old in previous[: max(0, len(previous) - KEEP_LEDGERS + 1)]:
        for extra in ("", "-wal", "-shm"):
            old.with_name(old.name + extra).unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.stem}.{stamp}-{counter}{path.suffix}")
    path.rename(target)
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        if side.exists():
            side.rename(target.with_name(target.name + extra))
    return target


def write_summary(summary: DemoSummary, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(summary.to_json() + b"\n")


def summary_table(summary: DemoSummary) -> Table:
    """A rich table of the summary for the terminal."""
    table = Table(title="arbbot demo summary", show_header=False)
    for key in (
        "updates",
        "trades",
        "opportunities",
        "signals",
        "published",
        "dropped",
        "reconnects",
        "stale_intervals",
        "decisions",
        "decisions_execute",
        "fills",
    ):
        table.add_row(key, str(getattr(summary, key)))
    table.add_row("paper_pnl", f"{summary.paper_pnl:,.2f}")
    if summary.paper_ledger:
        table.add_row("paper_ledger", summary.paper_ledger)
    table.add_row("signals_from_stale_books", str(summary.signals_from_stale_books))
    table.add_row("redis_url", summary.redis_url)
    table.add_row("duration_s", f"{summary.duration_s:.1f}")
    for kind, count in sorted(summary.faults.items()):
        table.add_row(f"fault injected: {kind}", str(count))
    for reason, count in sorted(summary.rejected.items()):
        table.add_row(f"rejected ({reason})", str(count))
    return table
