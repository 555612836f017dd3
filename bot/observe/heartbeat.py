"""Heartbeats: every `interval_s`, a role says on `arb:heartbeat:{role}` that it is alive, with its counters."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.codec import encode
from bot.bus.signing import Signer
from bot.clock import Clock, SystemClock
from bot.messages import Heartbeat
from bot.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Counters = Callable[[], Mapping[str, float]]
"""Read the role's counters for one beat (cheap: called once per beat, on the event loop)."""

LOG_INTERVAL_S = 60.0
"""Skipped beats and failing counters are logged at most this often (they are always counted)."""


def package_version() -> str:
    """The installed arbbot version, or `unknown` when running from a tree that was never installed."""
    try:
        return importlib.metadata.version("arbbot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(slots=True)
class HeartbeatStats:
    """Beats sent, beats skipped because Redis failed or was slow, counter reads that raised."""

    beats: int = 0
    skipped: int = 0
    counter_errors: int = 0


class HeartbeatPublisher:
    """Publish a Heartbeat for `role` every `interval_s` until stopped; a failed beat is skipped, never fatal.

    A beat that Redis refuses or does not take within `publish_timeout_s` is counted in `stats.skipped` and
    the next one comes on schedule. Counters that raise (or are not finite) are left out of that beat, counted.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        channels: Channels,
        role: str,
        counters: Counters | None = None,
        interval_s: float = 5.0,
        clock: Clock | None = None,
        version: str | None = None,
        publish_timeout_s: float | None = None,
        signer: Signer | None = None,
    ) -> None:
        """`signer`: sign every beat (when a signing key is configured)."""
        if not role:
            raise ValueError("a heartbeat needs a role name")
        if not interval_s > 0:
            raise ValueError(f"heartbeat interval must be > 0 s, got {interval_s!r}")
        self.role = role
        self.stats = HeartbeatStats()
        self.interval_s = interval_s
        self._client = client
        self._channel = channels.heartbeat(role)
        self._counters = counters
        self._signer = signer
        self._clock = clock or SystemClock()
        self._version = version or package_version()
        self._timeout_s = publish_timeout_s if publish_timeout_s is not None else min(interval_s, 2.0)
        self._pid = os.getpid()
        self._host = socket.gethostname()
        self.started_ms = self._clock.now_ms()
        self._started_mono = self._clock.monotonic()
        self._last_beat_mono: float | None = None
        self._last_logged: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True between start() and stop() (a failing beat never ends it)."""
        return self._task is not None and not self._task.done()

    def age_s(self) -> float:
        """Seconds since the last beat Redis took (since construction while none has)."""
        last = self._last_beat_mono if self._last_beat_mono is not None else self._started_mono
        return max(0.0, self._clock.monotonic() - last)

    def message(self) -> Heartbeat:
        """The heartbeat to send now."""
        return Heartbeat(
            ts=self._clock.now_ms(),
            role=self.role,
            pid=self._pid,
            host=self._host,
            started_ts=self.started_ms,
            interval_s=self.interval_s,
            version=self._version,
            counters=self._read_counters(),
        )

    async def beat(self) -> bool:
        """Send one heartbeat; False (counted, logged at a bounded rate) if Redis failed or was too slow."""
        payload = encode(self.message(), self._signer)
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.publish(self._channel, payload)
        except (RedisError, OSError, TimeoutError) as exc:
            self.stats.skipped += 1
            if self._may_log("skip"):
                reason = str(exc) or type(exc).__name__
                log.warning("heartbeat of %s skipped (%s); %d skipped so far", self.role, reason, self.stats.skipped)
            return False
        self.stats.beats += 1
        self._last_beat_mono = self._clock.monotonic()
        return True

    def start(self) -> None:
        """Start beating (the first beat goes out at once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"heartbeat:{self.role}")

    async def stop(self) -> None:
        """Stop beating."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.beat()
            await self._clock.sleep(self.interval_s)

    def _may_log(self, what: str) -> bool:
        now = self._clock.monotonic()
        if now - self._last_logged.get(what, -math.inf) < LOG_INTERVAL_S:
            return False
        self._last_logged[what] = now
        return True

    def _read_counters(self) -> dict[str, float]:
        if self._counters is None:
            return {}
        try:
            raw = dict(self._counters())
        except Exception:  # a role's counter hook must not stop its heartbeat
            self.stats.counter_errors += 1
            if self._may_log("counters"):
                log.exception("heartbeat counters of %s failed; beating without them", self.role)
            return {}
        counters = {str(k): v for k, v in raw.items() if isinstance(v, int | float) and math.isfinite(v)}
        if len(counters) != len(raw):
            self.stats.counter_errors += 1
        return counters
