"""Stream entries -> ClickHouse rows, with as little Python per tick as possible.

The persist worker never builds ``Tick`` objects on its hot path. An entry's ticks field (a JSON
array of rows, see ``marketdata.stream``) is handed to ClickHouse *as is*, wrapped per entry in one
JSONCompactEachRow line ``[exchange, symbol, <ticks field>]``; ClickHouse parses it, ``ARRAY JOIN``s
the rows and computes ``version`` / ``is_deleted`` itself. Python's work per entry is a dict copy
and a ``decode_entry`` call on the entry *without* its ticks (version, exchange, symbol, coverage
and gaps are small); per tick it is nothing.

``marketdata.stream`` stays the one definition of the format: the ticks field's name and the order
of the fields in a row are the ones it exports (``TICKS_FIELD``, ``TICK_ROW``); nothing here
hard-codes them. The slow path -- ``decode_entry`` plus a Python row builder, taken when
``FAST_PATH`` is False -- is the reference the fast path is checked against (``test_persist``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import orjson

from ..coverage import Coverage
from ..gap import Gap
from ..stream import TICK_ROW, TICKS_FIELD, decode_entry, decode_quotes, is_quote_entry
from ..tick import Tick

# What a row must carry: every field of a tick but the two its entry names.
TICK_FIELDS = tuple(f.name for f in dataclasses.fields(Tick) if f.name not in ("exchange", "symbol"))
# ClickHouse type each tick field is read as from the JSON row (the INSERT casts to the column
# type: prices stay decimal text until ClickHouse parses them into Decimal(38, 18)).
_READ_TYPES = {"ts_us": "Int64", "open": "String", "high": "String", "low": "String",
               "close": "String", "volume": "String", "trade_count": "UInt32", "side": "String",
               "trade_id": "String", "recv_us": "Int64", "source": "String", "event": "String"}

TICK_COLUMNS = ["exchange", "symbol", "trade_id", "ts_us", "open", "high", "low", "close", "volume",
                "trade_count", "side", "recv_us", "source", "event", "version", "is_deleted"]
COVERAGE_COLUMNS = ["exchange", "symbol", "from_us", "to_us", "source", "recorded_us"]
QUOTE_COLUMNS = ["exchange", "symbol", "ts_us", "recv_us", "bid_px", "bid_qty", "ask_px", "ask_qty", "update_id"]
GAP_COLUMNS = ["exchange", "symbol", "gap_id", "from_us", "to_us", "from_id", "to_id", "found_by",
               "status", "repaired_by", "recovered", "detected_us", "updated_us", "detail"]


ROW_ORDER = TICK_ROW                 # tick field names in the order a stream row holds them
FAST_PATH = True                     # False: decode every tick with decode_entry (the reference)
_TICKS_FIELD_STR = TICKS_FIELD.decode()


def _tick_select_sql(source: str) -> str:
    pos = {f: i + 1 for i, f in enumerate(ROW_ORDER)}
    col = {f: f"tupleElement(r, {pos[f]})" for f in TICK_FIELDS}
    exprs = {
        "exchange": "x", "symbol": "s",
        **col,
        "version": f"if({col['event']} = 'trade', toUInt64(0), toUInt64({col['recv_us']}))",
        "is_deleted": f"toUInt8({col['event']} = 'cancel')",
    }
    select = ", ".join(exprs[c] for c in TICK_COLUMNS)
    return (f"INSERT INTO {{table}} ({', '.join(TICK_COLUMNS)}) SELECT {select} "
            f"FROM {source} ARRAY JOIN t AS r")


TICK_STRUCTURE = ("x String, s String, t Array(Tuple(" +
                  ", ".join(_READ_TYPES[f] for f in ROW_ORDER) + "))")


def tick_insert_sql(table: str) -> str:
    """INSERT ... SELECT that expands the request body's entry lines into tick rows (input())."""
    source = f"input('{TICK_STRUCTURE}')"
    return _tick_select_sql(source).format(table=table) + " FORMAT JSONCompactEachRow"


@dataclass(slots=True)
class Parsed:
    """One stream entry, ready to persist."""
    stream: bytes
    id: bytes
    exchange: str
    symbol: str
    line: bytes | None            # JSONCompactEachRow line with the entry's ticks, if any
    n_ticks: int
    coverage: Coverage | None
    gaps: list[Gap] = field(default_factory=list)
    quotes: bytes = b""           # JSONEachRow payload of a quote entry's rows

    @property
    def id_ms(self) -> int:
        return int(self.id.split(b"-", 1)[0])


def _count_rows(raw: bytes) -> int:
    # Rows are JSON arrays inside one array: "[[...],[...]]". Counting the separators is exact
    # for every row orjson writes unless a string value itself contains "],[" -- only used for
    # counters and batch sizing, never for what is stored.
    if len(raw) <= 2:
        return 0
    return raw.count(b"],[") + 1


_PREFIXES: dict[tuple[str, str], bytes] = {}


def parse_entry(stream: bytes, entry_id: bytes, fields: Mapping) -> Parsed:
    """Decode an entry for persisting; raises on anything ``decode_entry`` refuses."""
    if is_quote_entry(fields):
        quotes = decode_quotes(fields)
        ex, sym = (quotes[0].exchange, quotes[0].symbol) if quotes else ("", "")
        payload = json_each_row([{"exchange": q.exchange, "symbol": q.symbol, "ts_us": q.ts_us,
                                  "recv_us": q.recv_us, "bid_px": q.bid_px or "0", "bid_qty": q.bid_qty or "0",
                                  "ask_px": q.ask_px or "0", "ask_qty": q.ask_qty or "0",
                                  "update_id": q.update_id} for q in quotes])
        return Parsed(stream, entry_id, ex, sym, None, 0, None, [], payload)
    if FAST_PATH:
        head_fields = dict(fields)
        raw = head_fields.pop(TICKS_FIELD, None)
        if raw is None:
            raw = head_fields.pop(_TICKS_FIELD_STR, None)
        entry = decode_entry(head_fields)       # version, exchange, symbol, coverage, gaps
        line = None
        n = 0
        if raw:
            if isinstance(raw, str):
                raw = raw.encode()
            raw = raw.strip()
            if not (raw[:1] == b"[" and raw[-1:] == b"]"):
                raise ValueError(f"ticks field is not a JSON array: {raw[:40]!r}")
            n = _count_rows(raw)
            if n:
                key = (entry.exchange, entry.symbol)
                prefix = _PREFIXES.get(key)
                if prefix is None:
                    if len(_PREFIXES) > 100_000:
                        _PREFIXES.clear()
                    prefix = _PREFIXES[key] = (b"[" + orjson.dumps(entry.exchange) + b"," +
                                               orjson.dumps(entry.symbol) + b",")
                line = prefix + raw + b"]\n"
        return Parsed(stream, entry_id, entry.exchange, entry.symbol, line, n, entry.coverage, entry.gaps)
    entry = decode_entry(fields)
    line = None
    if entry.ticks:
        rows = [[getattr(t, f) for f in ROW_ORDER] for t in entry.ticks]
        line = orjson.dumps([entry.exchange, entry.symbol, rows]) + b"\n"
    return Parsed(stream, entry_id, entry.exchange, entry.symbol, line, len(entry.ticks), entry.coverage,
                  entry.gaps)


_INT_FIELDS = ("ts_us", "trade_count", "recv_us")


def validate_entry(fields: Mapping) -> None:
    """Strict check of one entry (slow path, used only to find the entry ClickHouse refused):
    the full ``decode_entry`` plus the types the columns need."""
    if is_quote_entry(fields):
        for q in decode_quotes(fields):
            for f in ("bid_px", "bid_qty", "ask_px", "ask_qty"):
                v = getattr(q, f)
                if v:
                    try:
                        float(v)
                    except ValueError:
                        raise ValueError(f"quote {f} is not a number: {v!r}") from None
        return
    entry = decode_entry(fields)
    for t in entry.ticks:
        for f in _INT_FIELDS:
            v = getattr(t, f)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"tick {t.trade_id!r}: {f} must be an integer, not {v!r}")
        if t.trade_count < 0:
            raise ValueError(f"tick {t.trade_id!r}: trade_count {t.trade_count} is negative")
        for f in ("open", "high", "low", "close", "volume", "trade_id", "side", "source", "event"):
            v = getattr(t, f)
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise ValueError(f"tick {t.trade_id!r}: {f} must be text, not {v!r}")
    if entry.coverage is not None:
        c = entry.coverage
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (c.from_us, c.to_us)):
            raise ValueError(f"coverage bounds must be integers: {c}")
        if c.to_us < c.from_us:
            raise ValueError(f"coverage ends before it starts: {c}")
    for g in entry.gaps:
        for f in ("from_us", "to_us", "recovered", "detected_us", "updated_us"):
            v = getattr(g, f)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"gap {g.gap_id!r}: {f} must be an integer, not {v!r}")


def merge_coverage(marks: Iterable[tuple[str, str, Coverage, int]]) -> list[dict]:
    """Coverage rows, with marks of one (exchange, symbol, source) that overlap or touch merged.

    ``marks`` are (exchange, symbol, coverage, recorded_us); a merged row keeps the latest
    recorded_us."""
    by_key: dict[tuple[str, str, str], list[tuple[int, int, int]]] = {}
    for ex, sym, c, rec in marks:
        by_key.setdefault((ex, sym, c.source), []).append((c.from_us, c.to_us, rec))
    rows = []
    for (ex, sym, src), spans in sorted(by_key.items()):
        spans.sort()
        cur_f, cur_t, cur_r = spans[0]
        for f, t, r in spans[1:]:
            if f <= cur_t + 1:                 # overlapping or contiguous (bounds are inclusive µs)
                if t > cur_t:
                    cur_t = t
                if r > cur_r:
                    cur_r = r
            else:
                rows.append({"exchange": ex, "symbol": sym, "from_us": cur_f, "to_us": cur_t,
                             "source": src, "recorded_us": cur_r})
                cur_f, cur_t, cur_r = f, t, r
        rows.append({"exchange": ex, "symbol": sym, "from_us": cur_f, "to_us": cur_t, "source": src,
                     "recorded_us": cur_r})
    return rows


def gap_rows(gaps: Iterable[Gap]) -> list[dict]:
    return [{c: getattr(g, c) for c in GAP_COLUMNS} for g in gaps]


def json_each_row(rows: Sequence[dict]) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows)


def ids_token(kind: str, entries: Iterable[Parsed], payload: bytes = b"") -> str:
    """Deduplication token of a batch: a digest of its (stream, id) pairs, so the same entries
    inserted again -- a retried batch -- are recognised by ClickHouse and skipped. Rows that are
    derived from the entries (merged coverage) add their payload, so a different derivation from
    the same entries is never mistaken for a retry."""
    h = hashlib.blake2b(digest_size=16)
    for s, i in sorted((p.stream, p.id) for p in entries):
        h.update(s)
        h.update(b" ")
        h.update(i)
        h.update(b"\n")
    h.update(payload)
    return f"md-persist-{kind}-{h.hexdigest()}"
