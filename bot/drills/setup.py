"""The drills' config: `config/demo.yaml`'s simulated venues and roles, without the local chain, on a private Redis.

The chain (anvil) is left out: no drill is about it, and it would add seconds to every start. The drill owns its
Redis, so the environment's `ARBBOT_REDIS_URL` / `ARBBOT_REDIS_PREFIX` are not read here.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from bot.config import DEMO_CONFIG_PATH, RootConfig

DRILL_PREFIX = "drill"

# The demo's risk settings execute a few trades a minute: most gaps are skipped as `unprofitable` (score × edge
# does not pay the fees) or `expired` (they live a few hundred ms). Drills that need a steady flow of executions
# (the paper trader filling across restarts, or under a flood) use these: risk executes whatever it can size,
# orders are assumed to land at once, no loss limit stops it, and the paper trader fills a leg even when its book
# comes after the window (the gap may be gone: the fill says so in its PnL). Paper money only.
BUSY_RISK: dict[str, Any] = {
    "default_venue": {"order_rtt_ms": 0.0, "feed_lag_ms": 0.0},
    "min_expected_pnl": -1_000.0,
    "daily_loss_limit": 1e12,
    "max_trades_per_minute": 600,
}
BUSY_PAPER: dict[str, Any] = {"respect_deadline": False}


def drill_config_data(workdir: Path, redis_url: str, **sections: Any) -> dict[str, Any]:
    """The demo config as a mapping: no chain, ledger under `workdir`, on `redis_url`; `sections` merged on top
    (a mapping merges into the section of that name, anything else replaces it)."""
    data: dict[str, Any] = yaml.safe_load(DEMO_CONFIG_PATH.read_text(encoding="utf-8"))
    data.pop("chain", None)
    data["strategies"].pop("cex_dex", None)
    data["strategies"].pop("dex_dex", None)
    data["redis"] = {**data.get("redis", {}), "url": redis_url, "prefix": DRILL_PREFIX}
    if model_dir := data.get("scorer", {}).get("model_dir"):  # relative to the demo config: keep it pointing there
        data["scorer"]["model_dir"] = str((DEMO_CONFIG_PATH.parent / model_dir).resolve())
    data["paper"]["ledger_path"] = str(workdir / "paper-ledger.sqlite")
    # Risk resumes after the last signal it handled: a restarted risk role must decide what came meanwhile.
    data["risk"]["start_from"] = "last"
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **copy.deepcopy(value)}
        else:
            data[name] = copy.deepcopy(value)
    return data


def drill_config(workdir: Path, redis_url: str, **sections: Any) -> RootConfig:
    """The drill config, validated (no environment overrides)."""
    return RootConfig.model_validate(drill_config_data(workdir, redis_url, **sections))


def write_drill_config(workdir: Path, redis_url: str, **sections: Any) -> Path:
    """Write the drill config as YAML for role processes; its path."""
    data = drill_config_data(workdir, redis_url, **sections)
    RootConfig.model_validate(data)  # refuse here, not in three child processes
    path = workdir / "drill.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def role_env(redis_url: str) -> dict[str, str]:
    """Environment for role processes: this one's, with the drill's Redis and prefix, and `bot` importable."""
    env = dict(os.environ)
    env["ARBBOT_REDIS_URL"] = redis_url
    env["ARBBOT_REDIS_PREFIX"] = DRILL_PREFIX
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), root) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def python() -> str:
    """The interpreter running this drill (role processes use the same one)."""
    return sys.executable
