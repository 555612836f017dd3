"""Slippage per leg: hand-computed books and pools, and properties of the walk (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.events import PoolEvent
from bot.risk.slippage import swap, walk_book

ASKS = ((100.0, 1.0), (101.0, 2.0), (103.0, 5.0))
BIDS = ((99.0, 1.0), (98.0, 1.0), (95.0, 10.0))


@pytest.mark.parametrize(
    ("levels", "size", "avg", "bps", "worst"),
    [
        (ASKS, 0.5, 100.0, 0.0, 100.0),
        (ASKS, 2.0, 100.5, 50.0, 101.0),  # (100 + 101) / 2
        (ASKS, 3.5, 101.0, 100.0, 103.0),  # (100 + 202 + 51.5) / 3.5
        (BIDS, 2.0, 98.5, 10_000 * 0.5 / 99, 98.0),  # a sell: (99 + 98) / 2
        (BIDS, 4.0, 96.75, 10_000 * 2.25 / 99, 95.0),  # (99 + 98 + 190) / 4
    ],
)
def test_book_walk_by_hand(
    levels: tuple[tuple[float, float], ...], size: float, avg: float, bps: float, worst: float
) -> None:
    leg = walk_book(levels, size)
    assert leg is not None
    assert leg.avg_price == pytest.approx(avg, rel=1e-12)
    assert leg.slippage_bps == pytest.approx(bps, rel=1e-9, abs=1e-9)
    assert leg.worst_price == worst


def test_book_too_thin_or_nothing_to_take() -> None:
    assert walk_book(ASKS, 8.5) is None
    assert walk_book(ASKS, 0.0) is None
    assert walk_book((), 1.0) is None


POOL = PoolEvent(
    chain="ethereum", dex="uniswap_v2", pool="0xabc", symbol="ETH/USDT", base="ETH", quote="USDT",
    reserve_base=100.0, reserve_quote=10_000.0, fee_bps=30, block=1, ts=1,
)  # fmt: skip


def test_pool_sell_by_hand() -> None:
    leg = swap(POOL, "sell", 1.0)
    assert leg is not None
    out = 0.997 * 10_000 / (100 + 0.997)  # x·g·R_q / (R_b + x·g), x = 1
    assert leg.avg_price == pytest.approx(out, rel=1e-12)
    assert leg.best_price == pytest.approx(99.7, rel=1e-12)  # spot 100 × (1 − 0.003)
    assert leg.slippage_bps == pytest.approx((99.7 - out) / 99.7 * 1e4, rel=1e-9)


def test_pool_buy_by_hand() -> None:
    leg = swap(POOL, "buy", 1.0)
    assert leg is not None
    cost = 10_000 * 1.0 / (99.0 * 0.997)  # R_q·b / ((R_b − b)·g)
    assert leg.avg_price == pytest.approx(cost, rel=1e-12)
    assert leg.best_price == pytest.approx(100 / 0.997, rel=1e-12)
    assert leg.slippage_bps == pytest.approx((cost - 100 / 0.997) / (100 / 0.997) * 1e4, rel=1e-9)
    assert swap(POOL, "buy", 100.0) is None  # the whole reserve is not for sale
    assert swap(POOL, "sell", 0.0) is None


prices = st.floats(min_value=0.01, max_value=1e6, allow_nan=False)
sizes = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False)


@st.composite
def books(draw: st.DrawFn) -> tuple[str, tuple[tuple[float, float], ...]]:
    side = draw(st.sampled_from(["buy", "sell"]))
    start = draw(prices)
    steps = draw(st.lists(st.floats(min_value=1e-4, max_value=0.05), min_size=0, max_size=15))
    levels = [start]
    for step in steps:
        levels.append(levels[-1] * (1 + step) if side == "buy" else levels[-1] * (1 - step))
    amounts = draw(st.lists(sizes, min_size=len(levels), max_size=len(levels)))
    return side, tuple(zip(levels, amounts, strict=True))


def brute_force(levels: tuple[tuple[float, float], ...], size: float, parts: int = 1) -> float | None:
    """Take the size in `parts` equal bites, each from the best level with something left."""
    left = [amount for _, amount in levels]
    bite = size / parts
    total = 0.0
    for _ in range(parts):
        need = bite
        for i, (price, _) in enumerate(levels):
            take = min(left[i], need)
            left[i] -= take
            total += take * price
            need -= take
            if need <= bite * 1e-12:
                break
        else:
            return None
    return total / size


@given(books(), st.floats(min_value=0.01, max_value=1.0), st.floats(min_value=0.01, max_value=1.0))
def test_book_slippage_grows_with_size_and_is_never_negative(
    book: tuple[str, tuple[tuple[float, float], ...]], a: float, b: float
) -> None:
    _, levels = book
    depth = sum(amount for _, amount in levels)
    small, large = sorted((a * depth, b * depth))
    first, second = walk_book(levels, small), walk_book(levels, large)
    assert first is not None
    assert second is not None
    assert first.slippage_bps >= 0.0
    assert second.slippage_bps >= first.slippage_bps - 1e-9


@given(books(), st.floats(min_value=0.01, max_value=1.0), st.integers(min_value=1, max_value=7))
def test_book_walk_matches_a_brute_force_walk(
    book: tuple[str, tuple[tuple[float, float], ...]], fraction: float, parts: int
) -> None:
    _, levels = book
    size = fraction * sum(amount for _, amount in levels)
    leg = walk_book(levels, size)
    expected = brute_force(levels, size, parts)
    assert leg is not None
    assert expected is not None
    assert leg.avg_price == pytest.approx(expected, rel=1e-9)


pools = st.builds(
    lambda rb, rq, fee: PoolEvent(
        chain="c", dex="d", pool="p", symbol="A/B", base="A", quote="B", reserve_base=rb, reserve_quote=rq,
        fee_bps=fee, block=1, ts=1,
    ),
    st.floats(min_value=1.0, max_value=1e7),
    st.floats(min_value=1.0, max_value=1e9),
    st.sampled_from([0, 1, 5, 30, 100]),
)  # fmt: skip


@given(
    pools,
    st.sampled_from(["buy", "sell"]),
    st.floats(min_value=1e-6, max_value=0.9),
    st.floats(min_value=1e-6, max_value=0.9),
)
def test_pool_slippage_grows_with_size_and_is_never_negative(pool: PoolEvent, side: str, a: float, b: float) -> None:
    small, large = sorted((a * pool.reserve_base, b * pool.reserve_base))
    first, second = swap(pool, side, small), swap(pool, side, large)  # type: ignore[arg-type]
    assert first is not None
    assert second is not None
    assert first.slippage_bps >= 0.0
    assert second.slippage_bps >= first.slippage_bps - 1e-6
