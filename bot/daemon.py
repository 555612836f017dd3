"""The observability of a daemon process: metrics, health checks, heartbeats and model drift for the roles it
hosts (`arbbot run`). The roles themselves are started by `bot.demo.run_demo`, which calls this."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import redis.asyncio as aioredis

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError
from bot.bus.signing import Signing
from bot.config import RootConfig
from bot.observe import (
    DriftTracker,
    HeartbeatPublisher,
    Metrics,
    ObserveServer,
    Redactor,
    feeds_fresh,
    follow_outcomes,
    redis_ping,
)
from bot.observe.metrics import Sample
from bot.paper.service import PaperRole
from bot.rejections import RejectionCounter
from bot.risk.service import RiskService
from bot.signals_role import SignalsRole
from bot.tasks import TaskSet

Counters = Callable[[], dict[str, float]]


class Observability:
    """Metrics, `/healthz` `/readyz` `/metrics` (when `daemon.http_port` is set), heartbeats per hosted role and the
    model-drift tracker. Register the roles (`add_signals`, `add_risk`, `add_paper`), then `start()`.

    `secrets` are masked in what the HTTP server prints; with `signing`, heartbeats are signed and the drift
    follower ignores unsigned or badly signed messages."""

    def __init__(
        self,
        config: RootConfig,
        client: aioredis.Redis,
        secrets: Sequence[str] = (),
        signing: Signing | None = None,
    ) -> None:
        daemon = config.daemon
        self._signing = signing or Signing()
        self.metrics = Metrics()
        self.drift = DriftTracker()
        self.metrics.add_drift(self.drift)
        self.drift_rejections = RejectionCounter()
        """Messages the drift follower could not use (malformed, or unsigned / badly signed with a key)."""
        self.metrics.add_rejections("drift", self.drift_rejections)
        self.heartbeats: list[HeartbeatPublisher] = []
        self.tasks = TaskSet()
        self._task_sets: list[TaskSet] = [self.tasks]
        self.metrics.add_source("tasks", self._task_samples)
        self._client = client
        self._channels = Channels(config.redis.prefix)
        self._heartbeat_s = daemon.heartbeat_s
        self.server: ObserveServer | None = None
        if daemon.http_port:
            redactor = Redactor(secrets)
            self.server = ObserveServer(self.metrics.registry, daemon.http_host, daemon.http_port, redactor=redactor)
            self.server.add_check("redis", redis_ping(client))

    @property
    def address(self) -> str | None:
        """`host:port` of the HTTP server, or None without one."""
        return None if self.server is None else f"{self.server.host}:{self.server.port}"

    def _task_samples(self) -> Iterator[Sample]:
        for tasks in self._task_sets:
            for name, count in tasks.deaths.items():
                yield Sample("arbbot_task_deaths_total", (name,), count)
            for name, count in tasks.restarts.items():
                yield Sample("arbbot_task_restarts_total", (name,), count)

    def watch_tasks(self, *task_sets: TaskSet) -> None:
        """Count the deaths and restarts of these tasks in the metrics."""
        self._task_sets.extend(task_sets)

    def _heartbeat(self, role: str, counters: Counters) -> None:
        beat = HeartbeatPublisher(
            self._client, self._channels, role, counters, self._heartbeat_s, signer=self._signing.signer
        )
        self.heartbeats.append(beat)
        self.metrics.add_heartbeat(beat)

    def add_signals(self, role: SignalsRole) -> None:
        metrics = self.metrics
        metrics.add_feeds(role.health)
        metrics.add_engine(role.engine.stats)
        metrics.add_publisher(role.publisher)
        if role.market_publisher is not None:
            metrics.add_publisher(role.market_publisher.publisher)
        metrics.add_rejections("signals", role.rejections)
        self.watch_tasks(role.tasks, role.publisher.tasks)
        if self.server is not None:
            venues = [*role.config.venues, *([role.config.chain.name] if role.config.chain is not None else [])]
            self.server.add_check("feeds", feeds_fresh(role.health, venues))
        stats = role.engine.stats
        self._heartbeat(
            "signals",
            lambda: {
                "updates": stats.updates,
                "opportunities": stats.opportunities,
                "signals": stats.signals,
                "published": role.publisher.stats.published,
                "rejected": role.rejections.total,
            },
        )

    def add_risk(self, risk: RiskService) -> None:
        self.metrics.add_risk(risk.engine.stats, state=lambda: risk.engine.limits.state)
        self.metrics.add_publisher(risk.publisher)
        self.metrics.add_rejections("risk", risk.rejections)
        self.metrics.add_rejections("risk", risk.market.rejections, name="rejections:risk:market")
        self.watch_tasks(risk.tasks, risk.market.tasks, risk.publisher.tasks)
        stats = risk.engine.stats
        self._heartbeat(
            "risk",
            lambda: {
                "signals": stats.signals,
                "decided": stats.decided,
                "executed": stats.executed,
                "halted": float(risk.engine.limits.state == "HALTED"),
            },
        )

    def add_paper(self, paper: PaperRole) -> None:
        self.metrics.add_trader(paper.trader.stats, pnl=paper.ledger.total_pnl)
        self.metrics.add_rejections("paper", paper.trader.rejections)
        self.metrics.add_rejections("paper", paper.market.rejections, name="rejections:paper:market")
        self.watch_tasks(paper.market.tasks)
        stats = paper.trader.stats
        self._heartbeat(
            "paper",
            lambda: {
                "received": stats.received,
                "acked": stats.acked,
                "fills_published": stats.published,
                "pnl": paper.ledger.total_pnl(),
            },
        )

    async def start(self) -> None:
        """Serve HTTP (ListenError, one line, if the port is taken), start heartbeats and the drift follower."""
        if self.server is not None:
            await self.server.start()
        for beat in self.heartbeats:
            beat.start()
        verifier = self._signing.verifier

        def on_reject(error: DecodeError) -> None:
            self.drift_rejections.reject("drift", error.reason, error.detail)

        self.tasks.supervise(
            lambda: follow_outcomes(self._client, self._channels, self.drift, on_reject=on_reject, verifier=verifier),
            "drift",
        )

    async def stop(self) -> None:
        await self.tasks.cancel_all()
        for beat in self.heartbeats:
            await beat.stop()
        if self.server is not None:
            await self.server.stop(timeout_s=2.0)
