"""Order books kept in sequence per venue, best bid/ask published as quotes.

``local`` (the book), ``sync`` (venue-neutral sequencing and resync), ``feed`` (the runtime: its
own link per venue), ``quotes`` (publishing), and, per venue, its book protocol in
``marketdata/venues/<venue>_book.py`` (``binance``, ``okx``, ``kucoin``, ``kraken``): messages,
parsing, sequencing rule, REST snapshot and checksum.
"""

from __future__ import annotations

import importlib
from types import ModuleType

VENUES = ("binance", "okx", "kucoin", "kraken")


def venue_module(venue: str) -> ModuleType:
    if venue not in VENUES:
        raise ValueError(f"{venue} has no order-book support; venues with books: {', '.join(VENUES)}")
    return importlib.import_module(f"marketdata.venues.{venue}_book")
