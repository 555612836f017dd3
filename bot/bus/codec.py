"""Encode and decode every message that crosses Redis, and every recorded event line (orjson)."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from bot.bus.signing import SignatureError, Signer, Verifier
from bot.events import BookEvent, GasEvent, MarketEvent, PoolEvent, TradeEvent
from bot.messages import (
    CONTROL_SCHEMA_VERSION,
    DECISION_SCHEMA_VERSION,
    FILL_SCHEMA_VERSION,
    HEARTBEAT_SCHEMA_VERSION,
    MARKET_SCHEMA_VERSION,
    SIGNAL_SCHEMA_VERSION,
    BookMessage,
    Control,
    Decision,
    Fill,
    GasMessage,
    Heartbeat,
    Message,
    PoolMessage,
    Signal,
)

_MESSAGE_TYPES: dict[str, tuple[type[BaseModel], frozenset[int]]] = {
    "signal": (Signal, frozenset({SIGNAL_SCHEMA_VERSION})),
    "decision": (Decision, frozenset({DECISION_SCHEMA_VERSION})),
    "fill": (Fill, frozenset({FILL_SCHEMA_VERSION})),
    "control": (Control, frozenset({CONTROL_SCHEMA_VERSION})),
    "heartbeat": (Heartbeat, frozenset({HEARTBEAT_SCHEMA_VERSION})),
    "book": (BookMessage, frozenset({MARKET_SCHEMA_VERSION})),
    "gas": (GasMessage, frozenset({MARKET_SCHEMA_VERSION})),
    "pool": (PoolMessage, frozenset({MARKET_SCHEMA_VERSION})),
}
_MARKET_MESSAGE_TYPES = frozenset({"book", "gas", "pool"})
_EVENT_TYPES: dict[str, type[BookEvent] | type[TradeEvent] | type[GasEvent] | type[PoolEvent]] = {
    "book": BookEvent,
    "trade": TradeEvent,
    "gas": GasEvent,
    "pool": PoolEvent,
}


class DecodeError(ValueError):
    """A payload that is not a valid message or event; `reason` is a short, countable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


ENVELOPE_FIELDS = ("type", "schema_version", "id", "ts")
"""Fields every message carries; a message missing one is rejected (DESIGN.md)."""


@functools.cache
def _required_nullable(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(name for name, info in model.model_fields.items() if info.is_required())


def encode(model: BaseModel, signer: Signer | None = None) -> bytes:
    """Serialise a message or event as compact JSON with `type` first, and `sig` last when `signer` is given.

    Optional fields that are None are left out; a required field that is None (Decision's `gas`) is sent as null.
    """
    fields = model.model_dump(mode="json", exclude_none=True)
    for name in _required_nullable(type(model)):
        fields.setdefault(name, None)
    ordered = {"type": fields.pop("type"), **fields}
    return orjson.dumps(ordered if signer is None else signer.sign(ordered))


def _load_object(payload: bytes | str) -> dict[str, Any]:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", type(obj).__name__)
    return obj


def _validate(model: type[BaseModel], obj: dict[str, Any]) -> Any:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise DecodeError("invalid_fields", f"{where}: {first['msg']}") from None


def decode_message(payload: bytes | str, expected_type: str | None = None, verifier: Verifier | None = None) -> Message:
    """Decode one Redis message; raise DecodeError for bad JSON, unknown type/version or invalid fields, and with
    a `verifier` for a message that is `unsigned` or has a `bad_signature`."""
    obj = _load_object(payload)
    if verifier is not None:
        try:
            verifier.verify(obj)
        except SignatureError as exc:
            raise DecodeError(exc.reason, exc.detail) from None
    kind = obj.get("type")
    if expected_type is not None and kind != expected_type:
        raise DecodeError("wrong_type", f"expected {expected_type!r}, got {kind!r}")
    known = _MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if known is None:
        raise DecodeError("unknown_type", repr(kind))
    model, versions = known
    version = obj.get("schema_version")
    if type(version) is not int or version not in versions:
        raise DecodeError("unknown_schema_version", f"{kind} schema_version {version!r}")
    missing = [name for name in ENVELOPE_FIELDS if name not in obj]
    if missing:
        raise DecodeError("invalid_fields", f"missing {', '.join(missing)}")
    message: Message = _validate(model, obj)
    return message


def decode_event(line: bytes | str) -> MarketEvent:
    """Decode one recording line; DecodeError (reason `unknown_type` for a type to skip and count) otherwise."""
    obj = _load_object(line)
    kind = obj.get("type")
    model = _EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise DecodeError("unknown_type", repr(kind))
    event: MarketEvent = _validate(model, obj)
    return event


def json_schemas() -> dict[str, Any]:
    """JSON Schemas of every message and event model, keyed by type.

    `book`, `gas` and `pool` are both recorded events (keyed by type) and messages (keyed `book_message`, …).
    """
    schemas: dict[str, Any] = {
        f"{name}_message" if name in _MARKET_MESSAGE_TYPES else name: model.model_json_schema()
        for name, (model, _) in _MESSAGE_TYPES.items()
    }
    schemas.update({name: model.model_json_schema() for name, model in _EVENT_TYPES.items()})
    return schemas
