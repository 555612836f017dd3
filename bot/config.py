"""The one frozen root config: YAML file, then environment overrides (`ARBBOT_REDIS_URL`, …)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.bus.redis_url import redact_url, url_password
from bot.paper.settings import PaperConfig
from bot.risk.settings import RiskConfig

SUPPORTED_EXCHANGES = frozenset({"okx", "bybit", "binance", "binanceusdm"})
"""ccxt.pro exchange classes (wire protocols) a venue entry may name in this release."""

DEMO_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"

Symbol = Annotated[str, Field(pattern=r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$", description="canonical BASE/QUOTE")]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Bps = Annotated[float, Field(ge=0.0, le=10_000.0)]


class ConfigError(ValueError):
    """A config the user must fix; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RedisConfig(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "arb"
    stream_maxlen: Annotated[int, Field(ge=100)] = 100_000
    publish_queue: Annotated[int, Field(ge=10)] = 10_000
    publish_market: bool = Field(
        default=True, description="publish books, gas and pools on the book/gas/pool channels for other processes"
    )
    book_rate_per_s: Annotated[float, Field(gt=0.0, le=10_000.0)] = Field(
        default=20.0, description="most books published per second per (venue, symbol); the latest is always sent"
    )
    username: str | None = Field(default=None, description="Redis ACL user (ARBBOT_REDIS_USERNAME overrides)")
    password_file: Path | None = Field(
        default=None,
        description="file holding the Redis password (ARBBOT_REDIS_PASSWORD / _FILE override); relative to the config",
    )
    tls_ca_file: Path | None = Field(default=None, description="rediss://: CA certificate(s) to trust (PEM)")
    tls_cert_file: Path | None = Field(default=None, description="rediss://: client certificate (PEM), with its key")
    tls_key_file: Path | None = Field(default=None, description="rediss://: client private key (PEM)")

    @model_validator(mode="after")
    def _scheme(self) -> RedisConfig:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis.url must start with redis://, rediss:// or unix://, got {redact_url(self.url)}")
        tls = [name for name in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, name) is not None]
        if tls and not self.url.startswith("rediss://"):
            raise ValueError(f"redis.{tls[0]} needs a rediss:// url (TLS), got {redact_url(self.url)}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("redis.tls_cert_file and redis.tls_key_file go together (a certificate and its key)")
        return self


class SecurityConfig(_Strict):
    """Message signing. The key itself is never in the config: ARBBOT_SIGNING_KEY, or the file named here."""

    signing_key_file: Path | None = Field(
        default=None,
        description="file holding the HMAC key messages are signed with (ARBBOT_SIGNING_KEY / _FILE override); "
        "relative to the config",
    )


class VenueConfig(_Strict):
    exchange: str = Field(description="ccxt.pro exchange class that speaks this venue's protocol")
    simulated: bool = False
    ws_url: str | None = Field(default=None, description="override of the exchange's websocket base URL")
    taker_fee_bps: Bps
    symbols: tuple[Symbol, ...] | None = Field(default=None, description="default: every configured symbol")
    trades: bool = Field(default=True, description="also watch public trades")
    stale_after_ms: Annotated[int, Field(ge=50, le=600_000)] = Field(
        default=2_000, description="a book with no update for this long (local receive time) is stale"
    )
    reconnect_after_ms: Annotated[int, Field(ge=100, le=3_600_000)] = Field(
        default=5_000, description="a stream unusable for this long makes the feed reconnect"
    )

    @model_validator(mode="after")
    def _known_exchange(self) -> VenueConfig:
        if self.exchange not in SUPPORTED_EXCHANGES:
            raise ValueError(
                f"exchange {self.exchange!r} is not supported yet (supported: {sorted(SUPPORTED_EXCHANGES)})"
            )
        return self


class SimSymbolConfig(_Strict):
    """How the simulator's fair price of one symbol moves."""

    start_price: PositiveFloat
    volatility_bps: PositiveFloat = Field(description="fair-price volatility per sqrt(second), bps")
    jumps_per_minute: NonNegativeFloat = 6.0
    jump_bps: NonNegativeFloat = 15.0
    tick_size: PositiveFloat = 0.01
    lot_size: PositiveFloat = 0.0001
    top_size: PositiveFloat = Field(description="mean size at the best level, base units")
    vol_of_vol: Annotated[float, Field(ge=0.0, le=3.0)] = Field(
        default=0.0, description="stationary std of the log volatility (0: constant volatility)"
    )
    vol_half_life_s: PositiveFloat = Field(default=60.0, description="half-life of a volatility shock, s")
    jump_vol_kick: Annotated[float, Field(ge=0.0, le=3.0)] = Field(
        default=0.0, description="log volatility added by each jump, decaying with vol_half_life_s"
    )


class SimVenueConfig(_Strict):
    """How one simulated venue quotes: lag, catch-up, noise, spread, depth and update rate."""

    lag_ms: NonNegativeInt = Field(description="how far this venue's quotes trail the fair price")
    noise_bps: NonNegativeFloat = 0.5
    noise_memory_ms: PositiveFloat = Field(default=2_000.0, description="time constant of the venue's price noise")
    spread_bps: PositiveFloat = 1.0
    spread_vol_beta: Annotated[float, Field(ge=0.0, le=3.0)] = Field(
        default=0.0, description="spread grows as (volatility / its mean) ** spread_vol_beta"
    )
    depth_levels: Annotated[int, Field(ge=1, le=400)] = 25
    level_gap_bps: PositiveFloat = 0.5
    size_scale: PositiveFloat = 1.0
    trades_per_s: NonNegativeFloat = 2.0
    catch_up_fast_ms: NonNegativeFloat = Field(
        default=0.0,
        description="time constant of the move toward the lagged fair price in the fast regime (0: at once)",
    )
    catch_up_slow_ms: NonNegativeFloat = Field(default=0.0, description="the same in the slow regime")
    catch_up_regime_s: PositiveFloat = Field(default=30.0, description="mean time a catch-up regime lasts, s")
    quotes_per_s: PositiveFloat | None = Field(default=None, description="mean book updates per s (None: every tick)")


class FeedsConfig(_Strict):
    backoff_initial_s: Annotated[float, Field(gt=0.0, le=60.0)] = 0.2
    backoff_max_s: Annotated[float, Field(gt=0.0, le=600.0)] = 10.0


class SimulatorConfig(_Strict):
    """The market (and chain) simulator: fair prices per symbol, quoted by each simulated venue."""

    seed: int = 7
    tick_ms: Annotated[int, Field(ge=5, le=10_000)] = 50
    symbols: dict[Symbol, SimSymbolConfig]
    venues: dict[Name, SimVenueConfig]
    leader_regime_s: PositiveFloat | None = Field(
        default=None,
        description="mean time one venue leads a symbol before another takes over (None: the venues' lag_ms decide)",
    )
    gas_demand_base_fee_gwei: PositiveFloat | None = Field(
        default=None, description="simulated chain: base fee that demand wanders around (None: the mainnet default)"
    )
    gas_burst_probability: Annotated[float, Field(ge=0.0, lt=1.0)] | None = Field(
        default=None, description="simulated chain: chance per block that a run of full blocks starts"
    )
    gas_burst_continue: Annotated[float, Field(ge=0.0, lt=1.0)] | None = Field(
        default=None, description="simulated chain: chance that such a run goes on for one more block"
    )


class CexCexConfig(_Strict):
    min_net_edge_bps: float = Field(default=1.0, ge=-1_000.0, le=10_000.0)
    max_notional: PositiveFloat = 50_000.0
    step_score: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    step_size_fraction: PositiveFloat = 0.25
    step_edge_bps: PositiveFloat = 1.0


class CexDexConfig(_Strict):
    min_net_edge_bps: float = Field(default=5.0, ge=-1_000.0, le=10_000.0)
    max_notional: PositiveFloat = 50_000.0


class DexDexSettings(_Strict):
    min_net_edge_bps: float = Field(default=1.0, ge=-1_000.0, le=10_000.0)
    max_notional: PositiveFloat = 50_000.0
    gas_units_per_swap: Annotated[int, Field(ge=21_000, le=5_000_000)] = 120_000


class StrategiesConfig(_Strict):
    cex_cex: CexCexConfig = CexCexConfig()
    cex_dex: CexDexConfig | None = None
    dex_dex: DexDexSettings | None = None


class PoolEntry(_Strict):
    dex: Name
    address: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
    symbol: Symbol
    fee_bps: Bps = 30.0


class LocalPoolEntry(_Strict):
    symbol: Symbol
    base_liquidity: PositiveFloat = Field(description="base tokens seeded into the local pool")
    fee_bps: Bps = 30.0


class ChainConfig(_Strict):
    """An EVM chain: a node's websocket (`ws_url`), the local anvil chain (`local: true`), or neither (replay)."""

    name: Name = "ethereum"
    ws_url: str | None = None
    local: bool = False
    stale_after_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 30_000
    tip_floor_gwei: NonNegativeFloat = 0.01
    gas_units_per_swap: Annotated[int, Field(ge=21_000, le=5_000_000)] = 110_000
    gas_price_symbol: Symbol = "ETH/USDT"
    pools: tuple[PoolEntry, ...] = ()
    local_pools: tuple[LocalPoolEntry, ...] = ()

    @model_validator(mode="after")
    def _source(self) -> ChainConfig:
        if self.local and self.ws_url is not None:
            raise ValueError("chain takes ws_url (a node) or local: true (the local anvil chain), not both")
        if self.local and self.pools:
            raise ValueError("a local chain deploys its own pools: use local_pools, not pools")
        return self


class RuleScorerConfig(_Strict):
    edge_midpoint_bps: float = 2.0
    edge_scale_bps: PositiveFloat = 2.0
    skew_tau_ms: PositiveFloat = 500.0
    base_lifetime_ms: PositiveFloat = 400.0


class ScorerConfig(_Strict):
    rule: RuleScorerConfig = RuleScorerConfig()
    model_dir: Path | None = Field(
        default=None,
        description="folder of model files ({kind}__{BASE}-{QUOTE}.npz, then {kind}.npz); relative to the config file",
    )
    max_model_age_h: PositiveFloat = Field(default=24.0, description="older models are flagged for retraining")
    reload_check_s: Annotated[float, Field(gt=0.0, le=3_600.0)] = Field(
        default=5.0, description="how often model files are checked for changes"
    )
    feature_window: Annotated[int, Field(ge=2, le=512)] = Field(
        default=64, description="updates of history kept per opportunity key (at least every model's window)"
    )


class DaemonConfig(_Strict):
    """The long-running process: health and metrics over HTTP, heartbeats, shutdown, logs."""

    http_host: str = Field(
        default="127.0.0.1", description="where /healthz, /readyz, /metrics listen (0.0.0.0 in containers)"
    )
    http_port: Annotated[int, Field(ge=0, le=65_535)] = Field(default=8787, description="0: no HTTP server")
    heartbeat_s: Annotated[float, Field(gt=0.0, le=3_600.0)] = Field(
        default=5.0, description="seconds between heartbeats on {prefix}:heartbeat:{role}"
    )
    stop_timeout_s: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=15.0, description="longest a clean stop (SIGTERM) may take before the process exits anyway"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: readable on a terminal, JSON lines otherwise"
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="the event loop of `arbbot run` and `arbbot demo` (uvloop: less CPU per update)"
    )


class RootConfig(_Strict):
    """Everything arbbot reads at start; frozen, unknown keys rejected."""

    redis: RedisConfig = RedisConfig()
    symbols: Annotated[tuple[Symbol, ...], Field(min_length=1)]
    book_depth: Annotated[int, Field(ge=1, le=400)] = 20
    venues: dict[Name, VenueConfig] = Field(default_factory=dict)
    feeds: FeedsConfig = FeedsConfig()
    chain: ChainConfig | None = None
    simulator: SimulatorConfig | None = None
    strategies: StrategiesConfig = StrategiesConfig()
    scorer: ScorerConfig = ScorerConfig()
    risk: RiskConfig = RiskConfig()
    paper: PaperConfig = PaperConfig()
    daemon: DaemonConfig = DaemonConfig()
    security: SecurityConfig = SecurityConfig()
    roles: Annotated[tuple[Literal["signals", "risk", "paper"], ...], Field(min_length=1)] = Field(
        default=("signals", "risk", "paper"),
        description="roles `arbbot run` / `arbbot demo` host in one process (`arbbot run --roles` overrides)",
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> RootConfig:
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"roles names one role twice: {list(self.roles)}")
        known = set(self.symbols)
        for name, venue in self.venues.items():
            unknown = set(venue.symbols or ()) - known
            if unknown:
                raise ValueError(f"venues.{name}.symbols names {sorted(unknown)}, not in symbols")
        if len(self.venues) < 2 and self.chain is None:
            raise ValueError("venues: at least 2 venues are needed (or a chain section for on-chain strategies)")
        for name in ("cex_dex", "dex_dex"):
            if getattr(self.strategies, name) is not None and self.chain is None:
                raise ValueError(f"strategies.{name} needs a chain section")
        simulated = [name for name, venue in self.venues.items() if venue.simulated]
        if simulated and self.simulator is None:
            raise ValueError(f"venues {simulated} are simulated but there is no simulator section")
        if self.simulator is not None:
            missing = [name for name in simulated if name not in self.simulator.venues]
            if missing:
                raise ValueError(f"simulated venues {missing} have no simulator.venues entry")
            unpriced = [s for name in simulated for s in self.symbols_of(name) if s not in self.simulator.symbols]
            if unpriced:
                raise ValueError(f"symbols {sorted(set(unpriced))} have no simulator.symbols entry")
        return self

    def symbols_of(self, venue: str) -> tuple[str, ...]:
        """The symbols a venue trades."""
        return self.venues[venue].symbols or self.symbols

    def fingerprint(self) -> str:
        """Short hash of the whole config, for the start-up log."""
        return hashlib.sha256(orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with secrets removed, safe to print."""
        dumped = self.model_dump(mode="json")
        dumped["redis"]["url"] = redact_url(self.redis.url)
        return dumped


class EnvOverrides(BaseSettings):
    """Settings read from the environment; they win over the YAML file."""

    model_config = SettingsConfigDict(env_prefix="ARBBOT_", extra="ignore", frozen=True)

    redis_url: str | None = None
    redis_prefix: str | None = None
    redis_username: str | None = None
    redis_password_file: Path | None = None
    signing_key_file: Path | None = None
    http_host: str | None = None
    http_port: int | None = None


SECRET_KEYS: dict[tuple[str, str], str] = {
    ("redis", "password"): "ARBBOT_REDIS_PASSWORD, ARBBOT_REDIS_PASSWORD_FILE or redis.password_file",
    ("security", "signing_key"): "ARBBOT_SIGNING_KEY, ARBBOT_SIGNING_KEY_FILE or security.signing_key_file",
}
"""Keys that would hold a secret in the config file, and where that secret goes instead."""


def _refuse_secrets(data: Mapping[str, Any], source: str) -> None:
    """ConfigError for a secret written into the config itself (never echoing its value)."""
    for (section, key), instead in SECRET_KEYS.items():
        values = data.get(section)
        if isinstance(values, Mapping) and key in values:
            raise ConfigError(f"{source}: {section}.{key}: secrets do not go in the config file; use {instead}")
    redis = data.get("redis")
    url = redis.get("url") if isinstance(redis, Mapping) else None
    if isinstance(url, str) and url_password(url) is not None:
        raise ConfigError(
            f"{source}: redis.url {redact_url(url)} holds a password: secrets do not go in the config file; "
            f"use {SECRET_KEYS[('redis', 'password')]}"
        )


def _format_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{where}'")
        else:
            lines.append(f"{source}: {where or 'config'}: {error['msg']}")
    return "\n".join(lines)


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> RootConfig:
    """Validate a config mapping, applying environment overrides; raise ConfigError naming `source`."""
    _refuse_secrets(data, source)
    overrides = EnvOverrides()
    merged: dict[str, Any] = dict(data)
    redis_section = dict(merged.get("redis") or {})
    for key, value in (
        ("url", overrides.redis_url),
        ("prefix", overrides.redis_prefix),
        ("username", overrides.redis_username),
        ("password_file", overrides.redis_password_file),
    ):
        if value is not None:
            redis_section[key] = value
    if redis_section:
        merged["redis"] = redis_section
    if overrides.signing_key_file is not None:
        merged["security"] = {**(merged.get("security") or {}), "signing_key_file": overrides.signing_key_file}
    daemon_section = dict(merged.get("daemon") or {})
    if overrides.http_host is not None:
        daemon_section["http_host"] = overrides.http_host
    if overrides.http_port is not None:
        daemon_section["http_port"] = overrides.http_port
    if daemon_section:
        merged["daemon"] = daemon_section
    try:
        return RootConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_config(path: str | Path) -> RootConfig:
    """Load and validate a YAML config file; every user error becomes one ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a UTF-8 text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    config = parse_config(_files_beside(data, Path(path).parent), source)
    model_dir = config.scorer.model_dir
    if model_dir is not None and not model_dir.is_absolute():
        # A relative model folder is read from where the config file is, not from wherever arbbot was started.
        scorer = config.scorer.model_copy(update={"model_dir": (Path(path).parent / model_dir).resolve()})
        config = config.model_copy(update={"scorer": scorer})
    return config


_FILE_KEYS = (
    ("redis", "password_file"),
    ("redis", "tls_ca_file"),
    ("redis", "tls_cert_file"),
    ("redis", "tls_key_file"),
    ("security", "signing_key_file"),
)


def _files_beside(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`data` with the secret and certificate files it names taken relative to the config file's folder (files
    named by environment variables stay relative to the current directory)."""
    out = dict(data)
    for section, key in _FILE_KEYS:
        values = out.get(section)
        if isinstance(values, dict) and isinstance(values.get(key), str) and not Path(values[key]).is_absolute():
            out[section] = {**values, key: str((folder / values[key]).resolve())}
    return out
