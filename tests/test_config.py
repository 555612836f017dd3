"""The root config: YAML file, environment overrides, and one clear ConfigError for every user mistake."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from bot.config import DEMO_CONFIG_PATH, ConfigError, RootConfig, load_config, parse_config

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the caller's ARBBOT_* variables out of these tests."""
    monkeypatch.delenv("ARBBOT_REDIS_URL", raising=False)
    monkeypatch.delenv("ARBBOT_REDIS_PREFIX", raising=False)


def _minimal() -> dict[str, Any]:
    return {
        "symbols": ["BTC/USDT", "ETH/USDT"],
        "venues": {
            "alpha": {"exchange": "okx", "taker_fee_bps": 2.0},
            "beta": {"exchange": "okx", "taker_fee_bps": 2.5},
        },
    }


def _simulated() -> dict[str, Any]:
    data = _minimal()
    for venue in data["venues"].values():
        venue["simulated"] = True
    data["simulator"] = {
        "symbols": {
            "BTC/USDT": {"start_price": 97000.0, "volatility_bps": 4.0, "top_size": 0.4},
            "ETH/USDT": {"start_price": 3400.0, "volatility_bps": 5.0, "top_size": 6.0},
        },
        "venues": {"alpha": {"lag_ms": 0}, "beta": {"lag_ms": 250}},
    }
    return data


def _write(tmp_path: Path, data: object, name: str = "arbbot.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _error(tmp_path: Path, data: object) -> tuple[str, Path]:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value), path


def test_demo_config_loads() -> None:
    cfg = load_config(DEMO_CONFIG_PATH)
    assert isinstance(cfg, RootConfig)
    assert set(cfg.symbols) == {"BTC/USDT", "ETH/USDT"}
    assert len(cfg.venues) >= 2
    assert all(venue.simulated for venue in cfg.venues.values())
    assert cfg.simulator is not None
    assert set(cfg.venues) <= set(cfg.simulator.venues)
    assert cfg.redis.url.startswith("redis://127.0.0.1")


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _minimal()))
    assert cfg.book_depth == 20
    assert cfg.redis.prefix == "arb"
    assert cfg.symbols_of("alpha") == ("BTC/USDT", "ETH/USDT")
    assert cfg.venues["beta"].taker_fee_bps == 2.5


def test_unknown_top_level_key_names_file_and_key(tmp_path: Path) -> None:
    message, path = _error(tmp_path, {**_minimal(), "bogus_key": 1})
    assert str(path) in message
    assert "bogus_key" in message


@pytest.mark.parametrize(
    ("section", "dotted"),
    [
        ({"strategies": {"cex_cex": {"bogus": 1}}}, "strategies.cex_cex.bogus"),
        ({"redis": {"password": "x"}}, "redis.password"),
        ({"scorer": {"rule": {"edge_midpoint": 2.0}}}, "scorer.rule.edge_midpoint"),
    ],
)
def test_unknown_nested_key_names_file_and_dotted_key(tmp_path: Path, section: dict[str, Any], dotted: str) -> None:
    message, path = _error(tmp_path, {**_minimal(), **section})
    assert str(path) in message
    assert dotted in message


def test_unknown_key_inside_a_venue_names_the_venue(tmp_path: Path) -> None:
    data = _minimal()
    data["venues"]["beta"]["fee"] = 3
    message, path = _error(tmp_path, data)
    assert str(path) in message
    assert "venues.beta.fee" in message


def _break(data: dict[str, Any], dotted: str, value: object) -> dict[str, Any]:
    broken = copy.deepcopy(data)
    *parents, leaf = dotted.split(".")
    node = broken
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return broken


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("book_depth", "twenty"),
        ("book_depth", 0),
        ("book_depth", 10_000),
        ("venues.alpha.taker_fee_bps", -1.0),
        ("venues.alpha.taker_fee_bps", "cheap"),
        ("venues.alpha.simulated", "sometimes"),
        ("strategies.cex_cex.max_notional", -5),
        ("strategies.cex_cex.max_notional", 0),
        ("strategies.cex_cex.step_score", 2.0),
        ("redis.stream_maxlen", 5),
        ("redis.prefix", "has space"),
        ("redis.url", "http://127.0.0.1:6379/0"),
        ("symbols", "BTC/USDT"),
        ("symbols", []),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path: Path, dotted: str, value: object) -> None:
    message, path = _error(tmp_path, _break(_minimal(), dotted, value))
    assert str(path) in message
    assert dotted.split(".")[-1] in message


@pytest.mark.parametrize("symbol", ["btc/usdt", "BTCUSDT", "BTC-USDT", "BTC/USDT:USDT", "/USDT", "BTC/", ""])
def test_bad_symbol_format(tmp_path: Path, symbol: str) -> None:
    message, path = _error(tmp_path, _break(_minimal(), "symbols", [symbol]))
    assert str(path) in message
    assert "symbols" in message


def test_venue_symbol_not_in_symbols(tmp_path: Path) -> None:
    message, _ = _error(tmp_path, _break(_minimal(), "venues.alpha.symbols", ["SOL/USDT"]))
    assert "SOL/USDT" in message


def test_unsupported_exchange_says_what_is_supported(tmp_path: Path) -> None:
    message, path = _error(tmp_path, _break(_minimal(), "venues.beta.exchange", "mtgox"))
    assert str(path) in message
    assert "mtgox" in message
    assert "okx" in message
    assert "venues.beta" in message


def test_bad_venue_name(tmp_path: Path) -> None:
    data = _minimal()
    data["venues"]["Bad Name"] = data["venues"].pop("beta")
    message, path = _error(tmp_path, data)
    assert str(path) in message
    assert "Bad Name" in message


def test_simulated_config_loads(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _simulated()))
    assert cfg.simulator is not None
    assert cfg.simulator.venues["beta"].lag_ms == 250


def test_simulated_venue_without_simulator_section(tmp_path: Path) -> None:
    data = _simulated()
    del data["simulator"]
    message, path = _error(tmp_path, data)
    assert str(path) in message
    assert "simulator" in message
    assert "alpha" in message


def test_simulated_venue_without_simulator_entry(tmp_path: Path) -> None:
    data = _simulated()
    del data["simulator"]["venues"]["beta"]
    message, path = _error(tmp_path, data)
    assert str(path) in message
    assert "beta" in message
    assert "simulator.venues" in message


def test_simulated_symbol_without_price_model(tmp_path: Path) -> None:
    data = _simulated()
    del data["simulator"]["symbols"]["ETH/USDT"]
    message, _ = _error(tmp_path, data)
    assert "ETH/USDT" in message


@pytest.mark.parametrize("venues", [{}, {"alpha": {"exchange": "okx", "taker_fee_bps": 2.0}}])
def test_fewer_than_two_venues(tmp_path: Path, venues: dict[str, Any]) -> None:
    message, path = _error(tmp_path, {**_minimal(), "venues": venues})
    assert str(path) in message
    assert "venues" in message


def test_missing_required_section(tmp_path: Path) -> None:
    data = _minimal()
    del data["venues"]
    message, path = _error(tmp_path, data)
    assert str(path) in message
    assert "venues" in message


@pytest.mark.parametrize("text", ["symbols: [BTC/USDT\n", "venues:\n  alpha: {exchange: okx\n", "a: b: c\n", "\t- x\n"])
def test_invalid_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is None  # one message for the user, not a chained yaml traceback


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"symbols: [\xff\xfe]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**_minimal(), "extra": True}, "from-the-test")
    assert "from-the-test" in str(info.value)
    assert "extra" in str(info.value)


def test_env_overrides_redis_url_and_stays_redacted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:6390/1"
    monkeypatch.setenv("ARBBOT_REDIS_URL", url)
    cfg = load_config(_write(tmp_path, {**_minimal(), "redis": {"url": "redis://127.0.0.1:6379/0"}}))
    assert cfg.redis.url == url
    redacted = cfg.redacted()
    assert SECRET not in str(redacted)
    assert SECRET not in repr(redacted)
    assert "127.0.0.1:6390/1" in redacted["redis"]["url"]
    assert redacted["venues"]["alpha"]["taker_fee_bps"] == 2.0
    assert cfg.redis.url == url  # redacting does not touch the config


def test_env_override_with_bad_scheme_does_not_leak_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBBOT_REDIS_URL", f"http://:{SECRET}@127.0.0.1:6390/1")
    with pytest.raises(ConfigError) as info:
        parse_config(_minimal(), "env-test")
    assert "redis.url" in str(info.value)
    assert SECRET not in str(info.value)


def test_env_overrides_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBBOT_REDIS_PREFIX", "arbtest")
    assert parse_config(_minimal()).redis.prefix == "arbtest"


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _minimal()))
    with pytest.raises(ValidationError):
        cfg.book_depth = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.strategies.cex_cex.max_notional = 1.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.venues["alpha"].taker_fee_bps = 0.0  # type: ignore[misc]
    assert cfg.book_depth == 20
    assert cfg.venues["alpha"].taker_fee_bps == 2.0


def test_fingerprint_is_stable_and_tracks_values() -> None:
    base = parse_config(_minimal())
    again = parse_config(copy.deepcopy(_minimal()))
    assert base.fingerprint() == again.fingerprint()
    assert base.fingerprint() == base.fingerprint()
    changed = [
        parse_config(_break(_minimal(), "venues.beta.taker_fee_bps", 2.6)),
        parse_config(_break(_minimal(), "book_depth", 21)),
        parse_config(_break(_minimal(), "strategies.cex_cex.step_edge_bps", 1.5)),
    ]
    prints = {base.fingerprint(), *(cfg.fingerprint() for cfg in changed)}
    assert len(prints) == 1 + len(changed)


def test_fingerprint_ignores_key_order_and_spelled_out_defaults() -> None:
    data = _minimal()
    reordered = {"venues": dict(reversed(list(data["venues"].items()))), "symbols": data["symbols"]}
    explicit = {**data, "book_depth": 20}
    assert parse_config(reordered).fingerprint() == parse_config(data).fingerprint()
    assert parse_config(explicit).fingerprint() == parse_config(data).fingerprint()


def test_json_schema_is_available() -> None:
    schema = RootConfig.model_json_schema()
    assert {"redis", "symbols", "venues", "strategies"} <= set(schema["properties"])
    assert schema.get("additionalProperties") is False
