"""The `arbbot` command line (also `python -m bot`)."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from redis.exceptions import RedisError
from rich.console import Console

from bot import event_loop
from bot.bus.channels import Channels
from bot.bus.client import RedisAccess, redis_client
from bot.bus.codec import DecodeError, json_schemas
from bot.bus.local_redis import RedisUnavailable
from bot.bus.secrets import SecretError, Secrets, load_secrets
from bot.bus.signing import Signing, Verifier
from bot.bus.subscriber import CatchUp, SubscriberStats, follow
from bot.config import DEMO_CONFIG_PATH, ConfigError, EnvOverrides, RedisConfig, RootConfig, load_config
from bot.messages import Message
from bot.risk.cli import risk_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="arbbot: crypto arbitrage signals on Redis.")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _fail(message: str, code: int = 2) -> typer.Exit:
    print(f"arbbot: {message}", file=sys.stderr)
    return typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(config: Path) -> RootConfig:
    try:
        return load_config(config)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _secrets(redis_password_file: Path | None, signing_key_file: Path | None) -> Secrets:
    """The Redis password and signing key (environment, else the files named); one line if unreadable."""
    try:
        return load_secrets(redis_password_file, signing_key_file)
    except SecretError as exc:
        raise _fail(str(exc)) from None


def _role_secrets(cfg: RootConfig, verbose: bool) -> Secrets:
    """The config's secrets, with role logging set up to redact them (one line if a secret is unreadable)."""
    from bot.observe import setup_role_logging

    secrets = _secrets(cfg.redis.password_file, cfg.security.signing_key_file)
    setup_role_logging(cfg.daemon.log_format, verbose, secrets.values())
    return secrets


def _redis_access(redis: RedisConfig, secrets: Secrets) -> RedisAccess:
    """How to reach the configured Redis with `secrets`; one line if the settings contradict each other."""
    try:
        return RedisAccess.of(redis, secrets)
    except SecretError as exc:
        raise _fail(str(exc)) from None


def _output_folder(path: Path, option: str) -> None:
    """Create the folder an output file goes in now, before any long work; one line if that is impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"{option} {path}: cannot create its folder ({exc.strerror or exc})") from None


def _positive(value: float | None, option: str) -> None:
    if value is not None and value <= 0:
        raise _fail(f"{option} must be positive")


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds (default: until Ctrl-C)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the run summary as JSON here")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="config file")] = DEMO_CONFIG_PATH,
    faults: Annotated[str | None, typer.Option(help="inject server-side faults, e.g. drop,stall,gap,malformed")] = None,
    fault_interval: Annotated[float, typer.Option(help="seconds between injected faults")] = 5.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run simulated venues, ccxt.pro feeds, strategy, scorer, risk and paper trader on this machine."""
    from bot.demo import run_demo, summary_table, write_summary
    from bot.paper.service import PaperError
    from bot.venues.faults import parse_faults

    _positive(duration, "--duration")
    _positive(fault_interval, "--fault-interval")
    cfg = _load(config)
    if cfg.simulator is None:
        raise _fail(f"{config}: the demo needs a simulator section and simulated venues")
    try:
        kinds = parse_faults(faults) if faults else []
    except ValueError as exc:
        raise _fail(f"--faults: {exc}") from None
    secrets = _role_secrets(cfg, verbose)
    console = Console(highlight=False, soft_wrap=True)
    try:
        summary = event_loop.run(
            run_demo(cfg, duration, console, kinds, fault_interval, fresh_ledger=True, secrets=secrets),
            cfg.daemon.event_loop,
        )
    except (RedisUnavailable, PaperError, SecretError) as exc:
        raise _fail(str(exc)) from None
    console.print(summary_table(summary))
    if json_path is not None:
        write_summary(summary, json_path)
        console.print(f"summary written to {json_path}")


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="config file (e.g. config/default.yaml)")],
    roles: Annotated[
        str | None, typer.Option(help="comma-separated roles to host: signals, risk, paper (default: the config's)")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: until signalled)")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the run summary as JSON here on exit")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """The daemon: the chosen roles against the config's venues, with /healthz, /readyz and /metrics over HTTP,
    heartbeats on Redis, supervised tasks, and a clean stop on SIGINT/SIGTERM."""
    from bot.demo import run_demo, summary_table, write_summary
    from bot.observe import ListenError
    from bot.paper.service import PaperError

    _positive(duration, "--duration")
    cfg = _load(config)
    if roles is not None:
        chosen = tuple(part.strip() for part in roles.split(",") if part.strip())
        try:
            cfg = RootConfig.model_validate({**cfg.model_dump(), "roles": chosen})
        except ValueError as exc:
            raise _fail(f"--roles {roles}: choose from signals, risk, paper ({type(exc).__name__})") from None
    secrets = _role_secrets(cfg, verbose)
    console = Console(highlight=False, soft_wrap=True)
    try:
        summary = event_loop.run(
            run_demo(cfg, duration, console, start_private_redis=False, observe=True, secrets=secrets),
            cfg.daemon.event_loop,
        )
    except (RedisUnavailable, PaperError, ListenError, SecretError) as exc:
        raise _fail(str(exc)) from None
    console.print(summary_table(summary))
    if json_path is not None:
        write_summary(summary, json_path)


@app.command()
def record(
    config: Annotated[Path, typer.Option("--config", "-c", help="config file")],
    duration: Annotated[float, typer.Option(help="seconds to record")],
    out: Annotated[Path, typer.Option(help="recording to write (.jsonl or .jsonl.gz)")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Record books and trades from the configured venues (local simulated ones are started as needed)."""
    from bot.observe import setup_role_logging
    from bot.record import record as run_record

    _positive(duration, "--duration")
    cfg = _load(config)
    setup_role_logging(cfg.daemon.log_format, verbose)
    summary = asyncio.run(run_record(cfg, duration, out))
    print(
        f"recorded {summary.books} books, {summary.trades} trades and {summary.chain_events} gas/pool events "
        f"to {out} ({summary.rejected} rejected, {summary.reconnects} reconnects)"
    )


@app.command()
def simulate(
    duration: Annotated[float, typer.Option(help="simulated seconds")],
    out: Annotated[Path, typer.Option(help="recording to write (.jsonl or .jsonl.gz)")],
    scenario: Annotated[
        str | None,
        typer.Option(
            help="a named market (calm, volatile, lead_lag, thin, gas_spike) on config/demo.yaml's venues and fees; "
            "takes no --config"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="config with simulated venues (and chain.local_pools); not with --scenario"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="simulator seed (default: the scenario's or config's, 7)")] = None,
    chain_block_time: Annotated[float | None, typer.Option(help="simulated block time, s (default 12)")] = None,
) -> None:
    """Write a recording straight from the market (and chain) simulator: no servers, no network, reproducible.

    Give either --scenario NAME or --config FILE (a scenario is a complete config: its venues and fees are
    config/demo.yaml's, so a model trained with -c config/demo.yaml knows them).
    """
    from bot.recording import RecordingError
    from bot.sim.scenarios import UnknownScenario, scenario_config
    from bot.simulate import SimulateError
    from bot.simulate import simulate as run_simulation

    _positive(duration, "--duration")
    if scenario is not None and config is not None:
        raise _fail("give --scenario or --config, not both: a scenario is a complete config")
    if scenario is None and config is None:
        raise _fail("give --scenario NAME (calm, volatile, lead_lag, thin, gas_spike) or --config FILE")
    if scenario is not None:
        try:
            cfg = scenario_config(scenario) if seed is None else scenario_config(scenario, seed)
        except UnknownScenario as exc:
            raise _fail(str(exc)) from None
        source = f"scenario {scenario}"
    else:
        assert config is not None
        cfg = _load(config)
        source = str(config)
        if seed is not None and cfg.simulator is not None:
            cfg = cfg.model_copy(update={"simulator": cfg.simulator.model_copy(update={"seed": seed})})
    try:
        summary = run_simulation(cfg, duration, out, chain_block_time_s=chain_block_time)
    except SimulateError as exc:
        raise _fail(f"{source}: {exc}") from None
    except RecordingError as exc:
        raise _fail(str(exc)) from None
    print(
        f"simulated {duration:g} s: {summary.books} books, {summary.trades} trades, {summary.gas} gas and "
        f"{summary.pools} pool events to {out}"
    )


@app.command()
def replay(
    files: Annotated[list[Path], typer.Argument(help="recordings (.jsonl or .jsonl.gz), merged by receive time")],
    config: Annotated[Path, typer.Option("--config", "-c", help="config with the recorded venues")] = DEMO_CONFIG_PATH,
    speed: Annotated[float | None, typer.Option(help="real time × SPEED (default: as fast as possible)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the replay summary as JSON here")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Drive the signal pipeline from recordings and publish the signals on Redis as live."""
    from bot.recording import RecordingError

    _positive(speed, "--speed")
    cfg = _load(config)
    secrets = _role_secrets(cfg, verbose)
    access = _redis_access(cfg.redis, secrets)
    try:
        summary = asyncio.run(_replay(cfg, access, secrets.signing(), files, speed))
    except RecordingError as exc:
        raise _fail(str(exc)) from None
    except (RedisError, OSError) as exc:
        raise _fail(f"cannot reach Redis at {access.display} ({exc}); set ARBBOT_REDIS_URL") from None
    report = asdict(summary)
    print(" ".join(f"{key} {value}" for key, value in report.items()))
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


async def _replay(
    cfg: RootConfig, access: RedisAccess, signing: Signing, files: list[Path], speed: float | None
) -> Any:
    from bot.bus.channels import Channels
    from bot.bus.publisher import SignalPublisher
    from bot.replay import replay_files

    client = redis_client(access)
    await client.ping()
    publisher = SignalPublisher(
        client, Channels(cfg.redis.prefix), cfg.redis.stream_maxlen, cfg.redis.publish_queue, signer=signing.signer
    )
    publisher.start()
    try:
        return await replay_files(cfg, files, publisher.submit, speed)
    finally:
        await publisher.close(timeout_s=30.0)
        await client.aclose()


def _recordings(data: list[Path], extra: list[str]) -> list[Path]:
    files = [*data, *(Path(arg) for arg in extra)]
    if not files:
        raise _fail("no recordings: pass --data FILE [FILE ...]")
    for path in files:
        if not path.is_file():
            raise _fail(f"{path}: no such recording")
    return files


def _range(text: str) -> tuple[float, float]:
    from bot.model.train import parse_range

    try:
        return parse_range(text)
    except ValueError as exc:
        raise _fail(f"--range: {exc}") from None


def _build_dataset(
    files: list[Path], cfg: RootConfig, kind: str, time_range: tuple[float, float], settings: Any, window: int
) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bot.model.runs import build_runs_dataset
    from bot.recording import RecordingError

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
    with Progress(*columns, TimeElapsedColumn(), transient=True) as progress:
        task = progress.add_task("replaying and labelling", total=1.0)

        def advance(done_ms: int, total_ms: int) -> None:
            progress.update(task, completed=done_ms / max(total_ms, 1))

        try:
            return build_runs_dataset(files, cfg, kind, time_range, settings, window, advance)
        except RecordingError as exc:
            raise _fail(str(exc)) from None
        except ValueError as exc:
            raise _fail(str(exc)) from None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    data: Annotated[
        list[Path],
        typer.Option(
            help="recordings, listed after --data or with --data each; one market's files are merged, runs kept apart"
        ),
    ],
    out: Annotated[Path, typer.Option(help="model file to write (.npz)")],
    kind: Annotated[str, typer.Option(help="strategy whose opportunities to learn")] = "cex_cex",
    time_range: Annotated[str, typer.Option("--range", help="A:B fraction of the recordings' time span")] = "0:1",
    config: Annotated[Path, typer.Option("--config", "-c", help="config with the recorded venues")] = DEMO_CONFIG_PATH,
    fee_bps: Annotated[float | None, typer.Option(help="one taker fee for every venue (default: config's)")] = None,
    latency_ms: Annotated[int, typer.Option(help="execution latency the labels assume")] = 250,
    epochs: Annotated[int, typer.Option(help="maximum epochs (early stopping may end sooner)")] = 30,
    window: Annotated[int, typer.Option(help="feature vectors per window")] = 32,
    hidden: Annotated[int, typer.Option(help="LSTM hidden size")] = 32,
    layers: Annotated[int, typer.Option(help="stacked LSTM layers")] = 1,
    dropout: Annotated[float, typer.Option(help="dropout between LSTM layers")] = 0.0,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 2e-3,
    patience: Annotated[int, typer.Option(help="epochs without validation improvement before stopping")] = 5,
    seed: Annotated[int, typer.Option(help="seed for initialisation, batches and dropout")] = 0,
) -> None:
    """Fit the LSTM (and the logistic baseline) on recordings; early stopping on a later validation part."""
    files = _recordings(data, list(ctx.args))
    low_high = _range(time_range)
    if window < 2:
        raise _fail("--window must be at least 2")
    if lr <= 0:
        raise _fail("--lr must be positive")
    cfg = _load(config)
    _output_folder(out, "--out")

    from rich.progress import BarColumn, Progress, TextColumn

    from bot.model.dataset import default_settings
    from bot.model.train import (
        EpochReport,
        TrainError,
        TrainSettings,
        config_with_fees,
        label_settings,
        train_model,
        write_model,
    )

    try:
        settings = label_settings(default_settings(cfg), fee_bps, latency_ms)
        train_settings = TrainSettings(
            hidden=hidden, layers=layers, dropout=dropout, epochs=epochs, lr=lr, patience=patience, seed=seed
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    dataset = _build_dataset(files, config_with_fees(cfg, settings), kind, low_high, settings, window)
    if len(dataset) == 0:
        raise _fail(f"no {kind} signals in the recordings' range {time_range}: nothing to train on (fees too high?)")
    print(f"{len(dataset)} samples, {float(dataset.profitable.mean()):.1%} profitable")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("training", total=epochs, status="")

        def on_epoch(report: EpochReport) -> None:
            mark = " *" if report.best else ""
            status = f"epoch {report.epoch}: loss {report.train_loss:.4f}, val bce {report.val_bce:.4f}, "
            progress.update(task, completed=report.epoch, status=status + f"auc {report.val_auc:.3f}{mark}")

        try:
            result = train_model(dataset, train_settings, on_epoch, kind, {"data_files": [path.name for path in files]})
        except TrainError as exc:
            raise _fail(str(exc)) from None
        progress.update(task, total=len(result.history))
    for warning in result.warnings:
        print(f"arbbot train: warning: {warning}", file=sys.stderr)
    try:
        write_model(result, out)
    except OSError as exc:
        raise _fail(f"--out {out}: cannot write the model ({exc.strerror or exc})") from None
    meta = result.model.meta
    validation = meta["metrics"]["validation"]
    print(
        f"wrote {out}: {meta['model']}, best epoch {meta['training']['best_epoch']} of {len(result.history)}, "
        f"{result.train_size} training / {result.val_size} validation samples; validation ROC-AUC lstm "
        f"{validation['lstm']['roc_auc']:.3f}, logistic {validation['logistic']['roc_auc']:.3f}"
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def evaluate(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="model file written by arbbot train")],
    data: Annotated[list[Path], typer.Option(help="held-out recordings; list them after --data or repeat it")],
    json_path: Annotated[Path, typer.Option("--json", help="write the evaluation table here")],
    time_range: Annotated[str, typer.Option("--range", help="A:B fraction of the recordings' time span")] = "0:1",
    config: Annotated[Path, typer.Option("--config", "-c", help="config with the recorded venues")] = DEMO_CONFIG_PATH,
    fee_bps: Annotated[float | None, typer.Option(help="one taker fee for every venue (default: model's)")] = None,
    latency_ms: Annotated[int | None, typer.Option(help="execution latency (default: model's)")] = None,
    plot: Annotated[Path | None, typer.Option(help="write calibration and PnL curves as PNG here")] = None,
) -> None:
    """Score a model and the naive, logistic and rule baselines on held-out recordings."""
    files = _recordings(data, list(ctx.args))
    low_high = _range(time_range)

    from bot.model.evaluate import format_table, run_evaluation
    from bot.model.features import FEATURE_NAMES
    from bot.model.file import ModelFileError, load_model
    from bot.model.labels import LabelSettings
    from bot.model.train import config_with_fees, label_settings

    try:
        loaded = load_model(model, features=FEATURE_NAMES)
        settings = label_settings(LabelSettings.from_meta(loaded.meta["label"]), fee_bps, latency_ms)
    except ModelFileError as exc:
        raise _fail(str(exc)) from None
    except (KeyError, TypeError) as exc:
        raise _fail(f"{model}: meta has no usable label settings ({exc!r}); retrain with arbbot train") from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    cfg = _load(config)
    _output_folder(json_path, "--json")
    if plot is not None:
        _output_folder(plot, "--plot")
    kind = str(loaded.meta.get("kind", "cex_cex"))
    dataset = _build_dataset(
        files, config_with_fees(cfg, settings), kind, low_high, settings, int(loaded.meta["window"])
    )
    try:
        report = run_evaluation(loaded, dataset, plot)
    except (ValueError, ModelFileError) as exc:
        raise _fail(str(exc)) from None
    report["data"]["files"] = [str(path) for path in files]
    report["data"]["range"] = list(low_high)
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(format_table(report))
    print(f"written to {json_path}" + (f" and {plot}" if plot is not None else ""))


chain_app = typer.Typer(no_args_is_help=True, help="The local EVM chain (anvil with the real Uniswap V2 contracts).")
app.add_typer(chain_app, name="chain")


@chain_app.command("up")
def chain_up_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="config whose chain.local_pools to deploy")] = (
        DEMO_CONFIG_PATH
    ),
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds (default: until Ctrl-C)")] = None,
) -> None:
    """Start anvil on loopback, deploy and seed the pools at the simulator's prices, keep it busy until Ctrl-C."""
    from bot.chain.anvil import ChainSetupError
    from bot.chain.local import PoolSpec, chain_up

    _positive(duration, "--duration")
    cfg = _load(config)
    if cfg.chain is None or not cfg.chain.local_pools:
        raise _fail(f"{config}: no chain.local_pools to deploy")
    prices = cfg.simulator.symbols if cfg.simulator is not None else {}
    specs = []
    for entry in cfg.chain.local_pools:
        if entry.symbol not in prices:
            raise _fail(f"{config}: chain.local_pools {entry.symbol} has no simulator price to seed it at")
        specs.append(
            PoolSpec(entry.symbol, price=prices[entry.symbol].start_price, base_liquidity=entry.base_liquidity)
        )
    try:
        asyncio.run(chain_up(specs, duration_s=duration))
    except ChainSetupError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


model_app = typer.Typer(no_args_is_help=True, help="Model files: PyTorch state dict in and out.")
app.add_typer(model_app, name="model")


@model_app.command("import-torch")
def model_import_torch(
    state: Annotated[Path, typer.Argument(help="state dict saved as .npz (weight_ih_l0, …, head.{name}.weight/bias)")],
    meta: Annotated[Path, typer.Option(help="META.json: the model file's meta entry")],
    out: Annotated[Path, typer.Option(help="model file to write (.npz)")],
) -> None:
    """Make a model file from a PyTorch-trained state dict."""
    from bot.model.file import ModelFileError, import_torch

    try:
        model = import_torch(state, meta, out)
    except ModelFileError as exc:
        raise _fail(str(exc)) from None
    lstm = model.lstm
    print(f"wrote {out}: LSTM {lstm.num_layers}×{lstm.hidden_size} over {lstm.input_size} features, 3 heads")


@model_app.command("export-torch")
def model_export_torch(
    model: Annotated[Path, typer.Argument(help="model file (.npz)")],
    out: Annotated[Path, typer.Option(help="state dict to write (.npz), loadable into torch.nn.LSTM")],
) -> None:
    """Write a model file's LSTM and heads as a PyTorch state dict."""
    from bot.model.file import ModelFileError, export_torch

    try:
        export_torch(model, out)
    except ModelFileError as exc:
        raise _fail(str(exc)) from None
    print(f"wrote {out}")


bench_app = typer.Typer(
    no_args_is_help=True, help="Benchmarks; each reports ratios against a reference measured in the same run."
)
app.add_typer(bench_app, name="bench")


@bench_app.command("feeds")
def bench_feeds(
    json_path: Annotated[Path, typer.Option("--json", help="write the results here")],
    quick: Annotated[bool, typer.Option(help="fewer updates: a smoke run, not for README")] = False,
) -> None:
    """Book updates/s through feed → market state → strategy per protocol vs ccxt.pro's own parse rate, and
    µs per update as venues × symbols grow."""
    from bot.bench.feeds import format_table, run_feeds_bench

    result = run_feeds_bench(quick=quick)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(format_table(result))
    print(f"results written to {json_path}")


@bench_app.command("model")
def bench_model(
    json_path: Annotated[Path, typer.Option("--json", help="write the results here")],
    repeat: Annotated[int, typer.Option(min=1, help="timed rounds; the best is kept")] = 7,
) -> None:
    """NumPy LSTM forward (batch 1 and 64) and training samples/s on one thread, vs torch.nn.LSTM when installed."""
    from bot.bench.model import format_summary, run_model_bench

    result = run_model_bench(repeat=repeat)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(format_summary(result))
    print(f"results written to {json_path}")


@bench_app.command("all")
def bench_all(
    json_path: Annotated[Path, typer.Option("--json", help="write the results here")],
    short: Annotated[bool, typer.Option("--short", help="seconds per part: a smoke run, not for README")] = False,
    only: Annotated[
        str | None, typer.Option(help="comma-separated parts: throughput, scaling, latency, rss (default: all)")
    ] = None,
    rate: Annotated[float | None, typer.Option(min=1.0, help="book updates/s in all (default 2,000)")] = None,
    latency_duration: Annotated[
        float | None, typer.Option(min=0.5, help="measured seconds per latency run (default 30)")
    ] = None,
    rss_duration: Annotated[
        float | None, typer.Option(min=0.5, help="measured seconds of the memory run (default 600)")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="model folder for the model scorer's figures (default: models/)")
    ] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="leave the model scorer out")] = False,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis to use (default: a private redis-server on loopback)")
    ] = None,
) -> None:
    """Tick → signal latency beside raw Redis, pipeline throughput vs ccxt.pro, cost as venues × symbols grow,
    and the signals role's memory over a long run; rule and model scorers; each figure beside its goal."""
    from bot.bench.procs import WorkerFailed
    from bot.bench.report import format_report
    from bot.bench.suite import DEFAULT_MODEL_DIR, run_all, settings

    parts = [part.strip() for part in only.split(",") if part.strip()] if only else None
    folder = None if no_model else (model_dir or DEFAULT_MODEL_DIR).resolve()
    if folder is not None and not (folder / "cex_cex.npz").is_file():
        raise _fail(f"no model at {folder / 'cex_cex.npz'}: give --model-dir, or --no-model")
    try:
        run = settings(short, parts, rate, latency_duration, rss_duration, folder, redis_url)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if json_path.parent != Path():
        json_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = run_all(run, lambda line: print(line, flush=True))
    except (WorkerFailed, RedisUnavailable) as exc:
        raise _fail(str(exc)) from None
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(format_report(result))
    print(f"results written to {json_path}")


import_app = typer.Typer(no_args_is_help=True, help="Turn real data files into recordings.")
app.add_typer(import_app, name="import")


@import_app.command("uniswap-v3")
def import_uniswap_v3_command(
    data_dir: Annotated[
        Path, typer.Argument(help="folder with the Uniswap V3 tick files (shared/data/real/uniswap_v3)")
    ],
    out: Annotated[Path, typer.Option(help="recording to write (.jsonl.gz)")],
    base_fee_gwei: Annotated[float, typer.Option(help="assumed base fee: the files carry no gas series")] = 20.0,
    priority_fee_gwei: Annotated[float, typer.Option(help="assumed tip")] = 1.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the import report as JSON here")] = None,
) -> None:
    """Import the two Uniswap V3 USDC/WETH pools as `pool` events (virtual reserves) plus an assumed gas series."""
    from bot.importers.uniswap_v3 import GasAssumption, import_uniswap_v3
    from bot.recording import RecordingError

    _setup_logging(False)
    try:
        report = import_uniswap_v3(data_dir, out, GasAssumption(base_fee_gwei, priority_fee_gwei))
    except RecordingError as exc:
        raise _fail(str(exc)) from None
    print(
        f"wrote {report.pool_events} pool and {report.gas_events} gas events to {out} (gas assumed: "
        f"{base_fee_gwei} + {priority_fee_gwei} gwei)"
    )
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")


@import_app.command("binance-raw")
def import_binance_raw_command(
    files: Annotated[list[Path], typer.Argument(help="raw Binance files (spot_*.gz, usdm_*.gz)")],
    out: Annotated[Path, typer.Option(help="recording to write (.jsonl.gz)")],
    depth: Annotated[int, typer.Option(help="book levels per side")] = 20,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the import report as JSON here")] = None,
) -> None:
    """Import raw Binance spot / USD-M websocket captures (`<recv ns> <json>` lines) as a recording."""
    from bot.importers.binance_raw import import_binance_raw
    from bot.recording import RecordingError

    _setup_logging(False)
    if depth < 1:
        raise _fail("--depth must be at least 1")
    try:
        report = import_binance_raw(files, out, depth)
    except RecordingError as exc:
        raise _fail(str(exc)) from None
    print(f"wrote {report.events} events to {out} ({report.gaps} gaps)")
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")


@app.command()
def subscribe(
    pattern: Annotated[str, typer.Argument(help="channel pattern, e.g. 'arb:signal:*'")],
    count: Annotated[int | None, typer.Option(help="exit after this many valid messages")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="first catch up from the pattern's stream after this stream id (0: from the start)"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="take Redis and the signing key from this config (default: ARBBOT_*)"),
    ] = None,
) -> None:
    """Print messages from channels matching PATTERN as JSON lines; malformed ones are skipped and counted, and so
    are unsigned or badly signed ones when a signing key is set (ARBBOT_SIGNING_KEY or its file)."""
    if config is not None:
        cfg = _load(config)
        redis_config, key_file = cfg.redis, cfg.security.signing_key_file
    else:
        env = EnvOverrides()
        fields = {"url": env.redis_url or DEFAULT_REDIS_URL, "username": env.redis_username,
                  "password_file": env.redis_password_file}  # fmt: skip
        try:
            redis_config = RedisConfig.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:  # its text would show the URL: only the message, which redacts it
            raise _fail(f"ARBBOT_REDIS_URL: {exc.errors()[0]['msg']}") from None
        key_file = env.signing_key_file
    secrets = _secrets(redis_config.password_file, key_file)
    access = _redis_access(redis_config, secrets)
    if count is not None and count <= 0:
        raise _fail("--count must be positive")
    channels = Channels(pattern.split(":", 1)[0])
    catch_up = None
    if since is not None:
        stream = channels.stream_for_pattern(pattern)
        if stream is None:
            raise _fail(f"no stream holds the messages of {pattern!r}: --since works with signal, decision and fill")
        if not _STREAM_ID.fullmatch(since):
            raise _fail(f"--since must be a stream id such as 0 or 1763700000123-0, got {since!r}")
        catch_up = CatchUp(stream, since, channels)
    verifier = secrets.signing().verifier
    try:
        rejected = asyncio.run(_subscribe(access, pattern, count, catch_up, channels.family(pattern), verifier))
    except (RedisError, OSError) as exc:
        raise _fail(f"cannot reach Redis at {access.display} ({exc}); is it running? set ARBBOT_REDIS_URL") from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    unverified = rejected["unsigned"] + rejected["bad_signature"]
    if malformed := rejected.total() - unverified:
        print(f"arbbot subscribe: {malformed} malformed message(s) skipped", file=sys.stderr)
    if unverified:
        print(
            f"arbbot subscribe: {unverified} message(s) failed verification and were skipped "
            f"({rejected['unsigned']} unsigned, {rejected['bad_signature']} badly signed)",
            file=sys.stderr,
        )


_STREAM_ID = re.compile(r"\d+(-\d+)?")
_TYPED_FAMILIES = frozenset({"signal", "decision", "fill", "book", "gas", "pool", "control"})


async def _subscribe(
    access: RedisAccess,
    pattern: str,
    count: int | None,
    catch_up: CatchUp | None,
    family: str | None,
    verifier: Verifier | None,
) -> Counter[str]:
    """Print the messages; the rejected ones by reason."""
    client = redis_client(access)
    expected = family if family in _TYPED_FAMILIES else None
    rejected: Counter[str] = Counter()

    def on_message(payload: bytes, _message: Message) -> None:
        sys.stdout.write(payload.decode() + "\n")
        sys.stdout.flush()

    def on_reject(_payload: bytes, error: DecodeError) -> None:
        rejected[error.reason] += 1
        what = {"unsigned": "unsigned", "bad_signature": "badly signed"}.get(error.reason, "malformed")
        print(f"arbbot subscribe: skipped {what} message ({error})", file=sys.stderr, flush=True)

    def on_ready() -> None:
        signed = ", verifying signatures" if verifier is not None else ""
        print(f"arbbot subscribe: listening on {pattern} at {access.display}{signed}", file=sys.stderr, flush=True)

    def on_lost(error: BaseException | None) -> None:
        if error is None:
            after = stats.last_stream_id or (catch_up.since if catch_up is not None else "")
            print(f"arbbot subscribe: Redis answers again; reading on after {after}", file=sys.stderr, flush=True)
        else:
            print(f"arbbot subscribe: lost Redis ({error}); waiting for it", file=sys.stderr, flush=True)

    stats = SubscriberStats()
    try:
        await follow(
            client, pattern, on_message, on_reject, count, expected, on_ready, catch_up, verifier,
            on_lost=on_lost, stats=stats,
        )  # fmt: skip
    finally:
        await client.aclose()
    if catch_up is not None:
        trimmed = f"; {stats.trimmed} time(s) it was trimmed past the last entry read" if stats.trimmed else ""
        print(
            f"arbbot subscribe: {stats.caught_up} message(s) caught up from {catch_up.stream}, {stats.duplicates} "
            f"duplicate(s) dropped; last stream id {stats.last_stream_id or catch_up.since}{trimmed}",
            file=sys.stderr,
        )
    return rejected


@app.command()
def schema() -> None:
    """Print the JSON Schemas of the messages and events."""
    sys.stdout.write(orjson.dumps(json_schemas(), option=orjson.OPT_INDENT_2).decode() + "\n")


paper_app = typer.Typer(
    no_args_is_help=False, invoke_without_command=True, help="The paper trader: `arbbot paper -c CONFIG` runs it."
)
app.add_typer(paper_app, name="paper")


@paper_app.callback()
def paper_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="config file (its paper section)")] = None,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: until signalled)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fill decisions from the decision stream against the books of the moment; keep the ledger; publish fills."""
    if ctx.invoked_subcommand is not None:
        return
    from bot.paper.service import PaperError, run_paper

    _positive(duration, "--duration")
    if config is None:
        raise _fail("arbbot paper needs --config/-c CONFIG")
    cfg = _load(config)
    _role_secrets(cfg, verbose)  # for the logging that redacts them: run_paper reads them again itself

    def on_ready(line: str) -> None:
        print(f"arbbot paper: {line}", file=sys.stderr, flush=True)

    try:
        stats = asyncio.run(run_paper(cfg, duration, on_ready))
    except PaperError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    recorded = ", ".join(f"{count} {status}" for status, count in sorted(stats.recorded.items())) or "nothing"
    print(
        f"arbbot paper: recorded {recorded}; {stats.duplicates} duplicates, {stats.rejected} rejected", file=sys.stderr
    )


@paper_app.command("report")
def paper_report_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="config file naming the ledger")],
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report as JSON here")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="write a PNG here")] = None,
) -> None:
    """PnL curve, balances per venue, hit rate and predicted vs realised slippage, from the ledger."""
    from bot.paper.report import build_report, write_plot
    from bot.paper.service import PaperError, ledger_path, open_ledger

    cfg = _load(config)
    if not ledger_path(cfg).exists():
        raise _fail(f"no paper ledger at {ledger_path(cfg)}: run `arbbot paper -c {config}` first")
    try:
        ledger = open_ledger(cfg)
    except PaperError as exc:
        raise _fail(str(exc)) from None
    try:
        report = build_report(ledger)
    finally:
        ledger.close()
    pnl, fills = report["pnl"], report["fills"]
    hit = report["hit_rate"]
    print(
        f"PnL {pnl['total']:.2f} (trades {pnl['trades']:.2f}, unwinds {pnl['unwinds']:.2f}); "
        f"{fills['executed']} executed of {fills['decisions']} decisions {fills['by_status']}; "
        f"hit rate {'n/a' if hit is None else f'{hit:.1%}'}; {len(report['open_inventory'])} open positions"
    )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"report written to {json_path}")
    if plot is not None:
        write_plot(report, plot)
        print(f"plot written to {plot}")


app.add_typer(risk_app, name="risk")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def backtest(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option(help="recordings, listed after --data or with --data each")],
    out: Annotated[Path, typer.Option(help="folder for report.json, pnl.png, summary.png, report.html, the ledger")],
    model: Annotated[
        Path | None, typer.Option(help="model folder, or a file named {kind}.npz (default: the config's scorer)")
    ] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="config with the recorded venues")] = DEMO_CONFIG_PATH,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Replay recordings through strategies, scorer, Redis, risk and paper trader on the recordings' clock."""
    from bot.backtest.report import backtest_report, write_outputs
    from bot.backtest.run import BacktestError, BacktestStats, prepare_out, run_chain
    from bot.paper.service import PaperError
    from bot.recording import RecordingError

    files = _recordings(data, list(ctx.args))
    cfg = _load(config)
    secrets = _role_secrets(cfg, verbose)
    access = _redis_access(cfg.redis, secrets)
    _output_folder(out / "report.json", "--out")
    try:
        model_dir = prepare_out(out, model)
    except BacktestError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"--out {out}: {exc.strerror or exc}") from None

    def progress(stats: BacktestStats) -> None:
        print(f"arbbot backtest: {stats.events:,} events, {stats.signals:,} signals", file=sys.stderr, flush=True)

    try:
        result = asyncio.run(run_chain(cfg, files, out, model_dir, progress, access=access))
    except (BacktestError, PaperError, RecordingError, RedisUnavailable) as exc:
        raise _fail(str(exc)) from None
    except (RedisError, OSError) as exc:
        raise _fail(f"backtest failed: {exc}") from None
    report = backtest_report(result, files, model)
    paths = write_outputs(report, out)
    pnl, risk = report["pnl"], report["risk"]
    hit = report["hit_rate"]
    print(
        f"backtest: {report['backtest']['events']:,} events, {report['backtest']['signals']} signals, "
        f"{risk['decided']} decisions ({risk['executed']} execute), fills {report['fills']['by_status']}; "
        f"PnL {pnl['total']:,.2f}, hit rate {'n/a' if hit is None else f'{hit:.1%}'}"
    )
    print("wrote " + ", ".join(str(path) for path in paths))


@app.command()
def drill(
    name: Annotated[str, typer.Argument(help="venue-drops, redis-restart, malformed-flood or kill-roles")],
    short: Annotated[bool, typer.Option("--short", help="the short form (well under a minute; what CI runs)")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="write what it did and counted as JSON here")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a fault drill on loopback (private Redis): print what it did and counted; exit 1 if an invariant failed."""
    from bot.drills import DRILLS, run_drill

    _setup_logging(verbose)
    if not verbose:  # the roles' warnings are what a drill provokes: show errors only (counted either way)
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.ERROR)
    if name not in DRILLS:
        raise _fail(f"unknown drill {name!r} (known: {', '.join(DRILLS)})")
    if json_path is not None:
        _output_folder(json_path, "--json")
    try:
        report = asyncio.run(run_drill(name, short, lambda line: print(line, flush=True)))
    except RedisUnavailable as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    for line in report.summary_lines():
        print(line)
    if json_path is not None:
        report.write(json_path)
        print(f"counts written to {json_path}")
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the `arbbot` console script."""
    app()
