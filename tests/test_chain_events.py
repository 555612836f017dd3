"""`gas` and `pool` events: validation, codec and recording round trips, and their place in the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.bus.codec import decode_event, encode
from bot.config import parse_config
from bot.events import GasEvent, PoolEvent
from bot.recording import RecordingWriter, read_events
from bot.rejections import RejectionCounter
from bot.replay import replay_events

GAS: dict[str, Any] = {
    "chain": "ethereum",
    "block": 21_000_000,
    "ts": 1_763_700_001_000,
    "base_fee_gwei": 14.2,
    "priority_fee_gwei": 1.1,
    "gas_used_ratio": 0.61,
}
POOL: dict[str, Any] = {
    "chain": "ethereum",
    "dex": "uniswap_v2",
    "pool": "0xB4e16d0168e52d35CaCD2c6185b44281Ec28C9Dc",
    "symbol": "ETH/USDT",
    "base": "ETH",
    "quote": "USDT",
    "reserve_base": 5012.3,
    "reserve_quote": 17_455_231.0,
    "fee_bps": 30,
    "block": 21_000_000,
    "ts": 1_763_700_001_000,
}


def test_design_card_examples_decode() -> None:
    """The recording-format examples of DESIGN.md, verbatim."""
    gas = decode_event(
        '{"type":"gas","chain":"ethereum","block":21000000,"ts":1763700001000,"base_fee_gwei":14.2,'
        '"priority_fee_gwei":1.1,"gas_used_ratio":0.61}'
    )
    pool = decode_event(
        '{"type":"pool","chain":"ethereum","dex":"uniswap_v2","pool":"0xB4e1…","symbol":"ETH/USDT","base":"ETH",'
        '"quote":"USDT","reserve_base":5012.3,"reserve_quote":17455231.0,"fee_bps":30,"block":21000000,'
        '"ts":1763700001000}'
    )
    assert isinstance(gas, GasEvent) and gas.base_fee_gwei == 14.2
    assert isinstance(pool, PoolEvent) and pool.price == pytest.approx(17_455_231.0 / 5012.3)


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (GasEvent, {**GAS, "base_fee_gwei": float("nan")}),
        (GasEvent, {**GAS, "base_fee_gwei": -1.0}),
        (GasEvent, {**GAS, "gas_used_ratio": 1.2}),
        (GasEvent, {**GAS, "block": -1}),
        (PoolEvent, {**POOL, "reserve_base": 0.0}),
        (PoolEvent, {**POOL, "reserve_quote": float("inf")}),
        (PoolEvent, {**POOL, "symbol": "ETH/USDC"}),
        (PoolEvent, {**POOL, "fee_bps": 10_000}),
    ],
)
def test_invalid_chain_events_are_rejected(model: type[GasEvent] | type[PoolEvent], fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(fields)


@settings(max_examples=50, deadline=None)
@given(
    base_fee=st.floats(0.0, 500.0),
    ratio=st.floats(0.0, 1.0),
    reserves=st.tuples(st.floats(1e-6, 1e9), st.floats(1e-6, 1e12)),
)
def test_chain_events_round_trip(base_fee: float, ratio: float, reserves: tuple[float, float]) -> None:
    gas = GasEvent.model_validate({**GAS, "base_fee_gwei": base_fee, "gas_used_ratio": ratio})
    pool = PoolEvent.model_validate({**POOL, "reserve_base": reserves[0], "reserve_quote": reserves[1]})
    assert decode_event(encode(gas)) == gas
    assert decode_event(encode(pool)) == pool
    assert encode(pool).startswith(b'{"type":"pool"')


async def test_recordings_with_chain_events_replay(tmp_path: Path) -> None:
    """Gas and pool events are recorded, read back and accepted by the replay pipeline (which has no venue for them)."""
    path = tmp_path / "chain.jsonl.gz"
    with RecordingWriter(path) as writer:
        writer.write(GasEvent.model_validate(GAS))
        writer.write(PoolEvent.model_validate(POOL))
        writer.write(PoolEvent.model_validate({**POOL, "block": POOL["block"] - 1}))  # older: counted, not applied
    events = list(read_events(path))
    assert [event.type for event in events] == ["gas", "pool", "pool"]
    config = parse_config(
        {"symbols": ["ETH/USDT"], "venues": {name: {"exchange": "okx", "taker_fee_bps": 10} for name in ("a", "b")}}
    )
    rejections = RejectionCounter()
    summary = await replay_events(config, events, lambda _signal: None, rejections=rejections)
    assert summary.events == 3
    assert rejections.by_reason() == {"out_of_order": 1}
