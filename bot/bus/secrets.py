"""The secrets arbbot uses (the Redis password, the signing key): from environment variables or from files,
never from the config file. They are held apart from the config, so no config dump can contain them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.bus.signing import MIN_KEY_BYTES, Signing

REDIS_PASSWORD_ENV = "ARBBOT_REDIS_PASSWORD"
REDIS_PASSWORD_FILE_ENV = "ARBBOT_REDIS_PASSWORD_FILE"
SIGNING_KEY_ENV = "ARBBOT_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "ARBBOT_SIGNING_KEY_FILE"


class SecretError(ValueError):
    """A secret that cannot be read or is unusable; the message says what to fix and never shows the value."""


@dataclass(frozen=True, slots=True)
class Secrets:
    """The Redis password and the signing key, each None when not configured; `repr` never shows them."""

    redis_password: str | None = field(default=None, repr=False)
    signing_key: bytes | None = field(default=None, repr=False)

    def signing(self) -> Signing:
        """Sign and verify with the key (neither without one)."""
        return Signing.from_key(self.signing_key)

    def values(self) -> tuple[str, ...]:
        """The secrets as text, for a log or output redactor to mask."""
        out = [self.redis_password] if self.redis_password else []
        if self.signing_key:
            out.append(self.signing_key.decode("utf-8", "replace"))
        return tuple(out)


def _read(path: Path, what: str) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecretError(f"{what} file {path}: cannot read it ({exc.strerror or exc})") from None
    value = raw.rstrip(b"\r\n")  # `echo secret > file` adds a newline that is not part of the secret
    if not value:
        raise SecretError(f"{what} file {path} is empty")
    return value


def _one(environ: Mapping[str, str], name: str, file_env: str, file: Path | None, what: str) -> bytes | None:
    """The value of env `name`, else of the file `file` (ARBBOT_…_FILE, or the config's); None with neither."""
    value = environ.get(name, "")
    if value and environ.get(file_env):
        raise SecretError(f"both {name} and {file_env} are set: keep one")
    if value:
        return value.encode()
    return _read(file, what) if file is not None else None


def load_secrets(
    redis_password_file: Path | None, signing_key_file: Path | None, environ: Mapping[str, str] | None = None
) -> Secrets:
    """Read the Redis password and the signing key: ARBBOT_REDIS_PASSWORD / ARBBOT_SIGNING_KEY, else the files
    named (the config's `redis.password_file` / `security.signing_key_file`, which ARBBOT_…_FILE overrides).

    SecretError for an unreadable or empty file, both a value and a file in the environment, a key shorter than
    MIN_KEY_BYTES or a password that is not UTF-8 text. Empty variables count as unset.
    """
    env = os.environ if environ is None else environ
    password = _one(env, REDIS_PASSWORD_ENV, REDIS_PASSWORD_FILE_ENV, redis_password_file, "Redis password")
    key = _one(env, SIGNING_KEY_ENV, SIGNING_KEY_FILE_ENV, signing_key_file, "signing key")
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise SecretError(
            f"the signing key has {len(key)} bytes; use at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)"
        )
    try:
        text = password.decode() if password is not None else None
    except UnicodeDecodeError:
        raise SecretError("the Redis password is not UTF-8 text") from None
    return Secrets(text, key)
