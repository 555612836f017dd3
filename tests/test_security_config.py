"""Secrets from the environment or from files the config names, never from the config itself; the Redis client
options (ACL user, password, TLS files) every client is built with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio.connection import SSLConnection

from bot.bus.client import RedisAccess, config_secrets, redis_client
from bot.bus.secrets import SecretError, Secrets, load_secrets
from bot.config import ConfigError, RedisConfig, load_config, parse_config

PASSWORD = "pw-Zq81-never-shown"
KEY = "key-Hq27-never-shown-0123456789"
ENV_NAMES = (
    "ARBBOT_REDIS_URL",
    "ARBBOT_REDIS_USERNAME",
    "ARBBOT_REDIS_PASSWORD",
    "ARBBOT_REDIS_PASSWORD_FILE",
    "ARBBOT_SIGNING_KEY",
    "ARBBOT_SIGNING_KEY_FILE",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def _data(**sections: Any) -> dict[str, Any]:
    return {
        "symbols": ["BTC/USDT"],
        "venues": {"a": {"exchange": "okx", "taker_fee_bps": 1.0}, "b": {"exchange": "okx", "taker_fee_bps": 1.0}},
        **sections,
    }


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("sections", "names"),
    [
        ({"redis": {"password": PASSWORD}}, ("redis.password", "ARBBOT_REDIS_PASSWORD")),
        ({"security": {"signing_key": KEY}}, ("security.signing_key", "ARBBOT_SIGNING_KEY")),
        ({"redis": {"url": f"redis://arb:{PASSWORD}@127.0.0.1:6379/0"}}, ("redis.url", "ARBBOT_REDIS_PASSWORD")),
    ],
)
def test_a_secret_in_the_config_file_is_refused_without_echoing_it(
    tmp_path: Path, sections: dict[str, Any], names: tuple[str, ...]
) -> None:
    path = _write(tmp_path / "arbbot.yaml", _data(**sections))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert all(name in message for name in names)
    assert str(path) in message
    assert PASSWORD not in message and KEY not in message


def test_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBBOT_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("ARBBOT_SIGNING_KEY", KEY)
    secrets = config_secrets(parse_config(_data()))
    assert secrets == Secrets(PASSWORD, KEY.encode())
    assert secrets.signing().enabled
    assert PASSWORD not in repr(secrets) and KEY not in repr(secrets)
    assert set(secrets.values()) == {PASSWORD, KEY}


def test_secret_files_named_in_config_are_read_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "redis.pw").write_text(PASSWORD + "\n")
    (folder / "signing.key").write_bytes(KEY.encode() + b"\r\n")
    data = _data(redis={"password_file": "redis.pw"}, security={"signing_key_file": "signing.key"})
    config = load_config(_write(folder / "arbbot.yaml", data))
    assert config.redis.password_file == folder / "redis.pw"
    assert config_secrets(config) == Secrets(PASSWORD, KEY.encode())
    dumped = str(config.model_dump()) + str(config.redacted()) + config.model_dump_json()
    assert PASSWORD not in dumped and KEY not in dumped


def test_file_variables_override_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "env.key").write_text(KEY)
    (tmp_path / "config.key").write_text("the-config-file-key-0123456789")
    monkeypatch.setenv("ARBBOT_SIGNING_KEY_FILE", str(tmp_path / "env.key"))
    config = parse_config(_data(security={"signing_key_file": str(tmp_path / "config.key")}))
    assert config.security.signing_key_file == tmp_path / "env.key"
    assert config_secrets(config).signing_key == KEY.encode()


def test_a_value_variable_wins_over_a_file_the_config_names(tmp_path: Path) -> None:
    (tmp_path / "config.key").write_text("the-config-file-key-0123456789")
    secrets = load_secrets(None, tmp_path / "config.key", {"ARBBOT_SIGNING_KEY": KEY})
    assert secrets.signing_key == KEY.encode()


@pytest.mark.parametrize(
    ("environ", "files", "fragment"),
    [
        ({"ARBBOT_SIGNING_KEY": KEY, "ARBBOT_SIGNING_KEY_FILE": "/x"}, {}, "keep one"),
        ({"ARBBOT_REDIS_PASSWORD": PASSWORD, "ARBBOT_REDIS_PASSWORD_FILE": "/x"}, {}, "keep one"),
        ({"ARBBOT_SIGNING_KEY": "short"}, {}, "at least 16"),
        ({}, {"signing": ""}, "is empty"),
        ({}, {"signing": "\n"}, "is empty"),
        ({}, {"signing": None}, "cannot read"),
        ({}, {"password": b"\xff\xfe".decode("latin-1")}, "not UTF-8"),
    ],
)
def test_unusable_secrets_are_one_clear_error(
    tmp_path: Path, environ: dict[str, str], files: dict[str, str | None], fragment: str
) -> None:
    paths: dict[str, Path | None] = {"password": None, "signing": None}
    for name, content in files.items():
        path = paths[name] = tmp_path / name
        if content is not None:
            path.write_bytes(content.encode("latin-1"))
    with pytest.raises(SecretError, match=fragment) as info:
        load_secrets(paths["password"], paths["signing"], environ)
    assert KEY not in str(info.value) and PASSWORD not in str(info.value)


def test_empty_variables_count_as_unset() -> None:
    assert load_secrets(None, None, {"ARBBOT_SIGNING_KEY": "", "ARBBOT_REDIS_PASSWORD": ""}) == Secrets()


def test_client_options_reach_the_connection_pool(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    redis = RedisConfig(
        url="rediss://127.0.0.1:6380/2", username="arbbot", tls_ca_file=ca, tls_cert_file=cert, tls_key_file=key
    )
    access = RedisAccess.of(redis, Secrets(PASSWORD, None))
    client = redis_client(access, socket_timeout=3.0)
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("arbbot", PASSWORD)
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (str(ca), str(cert), str(key))
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == ("127.0.0.1", 6380, 2, 3.0)
    assert PASSWORD not in repr(access) + repr(client) + access.display
    assert access.display == "rediss://127.0.0.1:6380/2 (user arbbot)"


def test_tls_options_need_rediss_and_a_certificate_needs_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="rediss://"):
        parse_config(_data(redis={"url": "redis://127.0.0.1:6379/0", "tls_ca_file": "/ca.pem"}))
    with pytest.raises(ConfigError, match="go together"):
        parse_config(_data(redis={"url": "rediss://127.0.0.1:6379/0", "tls_cert_file": "/c.pem"}))
    redis = RedisConfig(url="rediss://127.0.0.1:6379/0", tls_ca_file=Path("/ca.pem"))
    with pytest.raises(SecretError, match="rediss://"):
        RedisAccess.of(redis, Secrets(), url="redis://127.0.0.1:6379/0")


def test_a_password_given_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBBOT_REDIS_URL", "redis://:other@127.0.0.1:6379/0")
    config = parse_config(_data())
    with pytest.raises(SecretError, match="keep one") as info:
        RedisAccess.of(config.redis, Secrets(PASSWORD, None))
    assert "other" not in str(info.value) and PASSWORD not in str(info.value)


def test_username_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBBOT_REDIS_USERNAME", "arbbot-risk")
    assert parse_config(_data()).redis.username == "arbbot-risk"
