"""Message signatures (DESIGN.md "Redis channels"): `sig` is the hex HMAC-SHA256 of the message without `sig`,
serialised by the JSON Canonicalization Scheme (RFC 8785), so a consumer in any language can check it.

A `Signer` adds `sig`; a `Verifier` refuses a message without one (`unsigned`) or with a wrong one
(`bad_signature`). Both hold the key and never show it (`repr` says `<hidden>`). A role gets them through a
`Signing` passed to it; without a key both are None and messages go out and come in unsigned.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785

SIG_FIELD = "sig"
MIN_KEY_BYTES = 16
"""Shortest signing key accepted: HMAC is only as strong as its key."""


class SignatureError(ValueError):
    """A message that fails verification; `reason` is `unsigned` or `bad_signature`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The RFC 8785 form of a message without its `sig`; SignatureError for a value JCS cannot represent (an
    integer beyond ±2**53, say)."""
    try:
        return rfc8785.dumps({key: value for key, value in fields.items() if key != SIG_FIELD})
    except rfc8785.CanonicalizationError as exc:
        raise SignatureError("bad_signature", f"not canonicalisable ({exc})") from None


class _Keyed:
    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a signing key needs at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = key

    def signature(self, fields: Mapping[str, Any]) -> str:
        """Hex HMAC-SHA256 of the canonical form of `fields` without `sig`."""
        return hmac.new(self._key, canonical(fields), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<hidden>)"


class Signer(_Keyed):
    """Sign messages with one HMAC-SHA256 key."""

    __slots__ = ()

    def sign(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """`fields` with `sig` set (any `sig` it had is replaced), in their order, `sig` last."""
        unsigned = {key: value for key, value in fields.items() if key != SIG_FIELD}
        return {**unsigned, SIG_FIELD: self.signature(unsigned)}

    def sign_payload(self, payload: bytes) -> bytes:
        """Sign a message already serialised (a fill the paper ledger stored): the same JSON plus `sig`."""
        fields = orjson.loads(payload)
        if not isinstance(fields, dict):
            raise ValueError("only a JSON object can be signed")
        return orjson.dumps(self.sign(fields))


class Verifier(_Keyed):
    """Check the `sig` of messages against one HMAC-SHA256 key."""

    __slots__ = ()

    def verify(self, fields: Mapping[str, Any]) -> None:
        """Return if `sig` is right; SignatureError `unsigned` without one, `bad_signature` if it is wrong."""
        given = fields.get(SIG_FIELD)
        if given is None:
            raise SignatureError("unsigned", "no sig while a signing key is configured")
        if not isinstance(given, str):
            raise SignatureError("bad_signature", f"sig is a {type(given).__name__}, not a hex string")
        if not hmac.compare_digest(self.signature(fields).encode(), given.encode("utf-8", "replace")):
            raise SignatureError("bad_signature", "sig does not match the message")


@dataclass(frozen=True, slots=True)
class Signing:
    """What a role signs with and verifies by: both None when no key is configured (nothing signed or checked)."""

    signer: Signer | None = None
    verifier: Verifier | None = None

    @classmethod
    def from_key(cls, key: bytes | None) -> Signing:
        """Sign and verify with `key`, or neither without one."""
        if key is None:
            return cls()
        return cls(Signer(key), Verifier(key))

    @property
    def enabled(self) -> bool:
        return self.signer is not None
