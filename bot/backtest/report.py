"""A backtest's outputs: `report.json`, `pnl.png` (the PnL curve), `summary.png` and `report.html`."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import orjson

from bot.backtest.run import BacktestRun
from bot.paper.ledger import Ledger
from bot.paper.report import build_report, write_plot

REPORT_JSON = "report.json"
PNL_PNG = "pnl.png"
SUMMARY_PNG = "summary.png"
REPORT_HTML = "report.html"


def backtest_report(run: BacktestRun, files: list[Path], model: Path | None) -> dict[str, Any]:
    """The whole report: what went through the chain (`backtest`), what risk did (`risk`), and the paper ledger's
    report (`pnl`, `fills`, `balances`, `hit_rate`, `slippage`, `open_inventory`, `rejections`).

    Everything in it follows from the data, config and model: two runs give the same report (ids that the
    roles draw at random, such as decision ids, are left out)."""
    chain = run.chain
    config = chain.config
    ledger = Ledger(run.ledger_path, config.paper.balances)
    try:
        paper = build_report(ledger)
    finally:
        ledger.close()
    for position in paper["open_inventory"]:
        position.pop("decision_id", None)
    stats, engine, risk = chain.stats, chain.engine_stats, chain.risk.engine.stats
    span_ms = (stats.last_ts - stats.first_ts) if stats.first_ts is not None and stats.last_ts is not None else 0
    return {
        "backtest": {
            "files": [path.name for path in files],
            "model": str(model) if model is not None else None,
            "events": stats.events,
            "first_ts": stats.first_ts,
            "last_ts": stats.last_ts,
            "market_seconds": span_ms / 1_000.0,
            "market_messages": stats.market_messages,
            "opportunities": engine.opportunities,
            "signals": stats.signals,
            "signals_by_status": dict(sorted(stats.signals_by_status.items())),
            "rejected_inputs": chain.rejections.by_reason(),
        },
        "risk": {
            "signals": risk.signals,
            "decided": risk.decided,
            "executed": risk.executed,
            "skipped": risk.skipped,
            "ignored": risk.ignored,
            "state": chain.risk.engine.limits.state,
            "state_reason": chain.risk.engine.limits.reason,
            "rejected": chain.risk.rejections.by_reason(),
        },
        **paper,
    }


def write_pnl_plot(report: dict[str, Any], path: Path) -> None:
    """The PnL curve alone, against market time since the first replayed event."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    curve = report["pnl"]["curve"]
    origin = report["backtest"]["first_ts"] or (curve[0][0] if curve else 0)
    if curve:
        xs = [0.0] + [(ts - origin) / 1_000.0 for ts, _ in curve]
        ys = [0.0] + [pnl for _, pnl in curve]
        ax.step(xs, ys, where="post")
        ax.axhline(0.0, color="grey", linewidth=0.8)
    else:
        ax.text(0.5, 0.5, "no trade executed", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="backtest: realised PnL (quote)", xlabel="market seconds since the first event", ylabel="PnL")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page (its images next to it) with the main statistics."""
    bt, risk, pnl, fills = report["backtest"], report["risk"], report["pnl"], report["fills"]
    hit = report["hit_rate"]
    main = [
        ("recordings", ", ".join(bt["files"])),
        ("model", bt["model"] or "as configured"),
        ("market time", f"{bt['market_seconds']:,.1f} s ({bt['events']:,} events)"),
        ("opportunities", bt["opportunities"]),
        ("signals", bt["signals"]),
        ("decisions", f"{risk['decided']} (execute {risk['executed']}, skip {risk['skipped']})"),
        ("fills by status", ", ".join(f"{k} {v}" for k, v in fills["by_status"].items()) or "–"),
        ("realised PnL", _money(pnl["total"])),
        ("of which unwinds", _money(pnl["unwinds"])),
        ("expected PnL of executed decisions", _money(pnl["expected"])),
        ("hit rate", "–" if hit is None else f"{hit:.1%}"),
        ("open inventory", len(report["open_inventory"])),
        ("risk state at the end", f"{risk['state']} {risk['state_reason']}".strip()),
    ]
    slippage = [
        (
            side,
            f"{s['legs']} legs · predicted {_bps(s['predicted_bps_mean'])} · realised {_bps(s['realised_bps_mean'])}",
        )
        for side, s in report["slippage"].items()
    ]
    balances = [
        (f"{account} {asset}", f"{change:+,.6g}")
        for account, assets in report["balances"]["change"].items()
        for asset, change in assets.items()
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>arbbot backtest</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}th{{text-align:left;padding-right:2em}}
table{{border-collapse:collapse;margin-bottom:1.5em}}td,th{{border-bottom:1px solid #ddd;padding:.2em .5em}}</style>
</head><body>
<h1>arbbot backtest</h1>
<table>{_rows(main)}</table>
<h2>PnL</h2><img src="{PNL_PNG}" alt="PnL curve" width="100%">
<h2>Slippage (mean, bps)</h2><table>{_rows(slippage)}</table>
<h2>Balance changes</h2><table>{_rows(balances)}</table>
<h2>Details</h2><img src="{SUMMARY_PNG}" alt="PnL, balances, slippage, decisions" width="100%">
<p>All figures: <a href="{REPORT_JSON}">{REPORT_JSON}</a>.</p>
</body></html>
"""


def _bps(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def write_outputs(report: dict[str, Any], out: Path) -> list[Path]:
    """Write the report's files into `out`; their paths."""
    paths = [out / REPORT_JSON, out / PNL_PNG, out / SUMMARY_PNG, out / REPORT_HTML]
    paths[0].write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    write_pnl_plot(report, paths[1])
    write_plot(report, paths[2])
    paths[3].write_text(render_html(report), encoding="utf-8")
    return paths
