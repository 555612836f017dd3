"""Message signatures (DESIGN.md "Redis channels"): hex HMAC-SHA256 of the RFC 8785 form of the message without
`sig`, reproducible outside Python; the codec rejects unsigned and badly signed messages when given a key."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import orjson
import pytest
import rfc8785
from helpers import make_signal
from hypothesis import given
from hypothesis import strategies as st

from bot.bus.codec import DecodeError, decode_message, encode
from bot.bus.signing import MIN_KEY_BYTES, SignatureError, Signer, Signing, Verifier, canonical
from bot.messages import Signal

KEY = b"arbbot-test-signing-key-0123456789"
MESSAGE: dict[str, Any] = {
    "type": "signal",
    "schema_version": 1,
    "id": "7f0c2a52-6f1e-4c7e-9d1a-2b0e7a6c5d40",
    "ts": 1763700000123,
    "symbol": "BTC/USDT",
    "buy_price": 97000.0,
    "size": 0.25,
    "costs": {"gas": 0.0, "fees": 4.85},
    "note": 'café € "q"\n',
    "tiny": 1e-7,
    "huge": 1e21,
}
# Written by hand from RFC 8785: keys sorted, no whitespace, 97000.0 as 97000, 1e21 as 1e+21, only `"`, `\` and
# control characters escaped.
CANONICAL = (
    '{"buy_price":97000,"costs":{"fees":4.85,"gas":0},"huge":1e+21,"id":"7f0c2a52-6f1e-4c7e-9d1a-2b0e7a6c5d40",'
    '"note":"café € \\"q\\"\\n","schema_version":1,"size":0.25,"symbol":"BTC/USDT","tiny":1e-7,"ts":1763700000123,'
    '"type":"signal"}'
)
# The same, from `printf '%s' CANONICAL | openssl dgst -sha256 -hmac KEY`.
SIGNATURE = "c4ad30c932ca30472174c4dbdd2085c97b3f1cef90ada20eb703e9a440939d16"


def test_signature_is_hmac_sha256_of_the_canonical_form() -> None:
    assert canonical(MESSAGE).decode() == CANONICAL
    assert hmac.new(KEY, CANONICAL.encode(), hashlib.sha256).hexdigest() == SIGNATURE
    signed = Signer(KEY).sign(MESSAGE)
    assert signed["sig"] == SIGNATURE
    assert list(signed)[-1] == "sig"
    assert {k: v for k, v in signed.items() if k != "sig"} == MESSAGE


def test_the_readme_consumer_checks_a_published_payload() -> None:
    """README's five lines (json, rfc8785, hmac) accept a published signal and refuse it once a field changed."""

    def verify(payload: bytes, key: bytes) -> bool:
        message = json.loads(payload)
        sig = message.pop("sig", "")
        expected = hmac.new(key, rfc8785.dumps(message), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, sig)

    payload = encode(make_signal(), Signer(KEY))
    assert verify(payload, KEY)
    assert not verify(payload.replace(b'"size":0.25', b'"size":2.5'), KEY)
    assert not verify(payload, KEY[::-1])


def test_rfc8785_number_and_string_example() -> None:
    """The example of RFC 8785 §3.2.2 (numbers formatted as ECMAScript does, strings escaped minimally)."""
    parsed = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], '
        '"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical(parsed).decode() == expected


def test_the_codec_signs_and_verifies() -> None:
    signing = Signing.from_key(KEY)
    signal = make_signal()
    payload = encode(signal, signing.signer)
    sig = orjson.loads(payload)["sig"]
    assert sig == Signer(KEY).signature(orjson.loads(encode(signal)))
    assert decode_message(payload, "signal", signing.verifier) == signal.model_copy(update={"sig": sig})
    assert decode_message(payload) == signal.model_copy(update={"sig": sig})  # without a key `sig` is not checked


def _reason(payload: bytes, verifier: Verifier) -> str:
    with pytest.raises(DecodeError) as info:
        decode_message(payload, None, verifier)
    return info.value.reason


def test_tampered_unsigned_and_foreign_messages_are_rejected() -> None:
    verifier = Verifier(KEY)
    signed = orjson.loads(encode(make_signal(), Signer(KEY)))
    tampered = orjson.dumps({**signed, "size": signed["size"] * 10})
    assert _reason(tampered, verifier) == "bad_signature"
    unsigned = encode(make_signal())
    assert _reason(unsigned, verifier) == "unsigned"
    assert decode_message(unsigned).sig is None
    foreign = encode(make_signal(), Signer(b"another-key-of-the-same-length-xx"))
    assert _reason(foreign, verifier) == "bad_signature"
    assert _reason(orjson.dumps({**signed, "sig": signed["sig"].upper()}), verifier) == "bad_signature"
    assert _reason(orjson.dumps({**signed, "sig": 12}), verifier) == "bad_signature"
    assert _reason(orjson.dumps({**signed, "sig": None}), verifier) == "unsigned"
    # An integer JCS cannot represent (beyond 2**53) is a rejection, not a crash.
    assert _reason(orjson.dumps({**signed, "ts": 2**60}), verifier) == "bad_signature"
    assert _reason(b"[1, 2]", verifier) == "not_an_object"


def test_adding_a_field_breaks_the_signature() -> None:
    signed = Signer(KEY).sign(MESSAGE)
    with pytest.raises(SignatureError) as info:
        Verifier(KEY).verify({**signed, "extra": 1})
    assert info.value.reason == "bad_signature"
    Verifier(KEY).verify(signed)


def test_resigning_a_stored_payload_replaces_its_sig() -> None:
    signer = Signer(KEY)
    stored = encode(make_signal())
    once = signer.sign_payload(stored)
    assert signer.sign_payload(once) == once
    Verifier(KEY).verify(orjson.loads(once))
    with pytest.raises(ValueError):
        signer.sign_payload(b"[1]")


def test_keys_are_never_shown_and_must_be_long_enough() -> None:
    signing = Signing.from_key(KEY)
    assert KEY.decode() not in repr(signing)
    assert "<hidden>" in repr(signing.signer)
    with pytest.raises(ValueError, match=str(MIN_KEY_BYTES)):
        Signer(b"short")
    assert Signing.from_key(None) == Signing()
    assert not Signing().enabled and signing.enabled


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_a_signature_survives_the_wire(fields: dict[str, Any]) -> None:
    """Signed, serialised by orjson and parsed again, any JSON object still verifies: the canonical form depends
    on the values alone, not on how the sender wrote them."""
    wire = orjson.dumps(Signer(KEY).sign(fields))
    Verifier(KEY).verify(orjson.loads(wire))
    Verifier(KEY).verify(json.loads(wire))


def test_a_decoded_message_signed_again_verifies() -> None:
    """A message decoded with its `sig` and published again (signed by another role's key) carries the new one."""
    decoded = decode_message(encode(make_signal(), Signer(KEY)), "signal", Verifier(KEY))
    assert isinstance(decoded, Signal) and decoded.sig is not None
    other = b"the-other-role-key-0123456789"
    again = decode_message(encode(decoded, Signer(other)), "signal", Verifier(other))
    assert again.sig is not None and again.sig != decoded.sig
