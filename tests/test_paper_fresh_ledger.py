"""`arbbot demo` starts a fresh paper ledger: the paper group forgets the previous run's decisions, read or not."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import yaml

from bot.bus.channels import Channels
from bot.config import RootConfig, parse_config
from bot.demo import _forget_pending_decisions

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


def _config(redis_url: str, prefix: str) -> RootConfig:
    data: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    data["redis"] = {"url": redis_url, "prefix": prefix}
    return parse_config(data, "test")


async def test_a_fresh_ledger_starts_with_the_new_runs_decisions_only(redis_url: str) -> None:
    config = _config(redis_url, f"arbtest{uuid.uuid4().hex[:8]}")
    group, consumer = config.paper.group, config.paper.consumer
    client = aioredis.from_url(redis_url)
    stream = Channels(config.redis.prefix).decision_stream()
    try:
        await _forget_pending_decisions(client, config)  # no stream, no group yet: nothing to forget, no error
        await client.xgroup_create(stream, group, id="0", mkstream=True)
        for n in range(3):
            await client.xadd(stream, {"data": f"old-{n}".encode()})
        await client.xreadgroup(group, consumer, {stream: ">"}, count=1)  # read, never acknowledged
        await _forget_pending_decisions(client, config)
        pending: Any = await client.xpending(stream, group)
        assert pending["pending"] == 0
        assert await client.xreadgroup(group, consumer, {stream: ">"}) == []  # the two unread ones are skipped
        new = (await client.xadd(stream, {"data": b"new"})).decode()
        [[_, entries]] = await client.xreadgroup(group, consumer, {stream: ">"})
        assert [(entry_id.decode(), fields[b"data"]) for entry_id, fields in entries] == [(new, b"new")]
    finally:
        await client.delete(stream)
        await client.aclose()
