"""Every Redis client arbbot makes is built here: the URL, the ACL user, the password and the TLS files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bot.bus.redis_url import redact_url, url_password
from bot.bus.secrets import SecretError, Secrets, load_secrets
from bot.config import RedisConfig, RootConfig


@dataclass(frozen=True, slots=True)
class RedisAccess:
    """How to reach one Redis; `repr` and `display` never show the password."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @classmethod
    def of(cls, redis: RedisConfig, secrets: Secrets, url: str | None = None) -> RedisAccess:
        """The config's Redis (or `url` instead of its URL) with the password from `secrets`.

        SecretError when the URL carries a password too (say it once), or options are given for a URL that
        cannot use them (TLS files without rediss://).
        """
        target = url or redis.url
        if secrets.redis_password is not None and url_password(target) is not None:
            raise SecretError(f"the Redis URL {redact_url(target)} has a password and ARBBOT_REDIS_PASSWORD or a "
                              "password file gives one too: keep one")  # fmt: skip
        tls = (redis.tls_ca_file, redis.tls_cert_file, redis.tls_key_file)
        if any(path is not None for path in tls) and not target.startswith("rediss://"):
            raise SecretError(f"redis.tls_* files need a rediss:// URL, got {redact_url(target)}")
        return cls(target, redis.username, secrets.redis_password, *tls)

    @property
    def display(self) -> str:
        """The URL with any password masked, and the ACL user if one is set: safe to print."""
        shown = redact_url(self.url)
        return shown if self.username is None else f"{shown} (user {self.username})"

    def options(self) -> dict[str, Any]:
        """The keyword arguments redis-py's `from_url` takes for these credentials and TLS files."""
        options: dict[str, Any] = {}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        for name, path in (
            ("ssl_ca_certs", self.tls_ca_file),
            ("ssl_certfile", self.tls_cert_file),
            ("ssl_keyfile", self.tls_key_file),
        ):
            if path is not None:
                options[name] = str(path)
        return options


def redis_client(access: RedisAccess, **options: Any) -> aioredis.Redis:
    """An asyncio Redis client for `access`; `options` (timeouts, …) go to redis-py as they are."""
    return aioredis.from_url(access.url, **access.options(), **options)


def config_secrets(config: RootConfig) -> Secrets:
    """The secrets `config` points at (its password and signing key files, unless the environment gives them)."""
    return load_secrets(config.redis.password_file, config.security.signing_key_file)
