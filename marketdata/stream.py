"""Redis Stream layout and the versioned entry format: one encoder, one decoder.

One stream per exchange:symbol. The key carries a Redis Cluster hash tag, ``{exchange:symbol}``,
so the stream and the symbol's sequence state live in the same slot.

Entry format, version 1 (all field values are bytes):

    v   b"1"
    x   exchange                     s   canonical symbol
    t   (optional) ticks: orjson array of rows (``TICKS_FIELD``; the row layout is ``TICK_ROW``)
        [ts_us, open, high, low, close, volume, trade_count, side, trade_id, recv_us, source, event]
    c   (optional) coverage mark: orjson [from_us, to_us, source]; "every trade of this symbol with
        ts in [from_us, to_us] has been published" -- in this entry or an earlier one of the stream
        (``marketdata.coverage.Coverage``, before encoding and after decoding)
    g   (optional) gaps: orjson array of gap records (see ``marketdata.gap.Gap``)

A connector writes one entry per stream per flush: its batch of ticks, then (in the same entry)
the coverage mark that vouches for them. Readers must ignore fields they do not know, and refuse
entries whose version they do not know, rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import orjson

from .coverage import Coverage
from .gap import Gap
from .tick import Tick

ENTRY_VERSION = b"1"
PERSIST_GROUP = "persist"
STREAMS_SET = "md:streams"          # every stream a connector has written, for consumers to find
QUOTE_STREAMS_SET = "md:quote-streams"   # every quotes stream, kept apart so tick readers never see one

# The ticks field and its row layout: the names of ``Tick``'s fields in the order a row holds them
# (exchange and symbol are the entry's). Readers that skip ``decode_entry`` (the persist worker)
# take the layout from here; ``test_stream_layout`` checks that the encoder writes it.
TICKS_FIELD = b"t"
TICK_ROW = ("ts_us", "open", "high", "low", "close", "volume", "trade_count", "side", "trade_id",
            "recv_us", "source", "event")


def stream_key(exchange: str, symbol: str) -> str:
    return f"md:{{{exchange}:{symbol}}}:trades"


def sequence_key(exchange: str, symbol: str) -> str:
    """Hash with the symbol's sequence state (last trade id, coverage end); same slot as the stream."""
    return f"md:{{{exchange}:{symbol}}}:seq"


def quotes_key(exchange: str, symbol: str) -> str:
    """Stream of the symbol's best bid/ask (quote entries, see ``encode_quotes``)."""
    return f"md:{{{exchange}:{symbol}}}:quotes"


def book_key(exchange: str, symbol: str) -> str:
    """Hash with the symbol's order-book state: last update id, resync count, last resync time."""
    return f"md:{{{exchange}:{symbol}}}:book"


def health_key(exchange: str) -> str:
    """Hash a venue's ingest process refreshes with its heartbeat and counters."""
    return f"md:health:{{{exchange}}}"


def parse_stream_key(key: str | bytes) -> tuple[str, str]:
    if isinstance(key, bytes):
        key = key.decode()
    inner = key[key.index("{") + 1:key.index("}")]
    exchange, _, symbol = inner.partition(":")
    return exchange, symbol


@dataclass(slots=True)
class Entry:
    exchange: str
    symbol: str
    ticks: list[Tick] = field(default_factory=list)
    coverage: Coverage | None = None
    gaps: list[Gap] = field(default_factory=list)


class EntryFormatError(ValueError):
    pass


def _row(t: Tick) -> list:
    return [t.ts_us, t.open, t.high, t.low, t.close, t.volume, t.trade_count, t.side, t.trade_id,
            t.recv_us, t.source, t.event]


def encode_entry(exchange: str, symbol: str, ticks: Iterable[Tick] = (),
                 coverage: tuple[int, int, str] | None = None,
                 gaps: Iterable[Gap] = ()) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {b"v": ENTRY_VERSION, b"x": exchange.encode(), b"s": symbol.encode()}
    rows = [_row(t) for t in ticks]
    if rows:
        fields[b"t"] = orjson.dumps(rows)
    if coverage is not None:
        fields[b"c"] = orjson.dumps(list(coverage))
    gap_rows = [g.as_dict() for g in gaps]
    if gap_rows:
        fields[b"g"] = orjson.dumps(gap_rows)
    return fields


def _get(fields: Mapping, name: bytes):
    v = fields.get(name)
    if v is None:
        v = fields.get(name.decode())
    return v


def decode_entry(fields: Mapping) -> Entry:
    """Decode one stream entry (field map with bytes or str keys) into ticks, coverage and gaps."""
    version = _get(fields, b"v")
    if isinstance(version, str):
        version = version.encode()
    if version != ENTRY_VERSION:
        raise EntryFormatError(f"stream entry version {version!r} is not supported (expected {ENTRY_VERSION!r})")
    exchange = _get(fields, b"x")
    symbol = _get(fields, b"s")
    if exchange is None or symbol is None:
        raise EntryFormatError("stream entry lacks exchange (x) or symbol (s)")
    exchange = exchange.decode() if isinstance(exchange, bytes) else exchange
    symbol = symbol.decode() if isinstance(symbol, bytes) else symbol
    entry = Entry(exchange, symbol)
    raw = _get(fields, TICKS_FIELD)
    if raw:
        entry.ticks = [Tick(exchange, symbol, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                            r[9], r[10], r[11]) for r in orjson.loads(raw)]
    raw = _get(fields, b"c")
    if raw:
        f, t, src = orjson.loads(raw)
        entry.coverage = Coverage(f, t, src)
    raw = _get(fields, b"g")
    if raw:
        entry.gaps = [Gap(**g) for g in orjson.loads(raw)]
    return entry


# ---------------------------------------------------------------------------------- quotes
#
# Quote entry, version 1 (a quotes stream holds only these; all field values are bytes):
#
#     v   b"1"          x   exchange          s   canonical symbol
#     q   orjson array of rows [ts_us, recv_us, bid_px, bid_qty, ask_px, ask_qty, update_id]
#
# One row per change of the best bid or ask, in book order. Prices and quantities are the venue's
# decimal strings ("" for an empty side); update_id is the venue's book id after the change (0 for
# a venue without one, Kraken). Readers refuse other versions rather than guess.

QUOTE_ENTRY_VERSION = b"1"
QUOTES_FIELD = b"q"


@dataclass(slots=True)
class Quote:
    exchange: str
    symbol: str
    ts_us: int               # venue time of the book event that set this best bid/ask
    recv_us: int
    bid_px: str
    bid_qty: str
    ask_px: str
    ask_qty: str
    update_id: int = 0


def encode_quotes(exchange: str, symbol: str, quotes: Iterable[Quote]) -> dict[bytes, bytes]:
    rows = [[q.ts_us, q.recv_us, q.bid_px, q.bid_qty, q.ask_px, q.ask_qty, q.update_id] for q in quotes]
    return {b"v": QUOTE_ENTRY_VERSION, b"x": exchange.encode(), b"s": symbol.encode(),
            QUOTES_FIELD: orjson.dumps(rows)}


def is_quote_entry(fields: Mapping) -> bool:
    return _get(fields, QUOTES_FIELD) is not None


def decode_quotes(fields: Mapping) -> list[Quote]:
    """Decode one quote entry; raises ``EntryFormatError`` on anything it does not recognise."""
    version = _get(fields, b"v")
    if isinstance(version, str):
        version = version.encode()
    if version != QUOTE_ENTRY_VERSION:
        raise EntryFormatError(f"quote entry version {version!r} is not supported (expected {QUOTE_ENTRY_VERSION!r})")
    exchange, symbol, raw = _get(fields, b"x"), _get(fields, b"s"), _get(fields, QUOTES_FIELD)
    if exchange is None or symbol is None or raw is None:
        raise EntryFormatError("quote entry lacks exchange (x), symbol (s) or quotes (q)")
    exchange = exchange.decode() if isinstance(exchange, bytes) else exchange
    symbol = symbol.decode() if isinstance(symbol, bytes) else symbol
    out = []
    for r in orjson.loads(raw):
        if not (isinstance(r, list) and len(r) == 7 and all(isinstance(r[i], int) and not isinstance(r[i], bool)
                                                             for i in (0, 1, 6))
                and all(isinstance(r[i], str) for i in range(2, 6))):
            raise EntryFormatError(f"quote row is malformed: {str(r)[:200]}")
        out.append(Quote(exchange, symbol, r[0], r[1], r[2], r[3], r[4], r[5], r[6]))
    return out
