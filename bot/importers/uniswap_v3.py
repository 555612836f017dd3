"""Import Uniswap V3 pool states (demeter-fetch's decoded tick files) into a recording of `pool` and `gas` events.

Each pool's `*.tick.csv[.gz]` (or `*.pool.tick.csv[.gz]`) row is one Swap, Mint, Burn or Collect log with the pool's
sqrtPriceX96 and in-range liquidity. A pool is written as the virtual reserves of its current tick range
(DESIGN.md, "Events"): with P = sqrtPriceX96² / 2¹⁹², token0 holds L/√P and token1 L·√P, in raw units.

Which rows become events, and with what liquidity:
- Swap rows carry the Swap log's own sqrtPriceX96 and liquidity (checked against the raw logs: all equal).
- Mint and Burn rows keep the price; their liquidity is recomputed from the last state plus the position's
  liquidity when the position is in range (tick_lower <= tick < tick_upper, as the pool contract decides), because
  the file's `total_liquidity` misses in-range positions whose lower tick equals the current tick (just-in-time
  liquidity). Report field `liquidity_recomputed` counts the rows where the two differ.
- Collect rows change neither price nor liquidity (and their `total_liquidity` is often stale): skipped.

The files hold no gas prices (the raw logs carry no transaction data), so `gas` events come from a stated
`GasAssumption`, one per distinct block (or every N blocks) of the imported pools, written before that block's pools.
"""

from __future__ import annotations

import csv
import gzip
import heapq
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from bot.events import GasEvent, PoolEvent
from bot.recording import RecordingError, RecordingWriter

_Q96 = 2**96
_CANONICAL = {"WETH": "ETH"}
"""Wrapped native tokens and their canonical asset names."""


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One Uniswap V3 pool: its address, fee, tokens and the canonical pair it maps to."""

    address: str
    fee_bps: float
    token0: str
    decimals0: int
    token1: str
    decimals1: int
    base: str
    """Canonical base asset: the canonical name of token0 or token1."""
    chain: str = "ethereum"
    dex: str = "uniswap_v3"

    @property
    def quote(self) -> str:
        names = (canonical_asset(self.token0), canonical_asset(self.token1))
        return names[1] if names[0] == self.base else names[0]

    @property
    def symbol(self) -> str:
        return f"{self.base}/{self.quote}"


USDC_WETH_POOLS = (
    PoolSpec("0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640", 5.0, "USDC", 6, "WETH", 18, base="ETH"),
    PoolSpec("0x8ad599c3a0ff1de082011efddc58f1908eb6e6d8", 30.0, "USDC", 6, "WETH", 18, base="ETH"),
)
"""The two USDC/WETH pools of `data/real/uniswap_v3/` (0.05% and 0.3%)."""


@dataclass(frozen=True, slots=True)
class GasAssumption:
    """A flat gas market, for data without gas prices: what every written `gas` event says.

    The default is typical of Ethereum mainnet in early January 2024 (base fee mostly 15-30 gwei; the Oct-Nov 2023
    median was 19.2 gwei, CALIBRATION.md) with a 1 gwei tip.
    """

    base_fee_gwei: float = 20.0
    priority_fee_gwei: float = 1.0
    gas_used_ratio: float = 0.5
    every_blocks: int = 1
    """Write a gas event at a block with pool events when at least this many blocks passed since the last one."""


@dataclass
class PoolCounts:
    """What one pool's files held and what became of them."""

    fee_bps: float
    files: list[str] = field(default_factory=list)
    rows: int = 0
    events: int = 0
    rows_by_type: dict[str, int] = field(default_factory=dict)
    skipped_collect: int = 0
    skipped_zero_liquidity: int = 0
    skipped_malformed: int = 0
    invalid_events: int = 0
    liquidity_recomputed: int = 0
    """Mint/Burn rows whose recomputed in-range liquidity differs from the file's `total_liquidity`."""
    first_block: int | None = None
    last_block: int | None = None


@dataclass
class UniswapImportReport:
    """What an import wrote: events per pool, the block range, and the gas assumption behind the gas events."""

    out: Path
    gas: GasAssumption
    pools: dict[str, PoolCounts] = field(default_factory=dict)
    gas_events: int = 0
    first_block: int | None = None
    last_block: int | None = None
    first_ts: int | None = None
    last_ts: int | None = None

    @property
    def pool_events(self) -> int:
        """Count the pool events written."""
        return sum(counts.events for counts in self.pools.values())

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready object."""
        return {
            "out": str(self.out),
            "pool_events": self.pool_events,
            "gas_events": self.gas_events,
            "blocks": [self.first_block, self.last_block],
            "ts": [self.first_ts, self.last_ts],
            "gas_assumption": {**asdict(self.gas), "source": "assumed: the data files hold no gas prices"},
            "pools": {address: asdict(counts) for address, counts in self.pools.items()},
        }


class _Row(NamedTuple):
    block: int
    log_index: int
    ts: int
    kind: str
    sqrt_price_x96: int
    total_liquidity: int
    tick: int
    tick_lower: int | None
    tick_upper: int | None
    position_liquidity: int


def canonical_asset(token: str) -> str:
    """Map a token to its canonical asset (WETH → ETH); other names stay as they are."""
    return _CANONICAL.get(token.upper(), token.upper())


def virtual_reserves(sqrt_price_x96: int, liquidity: int, decimals0: int, decimals1: int) -> tuple[float, float]:
    """Return token0's and token1's virtual reserves of the current range, in whole tokens."""
    sqrt_p = sqrt_price_x96 / _Q96
    return liquidity / sqrt_p / 10**decimals0, liquidity * sqrt_p / 10**decimals1


def _block_ms(text: str) -> int:
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # demeter-fetch writes UTC block times without an offset.
    return int(stamp.timestamp() * 1000)


def _int(text: str) -> int:
    # Ticks are written as floats ("199045.0").
    return int(text) if text.lstrip("-").isdigit() else int(float(text))


def _optional_int(text: str | None) -> int | None:
    return _int(text) if text else None


def _parse_row(raw: dict[str, str], log_column: str) -> _Row:
    return _Row(
        block=int(raw["block_number"]),
        log_index=int(raw[log_column]),
        ts=_block_ms(raw["block_timestamp"]),
        kind=raw["tx_type"].upper(),
        sqrt_price_x96=int(raw["sqrtPriceX96"]),
        total_liquidity=int(raw["total_liquidity"]),
        tick=_int(raw["current_tick"]),
        tick_lower=_optional_int(raw.get("tick_lower")),
        tick_upper=_optional_int(raw.get("tick_upper")),
        position_liquidity=_optional_int(raw.get("liquidity")) or 0,
    )


def tick_files(data_dir: Path, spec: PoolSpec) -> list[Path]:
    """Return a pool's tick files in `data_dir` (one per day, demeter-fetch's names), in date order."""
    prefix = f"{spec.chain}-{spec.address.lower()}-"
    return sorted(
        path
        for path in data_dir.iterdir()
        if path.name.lower().startswith(prefix) and path.name.endswith((".tick.csv", ".tick.csv.gz"))
    )


def _read_rows(path: Path, counts: PoolCounts) -> list[_Row]:
    rows = []
    try:
        with gzip.open(path, "rt", newline="") if path.name.endswith(".gz") else open(path, newline="") as file:
            reader = csv.DictReader(file)
            columns = reader.fieldnames or []
            # The 0.05% pool's file has `pool_log_index` (beside a proxy's log index); the other has `log_index`.
            log_column = "pool_log_index" if "pool_log_index" in columns else "log_index"
            missing = {"block_number", "block_timestamp", "tx_type", "sqrtPriceX96", "total_liquidity", log_column}
            missing -= set(columns)
            if missing:
                raise RecordingError(f"{path}: not a Uniswap V3 tick file (no column {', '.join(sorted(missing))})")
            for raw in reader:
                counts.rows += 1
                try:
                    rows.append(_parse_row(raw, log_column))
                except (KeyError, ValueError, TypeError):
                    counts.skipped_malformed += 1
    except (gzip.BadGzipFile, EOFError, zlib.error, csv.Error, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path}: not a readable tick file ({exc})") from None
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    return rows


def _pool_event(spec: PoolSpec, row: _Row, liquidity: int) -> PoolEvent:
    reserve0, reserve1 = virtual_reserves(row.sqrt_price_x96, liquidity, spec.decimals0, spec.decimals1)
    base_is_token0 = canonical_asset(spec.token0) == spec.base
    reserve_base, reserve_quote = (reserve0, reserve1) if base_is_token0 else (reserve1, reserve0)
    return PoolEvent(
        chain=spec.chain,
        dex=spec.dex,
        pool=spec.address,
        symbol=spec.symbol,
        base=spec.base,
        quote=spec.quote,
        reserve_base=reserve_base,
        reserve_quote=reserve_quote,
        fee_bps=spec.fee_bps,
        block=row.block,
        ts=row.ts,
        market=f"{spec.token0}/{spec.token1}",
    )


def _next_liquidity(row: _Row, liquidity: int | None, counts: PoolCounts) -> int:
    """Return the in-range liquidity after `row`, given the liquidity before it (None before the first row)."""
    if row.kind == "SWAP" or liquidity is None or row.tick_lower is None or row.tick_upper is None:
        return row.total_liquidity
    if row.tick_lower <= row.tick < row.tick_upper:
        liquidity += row.position_liquidity if row.kind == "MINT" else -row.position_liquidity
    if liquidity != row.total_liquidity:
        counts.liquidity_recomputed += 1
    return liquidity


def _pool_events(spec: PoolSpec, rows: list[_Row], counts: PoolCounts) -> Iterator[tuple[int, int, PoolEvent]]:
    """Yield (block, log index, event) per state-changing row, in (block, log index) order."""
    rows.sort(key=lambda row: (row.block, row.log_index))
    liquidity: int | None = None
    for row in rows:
        counts.rows_by_type[row.kind] = counts.rows_by_type.get(row.kind, 0) + 1
        if row.kind == "COLLECT":
            counts.skipped_collect += 1
            continue
        liquidity = _next_liquidity(row, liquidity, counts)
        if liquidity <= 0 or row.sqrt_price_x96 <= 0:
            counts.skipped_zero_liquidity += 1
            continue
        try:
            event = _pool_event(spec, row, liquidity)
        except (ValidationError, OverflowError, ZeroDivisionError):
            counts.invalid_events += 1
            continue
        if not (math.isfinite(event.reserve_base) and math.isfinite(event.reserve_quote)):
            counts.invalid_events += 1
            continue
        counts.events += 1
        counts.first_block = row.block if counts.first_block is None else counts.first_block
        counts.last_block = row.block
        yield row.block, row.log_index, event


def _with_gas(
    events: Iterator[tuple[int, int, PoolEvent]], gas: GasAssumption, chain: str, report: UniswapImportReport
) -> Iterator[GasEvent | PoolEvent]:
    """Put a gas event before the first pool event of each block that is due one."""
    last_gas_block: int | None = None
    for block, _, event in events:
        due = last_gas_block is None or (block != last_gas_block and block - last_gas_block >= gas.every_blocks)
        if due:
            last_gas_block = block
            report.gas_events += 1
            yield GasEvent(
                chain=chain,
                block=block,
                ts=event.ts,
                base_fee_gwei=gas.base_fee_gwei,
                priority_fee_gwei=gas.priority_fee_gwei,
                gas_used_ratio=gas.gas_used_ratio,
            )
        report.first_block = block if report.first_block is None else report.first_block
        report.last_block = block
        report.first_ts = event.ts if report.first_ts is None else report.first_ts
        report.last_ts = event.ts
        yield event


def import_uniswap_v3(
    data_dir: Path,
    out: Path,
    gas: GasAssumption | None = None,
    pools: Sequence[PoolSpec] = USDC_WETH_POOLS,
) -> UniswapImportReport:
    """Import the pools' tick files in `data_dir` into one recording at `out`, in (block, log index) order.

    Write a `gas` event from `gas` (default: `GasAssumption()`) before the pool events of each block that is due
    one. Raise RecordingError, naming the file or folder, for input that is missing or cannot be read.
    """
    gas = gas or GasAssumption()
    if gas.every_blocks < 1:
        raise ValueError(f"every_blocks must be at least 1, got {gas.every_blocks}")
    chains = {spec.chain for spec in pools}
    if len(chains) != 1:
        raise ValueError(f"pools must share one chain, got {sorted(chains)}")
    data_dir, out = Path(data_dir), Path(out)
    if not data_dir.is_dir():
        raise RecordingError(f"{data_dir}: no such folder (expected demeter-fetch's Uniswap V3 files)")
    report = UniswapImportReport(out=out, gas=gas)
    streams = []
    for spec in pools:
        counts = report.pools.setdefault(spec.address, PoolCounts(fee_bps=spec.fee_bps))
        paths = tick_files(data_dir, spec)
        if not paths:
            raise RecordingError(
                f"{data_dir}: no tick file for pool {spec.address} ({spec.chain}-<address>-*.tick.csv)"
            )
        counts.files = [path.name for path in paths]
        rows = [row for path in paths for row in _read_rows(path, counts)]
        streams.append(_pool_events(spec, rows, counts))
    # Written beside `out` and renamed at the end, so a failed import never leaves a plausible-looking recording.
    partial = out.with_name(f".partial-{out.name}")
    try:
        with RecordingWriter(partial) as writer:
            merged = heapq.merge(*streams, key=lambda item: (item[0], item[1]))
            for event in _with_gas(merged, gas, next(iter(chains)), report):
                writer.write(event)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return report
