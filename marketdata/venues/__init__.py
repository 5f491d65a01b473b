"""One module per venue: its protocol knowledge (URLs, subscribe frames, parsing, keepalive and
sequence rules, REST history), declared in one place. No loops here: the ingest runtime drives them."""

from __future__ import annotations

import importlib
from types import ModuleType

# venue id -> module name under marketdata.venues
_MODULES = {
    "binance": "binance",
    "okx": "okx",
    "kucoin": "kucoin",
    "kraken": "kraken",
    "coinbase": "coinbase",
    "bybit": "bybit",
    "bitfinex": "bitfinex",
    "gateio": "gateio",
    "bitstamp": "bitstamp",
    "alpaca": "alpaca",
}


def names() -> list[str]:
    return list(_MODULES)


def get(name: str) -> ModuleType:
    if name not in names():
        raise KeyError(f"unknown venue {name!r}; valid venues: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")
