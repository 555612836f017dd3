"""The demo's risk and paper roles: decisions and fills on their streams, in one process and in three.

1. `arbbot demo` hosts signals, risk and paper: decisions and fills reach `{prefix}:stream:decision` and
   `{prefix}:stream:fill`, and the `--json` summary counts the same ones.
2. `arbbot run` (signals only), `arbbot risk` and `arbbot paper` as three processes on one Redis: fills appear;
   after SIGTERM, `arbbot paper report --json` agrees with the ledger read directly with sqlite3.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml

from bot.bus.channels import Channels
from bot.bus.codec import decode_message
from bot.config import DEMO_CONFIG_PATH
from bot.messages import Decision, Fill

Process = asyncio.subprocess.Process


def _write_config(tmp_path: Path, **changes: Any) -> Path:
    """config/demo.yaml with the paper ledger under tmp_path and `changes` applied at the top level."""
    data = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    data["paper"]["ledger_path"] = str(tmp_path / "ledger.sqlite")
    if model_dir := data.get("scorer", {}).get("model_dir"):  # relative to the config file: keep it pointing there
        data["scorer"]["model_dir"] = str((DEMO_CONFIG_PATH.parent / model_dir).resolve())
    data.update(changes)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, Channels]]:
    """A client and the channels of a prefix no other test uses; the prefix's keys are deleted afterwards."""
    client = aioredis.from_url(redis_url)
    channels = Channels(f"t{uuid.uuid4().hex[:12]}")
    try:
        yield client, channels
    finally:
        keys = [key async for key in client.scan_iter(match=f"{channels.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _entries(client: aioredis.Redis, stream: str) -> list[bytes]:
    entries: list[Any] = await client.xrange(stream) or []
    return [bytes(fields[b"data"]) for _id, fields in entries]


async def _start(args: list[str], env: dict[str, str]) -> Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def _wait_for_line(process: Process, fragment: bytes, timeout_s: float) -> None:
    """Read the process's stderr until a line contains `fragment` (the role's "ready" line)."""
    assert process.stderr is not None
    seen = b""
    async with asyncio.timeout(timeout_s):
        while fragment not in seen:
            line = await process.stderr.readline()
            if not line:
                raise AssertionError(f"process exited before printing {fragment!r}: {seen.decode()}")
            seen += line


async def _stop(process: Process, sig: int, timeout_s: float) -> tuple[int, str]:
    if process.returncode is None:
        process.send_signal(sig)
    _, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def _fill_count(client: aioredis.Redis, channels: Channels) -> int:
    return int(await client.xlen(channels.fill_stream()))


async def _until_fills(client: aioredis.Redis, channels: Channels, count: int, timeout_s: float) -> None:
    """Poll the fill stream (a condition with a deadline) until it holds `count` entries."""
    latest = 0

    async def probe() -> None:
        nonlocal latest
        while True:
            latest = await _fill_count(client, channels)
            if latest >= count:
                return
            await asyncio.sleep(0.2)

    try:
        await asyncio.wait_for(probe(), timeout_s)
    except TimeoutError:
        raise AssertionError(
            f"{latest} fills on {channels.fill_stream()} after {timeout_s} s, wanted {count}"
        ) from None


async def test_demo_puts_decisions_and_fills_on_their_streams(
    subprocess_env: dict[str, str], bus: tuple[aioredis.Redis, Channels], tmp_path: Path
) -> None:
    """Stopped (SIGINT) once a fill is out, the demo's summary counts exactly the decisions and fills on the
    streams, every entry decodes, and `paper_pnl` is the ledger's PnL."""
    client, channels = bus
    config = _write_config(tmp_path)
    summary_path = tmp_path / "summary.json"
    env = dict(subprocess_env, ARBBOT_REDIS_PREFIX=channels.prefix)
    demo = await _start(["demo", "-c", str(config), "--duration", "40", "--json", str(summary_path)], env)
    try:
        await _until_fills(client, channels, 1, 40)
    finally:
        code, err = await _stop(demo, signal.SIGINT, 30)
    assert code == 0, err
    summary = orjson.loads(summary_path.read_bytes())
    decisions = [decode_message(raw, "decision") for raw in await _entries(client, channels.decision_stream())]
    fills = [decode_message(raw, "fill") for raw in await _entries(client, channels.fill_stream())]
    assert all(isinstance(d, Decision) for d in decisions) and all(isinstance(f, Fill) for f in fills)
    executes = [d for d in decisions if isinstance(d, Decision) and d.action == "execute"]
    assert summary["decisions"] == len(decisions) > 0
    assert summary["decisions_execute"] == len(executes) > 0
    assert summary["fills"] == len(fills) >= 1
    assert {f.decision_id for f in fills if isinstance(f, Fill)} <= {d.id for d in executes}
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        trades = db.execute("SELECT COALESCE(SUM(realised_pnl), 0) FROM decisions WHERE action = 'execute'").fetchone()
        unwinds = db.execute("SELECT COALESCE(SUM(unwind_pnl), 0) FROM positions").fetchone()
    assert summary["paper_pnl"] == pytest.approx(trades[0] + unwinds[0], abs=1e-5)
    assert summary["paper_ledger"] == str(tmp_path / "ledger.sqlite")


async def test_signals_risk_and_paper_as_three_processes(
    subprocess_env: dict[str, str], bus: tuple[aioredis.Redis, Channels], tmp_path: Path
) -> None:
    """`arbbot run` with `roles: [signals]`, `arbbot risk` and `arbbot paper` on one Redis produce decisions and
    fills; after SIGTERM, `arbbot paper report --json` matches the ledger (fills, statuses, PnL)."""
    client, channels = bus
    config = _write_config(tmp_path, roles=["signals"])
    env = dict(subprocess_env, ARBBOT_REDIS_PREFIX=channels.prefix)
    processes: list[Process] = []
    try:
        risk = await _start(["risk", "-c", str(config)], env)
        processes.append(risk)
        paper = await _start(["paper", "-c", str(config)], env)
        processes.append(paper)
        await _wait_for_line(risk, b"arbbot risk: following", 30)
        await _wait_for_line(paper, b"arbbot paper: consuming", 30)
        signals = await _start(["run", "-c", str(config)], env)
        processes.append(signals)
        await _until_fills(client, channels, 2, 45)
    finally:
        # Upstream first, so the risk and paper processes see everything that was published.
        results = []
        try:
            for process in reversed(processes):
                results.append(await _stop(process, signal.SIGTERM, 30))
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    for code, err in results:
        assert code == 0, err
    assert await client.xlen(channels.decision_stream()) > 0
    published = [decode_message(raw, "fill") for raw in await _entries(client, channels.fill_stream())]

    report_path = tmp_path / "report.json"
    reporter = await _start(["paper", "report", "-c", str(config), "--json", str(report_path)], env)
    _, report_err = await asyncio.wait_for(reporter.communicate(), 30)
    assert reporter.returncode == 0, report_err.decode()
    report = orjson.loads(report_path.read_bytes())

    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        executed = dict(db.execute("SELECT decision_id, status FROM decisions WHERE action = 'execute'").fetchall())
        recorded = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        trade_pnl = db.execute("SELECT COALESCE(SUM(realised_pnl), 0) FROM decisions").fetchone()[0]
        unwind_pnl = db.execute("SELECT COALESCE(SUM(unwind_pnl), 0) FROM positions").fetchone()[0]
    assert len(executed) >= 2
    assert {f.decision_id for f in published if isinstance(f, Fill)} <= set(executed)
    assert report["fills"]["executed"] == len(executed)
    assert report["fills"]["decisions"] == recorded
    statuses: dict[str, int] = {}
    for status in executed.values():
        statuses[status] = statuses.get(status, 0) + 1
    assert {k: v for k, v in report["fills"]["by_status"].items() if k != "skipped"} == statuses
    assert report["pnl"]["trades"] == pytest.approx(trade_pnl, abs=1e-6)
    assert report["pnl"]["total"] == pytest.approx(trade_pnl + unwind_pnl, abs=1e-6)
    assert len(report["pnl"]["curve"]) >= len(executed)
