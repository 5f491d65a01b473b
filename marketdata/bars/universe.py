"""The (exchange, symbol) pairs a build or an audit is about.

Callers name pairs in whichever form they hold: ``("binance", "BTC-USDT")`` tuples,
``"binance:BTC-USDT"`` strings, or a mapping ``{"binance": ["BTC-USDT", ...]}`` (or a
``marketdata.config.Config``). Everything is normalized to a sorted, de-duplicated list of tuples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Pair = tuple[str, str]


def pair_key(pair: Pair) -> str:
    """("binance", "BTC-USDT") -> "binance:BTC-USDT" (the form used in metadata and logs)."""
    return f"{pair[0]}:{pair[1]}"


def normalize_pairs(symbols: Any) -> list[Pair]:
    if symbols is None:
        return []
    venues = getattr(symbols, "venues", None)           # a marketdata.config.Config
    if venues is not None and not isinstance(symbols, Mapping):
        return sorted({(name, s) for name, v in venues.items() for s in v.symbols})
    out: set[Pair] = set()
    if isinstance(symbols, Mapping):
        for ex, syms in symbols.items():
            if isinstance(syms, str):
                syms = [syms]
            out.update((str(ex), str(s)) for s in syms)
        return sorted(out)
    if isinstance(symbols, str):
        symbols = [symbols]
    for item in symbols:
        if isinstance(item, str):
            ex, sep, sym = item.partition(":")
            if not sep or not ex or not sym:
                raise ValueError(f"pair {item!r} is not 'exchange:SYMBOL', e.g. 'binance:BTC-USDT'")
            out.add((ex, sym))
        else:
            ex, sym = item
            out.add((str(ex), str(sym)))
    return sorted(out)


def pairs_from_config(config: Any) -> list[Pair]:
    """The configured pairs of a ``marketdata.config.Config`` (enabled venues only)."""
    return normalize_pairs(config)


def pairs_param(pairs: Iterable[Pair]) -> list[tuple[str, str]]:
    """A value for a ``{name:Array(Tuple(String, String))}`` query parameter."""
    return [(str(a), str(b)) for a, b in pairs]
