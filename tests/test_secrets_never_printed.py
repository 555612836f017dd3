"""The Redis password and the signing key never reach stdout, stderr (with -v), logs or JSON summaries of
`arbbot run`, `demo`, `risk`, `paper`, `replay` and `backtest`, with the secrets given as environment values and as
files; and the roles do sign (their heartbeats and decisions verify with the key)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
import yaml
from helpers import eventually
from private_redis import private_redis

from bot.bus.codec import decode_message
from bot.bus.signing import Verifier
from bot.config import DEMO_CONFIG_PATH
from bot.messages import Heartbeat

PASSWORD = "Redis-Pw-7c1e-do-not-print"
KEY = "Signing-Key-94b2-do-not-print"


def _secrets_absent(*texts: str) -> None:
    joined = "\n".join(texts)
    assert PASSWORD not in joined
    assert KEY not in joined


async def _run(args: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def _env(subprocess_env: dict[str, str], port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in subprocess_env.items() if not k.startswith(("ARBBOT_REDIS_PASSWORD", "ARBBOT_SIGNING"))}
    return {**env, "ARBBOT_REDIS_URL": f"redis://127.0.0.1:{port}/0", **extra}


async def test_run_with_secrets_from_the_environment(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "symbols": ["BTC/USDT"],
        "venues": {"a": {"exchange": "okx", "taker_fee_bps": 1.0}, "b": {"exchange": "okx", "taker_fee_bps": 1.0}},
        "paper": {"ledger_path": str(tmp_path / "ledger.sqlite")},
        "daemon": {"heartbeat_s": 0.3, "log_format": "json"},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    summary = tmp_path / "run.json"
    with private_redis(tmp_path, password=PASSWORD) as server:
        env = _env(subprocess_env, server.port, ARBBOT_REDIS_PASSWORD=PASSWORD, ARBBOT_SIGNING_KEY=KEY)
        watcher = aioredis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD)
        pubsub = watcher.pubsub(ignore_subscribe_messages=True)
        await pubsub.psubscribe("arb:heartbeat:*")
        beats: dict[str, Heartbeat] = {}

        async def collect() -> None:
            async for raw in pubsub.listen():
                if raw["type"] == "pmessage":
                    beat = decode_message(raw["data"], "heartbeat", Verifier(KEY.encode()))
                    assert isinstance(beat, Heartbeat)
                    beats[beat.role] = beat

        collector = asyncio.create_task(collect())
        try:
            args = ["run", "-c", str(tmp_path / "run.yaml"), "--roles", "risk,paper", "--duration", "3"]
            run = asyncio.create_task(_run([*args, "--json", str(summary), "-v"], env, tmp_path, 120))
            await eventually(lambda: {"risk", "paper"} <= set(beats) or run.done(), timeout=60)
            code, stdout, stderr = await run
        finally:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await watcher.aclose()
    assert code == 0, stderr
    assert {"risk", "paper"} <= set(beats), "the roles' heartbeats did not verify with the key"
    assert '"level": "info"' in stderr  # -v: the INFO logs were written, and searched
    text = summary.read_text()
    assert orjson.loads(text)["redis_url"] == f"redis://127.0.0.1:{server.port}/0"
    _secrets_absent(stdout, stderr, text)


async def test_demo_with_secrets_from_files(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "signing.key").write_text(KEY + "\n")
    (tmp_path / "redis.pw").write_text(PASSWORD + "\n")
    data = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    data["paper"]["ledger_path"] = str(tmp_path / "ledger.sqlite")
    if model_dir := data.get("scorer", {}).get("model_dir"):
        data["scorer"]["model_dir"] = str((DEMO_CONFIG_PATH.parent / model_dir).resolve())
    data["security"] = {"signing_key_file": "signing.key"}  # read beside the config
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(data))
    summary = tmp_path / "demo.json"
    with private_redis(tmp_path, password=PASSWORD) as server:
        env = _env(subprocess_env, server.port, ARBBOT_REDIS_PASSWORD_FILE=str(tmp_path / "redis.pw"))
        args = ["demo", "-c", str(tmp_path / "demo.yaml"), "--duration", "3", "--json", str(summary), "-v"]
        code, stdout, stderr = await _run(args, env, tmp_path, 180)
        watcher = aioredis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD)
        try:
            decisions = [fields[b"data"] for _, fields in await watcher.xrange("arb:stream:decision")]
            signals = [fields[b"data"] for _, fields in await watcher.xrange("arb:stream:signal")]
        finally:
            await watcher.aclose()
    assert code == 0, stderr
    text = summary.read_text()
    result = orjson.loads(text)
    assert result["redis_started"] is False  # it used the password-protected Redis, not a private one
    assert "starting a private redis-server" not in stdout
    # Every role signed and every role verified: risk decided the signals it received.
    assert signals and decisions
    assert result["decisions"] == len(decisions)
    verifier = Verifier(KEY.encode())
    for payload in [*signals, *decisions]:
        verifier.verify(orjson.loads(payload))
    _secrets_absent(stdout, stderr, text)


async def test_risk_and_paper_commands_log_through_the_redacting_json_logger(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    config: dict[str, Any] = {
        "symbols": ["BTC/USDT"],
        "venues": {"a": {"exchange": "okx", "taker_fee_bps": 1.0}, "b": {"exchange": "okx", "taker_fee_bps": 1.0}},
        "paper": {"ledger_path": str(tmp_path / "ledger.sqlite")},
        "daemon": {"log_format": "json"},
    }
    (tmp_path / "role.yaml").write_text(yaml.safe_dump(config))
    with private_redis(tmp_path, password=PASSWORD) as server:
        env = _env(subprocess_env, server.port, ARBBOT_REDIS_PASSWORD=PASSWORD, ARBBOT_SIGNING_KEY=KEY)
        for role in ("risk", "paper"):
            args = [role, "-c", str(tmp_path / "role.yaml"), "--duration", "1", "-v"]
            code, stdout, stderr = await _run(args, env, tmp_path, 120)
            assert code == 0, stderr
            records = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
            assert any(record["level"] == "info" and record["logger"].startswith("bot.") for record in records), stderr
            _secrets_absent(stdout, stderr)


async def test_replay_logs_through_the_redacting_json_logger(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    recording = tmp_path / "volatile.jsonl.gz"  # calm opens no gap in 20 s: nothing to score
    simulate = ["simulate", "--scenario", "volatile", "--duration", "20", "--out", str(recording)]
    code, _, stderr = await _run(simulate, subprocess_env, tmp_path, 120)
    assert code == 0, stderr
    config = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    config["daemon"] = {**config.get("daemon", {}), "log_format": "json"}
    config["scorer"]["model_dir"] = str(DEMO_CONFIG_PATH.parent.parent / "models")  # its load is logged at INFO
    (tmp_path / "replay.yaml").write_text(yaml.safe_dump(config))
    with private_redis(tmp_path, password=PASSWORD) as server:
        env = _env(subprocess_env, server.port, ARBBOT_REDIS_PASSWORD=PASSWORD, ARBBOT_SIGNING_KEY=KEY)
        args = ["replay", str(recording), "-c", str(tmp_path / "replay.yaml"), "-v"]
        code, stdout, stderr = await _run(args, env, tmp_path, 120)
        assert code == 0, stderr
        assert "signals" in stdout
        records = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        assert any(record["level"] == "info" and "loaded" in record["event"] for record in records), stderr
        assert all(line.startswith("{") for line in stderr.splitlines() if line.strip()), stderr
        _secrets_absent(stdout, stderr)

        # The backtest drives the same recording through the whole chain on this Redis, with the password.
        watcher = aioredis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD)
        before = (await watcher.info("stats"))["total_commands_processed"]
        config_path = str(tmp_path / "replay.yaml")
        args = ["backtest", "--data", str(recording), "--out", str(tmp_path / "bt"), "-c", config_path, "-v"]
        code, stdout, stderr = await _run(args, env, tmp_path, 180)
        after = (await watcher.info("stats"))["total_commands_processed"]
        await watcher.aclose()
    assert code == 0, stderr
    assert stdout.startswith("backtest: "), stdout
    assert after - before > 100  # the chain's publishes and reads went to this Redis, not to one of its own
    _secrets_absent(stdout, stderr)
