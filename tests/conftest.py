"""Shared fixtures: loopback-only network, a Redis server, subprocess environment."""

from __future__ import annotations

import gc
import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
NETGUARD_DIR = TESTS_DIR / "netguard"

# Test modules import `helpers` directly; there is no tests package.
for _path in (NETGUARD_DIR, TESTS_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import loopback_guard  # noqa: E402
from helpers import free_port, wait_until  # noqa: E402

loopback_guard.install()

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis for the session: $ARBBOT_TEST_REDIS_URL, one on :6379, or a fresh one."""
    if url := os.environ.get("ARBBOT_TEST_REDIS_URL"):
        if not _redis_answers(url):
            pytest.fail("ARBBOT_TEST_REDIS_URL is set but no Redis answers PING there", pytrace=False)
        yield url
        return
    if _redis_answers(DEFAULT_REDIS_URL):
        yield DEFAULT_REDIS_URL
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail(
            "redis-server is not on PATH: install Redis (apt-get install redis-server) or set ARBBOT_TEST_REDIS_URL",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(workdir / "redis.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: proc.poll() is not None or _redis_answers(url),
            timeout=10.0,
            interval=0.05,
            message=f"redis-server on port {port} did not answer within 10 s; log: {workdir / 'redis.log'}",
        )
        if proc.returncode is not None:
            pytest.fail(
                f"redis-server exited with code {proc.returncode}; log: {workdir / 'redis.log'}",
                pytrace=False,
            )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def subprocess_env(redis_url: str) -> dict[str, str]:
    """Environment for Python subprocesses: network-guarded, repo importable, Redis set."""
    env = dict(os.environ)
    paths = [str(NETGUARD_DIR), str(REPO_ROOT)]
    if existing := env.get("PYTHONPATH"):
        paths.append(existing)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["ARBBOT_REDIS_URL"] = redis_url
    # No HTTP server unless a test asks for one on a free port: two daemons on the default 8787 would collide.
    env["ARBBOT_HTTP_PORT"] = "0"
    return env


@pytest.fixture(autouse=True)
def _collect_garbage_after_async_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect garbage after every async test (those open sockets and ccxt sessions), so an unclosed
    resource's warning fails the test that leaked it rather than whichever test runs next."""
    yield
    if inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        gc.collect()
