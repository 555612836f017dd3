"""Labels of opportunities with pool legs (cex_dex, dex_dex) on hand-built recordings of books, gas and pools:
a pool leg executes in the first block at or after t + latency, on the pool as of that block, paying that
block's gas; a book leg executes at t + latency. Then a simulated chain end to end."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bot.cli import app
from bot.config import DEMO_CONFIG_PATH, RootConfig, load_config, parse_config
from bot.events import BookEvent, GasEvent, MarketEvent, PoolEvent
from bot.messages import Signal
from bot.model.dataset import SUPPORTED_KINDS, Dataset, build_dataset
from bot.model.labels import GasCharge, LabelSettings, StreamingLabeler, execute
from bot.recording import RecordingWriter, merge_events
from bot.replay import Replayer

T0 = 1_763_700_000_000
SYMBOL = "ETH/USDT"
POOL, OTHER = "0x" + "ab" * 20, "0x" + "cd" * 20
POOL_VENUE, OTHER_VENUE = f"uniswap_v2:{POOL}", f"uniswap_v2:{OTHER}"
KEEP = 1.0 - 30e-4  # what a 30 bps pool fee leaves of the input
MID = 1_999.5  # book a's mid: the gas token's price in cex_dex signals (gas_price_symbol is ETH/USDT)
CEX_DEX_GAS = 110_000  # chain.gas_units_per_swap's default: one swap
DEX_DEX_GAS = 2 * 120_000  # strategies.dex_dex.gas_units_per_swap's default, two swaps in one transaction


def gas(block: int, ms: int, base_fee: float, tip: float = 2.0) -> GasEvent:
    return GasEvent(
        chain="ethereum",
        block=block,
        ts=T0 + ms,
        recv_ts=T0 + ms,
        base_fee_gwei=base_fee,
        priority_fee_gwei=tip,
        gas_used_ratio=0.5,
    )


def pool(block: int, ms: int, reserve_quote: float, address: str = POOL, reserve_base: float = 1_000.0) -> PoolEvent:
    return PoolEvent(
        chain="ethereum", dex="uniswap_v2", pool=address, symbol=SYMBOL, base="ETH", quote="USDT",
        reserve_base=reserve_base, reserve_quote=reserve_quote, fee_bps=30, block=block, ts=T0 + ms, recv_ts=T0 + ms,
    )  # fmt: skip


def book(ms: int) -> BookEvent:
    """Venue a: 10 ETH bid at 1,999 and 10 offered at 2,000."""
    return BookEvent(
        venue="a", symbol=SYMBOL, ts=T0 + ms, recv_ts=T0 + ms, bids=((1_999.0, 10.0),), asks=((2_000.0, 10.0),)
    )


def config(**strategies: dict[str, float]) -> RootConfig:
    return parse_config(
        {
            "symbols": [SYMBOL],
            "venues": {"a": {"exchange": "okx", "taker_fee_bps": 2.0, "stale_after_ms": 60_000}},
            "chain": {"name": "ethereum"},
            "strategies": strategies,
        }
    )


CEX_DEX = config(cex_dex={"min_net_edge_bps": 5.0, "max_notional": 100_000.0})
DEX_DEX = config(dex_dex={"min_net_edge_bps": 1.0, "max_notional": 100_000.0})


def dataset(tmp_path: Path, cfg: RootConfig, kind: str, events: list[MarketEvent]) -> Dataset:
    path = tmp_path / "hand.jsonl"
    with RecordingWriter(path) as writer:
        for event in events:
            writer.write(event)
    return build_dataset([path], cfg, kind=kind, window=4)


def sell_into_pool(base: float, reserve_quote: float, reserve_base: float = 1_000.0, keep: float = KEEP) -> float:
    """Uniswap V2 getAmountOut for `base` in, by hand."""
    return keep * base * reserve_quote / (reserve_base + keep * base)


def buy_from_pool(base: float, reserve_quote: float, reserve_base: float = 1_000.0, keep: float = KEEP) -> float:
    """Uniswap V2 getAmountIn for `base` out, by hand."""
    return reserve_quote * base / ((reserve_base - base) * keep)


def gas_quote(units: int, gwei: float, price: float) -> float:
    return units * gwei * 1e-9 * price


# The pool at 2,100 (1,000 ETH, 2.1M USDT), venue a offering at 2,000: at 10 ms a's book opens a cex_dex gap,
# buy 10 ETH on a and sell them into the pool. Gas at the signal: 20 + 2 gwei.
OPENING: list[MarketEvent] = [gas(100, 0, 20.0), pool(100, 0, 2_100_000.0), book(10)]
CLOSED = 2_000_000.0  # a pool at 2,000: selling into it after its fee loses against a's 2,000 ask


def test_a_gap_that_closes_in_the_block_after_the_latency_is_unprofitable(tmp_path: Path) -> None:
    # t + latency = 260: the pool is still at 2,100 then, but the transaction lands in block 101 (at 1,000), whose
    # pool is back at 2,000. Block 102 completes block 101.
    events = [*OPENING, gas(101, 1_000, 30.0), pool(101, 1_000, CLOSED), gas(102, 1_500, 25.0)]
    ds = dataset(tmp_path, CEX_DEX, "cex_dex", events)
    assert ds.keys[0] == ("cex_dex", SYMBOL, "a", POOL_VENUE) and ds.status[0] == "open"
    assert ds.ts[0] == T0 + 10 and ds.size[0] == pytest.approx(10.0)
    cost, fee = 20_000.0, 20_000.0 * 2e-4
    pnl = sell_into_pool(10.0, CLOSED) - cost - fee - gas_quote(CEX_DEX_GAS, 30.0 + 2.0, MID)
    assert ds.captured_pnl[0] == pytest.approx(pnl, rel=1e-12)
    assert ds.captured_edge_bps[0] == pytest.approx(pnl / cost * 1e4, rel=1e-12)
    assert ds.filled[0] == pytest.approx(10.0) and ds.profitable[0] == 0.0
    assert ds.lifetime_ms[0] == 990.0 and not ds.lifetime_censored[0]  # block 101's pool shut the gap
    # Block 101's gas (at 1,000) re-signals the gap: due at 1,250, that sample executes in block 102 (at 1,500),
    # on the pool as of block 102 (unchanged since 101) and at block 102's 25 + 2 gwei.
    assert ds.ts[1] == T0 + 1_000 and ds.status[1] == "update"
    pnl = sell_into_pool(10.0, CLOSED) - cost - fee - gas_quote(CEX_DEX_GAS, 25.0 + 2.0, MID)
    assert ds.captured_pnl[1] == pytest.approx(pnl, rel=1e-12)


def test_a_gap_still_open_in_that_block_is_profitable(tmp_path: Path) -> None:
    events = [*OPENING, gas(101, 1_000, 30.0), gas(102, 1_500, 25.0)]
    ds = dataset(tmp_path, CEX_DEX, "cex_dex", events)
    pnl = sell_into_pool(10.0, 2_100_000.0) - 20_000.0 - 4.0 - gas_quote(CEX_DEX_GAS, 32.0, MID)
    assert pnl > 0.0
    assert ds.captured_pnl[0] == pytest.approx(pnl, rel=1e-12) and ds.profitable[0] == 1.0
    assert ds.lifetime_censored.all()  # the gap never shut


def test_the_block_is_the_first_received_at_or_after_t_plus_latency(tmp_path: Path) -> None:
    # Block 101 shuts the gap and block 102 (at 1,000) reopens it. Received at 260 = t + latency, block 101 is the
    # transaction's block; received a millisecond earlier, it is not, and the transaction lands in block 102.
    def run(block_101_ms: int) -> Dataset:
        events = [
            *OPENING,
            gas(101, block_101_ms, 30.0),
            pool(101, block_101_ms, CLOSED),
            gas(102, 1_000, 40.0),
            pool(102, 1_000, 2_100_000.0),
            gas(103, 1_500, 25.0),
        ]
        return dataset(tmp_path, CEX_DEX, "cex_dex", events)

    at, before = run(260), run(259)
    assert at.ts[0] == before.ts[0] == T0 + 10
    assert at.captured_pnl[0] == pytest.approx(
        sell_into_pool(10.0, CLOSED) - 20_004.0 - gas_quote(CEX_DEX_GAS, 32.0, MID), rel=1e-12
    )
    assert before.captured_pnl[0] == pytest.approx(
        sell_into_pool(10.0, 2_100_000.0) - 20_004.0 - gas_quote(CEX_DEX_GAS, 42.0, MID), rel=1e-12
    )
    assert at.profitable[0] == 0.0 and before.profitable[0] == 1.0
    assert before.lifetime_ms[0] == 249.0  # the lifetime still ends where the gap shut


def test_the_last_block_completes_at_the_end_and_later_samples_take_the_last_state(tmp_path: Path) -> None:
    complete = dataset(tmp_path, CEX_DEX, "cex_dex", [*OPENING, gas(101, 1_000, 30.0), pool(101, 1_000, CLOSED)])
    settled_by_102 = dataset(
        tmp_path,
        CEX_DEX,
        "cex_dex",
        [*OPENING, gas(101, 1_000, 30.0), pool(101, 1_000, CLOSED), gas(102, 1_500, 25.0)],
    )
    assert complete.captured_pnl[0] == settled_by_102.captured_pnl[0]
    # The sample at 1,000 falls due at 1,250, after the last block: it executes on the chain as last seen.
    assert complete.ts[1] == T0 + 1_000
    pnl = sell_into_pool(10.0, CLOSED) - 20_004.0 - gas_quote(CEX_DEX_GAS, 32.0, MID)
    assert complete.captured_pnl[1] == pytest.approx(pnl, rel=1e-12)


def test_buying_from_the_pool_and_selling_on_the_book(tmp_path: Path) -> None:
    # The pool at 1,900 under a's 1,999 bid: buy 10 ETH from it, sell them on a. Block 101 leaves the pool alone.
    events = [gas(100, 0, 20.0), pool(100, 0, 1_900_000.0), book(10), gas(101, 1_000, 30.0), gas(102, 1_500, 25.0)]
    ds = dataset(tmp_path, CEX_DEX, "cex_dex", events)
    assert ds.keys[0] == ("cex_dex", SYMBOL, POOL_VENUE, "a") and ds.size[0] == pytest.approx(10.0)
    cost = buy_from_pool(10.0, 1_900_000.0)
    pnl = 19_990.0 - cost - 19_990.0 * 2e-4 - gas_quote(CEX_DEX_GAS, 32.0, MID)
    assert ds.captured_pnl[0] == pytest.approx(pnl, rel=1e-12)
    assert ds.captured_edge_bps[0] == pytest.approx(pnl / cost * 1e4, rel=1e-12)


def test_dex_dex_executes_both_swaps_in_one_block_paying_gas_once(tmp_path: Path) -> None:
    # Pool OTHER at 2,000 and POOL at 2,100; POOL's update at 10 opens the gap (buy on OTHER, sell on POOL). Gas is
    # priced in POOL's quote by POOL's own price (ETH is its base). Block 101 moves POOL to 2,050.
    events: list[MarketEvent] = [
        gas(100, 0, 20.0),
        pool(100, 0, 2_000_000.0, OTHER),
        pool(100, 10, 2_100_000.0),
        gas(101, 1_000, 30.0),
        pool(101, 1_000, 2_050_000.0),
        gas(102, 1_500, 25.0),
    ]
    ds = dataset(tmp_path, DEX_DEX, "dex_dex", events)
    assert ds.keys[0] == ("dex_dex", SYMBOL, OTHER_VENUE, POOL_VENUE) and ds.ts[0] == T0 + 10
    size = float(ds.size[0])
    cost = buy_from_pool(size, 2_000_000.0)
    pnl = sell_into_pool(size, 2_050_000.0) - cost - gas_quote(DEX_DEX_GAS, 32.0, 2_100.0)
    assert ds.filled[0] == pytest.approx(size)
    assert ds.captured_pnl[0] == pytest.approx(pnl, rel=1e-12)
    assert ds.captured_edge_bps[0] == pytest.approx(pnl / cost * 1e4, rel=1e-12)


def test_every_kind_is_accepted_and_others_refused(tmp_path: Path) -> None:
    assert SUPPORTED_KINDS == ("cex_cex", "cex_dex", "dex_dex")
    for kind in SUPPORTED_KINDS:
        assert isinstance(dataset(tmp_path, CEX_DEX, kind, OPENING), Dataset)
    with pytest.raises(ValueError, match="cex_cex, cex_dex, dex_dex"):
        dataset(tmp_path, CEX_DEX, "triangular", OPENING)


def test_execute_charges_taker_fees_on_book_legs_only_and_a_swap_that_cannot_pay_reverts() -> None:
    asks, state = ((2_000.0, 1.0), (2_001.0, 1.0)), pool(1, 0, 2_100_000.0)
    run = execute(asks, state, 1.5, 2.0, 50.0, gas=3.0)
    assert run.cost == pytest.approx(2_000.0 + 0.5 * 2_001.0)
    assert run.proceeds == pytest.approx(sell_into_pool(1.5, 2_100_000.0), rel=1e-12)
    assert run.fees == pytest.approx(run.cost * 2e-4) and run.gas == 3.0  # the pool's 50 bps do not apply
    assert run.pnl == pytest.approx(run.proceeds - run.cost - run.fees - 3.0)
    assert execute(asks, state, 5.0, 2.0, 0.0).filled == pytest.approx(2.0)  # the book holds 2
    reverted = execute(state, ((1_999.0, 2_000.0),), 1_000.0, 0.0, 2.0, gas=3.0)  # all the pool's base: no swap
    assert (reverted.filled, reverted.cost, reverted.proceeds, reverted.pnl) == (0.0, 0.0, 0.0, -3.0)


def test_a_pool_leg_needs_its_gas_and_a_known_pool() -> None:
    labeler = StreamingLabeler(LabelSettings())
    with pytest.raises(ValueError, match="gas charge"):
        labeler.add(("cex_dex", SYMBOL, "a", POOL_VENUE), T0, 1.0)
    with pytest.raises(ValueError, match="no pool event"):
        labeler.add(("cex_dex", SYMBOL, "a", POOL_VENUE), T0, 1.0, GasCharge(110_000, 2_000.0))
    labeler.on_market_event(pool(1, 0, 2_100_000.0))
    assert labeler.add(("cex_dex", SYMBOL, "a", POOL_VENUE), T0, 1.0, GasCharge(110_000, 2_000.0)) == 0


def _walk(levels: tuple[tuple[float, float], ...], size: float) -> float:
    remaining, quote = size, 0.0
    for price, available in levels:
        take = min(available, remaining)
        quote, remaining = quote + take * price, remaining - take
    return quote


def _brute_force(recording: Path, cfg: RootConfig, settings: LabelSettings) -> list[float]:
    """Replay with everything stored, then label each cex_dex signal from the stored events, by hand."""
    seen: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    block_time: dict[int, int] = {}
    samples: list[Signal] = []
    replayer: Replayer

    def on_market(event: MarketEvent) -> None:
        now = replayer.clock.now_ms()
        if isinstance(event, BookEvent):
            seen[event.venue].append((now, event))
        elif isinstance(event, PoolEvent):
            seen[f"{event.dex}:{event.pool}"].append((now, event))
        elif isinstance(event, GasEvent):
            seen["gas"].append((now, event))
        if isinstance(event, GasEvent | PoolEvent):
            block_time.setdefault(event.block, now)

    def sink(signal: Signal) -> None:
        if signal.kind == "cex_dex" and signal.status != "closed":
            samples.append(signal.model_copy(update={"ts": replayer.clock.now_ms()}))

    replayer = Replayer(cfg.model_copy(update={"scorer": cfg.scorer.model_copy(update={"model_dir": None})}), sink)
    replayer.engine.add_market_listener(on_market)
    for event in merge_events([recording]):
        replayer.feed(event)
    assert cfg.chain is not None
    units = cfg.chain.gas_units_per_swap
    pnl = []
    for signal in samples:
        due = signal.ts + settings.latency_ms
        block = min((n for n, at in block_time.items() if at >= due), default=max(block_time))
        gas_event = next(event for _, event in seen["gas"] if event.block == block)
        price = signal.costs.gas / (units * (signal.costs.base_fee_gwei + signal.costs.priority_fee_gwei) * 1e-9)
        gas_paid = units * (gas_event.base_fee_gwei + gas_event.priority_fee_gwei) * 1e-9 * price
        cex = signal.sell_venue if ":" in signal.buy_venue else signal.buy_venue
        venue_pool = signal.buy_venue if cex == signal.sell_venue else signal.sell_venue
        books = [event for at, event in seen[cex] if at <= due and event.symbol == signal.symbol]
        state = [event for _, event in seen[venue_pool] if event.block <= block][-1]
        keep = 1.0 - state.fee_bps / 1e4
        if cex == signal.buy_venue:
            size = min(signal.size, sum(level[1] for level in books[-1].asks))
            cost = _walk(books[-1].asks, size)
            proceeds = sell_into_pool(size, state.reserve_quote, state.reserve_base, keep)
            fee = cost * settings.fee(cex) * 1e-4
        else:
            size = min(signal.size, sum(level[1] for level in books[-1].bids))
            cost = buy_from_pool(size, state.reserve_quote, state.reserve_base, keep)
            proceeds = _walk(books[-1].bids, size)
            fee = proceeds * settings.fee(cex) * 1e-4
        pnl.append(proceeds - cost - fee - gas_paid)
    return pnl


def test_a_simulated_chain_gives_labelled_cex_dex_samples(tmp_path: Path) -> None:
    # The demo's market with a calmer pool fee (5 bps) and no edge threshold, so that a minute shows cex_dex gaps.
    data = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    data["chain"]["local_pools"] = [{"symbol": SYMBOL, "base_liquidity": 200, "fee_bps": 5}]
    data["strategies"]["cex_dex"]["min_net_edge_bps"] = 0.0
    del data["scorer"]["model_dir"]
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "sim.jsonl.gz"
    args = ["simulate", "-c", str(path), "--duration", "60", "--out", str(out), "--chain-block-time", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = load_config(path)
    ds = build_dataset([out], cfg, kind="cex_dex", window=8)
    assert len(ds) > 10 and {key[0] for key in ds.keys} == {"cex_dex"}
    assert all(sum(":" in venue for venue in key[2:]) == 1 for key in ds.keys)
    assert (ds.filled > 0.0).all()
    expected = _brute_force(out, cfg, ds.settings)
    assert ds.captured_pnl.tolist() == pytest.approx(expected, rel=1e-9)
    assert ds.profitable.tolist() == [float(value > 0.0) for value in expected]
