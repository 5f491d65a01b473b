"""Redis Stream layout and the versioned entry format: one encoder, one decoder.

One stream per exchange:symbol. The key carries a Redis Cluster hash tag, ``{exchange:symbol}``,
so the stream and the symbol's sequence state live in the same slot.

Entry format, version 1 (all field values are bytes):

    v   b"1"
    x   exchange                     s   canonical symbol
    t   (optional) ticks: orjson array of rows
        [ts_us, open, high, low, close, volume, trade_count, side, trade_id, recv_us, source, event]
    c   (optional) coverage mark: orjson [from_us, to_us, source]; "every trade of this symbol with
        ts in [from_us, to_us] has been published" -- in this entry or an earlier one of the stream
    g   (optional) gaps: orjson array of gap records (see ``Gap``)

A connector writes one entry per stream per flush: its batch of ticks, then (in the same entry)
the coverage mark that vouches for them. Readers must ignore fields they do not know, and refuse
entries whose version they do not know, rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Iterable, Mapping

import orjson

from .tick import Tick

ENTRY_VERSION = b"1"
PERSIST_GROUP = "persist"
STREAMS_SET = "md:streams"          # every stream a connector has written, for consumers to find


def stream_key(exchange: str, symbol: str) -> str:
    return f"md:{{{exchange}:{symbol}}}:trades"


def sequence_key(exchange: str, symbol: str) -> str:
    """Hash with the symbol's sequence state (last trade id, coverage end); same slot as the stream."""
    return f"md:{{{exchange}:{symbol}}}:seq"


def quotes_key(exchange: str, symbol: str) -> str:
    return f"md:{{{exchange}:{symbol}}}:quotes"


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
class Coverage:
    exchange: str
    symbol: str
    from_us: int
    to_us: int
    source: str = "ws"


@dataclass(slots=True)
class Gap:
    """A detected hole in a symbol's tape, and what became of it."""
    exchange: str
    symbol: str
    gap_id: str               # stable per hole, so status updates replace the earlier record
    from_us: int              # time bounds of the hole (exclusive of the trades around it)
    to_us: int
    from_id: str = ""         # first missing trade id, where ids are sequential
    to_id: str = ""           # last missing trade id
    found_by: str = ""        # id_jump | reconnect | restart | heartbeat | ...
    status: str = "open"      # open | repaired | unrepairable
    repaired_by: str = ""     # rest_by_id | rest_by_time | redundant | ...
    recovered: int = 0        # trades recovered by the repair
    detected_us: int = 0
    updated_us: int = 0
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


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
    raw = _get(fields, b"t")
    if raw:
        entry.ticks = [Tick(exchange, symbol, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                            r[9], r[10], r[11]) for r in orjson.loads(raw)]
    raw = _get(fields, b"c")
    if raw:
        f, t, src = orjson.loads(raw)
        entry.coverage = Coverage(exchange, symbol, f, t, src)
    raw = _get(fields, b"g")
    if raw:
        entry.gaps = [Gap(**g) for g in orjson.loads(raw)]
    return entry
