"""`arbbot run`: the daemon on the local simulated venues and chain (config/demo.yaml).

1. All roles in one process: /healthz answers, /readyz turns ready once every feed is live, /metrics counts
   updates and signals, heartbeats of every hosted role reach `{prefix}:heartbeat:{role}`; SIGTERM stops it
   cleanly (exit 0) within `daemon.stop_timeout_s`.
2. `--roles risk,paper` hosts those two alone: no venues, ready once Redis answers, heartbeats of both.
3. Config errors (an unknown role, a bad file) exit 2 with one line, before anything starts.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from helpers import eventually, eventually_async, free_port

from bot.bus.codec import decode_message
from bot.config import DEMO_CONFIG_PATH
from bot.messages import Heartbeat

STOP_TIMEOUT_S = 10.0


def _config(tmp_path: Path, **top: Any) -> Path:
    data = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    data["paper"]["ledger_path"] = str(tmp_path / "ledger.sqlite")
    if model_dir := data.get("scorer", {}).get("model_dir"):
        data["scorer"]["model_dir"] = str((DEMO_CONFIG_PATH.parent / model_dir).resolve())
    data["daemon"] = {"heartbeat_s": 0.5, "stop_timeout_s": STOP_TIMEOUT_S}
    data.update(top)
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def _answers(port: int, path: str, status: int = 200) -> bytes | None:
    try:
        code, body = await _get(port, path)
    except OSError:
        return None
    return body if code == status else None


class Heartbeats:
    """Collect heartbeats of a prefix in the background."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.roles: set[str] = set()
        self.pids: set[int] = set()
        self._client = client
        self._prefix = prefix
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.psubscribe(f"{self._prefix}:heartbeat:*")
        self._task = asyncio.create_task(self._read(pubsub))

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            async for raw in pubsub.listen():
                if raw.get("type") == "pmessage":
                    beat = decode_message(raw["data"])
                    assert isinstance(beat, Heartbeat)
                    self.roles.add(beat.role)
                    self.pids.add(beat.pid)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def prefix_and_client(redis_url: str) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    prefix = f"d{uuid.uuid4().hex[:10]}"
    client = aioredis.from_url(redis_url)
    yield prefix, client
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _start(env: dict[str, str], config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "-c", str(config), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _terminate(proc: asyncio.subprocess.Process) -> tuple[int, float, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), STOP_TIMEOUT_S + 20)
    assert proc.returncode is not None
    return proc.returncode, time.monotonic() - started, out.decode() + err.decode()


async def test_the_daemon_serves_health_metrics_heartbeats_and_stops_on_sigterm(
    tmp_path: Path, subprocess_env: dict[str, str], prefix_and_client: tuple[str, aioredis.Redis]
) -> None:
    prefix, client = prefix_and_client
    port = free_port()
    env = {**subprocess_env, "ARBBOT_HTTP_PORT": str(port), "ARBBOT_REDIS_PREFIX": prefix}
    heartbeats = Heartbeats(client, prefix)
    await heartbeats.start()
    proc = await _start(env, _config(tmp_path))
    try:
        assert (await eventually_async(lambda: _answers(port, "/healthz"), timeout=60)).strip() == b"ok"
        ready = orjson.loads(await eventually_async(lambda: _answers(port, "/readyz"), timeout=60))
        assert ready["ready"] is True and set(ready["checks"]) == {"redis", "feeds"}

        async def signals_counted() -> bytes | None:
            body = await _answers(port, "/metrics")
            return body if body is not None and b'arbbot_signals_total{kind="cex_cex"}' in body else None

        metrics = (await eventually_async(signals_counted, timeout=60)).decode()
        assert 'arbbot_feed_updates_total{venue="alpha"}' in metrics
        assert "arbbot_decisions_total" in metrics
        assert "arbbot_task_restarts_total{" not in metrics, "no task should have died"
        await eventually(lambda: heartbeats.roles >= {"signals", "risk", "paper"}, timeout=30)
        assert heartbeats.pids == {proc.pid}
    finally:
        code, took, output = await _terminate(proc)
        await heartbeats.stop()
    assert code == 0, output
    assert took < STOP_TIMEOUT_S + 5, f"stopping took {took:.1f} s"
    assert "stopping took longer" not in output


async def test_risk_and_paper_alone_need_no_venues(
    tmp_path: Path, subprocess_env: dict[str, str], prefix_and_client: tuple[str, aioredis.Redis]
) -> None:
    prefix, client = prefix_and_client
    port = free_port()
    env = {**subprocess_env, "ARBBOT_HTTP_PORT": str(port), "ARBBOT_REDIS_PREFIX": prefix}
    heartbeats = Heartbeats(client, prefix)
    await heartbeats.start()
    proc = await _start(env, _config(tmp_path), "--roles", "risk,paper")
    try:
        ready = orjson.loads(await eventually_async(lambda: _answers(port, "/readyz"), timeout=60))
        assert set(ready["checks"]) == {"redis"}
        await eventually(lambda: heartbeats.roles == {"risk", "paper"}, timeout=30)
    finally:
        code, _took, output = await _terminate(proc)
        await heartbeats.stop()
    assert code == 0, output
    assert "venues alpha" not in output


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--roles", "signals,trader"], "--roles signals,trader"), (["--roles", "risk,risk"], "--roles risk,risk")],
)
def test_bad_roles_are_one_line(tmp_path: Path, subprocess_env: dict[str, str], args: list[str], says: str) -> None:
    async def run() -> tuple[int, str]:
        proc = await _start(subprocess_env, _config(tmp_path), *args)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    code, err = asyncio.run(run())
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_config_file_is_one_line(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("symbols: [BTC/USDT]\nvenues: {}\ndaemon: {http_port: 99999}\n")

    env = {key: value for key, value in subprocess_env.items() if key != "ARBBOT_HTTP_PORT"}  # it would win

    async def run() -> tuple[int, str]:
        proc = await _start(env, bad)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    code, err = asyncio.run(run())
    assert code == 2
    assert "daemon.http_port" in err and len(err.strip().splitlines()) == 1, err
