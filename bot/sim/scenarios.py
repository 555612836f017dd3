"""Named simulator scenarios: complete configs built from config/demo.yaml's venues, fees, symbols and chain,
with the simulator's (and the simulated chain's) parameters set for one kind of market.

- `calm`: liquid venues, tight spreads, low volatility; gaps that beat taker fees are rare and last tens to
  hundreds of ms (a jump, then the laggards catch up).
- `volatile`: clustered volatility with frequent jumps, spreads widening with volatility, laggards whose
  catch-up speed switches between fast and slow regimes lasting tens of seconds.
- `lead_lag`: leadership of each symbol passes between the three venues in regimes (~40 s); followers trail
  the leader and catch up at regime-dependent speed.
- `thin`: thin, slowly updating books with wide spreads that drift apart; books cross often at zero fees
  and stay crossed for seconds to minutes.
- `gas_spike`: the calm market with a congested chain: runs of full blocks, each raising the base fee 12.5%.

`scenario_config(name, seed)` returns the RootConfig; `arbbot simulate --scenario NAME --seed N` uses it.
"""

from __future__ import annotations

from typing import Any

from bot.config import DEMO_CONFIG_PATH, RootConfig, load_config

SCENARIOS: tuple[str, ...] = ("calm", "volatile", "lead_lag", "thin", "gas_spike")
"""Names of the built-in scenarios."""


class UnknownScenario(ValueError):
    """A scenario name that is not one of SCENARIOS; the message lists the known ones."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS)}")


def _symbols(btc: dict[str, Any], eth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "BTC/USDT": {"start_price": 97_000.0, "tick_size": 0.1, "lot_size": 0.00001, "top_size": 0.4, **btc},
        "ETH/USDT": {"start_price": 3_400.0, "tick_size": 0.01, "lot_size": 0.0001, "top_size": 6.0, **eth},
    }


def _calm() -> dict[str, Any]:
    # Real BTC moves ~1 bps per sqrt(s) (50% a year); top-of-book spreads are a tick or two.
    vol = {"vol_of_vol": 0.3, "vol_half_life_s": 120.0, "jump_vol_kick": 0.2, "jumps_per_minute": 1.5}
    return {
        "symbols": _symbols(
            {"volatility_bps": 1.2, "jump_bps": 6.0, **vol}, {"volatility_bps": 1.6, "jump_bps": 7.0, **vol}
        ),
        "venues": {
            "alpha": {"lag_ms": 0, "noise_bps": 0.1, "noise_memory_ms": 1_000.0, "spread_bps": 0.1, "size_scale": 2.0},
            "beta": {
                "lag_ms": 50,
                "noise_bps": 0.15,
                "noise_memory_ms": 1_000.0,
                "spread_bps": 0.2,
                "catch_up_fast_ms": 30.0,
                "catch_up_slow_ms": 150.0,
                "catch_up_regime_s": 30.0,
            },
            "gamma": {
                "lag_ms": 100,
                "noise_bps": 0.2,
                "noise_memory_ms": 1_000.0,
                "spread_bps": 0.3,
                "size_scale": 0.8,
                "catch_up_fast_ms": 40.0,
                "catch_up_slow_ms": 250.0,
                "catch_up_regime_s": 30.0,
            },
        },
    }


def _volatile() -> dict[str, Any]:
    # Much of the move comes in jumps (news, liquidations) that the laggards then chase, slowly or fast by regime.
    vol = {"vol_of_vol": 0.4, "vol_half_life_s": 30.0, "jump_vol_kick": 0.15, "jumps_per_minute": 6.0}
    catch_up = {"catch_up_fast_ms": 50.0, "catch_up_regime_s": 30.0}
    return {
        "symbols": _symbols(
            {"volatility_bps": 2.0, "jump_bps": 18.0, **vol}, {"volatility_bps": 2.5, "jump_bps": 20.0, **vol}
        ),
        "venues": {
            "alpha": {"lag_ms": 0, "noise_bps": 0.3, "spread_bps": 0.6, "spread_vol_beta": 0.5, "size_scale": 1.5},
            "beta": {
                "lag_ms": 150,
                "noise_bps": 0.5,
                "noise_memory_ms": 5_000.0,
                "spread_bps": 1.0,
                "spread_vol_beta": 0.5,
                "catch_up_slow_ms": 1_500.0,
                **catch_up,
            },
            "gamma": {
                "lag_ms": 250,
                "noise_bps": 0.8,
                "noise_memory_ms": 5_000.0,
                "spread_bps": 1.5,
                "spread_vol_beta": 0.5,
                "size_scale": 0.6,
                "catch_up_slow_ms": 1_500.0,
                **catch_up,
            },
        },
    }


def _lead_lag() -> dict[str, Any]:
    vol = {"vol_of_vol": 0.3, "vol_half_life_s": 60.0, "jump_vol_kick": 0.15, "jumps_per_minute": 6.0}
    follower = {"catch_up_fast_ms": 50.0, "catch_up_slow_ms": 1_200.0, "catch_up_regime_s": 30.0}
    return {
        "leader_regime_s": 40.0,
        "symbols": _symbols(
            {"volatility_bps": 2.0, "jump_bps": 15.0, **vol}, {"volatility_bps": 2.5, "jump_bps": 18.0, **vol}
        ),
        "venues": {
            "alpha": {"lag_ms": 150, "noise_bps": 0.3, "spread_bps": 0.6, "size_scale": 1.5, **follower},
            "beta": {"lag_ms": 200, "noise_bps": 0.4, "noise_memory_ms": 5_000.0, "spread_bps": 0.8, **follower},
            "gamma": {
                "lag_ms": 250,
                "noise_bps": 0.5,
                "noise_memory_ms": 5_000.0,
                "spread_bps": 1.0,
                "size_scale": 0.8,
                **follower,
            },
        },
    }


def _thin() -> dict[str, Any]:
    # Small-cap books: a quote every ~0.5 s, wide spreads, few levels far apart, venue prices that drift apart
    # for tens of seconds (slow noise) and catch up with the leader slowly.
    vol = {"vol_of_vol": 0.4, "vol_half_life_s": 60.0, "jump_vol_kick": 0.3, "jumps_per_minute": 2.0}
    thin = {"depth_levels": 10, "level_gap_bps": 4.0, "size_scale": 0.05, "trades_per_s": 0.3, "quotes_per_s": 2.0}
    return {
        "symbols": _symbols(
            {"volatility_bps": 3.0, "jump_bps": 15.0, **vol}, {"volatility_bps": 3.5, "jump_bps": 18.0, **vol}
        ),
        "venues": {
            "alpha": {"lag_ms": 0, "noise_bps": 3.5, "noise_memory_ms": 20_000.0, "spread_bps": 10.0, **thin},
            "beta": {
                "lag_ms": 500,
                "noise_bps": 5.0,
                "noise_memory_ms": 20_000.0,
                "spread_bps": 12.0,
                "catch_up_fast_ms": 500.0,
                "catch_up_slow_ms": 5_000.0,
                "catch_up_regime_s": 60.0,
                **thin,
            },
            "gamma": {
                "lag_ms": 1_000,
                "noise_bps": 4.5,
                "noise_memory_ms": 30_000.0,
                "spread_bps": 14.0,
                "catch_up_fast_ms": 1_000.0,
                "catch_up_slow_ms": 8_000.0,
                "catch_up_regime_s": 60.0,
                **thin,
            },
        },
    }


def _gas_spike() -> dict[str, Any]:
    # Runs of full blocks start ~every 25 blocks and last ~4 blocks (up to 20): +12.5% a block while they last.
    return {**_calm(), "gas_burst_probability": 0.04, "gas_burst_continue": 0.75, "gas_demand_base_fee_gwei": 25.0}


_BUILDERS = {"calm": _calm, "volatile": _volatile, "lead_lag": _lead_lag, "thin": _thin, "gas_spike": _gas_spike}


def scenario_config(name: str, seed: int = 7) -> RootConfig:
    """Return config/demo.yaml with the simulator section of scenario `name` and `seed`; raise UnknownScenario."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise UnknownScenario(name)
    base = load_config(DEMO_CONFIG_PATH)
    data = base.model_dump(mode="json")
    data["simulator"] = {"seed": seed, "tick_ms": 50, **builder()}
    return RootConfig.model_validate(data)
