"""The canonical tick: the one shape every consumer downstream of a venue module sees.

Prices and quantities stay decimal *text* exactly as the venue sent them: parsing them into
floats would round, and parsing into Decimal on the hot path costs more than ClickHouse does
when it reads the text into its Decimal columns.

What else is said about a symbol's tape lives beside it: ``marketdata.coverage.Coverage`` (a
span whose every trade is published) and ``marketdata.gap.Gap`` (a hole, and its repair).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EXCHANGES = (
    "binance", "okx", "kucoin", "kraken", "coinbase",
    "bybit", "bitfinex", "gateio", "bitstamp", "alpaca",
)

Side = Literal["buy", "sell", "unknown"]
Source = Literal["ws", "rest", "backfill"]
# trade: a fill; correct: supersedes the trade with the same id; cancel: deletes it.
Event = Literal["trade", "correct", "cancel"]


@dataclass(slots=True)
class Tick:
    exchange: str
    symbol: str        # canonical BASE-QUOTE, upper case
    ts_us: int         # venue event time, µs UTC
    open: str
    high: str
    low: str
    close: str
    volume: str        # base quantity
    trade_count: int
    side: str          # taker side
    trade_id: str      # venue id as text; for an aggregated tick, the last id
    recv_us: int       # local receive time, µs UTC
    source: str = "ws"
    event: str = "trade"

    @classmethod
    def trade(cls, exchange: str, symbol: str, ts_us: int, price: str, qty: str, side: str,
              trade_id: str, recv_us: int, source: str = "ws", trade_count: int = 1,
              event: str = "trade") -> "Tick":
        """A single fill (or one venue-aggregated fill at one price): open = high = low = close."""
        return cls(exchange, symbol, ts_us, price, price, price, price, qty, trade_count, side,
                   trade_id, recv_us, source, event)

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]


def split_symbol(symbol: str) -> tuple[str, str]:
    """BASE-QUOTE -> (BASE, QUOTE); raises ValueError with the expected form otherwise."""
    base, sep, quote = symbol.partition("-")
    if not sep or not base or not quote or "-" in quote or symbol != symbol.upper():
        raise ValueError(f"symbol {symbol!r} is not canonical: expected upper-case BASE-QUOTE, e.g. BTC-USDT")
    return base, quote
