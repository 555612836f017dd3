"""The paper trader's loop: decisions from a Redis consumer group, filled, written to the ledger, then published
and acknowledged, in that order, so a crash at any point neither loses nor doubles a decision."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message, encode
from bot.bus.publisher import publish_and_append
from bot.bus.signing import Signing
from bot.bus.streams import as_text
from bot.clock import Clock, SystemClock
from bot.messages import Decision
from bot.paper.executor import Executor, Rejected, unwind_fill
from bot.paper.ledger import Balances, Ledger, OpenPosition, StoredFill
from bot.paper.settings import PaperConfig
from bot.rejections import RejectionCounter
from bot.tasks import TaskSet

log = logging.getLogger(__name__)

UNWIND_ATTEMPTS = 10


class TraderError(RuntimeError):
    """A condition the trader cannot wait out; the message says what to fix."""


@dataclass(slots=True)
class TraderStats:
    """What the trader did since it started (the ledger holds the totals across restarts)."""

    received: int = 0
    recorded: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejected: int = 0
    published: int = 0
    acked: int = 0
    unwinds: int = 0
    redis_errors: int = 0
    ledger_errors: int = 0
    trimmed_unread: int = 0
    unpriced_gas: int = 0
    """Legs (trades and unwinds) that paid gas no price could value: recorded as unpriced, not as free."""


class PaperTrader:
    """Read `arb:stream:decision` as consumer `config.consumer` of group `config.group`."""

    def __init__(
        self,
        client: aioredis.Redis,
        channels: Channels,
        config: PaperConfig,
        executor: Executor,
        ledger: Ledger,
        fill_stream_maxlen: int,
        clock: Clock | None = None,
        signing: Signing | None = None,
    ) -> None:
        """`signing`: sign every fill published, and reject decisions that are unsigned or badly signed."""
        self.stats = TraderStats()
        self.rejections = RejectionCounter()
        self._client = client
        self._channels = channels
        self._config = config
        self._executor = executor
        self._ledger = ledger
        self._maxlen = fill_stream_maxlen
        self._clock = clock or SystemClock()
        self._signing = signing or Signing()
        self._stream = channels.decision_stream()
        self._tasks = TaskSet()
        self._unwinding: set[str] = set()
        self._unwinds_scheduled: set[str] = set()
        self._rng = random.Random()
        self.ready = asyncio.Event()
        """Set once the consumer group exists and this consumer's pending decisions are handled."""
        self.handling = False
        """True while a decision is being acted on (read, not yet acknowledged)."""

    @property
    def unwinds_running(self) -> int:
        """Open positions being unwound now."""
        return len(self._unwinding)

    async def run(self) -> None:
        """Consume decisions until cancelled; Redis errors are retried with backoff, never fatal."""
        self._unwinds_scheduled.clear()
        for position in self._ledger.open_positions():
            self._schedule_unwind(position)
        attempt = 0
        try:
            while True:
                try:
                    await self._consume()
                except (RedisError, sqlite3.Error) as exc:
                    # Nothing was acknowledged that the ledger does not hold: retry, the decision stays pending.
                    await self._back_off(exc, attempt)
                    attempt += 1
        finally:
            await self._tasks.cancel_all()

    async def _back_off(self, exc: RedisError | sqlite3.Error, attempt: int) -> None:
        if isinstance(exc, RedisError):
            self.stats.redis_errors += 1
        else:
            self.stats.ledger_errors += 1
        delay = min(5.0, 0.1 * 2.0**attempt) * self._rng.uniform(0.5, 1.0)
        log.warning("paper: %s (%s); retrying in %.2f s", type(exc).__name__, exc, delay)
        await self._clock.sleep(delay)

    async def _consume(self) -> None:
        await self._ensure_group()
        # Unwind Fills a crash left unpublished (written to the ledger, never sent).
        for stored in self._ledger.unpublished_fills():
            await self._publish(stored.symbol, stored.payload)
            self._ledger.mark_published(stored.fill_id)
        # Our own pending entries first (id 0): decisions read before a crash but never acknowledged.
        while entries := await self._read("0"):
            await self._handle_all(entries)
        self.ready.set()
        last_claim = self._clock.monotonic()
        await self._claim_stale()
        while True:
            if self._clock.monotonic() - last_claim >= self._config.claim_idle_ms / 1000.0:
                last_claim = self._clock.monotonic()
                await self._claim_stale()
            await self._handle_all(await self._read(">"))

    async def _ensure_group(self) -> None:
        start = "$" if self._config.start_from == "new" else "0"
        try:
            await self._client.xgroup_create(self._stream, self._config.group, id=start, mkstream=True)
            log.info("paper: created consumer group %s on %s at %s", self._config.group, self._stream, start)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                # Not a passing outage (a key of another type, no permission): retrying would hang for ever.
                raise TraderError(
                    f"cannot create consumer group {self._config.group} on {self._stream}: {exc}"
                ) from None
        await self._check_trimmed()

    async def _check_trimmed(self) -> None:
        """Warn when the stream's cap has trimmed decisions this group never read (the cap was too small)."""
        info = await self._client.xinfo_stream(self._stream)
        first = info.get("first-entry")
        if not first:
            return
        for group in await self._client.xinfo_groups(self._stream):
            if as_text(group["name"]) != self._config.group:
                continue
            delivered = as_text(group["last-delivered-id"])
            if _id_key(delivered) != (0, 0) and _id_key(delivered) < _id_key(as_text(first[0])):
                self.stats.trimmed_unread += 1
                log.warning(
                    "paper: decisions after %s were trimmed from %s before this group read them; raise "
                    "redis.stream_maxlen (it must hold every decision published while the trader is away)",
                    delivered,
                    self._stream,
                )

    async def _read(self, start: str) -> list[tuple[Any, Any]]:
        block = None if start == "0" else self._config.block_ms
        reply: Any = await self._client.xreadgroup(
            self._config.group, self._config.consumer, {self._stream: start}, count=self._config.read_count, block=block
        )
        if not reply:
            return []
        entries: list[tuple[Any, Any]] = reply[0][1]
        return entries

    async def _claim_stale(self) -> None:
        """Take over decisions another consumer read and never acknowledged (it died) once idle long enough."""
        start = "0-0"
        while True:
            reply = await self._client.xautoclaim(
                self._stream, self._config.group, self._config.consumer, self._config.claim_idle_ms, start, count=100
            )
            start, entries = as_text(reply[0]), reply[1]
            await self._handle_all(entries)
            if start == "0-0":
                return

    async def _handle_all(self, entries: list[tuple[Any, Any]]) -> None:
        for entry_id, fields in entries:
            await self.handle(as_text(entry_id), fields or {})

    async def handle(self, entry_id: str, fields: dict[Any, Any]) -> None:
        """Act on one stream entry and acknowledge it; bad entries are counted, written down and acknowledged."""
        self.handling = True
        try:
            await self._handle(entry_id, fields)
        finally:
            self.handling = False

    async def _handle(self, entry_id: str, fields: dict[Any, Any]) -> None:
        self.stats.received += 1
        payload = fields.get(b"data", fields.get("data"))
        if payload is None:
            # A pending entry whose data the stream's cap trimmed away: nothing left to fill.
            self._reject(entry_id, "no_data", "entry has no data field")
        else:
            try:
                decision = decode_message(payload, "decision", self._signing.verifier)
                assert isinstance(decision, Decision)
                self._executor.check(decision)
            except (DecodeError, Rejected) as exc:
                self._reject(entry_id, exc.reason, str(exc))
            else:
                try:
                    await self._execute(entry_id, decision)
                except (RedisError, sqlite3.Error):
                    raise  # not acknowledged: read again from the pending list once Redis or the ledger is back
                except Exception as exc:
                    # A decision that breaks the simulation must not come back after every restart.
                    log.exception("paper: decision %s failed", decision.id)
                    self._reject(entry_id, "internal_error", repr(exc))
        await self._client.xack(self._stream, self._config.group, entry_id)
        self.stats.acked += 1

    def _reject(self, entry_id: str, reason: str, detail: str) -> None:
        self.stats.rejected += 1
        self.rejections.reject("decision", reason, f"{entry_id}: {detail}")
        self._ledger.record_rejection(entry_id, reason, detail)

    async def _execute(self, entry_id: str, decision: Decision) -> None:
        if self._ledger.has(decision.id):
            # Delivered again (a crash, or a failed publish, between commit and ack): publish the recorded Fill
            # again, same id.
            self.stats.duplicates += 1
            try:
                if (stored := self._ledger.fill_json(decision.id)) is not None and decision.symbol is not None:
                    await self._publish(decision.symbol, stored)
            finally:
                self._resume_unwind(decision.id)
            return
        execution, fill = await self._executor.execute(decision, entry_id, self._balances())
        if self._ledger.record(execution):
            self.stats.unpriced_gas += sum(1 for leg in execution.legs if leg.gas_unpriced)
        else:
            self.stats.duplicates += 1
        self.stats.recorded[execution.status] += 1
        try:
            if fill is not None and execution.fill_json is not None and fill.symbol is not None:
                await self._publish(fill.symbol, execution.fill_json)
        finally:
            # The ledger holds the position now: unwinding it must not wait for Redis to take the Fill.
            self._resume_unwind(decision.id)

    def _balances(self) -> Balances | None:
        return self._ledger.balances() if self._config.enforce_balances else None

    async def _publish(self, symbol: str, payload: bytes) -> None:
        # The ledger keeps fills unsigned: each is signed as it goes out, with the key of this run.
        if (signer := self._signing.signer) is not None:
            payload = signer.sign_payload(payload)
        await publish_and_append(
            self._client, self._channels.fill(symbol), self._channels.fill_stream(), payload, self._maxlen
        )
        self.stats.published += 1

    def _resume_unwind(self, decision_id: str) -> None:
        """Unwind the decision's position as the ledger holds it, if it is open (once per run)."""
        if (position := self._ledger.open_position(decision_id)) is not None:
            self._schedule_unwind(position)

    def _schedule_unwind(self, position: OpenPosition) -> None:
        if position.unwind_venue is None or position.decision_id in self._unwinds_scheduled:
            return
        self._unwinds_scheduled.add(position.decision_id)
        self._unwinding.add(position.decision_id)
        self._tasks.spawn(self._unwind(position), f"paper:unwind:{position.decision_id}")

    async def _unwind(self, position: OpenPosition) -> None:
        """Unwind by the config's rule: first at the book at or after fill time + `unwind_after_ms`, then at the
        next books, up to UNWIND_ATTEMPTS times; what is left stays open in the ledger (and in the report). Each
        unwind trade (or reverted swap, which pays gas) is written to the ledger with its Fill, then published."""
        try:
            not_before = position.opened_ts + self._config.unwind_after_ms
            for _ in range(UNWIND_ATTEMPTS):
                done = await self._executor.unwind(position, not_before, self._balances())
                if done is not None:
                    step = self._ledger.unwind_steps(position.decision_id) + 1
                    fill = unwind_fill(position, done, step)
                    stored = StoredFill(fill.id, position.decision_id, step, position.symbol, encode(fill))
                    if not self._ledger.unwind(position, (done.leg,), done.pnl, done.remaining, done.ts, stored):
                        return
                    self.stats.unwinds += 1
                    self.stats.unpriced_gas += int(done.leg.gas_unpriced)
                    await self._publish_unwind(stored)
                    if abs(done.remaining) <= 1e-12 * abs(position.quantity):
                        return
                    position = dataclasses.replace(position, quantity=done.remaining)
                    not_before = done.ts + 1
            log.warning(
                "paper: position of decision %s still open after %d unwind attempts",
                position.decision_id,
                UNWIND_ATTEMPTS,
            )
        finally:
            self._unwinding.discard(position.decision_id)

    async def _publish_unwind(self, stored: StoredFill) -> None:
        """Publish an unwind's Fill, retrying Redis errors; the risk service moves its balances by it. Until it is
        marked published the ledger keeps it for the next start to send (a crash in between sends it twice: the
        same id, which consumers drop)."""
        attempt = 0
        while True:
            try:
                await self._publish(stored.symbol, stored.payload)
                self._ledger.mark_published(stored.fill_id)
                return
            except (RedisError, sqlite3.Error) as exc:
                await self._back_off(exc, attempt)
                attempt += 1


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
