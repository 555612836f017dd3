"""`arbbot record` on the local simulated venues and chain writes a valid recording that replays."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from helpers import run_child

from bot.events import BookEvent, GasEvent, PoolEvent, TradeEvent
from bot.recording import read_events
from bot.rejections import RejectionCounter


def test_record_writes_books_and_trades_of_every_venue(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl.gz"
    config = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
    result = run_child(
        [sys.executable, "-m", "bot", "record", "-c", str(config), "--duration", "8", "--out", str(out)], subprocess_env
    )
    assert result.returncode == 0, result.stderr
    rejections = RejectionCounter()
    events = list(read_events(out, rejections))
    assert rejections.total == 0
    books = Counter((e.venue, e.symbol) for e in events if isinstance(e, BookEvent))
    trades = Counter(e.venue for e in events if isinstance(e, TradeEvent))
    assert set(books) == {(v, s) for v in ("alpha", "beta", "gamma") for s in ("BTC/USDT", "ETH/USDT")}
    assert min(books.values()) > 20
    assert set(trades) == {"alpha", "beta", "gamma"}
    assert all(e.recv_ts is not None for e in events)
    gas = [e for e in events if isinstance(e, GasEvent)]
    pools = [e for e in events if isinstance(e, PoolEvent)]
    assert len({g.base_fee_gwei for g in gas}) >= 3  # the local chain's EIP-1559 base fee moves block by block
    assert len({p.reserve_base for p in pools}) >= 2  # noise swaps move the pool
    assert all(p.symbol == "ETH/USDT" for p in pools)
    assert all(len(e.bids) <= 20 and len(e.asks) <= 20 for e in events if isinstance(e, BookEvent))
    replayed = run_child([sys.executable, "-m", "bot", "replay", str(out), "-c", str(config)], subprocess_env)
    assert replayed.returncode == 0, replayed.stderr
    assert f"events {len(events)}" in replayed.stdout
