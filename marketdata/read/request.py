"""What a read asks for: validated venues, symbols, time range and bar interval.

``resolve_pairs`` turns ``venues`` x ``symbols`` into the (exchange, symbol) pairs to read,
checked against the venue registry (``marketdata.venues``), the config file (if any) and what the
store holds, so a typo fails with a message naming what is valid instead of returning an empty
frame. ``time_range`` accepts datetimes, dates, ISO strings and epoch numbers; times are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..bars.universe import Pair
from ..clock import US_PER_DAY, US_PER_HOUR, US_PER_MINUTE, format_us, parse_time_us


# interval name -> bucket length in µs ("1d" is the UTC day; for equities it holds one session)
INTERVALS: dict[str, int] = {"1m": US_PER_MINUTE, "5m": 5 * US_PER_MINUTE, "15m": 15 * US_PER_MINUTE,
                             "1h": US_PER_HOUR, "1d": US_PER_DAY}


class ReadError(ValueError):
    """A read request that cannot be answered as asked (unknown venue or symbol, bad range)."""


def interval_us(interval: str) -> int:
    try:
        return INTERVALS[interval]
    except KeyError:
        raise ReadError(f"interval {interval!r} is not supported; valid: {', '.join(INTERVALS)}") from None


def to_us(value: Any, what: str) -> int:
    """A time (datetime, date, ISO string, epoch s/ms/µs) -> µs UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    try:
        return parse_time_us(value)
    except (ValueError, TypeError) as e:
        raise ReadError(f"{what}: {e}") from None


def time_range(start: Any, end: Any, align_us: int = US_PER_MINUTE) -> tuple[int, int]:
    """[start, end) in µs, both aligned to ``align_us`` (a bar interval), start < end."""
    a, b = to_us(start, "start"), to_us(end, "end")
    if b <= a:
        raise ReadError(f"empty range: end {format_us(b)} is not after start {format_us(a)}")
    for name, v in (("start", a), ("end", b)):
        if v % align_us:
            raise ReadError(f"{name} {format_us(v)} is not aligned to the interval ({align_us // US_PER_MINUTE} min)")
    return a, b


def _names(value: str | Iterable[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    out = [str(v).strip() for v in value if str(v).strip()]
    if not out:
        raise ReadError(f"no {what} given")
    return list(dict.fromkeys(out))


def configured_pairs(config_path: str | Path | None = None) -> set[Pair]:
    """Pairs of the config file (``MARKETDATA_CONFIG`` or ./marketdata.yaml); empty if there is none."""
    import os

    from ..bars.universe import pairs_from_config
    from ..config import load_config

    p = Path(config_path or os.environ.get("MARKETDATA_CONFIG") or "marketdata.yaml")
    if not p.exists():
        return set()
    return set(pairs_from_config(load_config(p, resolve_endpoints=False)))


STORED_PAIRS_SQL = """
SELECT DISTINCT exchange, symbol FROM (
    SELECT exchange, symbol FROM marketdata.bars_1m
    WHERE minute >= toDateTime(intDiv({a:Int64}, 1000000), 'UTC')
      AND minute < toDateTime(intDiv({b:Int64}, 1000000), 'UTC')
    UNION ALL
    SELECT exchange, symbol FROM marketdata.ticks WHERE ts_us >= {a:Int64} AND ts_us < {b:Int64}
)
"""


def stored_pairs(client, start_us: int, end_us: int) -> set[Pair]:
    rows = client.query(STORED_PAIRS_SQL, parameters={"a": start_us, "b": end_us}).result_rows
    return {(str(e), str(s)) for e, s in rows}


@dataclass(frozen=True)
class PairSelection:
    pairs: list[Pair]
    venues: list[str]
    symbols: list[str]


def resolve_pairs(client, venues: Any, symbols: Any, start_us: int, end_us: int, *,
                  config_path: str | Path | None = None) -> PairSelection:
    """venues x symbols -> the pairs that exist (configured, or stored in the range).

    ``symbols`` may also name pairs directly as ``"venue:SYMBOL"``. Errors: a venue that is not a
    venue of the platform; a symbol that is not canonical (BASE-QUOTE, upper case); a symbol known
    on none of the venues; a venue that has none of the symbols."""
    from .. import venues as registry

    want_venues = _names(venues, "venues")
    want_symbols = _names(symbols, "symbols")
    if not want_venues:
        raise ReadError(f"no venues given; valid venues: {', '.join(registry.names())}")
    if not want_symbols:
        raise ReadError("no symbols given, e.g. BTC-USDT or binance:BTC-USDT")
    unknown = [v for v in want_venues if v not in registry.names()]
    if unknown:
        raise ReadError(f"unknown venue(s) {', '.join(map(repr, unknown))}; valid venues: {', '.join(registry.names())}")
    explicit: set[Pair] = set()
    plain: list[str] = []
    for s in want_symbols:
        ex, sep, sym = s.partition(":")
        if sep:
            if ex not in want_venues:
                raise ReadError(f"pair {s!r} names venue {ex!r}, which is not among the venues asked for "
                                f"({', '.join(want_venues)})")
            explicit.add((ex, sym))
            s = sym
        else:
            plain.append(s)
        base, dash, quote = s.partition("-")
        if s != s.upper() or not dash or not base or not quote:
            raise ReadError(f"symbol {s!r} is not canonical BASE-QUOTE in upper case, e.g. "
                            f"{s.upper() if dash else 'BTC-USDT'}")
    known = configured_pairs(config_path) | stored_pairs(client, start_us, end_us)
    chosen = set(explicit & known)
    missing_explicit = explicit - known
    problems = []
    if missing_explicit:
        problems.append(f"no data or config for {', '.join(f'{e}:{s}' for e, s in sorted(missing_explicit))}")
    for s in plain:
        hit = {(v, s) for v in want_venues if (v, s) in known}
        if not hit:
            problems.append(f"symbol {s!r} is neither configured nor stored on {', '.join(want_venues)} "
                            f"between {format_us(start_us)} and {format_us(end_us)}")
        chosen |= hit
    for v in want_venues:
        if not any(e == v for e, _ in chosen):
            have = sorted(s for e, s in known if e == v)
            problems.append(f"venue {v!r} has none of the symbols asked for; it has "
                            f"{', '.join(have[:20]) + (' ...' if len(have) > 20 else '') if have else 'nothing in this range'}")
    if problems:
        raise ReadError("; ".join(problems))
    pairs = sorted(chosen)
    return PairSelection(pairs=pairs, venues=sorted({e for e, _ in pairs}), symbols=sorted({s for _, s in pairs}))
