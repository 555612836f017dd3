"""`arbbot paper report`: PnL, fills, balances, hit rate and slippage from the ledger, as JSON and as a PNG."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from statistics import fmean
from typing import Any

from bot.paper.ledger import Ledger


def _slippage_bps(leg: dict[str, Any]) -> float | None:
    """Adverse move of a leg's average price from the best price of its execution book (pool: its zero-size price
    with the fee, as risk predicts from)."""
    reference = leg["reference_price"]
    if not reference or leg["size"] <= 0.0:
        return None
    price = float(leg["price"])
    moved = (price - reference) / reference if leg["side"] == "buy" else (reference - price) / reference
    return float(moved * 1e4)


def _gas(legs: list[dict[str, Any]]) -> dict[str, Any]:
    """Gas paid per account and native asset, its value in quote units, and what no price could value (that gas is
    in the balances but not in the PnL)."""
    paid: dict[str, dict[str, float]] = {}
    unpriced: dict[str, dict[str, float]] = {}
    valued: dict[str, float] = {}
    unpriced_legs = 0
    for leg in legs:
        if not leg["gas_native"]:
            continue
        account, native = leg["account"], leg["native"]
        held = paid.setdefault(account, {})
        held[native] = held.get(native, 0.0) + leg["gas_native"]
        if leg["gas_unpriced"]:
            unpriced_legs += 1
            missing = unpriced.setdefault(account, {})
            missing[native] = missing.get(native, 0.0) + leg["gas_native"]
        elif leg["gas_quote"] is not None:
            valued[leg["quote"]] = valued.get(leg["quote"], 0.0) + leg["gas_quote"]
    return {"native": paid, "quote": valued, "unpriced_legs": unpriced_legs, "unpriced_native": unpriced}


def build_report(ledger: Ledger) -> dict[str, Any]:
    """Summarise the ledger: keys `pnl`, `fills`, `balances`, `hit_rate`, `slippage`, `gas`, `open_inventory`, …"""
    decisions = ledger.decisions()
    executed = [row for row in decisions if row.action == "execute"]
    events = [(row.ts, row.realised_pnl) for row in executed] + ledger.unwind_pnl()
    events.sort(key=lambda event: event[0])
    curve: list[list[float]] = []
    total = 0.0
    for ts, pnl in events:
        total += pnl
        curve.append([ts, total])
    trade_pnl = sum(row.realised_pnl for row in executed)
    start, now = ledger.starting_balances(), ledger.balances()
    change = {
        account: {
            asset: now.get(account, {}).get(asset, 0.0) - start.get(account, {}).get(asset, 0.0)
            for asset in sorted(set(now.get(account, {})) | set(start.get(account, {})))
        }
        for account in sorted(set(now) | set(start))
    }
    legs = ledger.legs()
    slippage: dict[str, dict[str, Any]] = {}
    for side in ("buy", "sell"):
        pairs = [
            (leg["predicted_slippage_bps"], realised)
            for leg in legs
            if leg["role"] == "trade" and leg["side"] == side and (realised := _slippage_bps(leg)) is not None
        ]
        predicted = [p for p, _ in pairs if p is not None]
        slippage[side] = {
            "legs": len(pairs),
            "predicted_bps_mean": fmean(predicted) if predicted else None,
            "realised_bps_mean": fmean(r for _, r in pairs) if pairs else None,
            "pairs": [[p, r] for p, r in pairs],
        }
    statuses = Counter(row.status for row in decisions)
    profitable = sum(1 for row in executed if row.status in ("filled", "partial") and row.realised_pnl > 0.0)
    return {
        "pnl": {
            "total": total,
            "trades": trade_pnl,
            "unwinds": total - trade_pnl,
            "expected": sum(row.expected_pnl or 0.0 for row in executed),
            "curve": curve,
        },
        "fills": {
            "decisions": len(decisions),
            "executed": len(executed),
            "by_status": dict(sorted(statuses.items())),
            "legs": sum(1 for leg in legs if leg["role"] == "trade" and leg["size"] > 0.0),
        },
        "balances": {"start": start, "now": now, "change": change},
        "hit_rate": profitable / len(executed) if executed else None,
        "slippage": slippage,
        "gas": _gas(legs),
        "open_inventory": [asdict(position) for position in ledger.open_positions()],
        "rejections": ledger.rejections(),
    }


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Write a PNG: PnL curve, balance changes per account, predicted vs realised slippage, decisions by status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    pnl_ax, bal_ax, slip_ax, status_ax = axes.flat
    curve = report["pnl"]["curve"]
    if curve:
        start = curve[0][0]
        pnl_ax.step([(ts - start) / 1000.0 for ts, _ in curve], [pnl for _, pnl in curve], where="post")
    pnl_ax.set(title="realised PnL (quote)", xlabel="s since first fill")
    labels = [f"{acct} {asset}" for acct, assets in report["balances"]["change"].items() for asset in assets]
    values = [value for assets in report["balances"]["change"].values() for value in assets.values()]
    bal_ax.barh(labels, values)
    bal_ax.set(title="balance change per account and asset")
    for side, marker in (("buy", "o"), ("sell", "x")):
        pairs = [(p, r) for p, r in report["slippage"][side]["pairs"] if p is not None]
        slip_ax.scatter([p for p, _ in pairs], [r for _, r in pairs], marker=marker, label=side)
    slip_ax.axline((0.0, 0.0), slope=1.0, color="grey", linewidth=0.8)
    slip_ax.set(title="slippage, bps", xlabel="predicted", ylabel="realised")
    slip_ax.legend()
    by_status = report["fills"]["by_status"]
    status_ax.bar(list(by_status), list(by_status.values()))
    hit = report["hit_rate"]
    status_ax.set(title=f"decisions by status (hit rate {hit:.0%})" if hit is not None else "decisions by status")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
