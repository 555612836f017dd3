"""Cross-exchange arbitrage: buy on one venue's asks, sell on another's bids, after both taker fees."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import CexCexConfig
from bot.events import BookEvent
from strategies.base import Evaluation, MarketView
from strategies.depth_walk import walk_cross


class CexCexStrategy:
    """Evaluate every venue pair of the updated symbol, both directions."""

    kind = "cex_cex"

    def __init__(self, config: CexCexConfig, taker_fee_bps: Mapping[str, float]) -> None:
        self._config = config
        self._fee = {venue: bps / 1e4 for venue, bps in taker_fee_bps.items()}

    def on_book(self, market: MarketView, book: BookEvent) -> list[Evaluation]:
        evaluations = []
        for other in market.venues_for(book.symbol):
            if other == book.venue:
                continue
            other_book = market.book(other, book.symbol)
            if other_book is None:
                continue
            evaluations.append(self.evaluate(other_book, book, book.ts))
            evaluations.append(self.evaluate(book, other_book, book.ts))
        return evaluations

    def evaluate(self, buy: BookEvent, sell: BookEvent, ts: int) -> Evaluation:
        """Size the trade buying on `buy` and selling on `sell` until the marginal net edge reaches zero."""
        buy_fee, sell_fee = self._fee[buy.venue], self._fee[sell.venue]
        walk = walk_cross(buy.asks, sell.bids, buy_fee, sell_fee, self._config.max_notional)
        if walk is None:
            # Nothing pays: report the touch, so a closing signal shows the books that closed the gap.
            size, buy_price, sell_price, fees = 0.0, buy.best_ask, sell.best_bid, 0.0
            gross_edge_bps = (sell_price - buy_price) / buy_price * 1e4
            net_edge_bps = (sell_price * (1 - sell_fee) - buy_price * (1 + buy_fee)) / buy_price * 1e4
        else:
            size, buy_price, sell_price, fees = walk.size, walk.buy_vwap, walk.sell_vwap, walk.fees
            gross_edge_bps, net_edge_bps = walk.gross_edge_bps, walk.net_edge_bps
        return Evaluation(
            kind=self.kind,
            symbol=buy.symbol,
            buy_venue=buy.venue,
            sell_venue=sell.venue,
            ts=ts,
            buy_book_ts=buy.ts,
            sell_book_ts=sell.ts,
            size=size,
            buy_price=buy_price,
            sell_price=sell_price,
            gross_edge_bps=gross_edge_bps,
            net_edge_bps=net_edge_bps,
            fees=fees,
            tradeable=walk is not None and net_edge_bps >= self._config.min_net_edge_bps,
        )
