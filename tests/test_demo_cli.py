"""`arbbot demo`, `arbbot subscribe` and `redis-cli` as a user runs them: separate processes on loopback."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from pathlib import Path

import orjson
import pytest
from helpers import free_port

from bot.bus.codec import decode_message
from bot.messages import Signal


def _processes_with_arg(fragment: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline:
            pids.append(int(entry.name))
    return pids


async def _run(args: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_demo_starts_and_stops_its_own_redis(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    """With no Redis at ARBBOT_REDIS_URL the demo starts a private redis-server, says so, and leaves none behind."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not on PATH; install it (apt-get install redis-server)")
    env = dict(subprocess_env, ARBBOT_REDIS_URL=f"redis://:hunter2pass@127.0.0.1:{free_port()}/0")
    summary_path = tmp_path / "summary.json"
    code, stdout, stderr = await _run(
        [sys.executable, "-m", "bot", "demo", "--duration", "6", "--json", str(summary_path)], env, 120
    )
    assert code == 0, stderr
    assert "starting a private redis-server" in stdout
    summary = orjson.loads(summary_path.read_bytes())
    assert isinstance(summary["updates"], int) and summary["updates"] > 100
    assert isinstance(summary["opportunities"], int)
    assert isinstance(summary["signals"], int)
    assert summary["redis_started"] is True
    assert "hunter2pass" not in summary_path.read_text() + stdout + stderr
    port = summary["redis_url"].rsplit(":", 1)[1].split("/")[0]
    assert _processes_with_arg(f"--port {port}") == []


async def test_demo_signals_reach_arbbot_subscribe_and_redis_cli(subprocess_env: dict[str, str]) -> None:
    """While the demo runs, `arbbot subscribe --count 3` prints 3 valid signals and redis-cli shows the same JSON."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        pytest.fail("redis-cli is not on PATH; install it (apt-get install redis-tools)")
    env = subprocess_env
    redis_url = env["ARBBOT_REDIS_URL"]
    watcher = await asyncio.create_subprocess_exec(
        redis_cli, "-u", redis_url, "PSUBSCRIBE", "arb:signal:*",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    subscriber = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "subscribe", "arb:signal:*", "--count", "3",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert subscriber.stderr is not None and watcher.stdout is not None
    assert b"listening" in await asyncio.wait_for(subscriber.stderr.readline(), 30)
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "demo", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(subscriber.communicate(), 60)
        assert subscriber.returncode == 0
        printed = out.decode().splitlines()
        assert len(printed) == 3
        for line in printed:
            assert isinstance(decode_message(line), Signal)
        seen_by_cli = b""
        while not all(line.encode() in seen_by_cli for line in printed):
            seen_by_cli += await asyncio.wait_for(watcher.stdout.readline(), 30)
    finally:
        demo.send_signal(signal.SIGTERM)
        _, demo_err = await asyncio.wait_for(demo.communicate(), 60)
        watcher.kill()
        await watcher.wait()
        if subscriber.returncode is None:
            subscriber.kill()
            await subscriber.wait()
    assert demo.returncode == 0, demo_err.decode()
