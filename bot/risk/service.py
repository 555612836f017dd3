"""The risk role on Redis: signals in (from their stream), decisions out; fills, control and markets followed.

Signals are read with blocking XREAD on `arb:stream:signal` rather than pub/sub: the same latency, one ordered
path for catch-up and live, and a stream id to resume from. After each signal the service stores that id
(`arb:state:risk:last_signal_id`) and the opportunities it has decided (`arb:state:risk:acted`, a hash that
`closed` signals empty), in the same MULTI/EXEC that publishes the decision, so a restart resumes after the last
signal, decides each opportunity once, and never holds an opportunity as decided whose decision was not sent.
Fills are read from `arb:stream:fill` from its start (today's realised PnL, and balances unless
`risk.balances_from` is `config`), control messages from `arb:control:risk` (pub/sub), markets through
RemoteMarket. The state an operator command leaves (`halt` or `resume`, its reason, the loss a resume
acknowledged) is saved in `arb:state:risk:operator` and restored at start, before the fills are replayed, so a
restart neither forgets a halt nor halts again on a loss the operator already resumed from that day.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from fnmatch import fnmatchcase
from typing import Any, get_args

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message, encode
from bot.bus.publisher import Publisher, route_by_type
from bot.bus.remote_market import RemoteEvent, RemoteMarket
from bot.bus.signing import Signer, Signing
from bot.bus.streams import as_text, read_after
from bot.clock import Clock, SystemClock
from bot.config import RootConfig
from bot.messages import Control, Decision, Fill, RiskState, Signal
from bot.rejections import RejectionCounter
from bot.risk.engine import RiskEngine
from bot.risk.limits import OperatorState
from bot.risk.window import SpreadForecast
from bot.tasks import TaskSet

log = logging.getLogger(__name__)

ROLE = "risk"


def _ms_of(stream_id: str) -> int:
    return int(stream_id.split("-", 1)[0])


EntryHandler = Callable[[str, dict[bytes, bytes]], Awaitable[None]]
_STATES: dict[str, RiskState] = {state: state for state in get_args(RiskState)}


class RiskService:
    """Run a RiskEngine against Redis; `start()` returns once every subscription is in place."""

    def __init__(
        self,
        config: RootConfig,
        client: aioredis.Redis,
        clock: Clock | None = None,
        forecast: SpreadForecast | None = None,
        bus_time_from_clock: bool = False,
        signing: Signing | None = None,
    ) -> None:
        """`bus_time_from_clock`: take a signal's arrival time from `clock` rather than its stream id (a backtest
        on a simulated clock, where stream ids carry wall time). `signing`: sign the decisions, and reject
        signals, fills, control and market messages that are unsigned or badly signed (with a key)."""
        self.config = config
        self.channels = Channels(config.redis.prefix)
        self.clock = clock or SystemClock()
        self.rejections = RejectionCounter()
        self.signing = signing or Signing()
        self._verifier = self.signing.verifier
        self.market = RemoteMarket(client, self.channels, self.clock, self._verifier)
        fees = {name: venue.taker_fee_bps for name, venue in config.venues.items()}
        self.engine = RiskEngine(config.risk, self.market, fees, forecast)
        self.market.add_listener(self._on_market_event)
        self.publisher: Publisher[Decision] = Publisher(
            client, route_by_type(self.channels), config.redis.stream_maxlen, config.redis.publish_queue, self.clock,
            name="publisher:decisions", signer=self.signing.signer,
        )  # fmt: skip
        self.last_signal_id: str | None = None
        self.signals_handled = 0
        """Signal stream entries handled (decided, ignored or rejected), their decision published."""
        self.fills_applied = 0
        """Fill stream entries applied (or rejected)."""
        self._bus_time_from_clock = bus_time_from_clock
        self._client = client
        self._tasks = TaskSet()
        self._positions: dict[str, str] = {}
        """Stream → id of the last entry taken from it."""
        self._route = route_by_type(self.channels)
        self._last_key = self.channels.key(ROLE, "last_signal_id")
        self._acted_key = self.channels.key(ROLE, "acted")
        self._operator_key = self.channels.key(ROLE, "operator")

    @property
    def tasks(self) -> TaskSet:
        """The service's background loops (signals and fills supervised)."""
        return self._tasks

    def _on_market_event(self, event: RemoteEvent) -> None:
        self.engine.on_market_event(event, self.clock.now_ms())

    async def start(self) -> None:
        """Restore state, subscribe to markets and control, catch up on fills, then follow signals and fills."""
        risk = self.config.risk
        saved = await self._client.get(self._last_key)
        start_id = as_text(saved) if saved is not None and risk.start_from == "last" else "$"
        if start_id == "$":
            # `$` would race with signals published right after start: pin the current end instead.
            info: list[Any] = await self._client.xrevrange(self.channels.signal_stream(), count=1) or []
            start_id = as_text(info[0][0]) if info else "0-0"
        for opportunity, signal_id in (await self._client.hgetall(self._acted_key)).items():
            self.engine.remember(as_text(opportunity), as_text(signal_id))
        await self._restore_operator_state()
        await self.market.start()
        control = self._client.pubsub(ignore_subscribe_messages=True)
        await control.subscribe(self.channels.control(ROLE))
        fill_id = await self._catch_up_fills()
        # No writer task: each decision is published in the transaction that records it (`publish_with`).
        self._tasks.spawn(self._follow_control(control), "risk:control")
        fill_stream, signal_stream = self.channels.fill_stream(), self.channels.signal_stream()
        self._positions.update({fill_stream: fill_id, signal_stream: start_id})
        # Supervised: a loop that dies on a bug starts again after the entry it was handling (never loops on it).
        self._tasks.supervise(lambda: self._follow(fill_stream, 1_000, self._handle_fill_entry), "risk:fills")
        self._tasks.supervise(
            lambda: self._follow(signal_stream, risk.read_block_ms, self._handle_signal_entry), "risk:signals"
        )
        log.info("risk role started after signal %s, state %s", start_id, self.engine.limits.state)

    async def stop(self) -> None:
        """Stop following (a decision is published before its signal counts as handled)."""
        await self._tasks.cancel_all()
        await self.market.close()
        await self.publisher.close()

    async def _follow(self, stream: str, block_ms: int, handle: EntryHandler) -> None:
        """Hand each entry of `stream` after its position to `handle`, in order, for ever (blocking XREAD)."""
        while True:
            try:
                entries = await read_after(self._client, stream, self._positions[stream], block_ms)
            except RedisError as exc:
                log.warning("risk: reading %s failed (%s); retrying in 1 s", stream, exc)
                await self.clock.sleep(1.0)
                continue
            for entry_id, fields in entries:
                self._positions[stream] = entry_id
                await handle(entry_id, fields)

    # ------------------------------------------------------------ signals

    async def _handle_signal_entry(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        self.last_signal_id = entry_id
        decision: Decision | None = None
        signal: Signal | None = None
        payload = fields.get(b"data")
        try:
            if payload is None:
                raise DecodeError("invalid_entry", f"stream entry {entry_id} has no data field")
            message = decode_message(payload, "signal", self._verifier)
        except DecodeError as exc:
            self.rejections.reject("signal", exc.reason, exc.detail)
        else:
            assert isinstance(message, Signal)
            signal = message
            if fnmatchcase(self._route(signal)[0], self._pattern()):
                published_ms = self.clock.now_ms() if self._bus_time_from_clock else _ms_of(entry_id)
                decision = self._decide(signal, published_ms)
        # A decision and the progress that records it go to Redis in one transaction: a process killed in between
        # would otherwise have saved an opportunity as decided whose decision nobody ever sees.
        published = decision is not None and await self.publisher.publish_with(
            decision, lambda pipe: self._progress(pipe, entry_id, signal, decided=True), self._progress_saved(entry_id)
        )
        if not published:
            await self._save_progress(entry_id, signal)
        self.signals_handled += 1

    def _progress(self, pipe: Pipeline, entry_id: str, signal: Signal | None, decided: bool) -> None:
        """Queue on `pipe` the record of the last signal handled and of the opportunity acted on."""
        pipe.set(self._last_key, entry_id)
        if signal is not None and signal.status == "closed":
            pipe.hdel(self._acted_key, signal.opportunity_id)
        elif signal is not None and decided:
            pipe.hset(self._acted_key, signal.opportunity_id, signal.id)

    def _progress_saved(self, entry_id: str) -> Callable[[], Awaitable[bool]]:
        async def saved() -> bool:
            last = await self._client.get(self._last_key)
            return last is not None and as_text(last) == entry_id

        return saved

    async def _save_progress(self, entry_id: str, signal: Signal | None) -> None:
        """Record the last signal handled when no decision came of it; retry while Redis is away."""

        async def save() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                self._progress(pipe, entry_id, signal, decided=False)
                await pipe.execute()

        await self._retrying(save, f"saving progress after {entry_id}")

    async def _retrying(self, write: Callable[[], Awaitable[None]], what: str) -> None:
        """Run `write` until it succeeds, backing off (0.1 s doubling to 5 s) while Redis errors."""
        attempt = 0
        while True:
            try:
                await write()
                return
            except RedisError as exc:
                delay = min(5.0, 0.1 * 2.0**attempt)
                attempt += 1
                log.warning("risk: %s failed (%s); retrying in %.1f s", what, exc, delay)
                await self.clock.sleep(delay)

    def _pattern(self) -> str:
        pattern = self.config.risk.signal_pattern
        return pattern if pattern.startswith(f"{self.channels.prefix}:") else f"{self.channels.prefix}:signal:{pattern}"

    def _decide(self, signal: Signal, published_ms: int) -> Decision | None:
        try:
            return self.engine.on_signal(signal, self.clock.now_ms(), published_ms)
        except Exception:
            # A risk rule that raises costs this signal, never the service.
            self.rejections.reject("signal", "risk_error", signal.id)
            log.exception("risk: deciding signal %s failed", signal.id)
            return None

    # ------------------------------------------------------------ fills and control

    async def _catch_up_fills(self) -> str:
        last = "0-0"
        stream = self.channels.fill_stream()
        while True:
            entries: list[Any] = await self._client.xrange(stream, min=f"({last}", max="+", count=1000) or []
            if not entries:
                return last
            for raw_id, fields in entries:
                last = as_text(raw_id)
                self._apply_fill(fields.get(b"data"), replayed=True)

    async def _handle_fill_entry(self, _entry_id: str, fields: dict[bytes, bytes]) -> None:
        self._apply_fill(fields.get(b"data"), replayed=False)

    def _apply_fill(self, payload: bytes | None, replayed: bool) -> None:
        self.fills_applied += 1
        try:
            message = decode_message(payload or b"", "fill", self._verifier)
        except DecodeError as exc:
            self.rejections.reject("fill", exc.reason, exc.detail)
            return
        assert isinstance(message, Fill)
        self.engine.on_fill(message, replayed=replayed)

    async def _restore_operator_state(self) -> None:
        raw: dict[Any, Any] = await self._client.hgetall(self._operator_key)
        if not raw:
            return
        saved = {as_text(k): as_text(v) for k, v in raw.items()}
        try:
            restored = OperatorState(
                _STATES[saved["state"]],
                saved.get("reason", ""),
                int(saved.get("day", "-1")),
                float(saved.get("acknowledged_loss", "0")),
            )
            if not math.isfinite(restored.acknowledged_loss):
                raise ValueError(f"acknowledged_loss {restored.acknowledged_loss}")
        except (KeyError, ValueError) as exc:
            self.rejections.reject("control", "invalid_saved_state", f"{self._operator_key}: {exc}")
            log.warning("risk: ignoring the saved operator state in %s (%s)", self._operator_key, exc)
            return
        self.engine.limits.restore(restored)
        log.warning("risk: operator state restored: %s (%s)", restored.state, restored.reason)

    async def _save_operator_state(self) -> None:
        saved = self.engine.limits.operator_state()
        mapping: dict[str, str] = {
            "state": saved.state,
            "reason": saved.reason,
            "day": str(saved.day),
            "acknowledged_loss": repr(saved.acknowledged_loss),
        }

        async def save() -> None:
            await self._client.hset(self._operator_key, mapping=mapping)  # type: ignore[arg-type]

        await self._retrying(save, "saving the operator state")

    async def _follow_control(self, pubsub: aioredis.client.PubSub | None) -> None:
        """Apply halt/resume commands; a lost subscription is renewed (a missed halt would be silent)."""
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                        await pubsub.subscribe(self.channels.control(ROLE))
                    await self._read_control(pubsub)
                except (RedisError, OSError) as exc:
                    log.warning("risk: control channel lost (%s); subscribing again in 1 s", exc)
                    await _close_quietly(pubsub)
                    pubsub = None
                    await self.clock.sleep(1.0)
        finally:
            await _close_quietly(pubsub)

    async def _read_control(self, pubsub: aioredis.client.PubSub) -> None:
        async for raw in pubsub.listen():
            if raw.get("type") != "message":
                continue
            try:
                message = decode_message(raw["data"], "control", self._verifier)
            except DecodeError as exc:
                self.rejections.reject("control", exc.reason, exc.detail)
                continue
            assert isinstance(message, Control)
            if message.role == ROLE:
                self.engine.on_control(message)
                await self._save_operator_state()


async def _close_quietly(pubsub: aioredis.client.PubSub | None) -> None:
    if pubsub is not None:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


async def send_control(
    client: aioredis.Redis,
    channels: Channels,
    command: str,
    reason: str,
    now_ms: int,
    signer: Signer | None = None,
) -> int:
    """Publish a Control message to the risk role (signed with `signer` when given); the number of processes that
    received it."""
    control = Control.model_validate({"ts": now_ms, "role": ROLE, "command": command, "reason": reason})
    receivers: int = await client.publish(channels.control(ROLE), encode(control, signer))
    return receivers
