"""Malformed messages for every channel and stream the roles read, each with the rejection it must cause.

A rejection is named (reader, source, reason): the reader is whose RejectionCounter counts it (`risk`, its
market view `risk-market`, the paper trader `paper`, its market view `paper-market`, or a `follow` subscriber
`subscriber`), the source and reason are what that counter records.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.drills.samples import (
    SYMBOL,
    sample_book,
    sample_control,
    sample_decision,
    sample_fill,
    sample_signal,
    spoiled,
)

Expected = tuple[str, str, str]
"""(reader, source, reason) of one rejection."""

BAD_JSON = b'{"type": "signal", "schema_version": 1, "id": '
NOT_AN_OBJECT = b"[1, 2, 3]"
UNKNOWN_VERSION = 99


@dataclass(frozen=True, slots=True)
class Garbage:
    """One malformed payload: where it goes (`xadd` to a stream, else PUBLISH), and the rejections it causes.

    `payload` None: a stream entry without the `data` field."""

    name: str
    target: str
    xadd: bool
    payload: bytes | None
    expect: tuple[Expected, ...]


def catalogue(channels: Channels, now_ms: int) -> list[Garbage]:
    """Every kind of garbage, once."""
    signal, decision, fill = sample_signal(0, now_ms), sample_decision(now_ms), sample_fill(now_ms)
    book, control = sample_book(now_ms), sample_control(now_ms)
    books = channels.book("alpha", SYMBOL)
    markets = (("risk-market", "bus"), ("paper-market", "bus"))
    items = [
        _stream(channels.signal_stream(), "risk", "signal", _common(signal, decision)),
        _stream(channels.decision_stream(), "paper", "decision", _common(decision, fill)),
        _stream(channels.fill_stream(), "risk", "fill", _common(fill, signal)),
        [
            Garbage("signal stream: entry without data", channels.signal_stream(), True, None,
                    (("risk", "signal", "invalid_entry"),)),
            Garbage("decision stream: entry without data", channels.decision_stream(), True, None,
                    (("paper", "decision", "no_data"),)),
            Garbage("fill stream: entry without data", channels.fill_stream(), True, None,
                    (("risk", "fill", "malformed_json"),)),
        ],
        [
            Garbage(f"signal channel: {name}", channels.signal("cex_cex", SYMBOL), False, payload,
                    (("subscriber", "signal", reason),))
            for name, payload, reason in _common(signal, decision)
        ],
        [
            Garbage(f"book channel: {name}", books, False, payload, tuple((r, s, reason) for r, s in markets))
            for name, payload, reason in (
                *_common(book, signal),
                ("bids not a list", spoiled(book, bids="lots"), "invalid_fields"),
                ("venue not a string", spoiled(book, venue=42), "invalid_fields"),
                ("ts not a number", spoiled(book, ts="yesterday"), "invalid_fields"),
                ("negative price", spoiled(book, asks=[[-1.0, 1.0]]), "invalid_fields"),
            )
        ],
        [
            Garbage(f"control channel: {name}", channels.control("risk"), False, payload,
                    (("risk", "control", reason),))
            for name, payload, reason in (
                *_common(control, book),
                ("unknown command", spoiled(control, command="explode"), "invalid_fields"),
            )
        ],
    ]  # fmt: skip
    return [garbage for group in items for garbage in group]


def _common(message: object, other: object) -> list[tuple[str, bytes, str]]:
    """(name, payload, reason) of the garbage every reader of `message`'s type must reject."""
    return [
        ("bad JSON", BAD_JSON, "malformed_json"),
        ("not an object", NOT_AN_OBJECT, "not_an_object"),
        (f"schema_version {UNKNOWN_VERSION}", spoiled(message, schema_version=UNKNOWN_VERSION),
         "unknown_schema_version"),
        ("no id or ts", spoiled(message, id=None, ts=None), "invalid_fields"),
        ("wrong field type", spoiled(message, **_wrong_type_field(message)), "invalid_fields"),
        (f"a {type(other).__name__.lower()} instead", spoiled(other), "wrong_type"),
    ]  # fmt: skip


def _wrong_type_field(message: object) -> dict[str, object]:
    name = type(message).__name__
    fields: dict[str, dict[str, object]] = {
        "Signal": {"buy_price": "cheap"},
        "Decision": {"size": "big"},
        "Fill": {"legs": "none"},
        "BookMessage": {"asks": {"price": 1}},
        "Control": {"role": ["risk"]},
    }
    return fields[name]


def _stream(stream: str, reader: str, source: str, common: list[tuple[str, bytes, str]]) -> list[Garbage]:
    label = stream.rsplit(":", 1)[-1]
    return [Garbage(f"{label} stream: {name}", stream, True, p, ((reader, source, r),)) for name, p, r in common]


@dataclass(slots=True)
class Spewer:
    """Send the catalogue round and round at `rate_per_s`; count what was sent and the rejections it must cause."""

    client: aioredis.Redis
    items: list[Garbage]
    rate_per_s: float
    sent: int = 0
    expected: Counter[Expected] = field(default_factory=Counter)
    by_name: Counter[str] = field(default_factory=Counter)
    redis_errors: int = 0

    async def run(self) -> None:
        """Send until cancelled."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            due = int((loop.time() - started) * self.rate_per_s) + 1
            while self.sent < due:
                await self._send(self.items[self.sent % len(self.items)])
            await asyncio.sleep(1.0 / self.rate_per_s)  # pacing the flood

    async def _send(self, garbage: Garbage) -> None:
        try:
            if garbage.xadd:
                fields = {"junk": b"x"} if garbage.payload is None else {"data": garbage.payload}
                await self.client.xadd(garbage.target, fields)  # type: ignore[arg-type]
            else:
                await self.client.publish(garbage.target, garbage.payload or b"")
        except RedisError:
            self.redis_errors += 1
            return
        finally:
            self.sent += 1
        self.expected.update(garbage.expect)
        self.by_name[garbage.name] += 1
