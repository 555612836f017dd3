"""The Redis clients arbbot builds against real private servers: a password, an ACL user, TLS with client
certificates; a refused password is one clear error, not a silent second Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from private_redis import make_tls_files, private_redis, tls_config
from redis.exceptions import AuthenticationError, ConnectionError

from bot.bus.client import RedisAccess, redis_client
from bot.bus.local_redis import RedisUnavailable, redis_answers
from bot.bus.secrets import Secrets
from bot.config import RedisConfig

PASSWORD = "redis-auth-test-Pw-91"


async def test_password_and_acl_user(tmp_path: Path) -> None:
    with private_redis(tmp_path, password=PASSWORD) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        admin = redis_client(RedisAccess.of(RedisConfig(url=url), Secrets(PASSWORD)))
        try:
            await admin.acl_setuser("arbbot", enabled=True, passwords=["+risk-user-pw-0042"], keys=["*"],
                                    channels=["*"], commands=["+@all"])  # fmt: skip
        finally:
            await admin.aclose()
        user = RedisAccess.of(RedisConfig(url=url, username="arbbot"), Secrets("risk-user-pw-0042"))
        client = redis_client(user)
        try:
            assert await client.acl_whoami() == "arbbot"
            await client.set("arbtest:auth", "ok")
            assert await client.get("arbtest:auth") == b"ok"
        finally:
            await client.aclose()
        assert await redis_answers(user)
        anonymous = redis_client(RedisAccess(url))
        try:
            with pytest.raises(AuthenticationError):
                await anonymous.ping()
        finally:
            await anonymous.aclose()


async def test_a_refused_password_says_so(tmp_path: Path) -> None:
    with private_redis(tmp_path, password=PASSWORD) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        for wrong in (Secrets("not-the-password"), Secrets()):
            with pytest.raises(RedisUnavailable, match="refused the credentials") as info:
                await redis_answers(RedisAccess.of(RedisConfig(url=url), wrong))
            assert PASSWORD not in str(info.value) and "not-the-password" not in str(info.value)


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    with private_redis(tmp_path, password=PASSWORD, tls=tls) as server:
        config = tls_config(server, tls)
        client = redis_client(RedisAccess.of(config, Secrets(PASSWORD)))
        try:
            assert await client.ping()
            assert await client.config_get("port") == {"port": "0"}  # no plain TCP port: TLS only
            assert await client.config_get("tls-port") == {"tls-port": str(server.port)}
        finally:
            await client.aclose()
        # Without the client certificate the server refuses the handshake; plain TCP gets nowhere either.
        no_cert = redis_client(
            RedisAccess.of(config.model_copy(update={"tls_cert_file": None, "tls_key_file": None}), Secrets(PASSWORD)),
            socket_timeout=2.0,
        )
        plain = redis_client(RedisAccess(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"), socket_timeout=2.0)
        try:
            for refused in (no_cert, plain):
                with pytest.raises((ConnectionError, OSError)):
                    await refused.ping()
        finally:
            await no_cert.aclose()
            await plain.aclose()
        assert not await redis_answers(RedisAccess(f"redis://127.0.0.1:{server.port}/0"), 1.0)
