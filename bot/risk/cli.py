"""`arbbot risk`: run the risk/timing service, or tell a running one to halt or resume."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from redis.exceptions import RedisError

from bot.bus.channels import Channels
from bot.bus.client import RedisAccess, config_secrets, redis_client
from bot.bus.secrets import SecretError, Secrets
from bot.clock import SystemClock
from bot.config import ConfigError, RootConfig, load_config
from bot.observe import setup_role_logging
from bot.risk.forecast_window import spread_forecast
from bot.risk.service import RiskService, send_control

risk_app = typer.Typer(
    no_args_is_help=False, invoke_without_command=True, help="The risk/timing service: `arbbot risk -c CONFIG` runs it."
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="config file (its redis and risk sections)")]


def _fail(message: str) -> typer.Exit:
    print(f"arbbot risk: {message}", file=sys.stderr)
    return typer.Exit(2)


def _load(path: Path) -> RootConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _redis_down(access: RedisAccess, exc: BaseException) -> typer.Exit:
    return _fail(f"cannot reach Redis at {access.display} ({exc}); is it running? set redis.url or ARBBOT_REDIS_URL")


def _access(cfg: RootConfig) -> tuple[RedisAccess, Secrets]:
    """The config's Redis and secrets; one line (exit 2) when a secret cannot be read."""
    try:
        secrets = config_secrets(cfg)
        return RedisAccess.of(cfg.redis, secrets), secrets
    except SecretError as exc:
        raise _fail(str(exc)) from None


@risk_app.callback()
def risk_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="config file (its risk section)")] = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: until signalled)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Decide each signal (slippage, window, size, limits) and publish the decisions."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise _fail("--config/-c is required (e.g. arbbot risk -c config/demo.yaml)")
    if duration is not None and duration <= 0:
        raise _fail("--duration must be positive")
    cfg = _load(config)
    access, secrets = _access(cfg)
    setup_role_logging(cfg.daemon.log_format, verbose, secrets.values())
    try:
        asyncio.run(_run(cfg, access, secrets, duration))
    except (RedisError, OSError) as exc:
        raise _redis_down(access, exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _run(cfg: RootConfig, access: RedisAccess, secrets: Secrets, duration: float | None) -> None:
    client = redis_client(access)
    clock = SystemClock()
    service = RiskService(cfg, client, clock, forecast=spread_forecast(cfg, clock), signing=secrets.signing())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await client.ping()
        await service.start()
        print(
            f"arbbot risk: following {service.channels.signal_stream()} at {access.display}, "
            f"state {service.engine.limits.state}",
            file=sys.stderr,
            flush=True,
        )
        if duration is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
        await service.stop()
        stats = service.engine.stats
        print(
            f"arbbot risk: {stats.signals} signals, {stats.executed} executed, {stats.skipped} skipped, "
            f"{stats.ignored} ignored, {service.rejections.total} rejected; state {service.engine.limits.state}",
            file=sys.stderr,
        )
    finally:
        await client.aclose()


def _control(config: Path, command: str, reason: str) -> None:
    cfg = _load(config)
    access, secrets = _access(cfg)

    async def send() -> int:
        client = redis_client(access)
        try:
            channels, now = Channels(cfg.redis.prefix), SystemClock().now_ms()
            return await send_control(client, channels, command, reason, now, secrets.signing().signer)
        finally:
            await client.aclose()

    try:
        receivers = asyncio.run(send())
    except (RedisError, OSError) as exc:
        raise _redis_down(access, exc) from None
    print(f"arbbot risk: sent {command} to {receivers} risk service(s)")
    if receivers == 0:
        print("arbbot risk: no risk service is listening; it was not told", file=sys.stderr)


@risk_app.command("halt")
def halt_command(
    config: ConfigOption,
    reason: Annotated[str, typer.Option(help="why (shown in every later decision)")] = "operator halt",
) -> None:
    """Tell running risk services to skip every signal (state HALTED) until `resume`."""
    _control(config, "halt", reason)


@risk_app.command("resume")
def resume_command(config: ConfigOption, reason: Annotated[str, typer.Option(help="why")] = "operator resume") -> None:
    """Tell running risk services to decide signals again (state ACTIVE)."""
    _control(config, "resume", reason)
