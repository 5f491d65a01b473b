"""The venue registry: venue name -> its contract (``venues/base.py``), for trades and, where the
venue has them, order books. One module per venue holds its protocol knowledge (URLs, subscribe
frames, parsing, keepalive and sequence rules, REST history) in one ``Venue`` subclass; a
``<venue>_book.py`` module holds its book protocol in a ``BookVenue`` subclass. No loops here:
the ingest runtime drives them."""

from __future__ import annotations

from .alpaca import Alpaca
from .base import BookVenue, Venue
from .binance import Binance
from .binance_book import BinanceBook
from .bitfinex import Bitfinex
from .bitstamp import Bitstamp
from .bybit import Bybit
from .coinbase import Coinbase
from .gateio import Gateio
from .kraken import Kraken
from .kraken_book import KrakenBook
from .kucoin import Kucoin
from .kucoin_book import KucoinBook
from .okx import Okx
from .okx_book import OkxBook

# in the order the platform lists them (tick.EXCHANGES)
VENUES: dict[str, type[Venue]] = {v.NAME: v for v in (Binance, Okx, Kucoin, Kraken, Coinbase, Bybit, Bitfinex,
                                                      Gateio, Bitstamp, Alpaca)}
BOOKS: dict[str, type[BookVenue]] = {b.NAME: b for b in (BinanceBook, OkxBook, KucoinBook, KrakenBook)}


def names() -> list[str]:
    return list(VENUES)


def get(name: str) -> type[Venue]:
    """The trade contract of a venue."""
    if name not in VENUES:
        raise KeyError(f"unknown venue {name!r}; valid venues: {', '.join(names())}")
    return VENUES[name]


def book_names() -> list[str]:
    return list(BOOKS)


def book(name: str) -> type[BookVenue]:
    """The order-book contract of a venue (ValueError: the venue has no order-book support)."""
    if name not in BOOKS:
        raise ValueError(f"{name} has no order-book support; venues with books: {', '.join(book_names())}")
    return BOOKS[name]
