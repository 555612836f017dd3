"""The Uniswap V3 importer on real pool logs: virtual reserves reproduce each pool's price, the per-minute price
series of the data set, and the in-range liquidity that the next swap reports."""

from __future__ import annotations

import csv
import gzip
import math
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.events import GasEvent, MarketEvent, PoolEvent
from bot.importers.uniswap_v3 import (
    USDC_WETH_POOLS,
    GasAssumption,
    UniswapImportReport,
    import_uniswap_v3,
    virtual_reserves,
)
from bot.recording import RecordingError, read_events
from bot.rejections import RejectionCounter

FIXTURES = Path(__file__).parent / "fixtures" / "uniswap_v3"
FAST, SLOW = "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640", "0x8ad599c3a0ff1de082011efddc58f1908eb6e6d8"
TICK_FILES = {
    FAST: FIXTURES / f"ethereum-{FAST}-2024-01-05.tick.csv.gz",
    SLOW: FIXTURES / f"ethereum-{SLOW}-2024-01-05.pool.tick.csv.gz",
}
PRICE_COLUMN = {FAST: "eth", SLOW: "weth"}
"""The ETH price column of each pool's rel-price file."""


@dataclass
class Imported:
    report: UniswapImportReport
    events: list[MarketEvent]

    def pool_events(self, address: str) -> list[PoolEvent]:
        return [event for event in self.events if isinstance(event, PoolEvent) and event.pool == address]


def run_import(data_dir: Path, out: Path, gas: GasAssumption | None = None) -> Imported:
    """Import, then read the recording back through the recording reader, which must reject nothing."""
    report = import_uniswap_v3(data_dir, out, gas)
    rejections = RejectionCounter()
    events = list(read_events(out, rejections))
    assert rejections.total == 0
    return Imported(report, events)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    return run_import(FIXTURES, tmp_path_factory.mktemp("uniswap") / "pools.jsonl.gz")


def rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as file:
        return list(csv.DictReader(file))


def state_rows(address: str) -> list[dict[str, str]]:
    """The rows that change a pool's state (all but Collect), in file order."""
    return [row for row in rows(TICK_FILES[address]) if row["tx_type"] != "COLLECT"]


def block_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def exact_eth_price(sqrt_price_x96: int) -> Fraction:
    """USDC per ETH: P = sqrtPriceX96² / 2¹⁹² is raw WETH per raw USDC, so 1 ETH = 1 / (P·10^(6-18)) USDC."""
    p = Fraction(sqrt_price_x96**2, 2**192)
    return 1 / (p * Fraction(10**6, 10**18))


def liquidity_of(event: PoolEvent) -> float:
    """Recover L from the virtual reserves: (L/√P)·(L·√P) = L², in raw units."""
    return math.sqrt(event.reserve_quote * 1e6 * event.reserve_base * 1e18)


def test_every_state_row_becomes_one_valid_pool_event(imported: Imported) -> None:
    for spec in USDC_WETH_POOLS:
        events, expected = imported.pool_events(spec.address), state_rows(spec.address)
        assert len(events) == len(expected) == imported.report.pools[spec.address].events
        for event, row in zip(events, expected, strict=True):
            assert (event.chain, event.dex, event.symbol, event.base, event.quote) == (
                "ethereum",
                "uniswap_v3",
                "ETH/USDC",
                "ETH",
                "USDC",
            )
            assert event.fee_bps == spec.fee_bps
            assert (event.block, event.ts) == (int(row["block_number"]), block_ms(row["block_timestamp"]))
    counts = imported.report.pools[FAST]
    assert counts.skipped_collect == counts.rows_by_type["COLLECT"] > 0
    assert counts.rows == sum(counts.rows_by_type.values()) == 782


def test_events_are_in_block_order_with_a_gas_event_opening_each_block(imported: Imported) -> None:
    blocks = [event.block for event in imported.events if isinstance(event, PoolEvent | GasEvent)]
    assert blocks == sorted(blocks)
    assert [event.ts for event in imported.events] == sorted(event.ts for event in imported.events)
    gas_blocks: set[int] = set()
    for event in imported.events:
        if isinstance(event, GasEvent):
            assert event.block not in gas_blocks
            gas_blocks.add(event.block)
            assert (event.base_fee_gwei, event.priority_fee_gwei) == (20.0, 1.0)
        else:
            assert isinstance(event, PoolEvent)
            assert event.block in gas_blocks, "a pool event before its block's gas event"
    assert len(gas_blocks) == imported.report.gas_events
    assert len({event.block for event in imported.events if isinstance(event, PoolEvent)}) == len(gas_blocks)
    # Both pools traded in some blocks: their events interleave in one stream.
    first_slow = next(i for i, e in enumerate(imported.events) if isinstance(e, PoolEvent) and e.pool == SLOW)
    assert any(isinstance(e, PoolEvent) and e.pool == FAST for e in imported.events[first_slow:])


def test_virtual_reserves_reproduce_each_rows_price(imported: Imported) -> None:
    for address in (FAST, SLOW):
        for event, row in zip(imported.pool_events(address), state_rows(address), strict=True):
            exact = exact_eth_price(int(row["sqrtPriceX96"]))
            assert event.price == pytest.approx(float(exact), rel=1e-9)


def test_prices_match_the_data_sets_per_minute_eth_price(imported: Imported) -> None:
    """rel-price's row for minute m holds the pool's state after the last event before m + 60 s."""
    for address in (FAST, SLOW):
        events = imported.pool_events(address)
        stamps = [event.ts for event in events]
        compared = 0
        for minute in rows(FIXTURES / f"ethereum-{address}-2024-01-05.rel-price.csv.gz"):
            last = bisect_left(stamps, block_ms(minute["block_timestamp"]) + 60_000) - 1
            if last < 0:
                continue  # Before the pool's first event of the day the file carries its first state backwards.
            assert events[last].price == pytest.approx(float(minute[PRICE_COLUMN[address]]), rel=1e-9)
            compared += 1
        assert compared >= 100


def test_swap_rows_keep_their_liquidity_and_mints_burns_are_recomputed(imported: Imported) -> None:
    checked = 0
    for address in (FAST, SLOW):
        events, expected = imported.pool_events(address), state_rows(address)
        for event, row in zip(events, expected, strict=True):
            if row["tx_type"] == "SWAP":
                assert liquidity_of(event) == pytest.approx(int(row["total_liquidity"]), rel=1e-9)
        # A mint or burn's liquidity is what the next swap in the same tick reports (no tick crossed in between).
        for (event, row), (_, next_row) in pairwise(zip(events, expected, strict=True)):
            if (
                row["tx_type"] != "SWAP"
                and next_row["tx_type"] == "SWAP"
                and row["current_tick"] == next_row["current_tick"]
            ):
                assert liquidity_of(event) == pytest.approx(int(next_row["total_liquidity"]), rel=1e-9)
                checked += 1
    assert checked >= 5


def test_just_in_time_liquidity_at_the_current_tick_counts_as_in_range(imported: Imported) -> None:
    # Block 18937743: a mint over ticks [199050, 199060) at tick 199050 is in range, though the file says it is not;
    # the swap after it trades against 386.65e18 of liquidity, 31 times the usual 12.44e18.
    mint = next(
        event
        for event, row in zip(imported.pool_events(FAST), state_rows(FAST), strict=True)
        if row["block_number"] == "18937743" and row["tx_type"] == "MINT"
    )
    assert liquidity_of(mint) == pytest.approx(386_652_769_664_017_856_909, rel=1e-9)
    assert imported.report.pools[FAST].liquidity_recomputed >= 2


def test_report_is_json_and_states_the_gas_assumption(imported: Imported) -> None:
    report = orjson.loads(orjson.dumps(imported.report.to_json()))
    assert report["pool_events"] == len(imported.pool_events(FAST)) + len(imported.pool_events(SLOW))
    assert report["gas_events"] == imported.report.gas_events
    assert report["blocks"] == [18937382, 18938099]
    assert report["gas_assumption"]["base_fee_gwei"] == 20.0
    assert "assumed" in report["gas_assumption"]["source"]
    assert report["pools"][SLOW]["fee_bps"] == 30.0


def test_gas_every_n_blocks(tmp_path: Path) -> None:
    gas = GasAssumption(base_fee_gwei=31.5, priority_fee_gwei=0.25, gas_used_ratio=0.6, every_blocks=10)
    result = run_import(FIXTURES, tmp_path / "pools.jsonl", gas)
    gas_events = [event for event in result.events if isinstance(event, GasEvent)]
    assert {(e.base_fee_gwei, e.priority_fee_gwei, e.gas_used_ratio) for e in gas_events} == {(31.5, 0.25, 0.6)}
    gaps = [later.block - earlier.block for earlier, later in pairwise(gas_events)]
    assert min(gaps) >= 10
    assert result.events[0] == gas_events[0]
    assert result.report.gas_events == len(gas_events) < 200


def test_missing_or_broken_input_is_a_one_line_error_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "pools.jsonl.gz"
    with pytest.raises(RecordingError, match="no such folder"):
        import_uniswap_v3(tmp_path / "absent", out)
    with pytest.raises(RecordingError, match=f"no tick file for pool {FAST}"):
        import_uniswap_v3(tmp_path, out)
    for path in TICK_FILES.values():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / TICK_FILES[SLOW].name).write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(RecordingError, match="not a readable tick file"):
        import_uniswap_v3(tmp_path, out)
    assert not out.exists()
    assert [path.name for path in tmp_path.iterdir() if "partial" in path.name] == []


@given(
    sqrt_price_x96=st.integers(min_value=2**80, max_value=2**120),
    liquidity=st.integers(min_value=10**6, max_value=10**30),
)
def test_virtual_reserves_price_and_depth(sqrt_price_x96: int, liquidity: int) -> None:
    usdc, weth = virtual_reserves(sqrt_price_x96, liquidity, 6, 18)
    assert usdc / weth == pytest.approx(float(exact_eth_price(sqrt_price_x96)), rel=1e-9)
    assert usdc * 1e6 * weth * 1e18 == pytest.approx(float(liquidity) ** 2, rel=1e-9)
