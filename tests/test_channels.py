"""Channel and stream names, and password redaction in Redis URLs."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.bus.channels import DEFAULT_PREFIX, Channels
from bot.bus.redis_url import redact_url


def test_default_prefix_is_arb() -> None:
    assert DEFAULT_PREFIX == "arb"
    assert Channels().prefix == "arb"


def test_signal_channel_and_stream() -> None:
    channels = Channels()
    assert channels.signal("cex_cex", "BTC/USDT") == "arb:signal:cex_cex:BTC/USDT"
    assert channels.signal("dex_dex", "ETH/USDC") == "arb:signal:dex_dex:ETH/USDC"
    assert channels.signal_pattern() == "arb:signal:*"
    assert channels.signal_stream() == "arb:stream:signal"


def test_custom_prefix() -> None:
    channels = Channels("paper7")
    assert channels.signal("cex_cex", "BTC/USDT") == "paper7:signal:cex_cex:BTC/USDT"
    assert channels.signal_pattern() == "paper7:signal:*"
    assert channels.signal_stream() == "paper7:stream:signal"
    assert channels.stream_for_pattern("paper7:signal:*") == "paper7:stream:signal"
    # Another prefix's channels have no stream here.
    assert channels.stream_for_pattern("arb:signal:*") is None


@pytest.mark.parametrize(
    ("pattern", "stream"),
    [
        ("arb:signal:*", "arb:stream:signal"),
        ("arb:signal:cex_cex:*", "arb:stream:signal"),
        ("arb:signal:cex_cex:BTC/USDT", "arb:stream:signal"),
        ("arb:decision:*", "arb:stream:decision"),
        ("arb:fill:BTC/USDT", "arb:stream:fill"),
    ],
)
def test_stream_for_pattern(pattern: str, stream: str) -> None:
    assert Channels().stream_for_pattern(pattern) == stream


@pytest.mark.parametrize(
    "pattern",
    [
        "arb:book:*",  # book, gas, pool, control and heartbeat channels have no stream
        "arb:gas:ethereum",
        "arb:heartbeat:*",
        "arb:control:risk",
        "arb:*",
        "arb:bogus:*",
        "other:signal:*",
        "arbx:signal:*",
        "signal:*",
        "",
    ],
)
def test_stream_for_unknown_family_is_none(pattern: str) -> None:
    assert Channels().stream_for_pattern(pattern) is None


def test_signal_channel_matches_its_own_pattern_stream() -> None:
    channels = Channels("x")
    assert channels.stream_for_pattern(channels.signal("cex_cex", "BTC/USDT")) == channels.signal_stream()
    assert channels.stream_for_pattern(channels.signal_pattern()) == channels.signal_stream()


def test_channels_are_immutable() -> None:
    channels = Channels()
    with pytest.raises(AttributeError):
        channels.prefix = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- redact_url

passwords = st.text(min_size=1, max_size=24).filter(lambda p: p != "***")
users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", max_size=10)
hosts = st.sampled_from(["127.0.0.1", "localhost", "redis.internal", "10.0.0.7"])
ports = st.none() | st.integers(min_value=1, max_value=65535)
paths = st.sampled_from(["", "/0", "/15"])


def _netloc_host(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@given(st.sampled_from(["redis", "rediss"]), users, passwords, hosts, ports, paths)
def test_redact_hides_any_password(
    scheme: str, user: str, password: str, host: str, port: int | None, path: str
) -> None:
    encoded = quote(password, safe="")  # as a password must appear in a URL
    url = f"{scheme}://{user}:{encoded}@{_netloc_host(host, port)}{path}"
    redacted = redact_url(url)
    assert redacted == f"{scheme}://{user}:***@{_netloc_host(host, port)}{path}"


@given(st.sampled_from(["redis", "rediss"]), users, hosts, ports, paths)
def test_redact_leaves_password_less_urls_unchanged(
    scheme: str, user: str, host: str, port: int | None, path: str
) -> None:
    userinfo = f"{user}@" if user else ""
    url = f"{scheme}://{userinfo}{_netloc_host(host, port)}{path}"
    assert redact_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "unix:///var/run/redis.sock", "redis://localhost", "not a url at all", ""],
)
def test_redact_leaves_other_urls_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_redact_keeps_an_ipv6_host_usable() -> None:
    assert redact_url("redis://:secret@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


@pytest.mark.parametrize("url", ["redis://:secret@host:notaport/0", "redis://:secret@host:99999/0"])
def test_redact_never_raises_nor_leaks_on_a_bad_port(url: str) -> None:
    assert "secret" not in redact_url(url)


def test_every_design_channel_and_stream() -> None:
    channels = Channels()
    assert channels.decision("BTC/USDT") == "arb:decision:BTC/USDT"
    assert channels.decision_pattern() == "arb:decision:*"
    assert channels.decision_stream() == "arb:stream:decision"
    assert channels.fill("ETH/USDC") == "arb:fill:ETH/USDC"
    assert channels.fill_pattern() == "arb:fill:*"
    assert channels.fill_stream() == "arb:stream:fill"
    assert channels.book("okx", "BTC/USDT") == "arb:book:okx:BTC/USDT"
    assert channels.book_pattern() == "arb:book:*"
    assert channels.gas("ethereum") == "arb:gas:ethereum"
    assert channels.gas_pattern() == "arb:gas:*"
    assert channels.pool("ethereum", "0xb4e1") == "arb:pool:ethereum:0xb4e1"
    assert channels.pool_pattern() == "arb:pool:*"
    assert channels.control("risk") == "arb:control:risk"
    assert channels.heartbeat("paper") == "arb:heartbeat:paper"
    assert channels.heartbeat_pattern() == "arb:heartbeat:*"
    assert channels.key("risk", "last_signal_id") == "arb:state:risk:last_signal_id"


def test_decision_and_fill_channels_map_to_their_streams() -> None:
    channels = Channels("p")
    assert channels.stream_for_pattern(channels.decision("BTC/USDT")) == channels.decision_stream()
    assert channels.stream_for_pattern(channels.decision_pattern()) == channels.decision_stream()
    assert channels.stream_for_pattern(channels.fill("BTC/USDT")) == channels.fill_stream()
    assert channels.stream_for_pattern(channels.fill_pattern()) == channels.fill_stream()
    assert channels.stream_for_pattern(channels.book_pattern()) is None
