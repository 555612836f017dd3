"""Drill `redis-restart`: Redis stopped mid-run (SIGKILL or SIGTERM) and started again on the same port and data.

A SignalPublisher (the signals role's) is fed valid signals at a steady rate. A stream subscriber (`arbbot
subscribe --since` logic: `follow` with a stream catch-up) and a plain pub/sub subscriber follow the signal
channels; each starts following again when its connection fails. Redis runs with an fsynced AOF
(`redis_server.DURABILITY`), so the stream survives the stops. Counted: signals submitted, accepted and dropped
by the publisher (its queue's high-water mark against its bound), entries in the stream, signals the stream
subscriber delivered (lost, duplicates after dedupe by id), pub/sub messages after each restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError
from bot.bus.publisher import SignalPublisher
from bot.bus.subscriber import CatchUp, SubscriberStats, follow
from bot.drills.audit import read_stream
from bot.drills.errors import ErrorCounter, WarningCounter
from bot.drills.redis_server import DURABILITY, DurableRedis
from bot.drills.report import DrillReport
from bot.drills.samples import sample_signal
from bot.drills.setup import DRILL_PREFIX
from bot.drills.stack import wait_for
from bot.messages import Message
from bot.tasks import cancel_and_wait

FLUSH_TIMEOUT_S = 60.0
RESUBSCRIBE_DELAY_S = 0.2


@dataclass(frozen=True, slots=True)
class Outage:
    """One stop of Redis: the signal it gets and how long it stays down."""

    sig: signal.Signals
    down_s: float


@dataclass(frozen=True, slots=True)
class Plan:
    """Publishing rate, the publisher's queue bound, the outages and the time between them."""

    rate_per_s: float
    queue_bound: int
    outages: tuple[Outage, ...]
    between_s: float  # publishing with Redis up, before the first outage, between outages and after the last


SHORT = Plan(100.0, 500, (Outage(signal.SIGKILL, 2.0),), 3.0)
# The third outage outlasts the queue (8 s at 200/s = 1,600 signals > 1,000): the publisher must drop and say so.
FULL = Plan(
    200.0,
    1_000,
    (
        Outage(signal.SIGKILL, 2.0),
        Outage(signal.SIGTERM, 2.0),
        Outage(signal.SIGKILL, 8.0),
        Outage(signal.SIGTERM, 3.0),
        Outage(signal.SIGKILL, 1.0),
        Outage(signal.SIGKILL, 0.0),
    ),
    8.0,
)


@dataclass(slots=True)
class Feeder:
    """Submit signals at a steady rate; remember which the publisher accepted, and its queue's high-water mark."""

    publisher: SignalPublisher
    rate_per_s: float
    submitted: int = 0
    accepted: set[str] = field(default_factory=set)
    high_water: int = 0

    async def run(self) -> None:
        started = time.monotonic()
        while True:
            due = int((time.monotonic() - started) * self.rate_per_s) + 1
            while self.submitted < due:
                message = sample_signal(self.submitted, time.time_ns() // 1_000_000)
                self.submitted += 1
                if self.publisher.submit(message):
                    self.accepted.add(message.id)
                self.high_water = max(self.high_water, self.publisher.pending)
            await asyncio.sleep(1.0 / self.rate_per_s)  # pacing the feed


@dataclass(slots=True)
class Follower:
    """Follow the signal channels with `follow`, starting again after every connection failure it raises.

    With `stream`, `follow` reads the signal stream and itself resumes after the last entry it read when Redis
    comes back (`stats.resumes`); a start again (only if Redis fails before first answering) goes on from there
    too. Ids seen before would be dropped here and counted as redelivered: there should be none.
    """

    url: str
    channels: Channels
    stream: bool
    seen: set[str] = field(default_factory=set)
    arrivals: list[float] = field(default_factory=list)
    delivered: int = 0
    redelivered: int = 0
    rejected: int = 0
    restarts: int = 0
    failures: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stats: SubscriberStats = field(default_factory=SubscriberStats)

    def _on_message(self, _payload: bytes, message: Message) -> None:
        if message.id in self.seen:
            self.redelivered += 1
            return
        self.seen.add(message.id)
        self.delivered += 1
        self.arrivals.append(time.monotonic())

    def _on_reject(self, _payload: bytes, _error: DecodeError) -> None:
        self.rejected += 1

    async def run(self) -> None:
        pattern = self.channels.signal_pattern()
        while True:
            since = self.stats.last_stream_id or "0"
            catch_up = CatchUp(self.channels.signal_stream(), since, self.channels) if self.stream else None
            client = aioredis.from_url(self.url)
            try:
                await follow(
                    client, pattern, self._on_message, self._on_reject, None, "signal", self.ready.set, catch_up,
                    stats=self.stats,
                )  # fmt: skip
            except (RedisError, OSError) as exc:
                self.restarts += 1
                if len(self.failures) < 5:
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
            finally:
                await _close(client)
            await asyncio.sleep(RESUBSCRIBE_DELAY_S)  # a pause before the next attempt while Redis is down

    def after(self, moment: float) -> int:
        """Messages delivered after `moment` (time.monotonic())."""
        return sum(1 for arrival in self.arrivals if arrival > moment)


async def _close(client: aioredis.Redis) -> None:
    with contextlib.suppress(RedisError, OSError):
        await client.aclose()


async def _stream_ids(client: aioredis.Redis, stream: str) -> list[str]:
    """The message ids in `stream`, in order (every entry, duplicates included); undecodable entries as ''."""
    messages, bad = await read_stream(client, stream, "signal")
    return [message.id for message in messages] + [""] * bad


async def run_redis_restart(report: DrillReport, short: bool, _workdir: Path) -> None:
    """Run the drill, filling `report`."""
    plan = SHORT if short else FULL
    channels = Channels(DRILL_PREFIX)
    redis = DurableRedis()
    await redis.start()
    report.step(f"redis-server on {redis.url}: {DURABILITY}")
    client = aioredis.from_url(redis.url)
    publisher = SignalPublisher(client, channels, 1_000_000, plan.queue_bound)
    feeder = Feeder(publisher, plan.rate_per_s)
    stream_sub = Follower(redis.url, channels, stream=True)
    pubsub_sub = Follower(redis.url, channels, stream=False)
    tasks: list[asyncio.Task[None]] = []
    outages: list[OutageOutcome] = []
    try:
        with ErrorCounter() as errors, WarningCounter("bot.bus.publisher", containing="queue full") as drop_warnings:
            for follower, name in ((stream_sub, "stream"), (pubsub_sub, "pubsub")):
                tasks.append(asyncio.create_task(follower.run(), name=f"drill:{name}-subscriber"))
            await asyncio.wait_for(asyncio.gather(stream_sub.ready.wait(), pubsub_sub.ready.wait()), 10.0)
            publisher.start()
            tasks.append(asyncio.create_task(feeder.run(), name="drill:feeder"))
            report.step(
                f"publishing {plan.rate_per_s:g} signals/s through a SignalPublisher (queue bound "
                f"{plan.queue_bound}); a stream subscriber (catch-up + live) and a pub/sub subscriber follow"
            )
            await asyncio.sleep(plan.between_s)  # publishing with Redis up
            for outage in plan.outages:
                outages.append(await _outage(report, redis, feeder, publisher, outage))
                await asyncio.sleep(plan.between_s)  # publishing with Redis up again
            await _cancel(tasks[-1:])  # the feeder: no more signals
            report.step(f"stopped feeding after {feeder.submitted} signals; waiting for the publisher to flush")
            flushed = await wait_for(
                lambda: publisher.pending == 0 and publisher.stats.published >= len(feeder.accepted), FLUSH_TIMEOUT_S
            )
            stream_ids = await _stream_ids(client, channels.signal_stream())
            caught_up = await wait_for(lambda: feeder.accepted <= stream_sub.seen, FLUSH_TIMEOUT_S)
            report.step(f"publisher flushed: {flushed}; stream subscriber has every accepted signal: {caught_up}")
            await publisher.close()
        _count(report, plan, redis, feeder, publisher, stream_sub, pubsub_sub, stream_ids, outages)
        report.counts["drop_warnings"] = drop_warnings.count
        report.counts["crashes"] = errors.count
        if errors.first:
            report.counts["errors_logged"] = errors.first
        _verdict(report, plan)
    finally:
        await _cancel(tasks)
        await _close(client)
        await redis.close()


@dataclass(frozen=True, slots=True)
class OutageOutcome:
    """One outage as the publisher lived it."""

    restarted: float  # time.monotonic() when Redis answered again
    submitted_while_down: int
    queued_at_restart: int
    dropped_while_down: int
    resumed_after_s: float | None  # from Redis answering to the publisher's next successful publish
    dropped_after_restart: int  # dropped between Redis answering and the publisher resuming

    def to_json(self) -> dict[str, object]:
        return {
            "submitted_while_down": self.submitted_while_down,
            "queued_at_restart": self.queued_at_restart,
            "dropped_while_down": self.dropped_while_down,
            "publisher_resumed_after_s": None if self.resumed_after_s is None else round(self.resumed_after_s, 2),
            "dropped_after_restart": self.dropped_after_restart,
        }


async def _outage(
    report: DrillReport, redis: DurableRedis, feeder: Feeder, publisher: SignalPublisher, outage: Outage
) -> OutageOutcome:
    """Stop Redis with the outage's signal, keep publishing while it is down, start it again, and wait until the
    publisher publishes again."""
    submitted, dropped = feeder.submitted, publisher.dropped
    code = await redis.stop(outage.sig)
    report.step(f"redis-server stopped with {outage.sig.name} (exit {code}); down for {outage.down_s:g} s")
    await asyncio.sleep(outage.down_s)  # the outage itself
    await redis.start()
    restarted = time.monotonic()
    queued, published, dropped_down = publisher.pending, publisher.stats.published, publisher.dropped - dropped
    resumed = await wait_for(lambda: publisher.stats.published > published, FLUSH_TIMEOUT_S, 0.01)
    outcome = OutageOutcome(
        restarted,
        feeder.submitted - submitted,
        queued,
        dropped_down,
        time.monotonic() - restarted if resumed else None,
        publisher.dropped - dropped - dropped_down,
    )
    report.step(
        f"redis-server answers again on port {redis.port}: {outcome.submitted_while_down} signals submitted while "
        f"down, {queued} queued, {dropped_down} dropped; the publisher resumed after "
        f"{outcome.resumed_after_s if outcome.resumed_after_s is None else round(outcome.resumed_after_s, 2)} s, "
        f"dropping {outcome.dropped_after_restart} more meanwhile"
    )
    return outcome


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    # cancel_and_wait: a cancellation that lands inside redis-py's own timeouts can be swallowed (Python 3.11).
    await asyncio.gather(*(cancel_and_wait(task) for task in tasks))


def _count(
    report: DrillReport,
    plan: Plan,
    redis: DurableRedis,
    feeder: Feeder,
    publisher: SignalPublisher,
    stream_sub: Follower,
    pubsub_sub: Follower,
    stream_ids: list[str],
    outages: list[OutageOutcome],
) -> None:
    in_stream = set(stream_ids) - {""}
    report.counts.update(
        {
            "durability": DURABILITY,
            "stops": [o.sig.name for o in plan.outages],
            "redis_starts": redis.starts,
            "submitted": feeder.submitted,
            "accepted": len(feeder.accepted),
            "published": publisher.stats.published,
            "publisher_dropped": publisher.dropped,
            "publisher_redis_errors": publisher.stats.redis_errors,
            "queue_high_water": feeder.high_water,
            "queue_bound": plan.queue_bound,
            "stream_entries": len(stream_ids),
            "stream_duplicate_entries": len(stream_ids) - len(set(stream_ids)),
            "lost_in_stream": len(feeder.accepted - in_stream),
            "received": stream_sub.delivered,
            "lost": len(feeder.accepted - stream_sub.seen),
            "unexpected": len(stream_sub.seen - feeder.accepted),
            "redelivered_dropped_by_id": stream_sub.redelivered,
            "duplicates": stream_sub.delivered - len(stream_sub.seen),
            "stream_subscriber_restarts": stream_sub.restarts,
            "stream_subscriber_resumes": stream_sub.stats.resumes,
            "stream_trimmed_past_reader": stream_sub.stats.trimmed,
            "pubsub_received": pubsub_sub.delivered,
            "pubsub_missed": len(feeder.accepted - pubsub_sub.seen),  # at most once by design: the stream has them
            "pubsub_after_each_restart": [pubsub_sub.after(o.restarted) for o in outages],
            "outages": [o.to_json() for o in outages],
            "pubsub_subscriber_restarts": pubsub_sub.restarts,
            "subscriber_failures": sorted(set(stream_sub.failures + pubsub_sub.failures)),
            "rejected": stream_sub.rejected + pubsub_sub.rejected,
        }
    )


def _verdict(report: DrillReport, plan: Plan) -> None:
    c = report.counts
    report.check("redis restarted", c["redis_starts"] == len(plan.outages) + 1, f"{c['redis_starts']} starts")
    report.check(
        "publisher accounts for every signal",
        c["accepted"] + c["publisher_dropped"] == c["submitted"],
        f"{c['accepted']} accepted + {c['publisher_dropped']} dropped of {c['submitted']} submitted",
    )
    report.check(
        "every accepted signal published", c["published"] >= c["accepted"], f"{c['published']} of {c['accepted']}"
    )
    report.check(
        "queue within its bound",
        c["queue_high_water"] <= c["queue_bound"],
        f"high-water {c['queue_high_water']} of {c['queue_bound']}",
    )
    says = c["publisher_dropped"] == 0 or c["drop_warnings"] > 0
    report.check(
        "publisher says when it drops", says, f"{c['publisher_dropped']} dropped, {c['drop_warnings']} warnings"
    )
    report.check("stream lost nothing", c["lost_in_stream"] == 0, f"{c['lost_in_stream']} accepted signals not in it")
    report.check("stream subscriber lost = 0", c["lost"] == 0, f"{c['lost']} of {c['accepted']} never delivered")
    report.check("duplicates = 0 after dedupe by id", c["duplicates"] == 0, f"{c['duplicates']} delivered twice")
    report.check(
        "stream subscriber resumed after its last entry",
        c["redelivered_dropped_by_id"] == 0,
        f"{c['stream_subscriber_resumes']} resumes, {c['redelivered_dropped_by_id']} entries read again",
    )
    resumed = all(count > 0 for count in c["pubsub_after_each_restart"])
    report.check(
        "pub/sub resumed after each restart", resumed, f"messages after each: {c['pubsub_after_each_restart']}"
    )
    report.check("crashes = 0", c["crashes"] == 0, f"{c['crashes']} ERROR records")
