"""Named simulator scenarios: complete demo-venue configs, deterministic per seed, readable recordings, and the
`arbbot simulate --scenario` command line."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import DEMO_CONFIG_PATH, load_config
from bot.events import BookEvent, GasEvent
from bot.recording import read_events
from bot.rejections import RejectionCounter
from bot.sim.market import MarketSimulator
from bot.sim.scenarios import SCENARIOS, UnknownScenario, scenario_config
from bot.simulate import simulate


def test_the_promised_scenarios_exist() -> None:
    assert set(SCENARIOS) >= {"calm", "volatile", "lead_lag", "thin", "gas_spike"}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_keep_the_demo_venues_fees_and_symbols(name: str) -> None:
    demo = load_config(DEMO_CONFIG_PATH)
    config = scenario_config(name, 5)
    assert config.venues == demo.venues and config.symbols == demo.symbols and config.chain == demo.chain
    assert config.simulator is not None and config.simulator.seed == 5
    assert config.simulator != demo.simulator


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_are_deterministic_per_seed_and_decode(name: str, tmp_path: Path) -> None:
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    summary = simulate(scenario_config(name, 1), 4.0, first, chain_block_time_s=1.0)
    simulate(scenario_config(name, 1), 4.0, again, chain_block_time_s=1.0)
    simulate(scenario_config(name, 2), 4.0, other, chain_block_time_s=1.0)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    rejections = RejectionCounter()
    events = list(read_events(first, rejections))
    assert rejections.total == 0 and summary.rejected == 0 and len(events) == summary.events
    books = [e for e in events if isinstance(e, BookEvent)]
    assert {(b.venue, b.symbol) for b in books} == {
        (v, s) for v in ("alpha", "beta", "gamma") for s in ("BTC/USDT", "ETH/USDT")
    }
    assert sum(isinstance(e, GasEvent) for e in events) == 4


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(UnknownScenario) as info:
        scenario_config("stormy", 1)
    message = str(info.value)
    assert "\n" not in message and "stormy" in message
    assert all(name in message for name in SCENARIOS)


def test_thin_venues_update_less_often_than_every_tick() -> None:
    config = scenario_config("thin", 1)
    assert config.simulator is not None
    sim = MarketSimulator(config.simulator, {v: config.symbols_of(v) for v in config.venues})
    books = [book for _ in range(2_000) for book in sim.step()]
    # 2 quotes a second per book at 20 ticks a second.
    assert 0.07 < len(books) / (2_000 * 6) < 0.13


def test_lead_lag_leadership_passes_between_venues_in_regimes() -> None:
    config = scenario_config("lead_lag", 3)
    assert config.simulator is not None and config.simulator.leader_regime_s == 40.0
    sim = MarketSimulator(config.simulator, {v: config.symbols_of(v) for v in config.venues})
    leaders = []
    for _ in range(12_000):  # 10 minutes
        sim.step()
        leaders.append(sim.leader("BTC/USDT"))
    runs = [len(list(group)) for _, group in itertools.groupby(leaders)]
    assert set(leaders) == {"alpha", "beta", "gamma"}
    # Regimes of ~40 s (800 ticks): a handful of switches in 10 minutes, none flickering.
    assert 4 <= len(runs) <= 40
    assert sorted(runs)[len(runs) // 2] > 100


def test_cli_simulates_a_scenario(tmp_path: Path) -> None:
    out = tmp_path / "thin.jsonl.gz"
    result = CliRunner().invoke(
        app, ["simulate", "--scenario", "thin", "--seed", "1", "--duration", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rejections = RejectionCounter()
    events = list(read_events(out, rejections))
    assert rejections.total == 0 and len(events) > 30
    # The same seed through the library gives the same events.
    again = tmp_path / "again.jsonl"
    simulate(scenario_config("thin", 1), 5.0, again)
    assert [e.model_dump() for e in read_events(again, RejectionCounter())] == [e.model_dump() for e in events]


def test_cli_rejects_unknown_scenarios_and_scenario_with_config(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    result = CliRunner().invoke(app, ["simulate", "--scenario", "stormy", "--duration", "5", "--out", str(out)])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "stormy" in lines[0] and all(name in lines[0] for name in SCENARIOS)
    assert not out.exists()
    both = ["simulate", "--scenario", "calm", "-c", str(DEMO_CONFIG_PATH), "--duration", "5", "--out", str(out)]
    result = CliRunner().invoke(app, both)
    assert result.exit_code != 0 and "not both" in result.stderr
    neither = CliRunner().invoke(app, ["simulate", "--duration", "5", "--out", str(out)])
    assert neither.exit_code != 0 and "--scenario" in neither.stderr
