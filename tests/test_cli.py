"""User errors at the command line give one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from helpers import free_port


def _arbbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_schema_prints_the_message_schemas(subprocess_env: dict[str, str]) -> None:
    result = _arbbot("schema", env=subprocess_env)
    assert result.returncode == 0
    schemas = orjson.loads(result.stdout)
    assert {"signal", "book", "trade"} <= schemas.keys()
    assert "net_edge_bps" in schemas["signal"]["properties"]
    assert "opportunity_id" in schemas["signal"]["required"]


def test_demo_with_an_unknown_config_key_names_the_key_and_file(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(demo.read_text().replace("  cex_cex:\n", "  cex_cex:\n    max_notionl: 10\n"))
    result = _arbbot("demo", "--config", str(bad), "--duration", "1", env=subprocess_env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}: unknown key 'strategies.cex_cex.max_notionl'" in result.stderr


def test_demo_with_a_missing_config_file(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    result = _arbbot("demo", "--config", str(tmp_path / "nope.yaml"), env=subprocess_env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot read config" in result.stderr


def test_subscribe_to_a_dead_redis_says_what_to_do(subprocess_env: dict[str, str]) -> None:
    env = dict(subprocess_env, ARBBOT_REDIS_URL=f"redis://:s3cretpw@127.0.0.1:{free_port()}/0")
    result = _arbbot("subscribe", "arb:signal:*", "--count", "1", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot reach Redis" in result.stderr
    assert "ARBBOT_REDIS_URL" in result.stderr
    assert "s3cretpw" not in result.stderr + result.stdout


def test_simulate_writes_a_reproducible_recording(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    from bot.recording import read_events
    from bot.rejections import RejectionCounter

    config = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
    out = tmp_path / "sim.jsonl.gz"
    args = ["simulate", "-c", str(config), "--duration", "30", "--out", str(out), "--chain-block-time", "2"]
    first = _arbbot(*args, env=subprocess_env)
    assert first.returncode == 0, first.stderr
    content = out.read_bytes()
    assert _arbbot(*args, env=subprocess_env).returncode == 0
    assert out.read_bytes() == content
    rejections = RejectionCounter()
    types = {event.type for event in read_events(out, rejections)}
    assert types == {"book", "trade", "gas", "pool"}
    assert rejections.total == 0


def test_simulate_without_a_simulator_says_so(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    config = Path(__file__).resolve().parent.parent / "config" / "default.yaml"
    result = _arbbot(
        "simulate", "-c", str(config), "--duration", "5", "--out", str(tmp_path / "x.jsonl"), env=subprocess_env
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(config) in result.stderr
