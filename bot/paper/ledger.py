"""The paper ledger in SQLite (WAL): balances per account and asset, fills, open inventory; one decision once.

Every decision is written in one transaction keyed by its id, so a decision delivered twice (a re-delivery after a
crash) changes nothing the second time. `synchronous=FULL`: a commit the trader has acknowledged to Redis
survives a power cut, not only a killed process.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bot.paper.fills import LegResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS starting_balances (
    account TEXT NOT NULL, asset TEXT NOT NULL, amount REAL NOT NULL, PRIMARY KEY (account, asset));
CREATE TABLE IF NOT EXISTS balances (
    account TEXT NOT NULL, asset TEXT NOT NULL, amount REAL NOT NULL, PRIMARY KEY (account, asset));
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY, entry_id TEXT, ts INTEGER NOT NULL, action TEXT NOT NULL,
    status TEXT NOT NULL, symbol TEXT, expected_pnl REAL, realised_pnl REAL NOT NULL, detail TEXT,
    fill_json BLOB);
CREATE TABLE IF NOT EXISTS legs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT NOT NULL, role TEXT NOT NULL, venue TEXT NOT NULL,
    account TEXT NOT NULL, side TEXT NOT NULL, base TEXT NOT NULL, quote TEXT NOT NULL, native TEXT,
    requested REAL NOT NULL, size REAL NOT NULL, price REAL NOT NULL, notional REAL NOT NULL, fee REAL NOT NULL,
    gas_native REAL NOT NULL, status TEXT NOT NULL, market_ts INTEGER NOT NULL, reason TEXT,
    reference_price REAL, predicted_slippage_bps REAL, gas_quote REAL, gas_unpriced INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS legs_by_decision ON legs (decision_id);
CREATE TABLE IF NOT EXISTS positions (
    decision_id TEXT PRIMARY KEY, account TEXT NOT NULL, venue TEXT NOT NULL, symbol TEXT NOT NULL,
    quantity REAL NOT NULL, entry_price REAL NOT NULL, unwind_venue TEXT, status TEXT NOT NULL,
    opened_ts INTEGER NOT NULL, closed_ts INTEGER, unwind_pnl REAL NOT NULL DEFAULT 0.0, kind TEXT,
    opportunity_id TEXT);
CREATE TABLE IF NOT EXISTS rejections (entry_id TEXT PRIMARY KEY, reason TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS unwind_fills (
    fill_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, step INTEGER NOT NULL, symbol TEXT NOT NULL,
    fill_json BLOB NOT NULL, published INTEGER NOT NULL DEFAULT 0, UNIQUE (decision_id, step));
"""

_ADDED_COLUMNS = {
    "legs": ("gas_quote REAL", "gas_unpriced INTEGER NOT NULL DEFAULT 0"),
    "positions": ("kind TEXT", "opportunity_id TEXT"),
}
"""Columns added since the first ledgers were written: a ledger file without them gets them on opening."""

_POSITION_COLUMNS = (
    "decision_id, account, venue, symbol, quantity, entry_price, unwind_venue, opened_ts, kind, opportunity_id"
)
"""The columns of `positions` that make an OpenPosition, in its field order."""

DecisionStatus = Literal["filled", "partial", "missed", "reverted", "skipped"]


@dataclass(frozen=True, slots=True)
class LegRecord:
    """A leg with where its balances live: `account` (a CEX venue, or a chain's wallet for a pool leg), the pair's
    assets, the chain's `native` gas asset, and the price it was planned at with the slippage risk predicted."""

    leg: LegResult
    account: str
    base: str
    quote: str
    native: str | None = None
    reference_price: float | None = None
    predicted_slippage_bps: float | None = None
    gas_quote: float | None = None
    """The gas in quote units; None while gas was paid that no price could value (see `gas_unpriced`)."""

    @property
    def gas_unpriced(self) -> bool:
        """Gas was paid and nothing priced the native asset in the quote asset."""
        return self.leg.gas_native > 0.0 and self.gas_quote is None

    @property
    def spends(self) -> dict[str, float]:
        """What the leg takes out of its account, per asset: quote to buy, base to sell, the native asset for gas."""
        leg = self.leg
        out: dict[str, float] = {}
        if leg.size > 0.0:
            if leg.side == "buy":
                out[self.quote] = leg.notional + leg.fee
            else:
                out[self.base] = leg.size
        if leg.gas_native > 0.0:
            if self.native is None:
                raise ValueError(f"leg on {leg.venue} paid gas but names no native asset")
            out[self.native] = out.get(self.native, 0.0) + leg.gas_native
        return out


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """Inventory left by a leg that filled while the other missed: signed base `quantity` on `account`, bought
    (or sold) on `venue` at `entry_price`; `unwind_venue` is where the unwind rule trades it back (None: hold).
    `kind` and `opportunity_id` are the decision's, for the unwind's Fills (None in ledgers older than them)."""

    decision_id: str
    account: str
    venue: str
    symbol: str
    quantity: float
    entry_price: float
    unwind_venue: str | None
    opened_ts: int
    kind: str | None = None
    opportunity_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredFill:
    """An unwind's Fill message as written with the unwind, to publish (again, after a crash) until it is out."""

    fill_id: str
    decision_id: str
    step: int
    symbol: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Execution:
    """Everything one decision did, written in one transaction."""

    decision_id: str
    ts: int
    action: str
    status: DecisionStatus
    realised_pnl: float
    legs: Sequence[LegRecord] = ()
    symbol: str | None = None
    expected_pnl: float | None = None
    entry_id: str | None = None
    detail: str = ""
    fill_json: bytes | None = None
    position: OpenPosition | None = None


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A recorded decision as the report reads it."""

    decision_id: str
    ts: int
    action: str
    status: str
    symbol: str | None
    expected_pnl: float | None
    realised_pnl: float


Balances = dict[str, dict[str, float]]


class Ledger:
    """One SQLite file; a single writer (the trader), any number of readers (reports)."""

    def __init__(
        self,
        path: str | Path,
        starting_balances: Mapping[str, Mapping[str, float]] | None = None,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout_s)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._add_columns()
        if starting_balances:
            self._seed(starting_balances)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _add_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0] not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def _seed(self, starting: Mapping[str, Mapping[str, float]]) -> None:
        # A balance is seeded once, the first time its (account, asset) appears; later config edits add new
        # accounts and assets but never rewrite history.
        with self._transaction() as db:
            for account, assets in starting.items():
                for asset, amount in assets.items():
                    inserted = db.execute(
                        "INSERT OR IGNORE INTO starting_balances VALUES (?, ?, ?)", (account, asset, amount)
                    ).rowcount
                    if inserted:
                        self._add(db, account, asset, amount)

    @staticmethod
    def _add(db: sqlite3.Connection, account: str, asset: str, amount: float) -> None:
        if amount == 0.0:
            return
        db.execute(
            "INSERT INTO balances VALUES (?, ?, ?) ON CONFLICT (account, asset) DO UPDATE SET amount = amount + ?",
            (account, asset, amount, amount),
        )

    def _apply_legs(self, db: sqlite3.Connection, decision_id: str, role: str, legs: Sequence[LegRecord]) -> None:
        for record in legs:
            leg = record.leg
            db.execute(
                "INSERT INTO legs (decision_id, role, venue, account, side, base, quote, native, requested, size,"
                " price, notional, fee, gas_native, status, market_ts, reason, reference_price,"
                " predicted_slippage_bps, gas_quote, gas_unpriced)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    decision_id, role, leg.venue, record.account, leg.side, record.base, record.quote, record.native,
                    leg.requested, leg.size, leg.price, leg.notional, leg.fee, leg.gas_native, leg.status,
                    leg.market_ts, leg.reason, record.reference_price, record.predicted_slippage_bps,
                    record.gas_quote, int(record.gas_unpriced),
                ),
            )  # fmt: skip
            self._add(db, record.account, record.base, leg.base_delta)
            self._add(db, record.account, record.quote, leg.quote_delta)
            if leg.gas_native:
                if record.native is None:
                    raise ValueError(f"leg on {leg.venue} paid gas but names no native asset")
                self._add(db, record.account, record.native, -leg.gas_native)

    def record(self, execution: Execution) -> bool:
        """Write a decision, its legs, balance changes and any open position at once; False if already written."""
        with self._transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    execution.decision_id, execution.entry_id, execution.ts, execution.action, execution.status,
                    execution.symbol, execution.expected_pnl, execution.realised_pnl, execution.detail,
                    execution.fill_json,
                ),
            ).rowcount  # fmt: skip
            if not inserted:
                return False
            self._apply_legs(db, execution.decision_id, "trade", execution.legs)
            if (p := execution.position) is not None:
                db.execute(
                    "INSERT INTO positions (decision_id, account, venue, symbol, quantity, entry_price, unwind_venue,"
                    " status, opened_ts, kind, opportunity_id) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?)",
                    (p.decision_id, p.account, p.venue, p.symbol, p.quantity, p.entry_price, p.unwind_venue,
                     p.opened_ts, p.kind, p.opportunity_id),
                )  # fmt: skip
        return True

    def record_rejection(self, entry_id: str, reason: str, detail: str = "") -> bool:
        """Note a stream entry that was not a usable decision; False if already noted."""
        with self._transaction() as db:
            inserted = db.execute("INSERT OR IGNORE INTO rejections VALUES (?, ?, ?)", (entry_id, reason, detail))
            return inserted.rowcount > 0

    def unwind(
        self,
        position: OpenPosition,
        legs: Sequence[LegRecord],
        pnl: float,
        remaining: float,
        ts: int,
        fill: StoredFill | None = None,
    ) -> bool:
        """Record an unwind of `position` leaving `remaining` base open (closed when zero), with its Fill to
        publish; False, with nothing written, unless the position is still open with the quantity the caller saw."""
        closed = abs(remaining) <= abs(position.quantity) * 1e-12
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE positions SET quantity = ?, status = ?, closed_ts = ?, unwind_pnl = unwind_pnl + ?"
                " WHERE decision_id = ? AND status = 'open' AND quantity = ?",
                (0.0 if closed else remaining, "unwound" if closed else "open", ts if closed else None, pnl,
                 position.decision_id, position.quantity),
            ).rowcount  # fmt: skip
            if not updated:
                return False
            self._apply_legs(db, position.decision_id, "unwind", legs)
            if fill is not None:
                db.execute(
                    "INSERT INTO unwind_fills (fill_id, decision_id, step, symbol, fill_json) VALUES (?, ?, ?, ?, ?)",
                    (fill.fill_id, fill.decision_id, fill.step, fill.symbol, fill.payload),
                )
        return True

    def unwind_steps(self, decision_id: str) -> int:
        """Unwind trades recorded so far for a decision (the next one is this plus one)."""
        row = self._db.execute("SELECT COUNT(*) FROM unwind_fills WHERE decision_id = ?", (decision_id,)).fetchone()
        return int(row[0])

    def unpublished_fills(self) -> list[StoredFill]:
        """Unwind Fills not yet marked published, oldest first."""
        rows = self._db.execute(
            "SELECT fill_id, decision_id, step, symbol, fill_json FROM unwind_fills WHERE published = 0 ORDER BY rowid"
        ).fetchall()
        return [StoredFill(fill_id, decision_id, step, symbol, bytes(payload)) for fill_id, decision_id, step, symbol,
                payload in rows]  # fmt: skip

    def mark_published(self, fill_id: str) -> None:
        """Note that an unwind Fill is on Redis."""
        with self._transaction() as db:
            db.execute("UPDATE unwind_fills SET published = 1 WHERE fill_id = ?", (fill_id,))

    def has(self, decision_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone() is not None

    def fill_json(self, decision_id: str) -> bytes | None:
        """The Fill message recorded with a decision (None for a skip or an unknown id)."""
        row = self._db.execute("SELECT fill_json FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone()
        return bytes(row[0]) if row is not None and row[0] is not None else None

    def open_position(self, decision_id: str) -> OpenPosition | None:
        """The decision's position while it is open."""
        row = self._db.execute(
            f"SELECT {_POSITION_COLUMNS} FROM positions WHERE decision_id = ? AND status = 'open'",
            (decision_id,),
        ).fetchone()
        return OpenPosition(*row) if row is not None else None

    def open_positions(self) -> list[OpenPosition]:
        rows = self._db.execute(
            f"SELECT {_POSITION_COLUMNS} FROM positions WHERE status = 'open' ORDER BY opened_ts"
        ).fetchall()
        return [OpenPosition(*row) for row in rows]

    def balances(self) -> Balances:
        return self._nested("SELECT account, asset, amount FROM balances ORDER BY account, asset")

    def starting_balances(self) -> Balances:
        return self._nested("SELECT account, asset, amount FROM starting_balances ORDER BY account, asset")

    def _nested(self, query: str) -> Balances:
        out: Balances = {}
        for account, asset, amount in self._db.execute(query):
            out.setdefault(account, {})[asset] = amount
        return out

    def decisions(self) -> list[LedgerRow]:
        rows = self._db.execute(
            "SELECT decision_id, ts, action, status, symbol, expected_pnl, realised_pnl FROM decisions"
            " ORDER BY ts, rowid"
        ).fetchall()
        return [LedgerRow(*row) for row in rows]

    def legs(self) -> list[dict[str, Any]]:
        """Every leg (trades and unwinds) as plain rows, in the order written."""
        cursor = self._db.execute("SELECT * FROM legs ORDER BY id")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def positions(self) -> list[dict[str, Any]]:
        cursor = self._db.execute("SELECT * FROM positions ORDER BY opened_ts")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def rejections(self) -> dict[str, int]:
        """Rejected stream entries by reason."""
        return dict(self._db.execute("SELECT reason, COUNT(*) FROM rejections GROUP BY reason").fetchall())

    def unwind_pnl(self) -> list[tuple[int, float]]:
        """(ts, pnl) of every position unwound so far, wholly or in part."""
        rows = self._db.execute(
            "SELECT COALESCE(closed_ts, opened_ts), unwind_pnl FROM positions WHERE unwind_pnl != 0.0 ORDER BY 1"
        ).fetchall()
        return [(int(ts), float(pnl)) for ts, pnl in rows]

    def total_pnl(self) -> float:
        """Realised PnL so far, quote: executed decisions plus unwinds (the report's `pnl.total`)."""
        trades = self._db.execute("SELECT COALESCE(SUM(realised_pnl), 0.0) FROM decisions WHERE action = 'execute'")
        unwinds = self._db.execute("SELECT COALESCE(SUM(unwind_pnl), 0.0) FROM positions")
        return float(trades.fetchone()[0]) + float(unwinds.fetchone()[0])

    def fill_count(self) -> int:
        """Decisions executed and written down (every status: filled, partial, missed, reverted)."""
        return int(self._db.execute("SELECT COUNT(*) FROM decisions WHERE action = 'execute'").fetchone()[0])
