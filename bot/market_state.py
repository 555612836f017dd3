"""The latest valid book per (venue, symbol), as strategies see it."""

from __future__ import annotations

from collections.abc import Iterable

from bot.events import BookEvent
from bot.rejections import RejectionCounter


class MarketState:
    """Holds the latest book per venue and symbol; rejects books older than the one it holds."""

    def __init__(self, rejections: RejectionCounter) -> None:
        self._books: dict[tuple[str, str], BookEvent] = {}
        self._venues_by_symbol: dict[str, list[str]] = {}
        self._rejections = rejections

    def apply(self, book: BookEvent) -> bool:
        """Store `book`; False (and a counted rejection) when it is older than the stored one."""
        key = (book.venue, book.symbol)
        held = self._books.get(key)
        if held is not None and book.ts < held.ts:
            self._rejections.reject(book.venue, "out_of_order", f"{book.symbol} ts {book.ts} < {held.ts}")
            return False
        if held is None:
            self._venues_by_symbol.setdefault(book.symbol, []).append(book.venue)
        self._books[key] = book
        return True

    def book(self, venue: str, symbol: str) -> BookEvent | None:
        return self._books.get((venue, symbol))

    def venues_for(self, symbol: str) -> Iterable[str]:
        return self._venues_by_symbol.get(symbol, ())
