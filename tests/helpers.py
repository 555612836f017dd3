"""Helpers shared by the tests: wait on conditions with a deadline, pick ports."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from bot.messages import Costs, Signal

T = TypeVar("T")


# `timeout` is a polling deadline, not a cancellation scope, so asyncio.timeout() does not fit.
async def eventually(
    predicate: Callable[[], T],
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Poll `predicate` until it returns something truthy, and return that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(message or f"condition not met within {timeout} s")
        await asyncio.sleep(min(interval, remaining))


async def eventually_async(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 10.0,  # noqa: ASYNC109
    interval: float = 0.05,
    message: str = "",
) -> T:
    """`eventually` for a predicate that must be awaited (an HTTP probe, a Redis read)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(message or f"condition not met within {timeout} s")
        await asyncio.sleep(min(interval, remaining))


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = "") -> T:
    """Poll `predicate` until it returns something truthy, and return that (blocking)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(message or f"condition not met within {timeout} s")
        time.sleep(min(interval, remaining))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_signal(**overrides: object) -> Signal:
    """A valid open cex_cex signal; keyword arguments replace any field."""
    fields: dict[str, object] = {
        "ts": 1_763_700_000_123,
        "opportunity_id": "opp-1",
        "status": "open",
        "kind": "cex_cex",
        "symbol": "BTC/USDT",
        "buy_venue": "alpha",
        "sell_venue": "beta",
        "buy_price": 97000.1,
        "sell_price": 97010.3,
        "buy_book_ts": 1_763_700_000_100,
        "sell_book_ts": 1_763_700_000_123,
        "size": 0.25,
        "gross_edge_bps": 1.05,
        "net_edge_bps": 0.55,
        "costs": Costs(fees=4.85),
        "score": 0.4,
        "expected_lifetime_ms": 160.0,
        "expected_edge_bps": 0.22,
        "model": "rule",
    }
    fields.update(overrides)
    return Signal.model_validate(fields)


def run_child(args: Sequence[str], env: Mapping[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` (text, output captured) for a Python child that might hang: on the deadline the child
    prints every thread's stack (SIGABRT with faulthandler on), and the test fails showing them."""
    with subprocess.Popen(
        list(args), env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGABRT)
            try:
                out, err = child.communicate(timeout=10.0)
            except subprocess.TimeoutExpired:
                child.kill()
                out, err = child.communicate()
            stacks = err[-20_000:]
            raise AssertionError(f"{' '.join(args)} still ran after {timeout:g} s; its stacks:\n{stacks}") from None
    return subprocess.CompletedProcess(list(args), child.returncode, out, err)
