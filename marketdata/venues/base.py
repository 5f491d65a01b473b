"""What a venue module declares, and the parsed-frame vocabulary the ingest runtime understands.

A venue module is protocol knowledge only. It turns raw frames into these events and builds
the requests the runtime sends; the runtime (``marketdata.ingest``) owns sockets, timers,
sequence state and Redis.

The parser contract (held by marketdata_tests/test_parser_fuzz.py): ``parse`` returns only the
events below, or raises MalformedFrame. Ticks are built with ``trade_tick`` (checked fields). A
control frame (pong, heartbeat, ack, status) is ``Ignored``; a well-formed data frame the parser
does not read is ``Unrecognised`` (counted and logged by the runtime), never passed over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ..tick import Tick


class MalformedFrame(ValueError):
    """A frame the venue module cannot read; the runtime counts it, logs it and goes on."""


def json_object(frame: str | bytes) -> dict:
    """A frame that must be one JSON object; anything else is malformed."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as e:
        raise MalformedFrame(f"invalid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise MalformedFrame("frame is not a JSON object")
    return msg


def reject_unknown_options(options: dict, known: dict) -> None:
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(known)}")


@dataclass(slots=True)
class Ack:
    request_id: Any = None


@dataclass(slots=True)
class VenueError:
    code: Any
    message: str
    request_id: Any = None


@dataclass(slots=True)
class UnknownSymbol:
    venue_symbol: str


@dataclass(slots=True)
class Reconnect:
    """The venue asks us to reconnect (shutdown notice, maintenance, token expiry). With `rotate`
    the old link still delivers for a while: the runtime opens a new one make-before-break."""
    reason: str
    rotate: bool = False


@dataclass(slots=True)
class LastTradeId:
    """The venue's latest trade id for a symbol at `ts_us` (Coinbase heartbeat): ids beyond the
    last one we saw, up to it, were missed even if no trade follows them (a quiet market)."""
    symbol: str            # canonical
    trade_id: int
    ts_us: int


@dataclass(slots=True)
class Replay:
    """Recent trades a venue replays on every (re)subscribe (Bitfinex's trades snapshot), oldest
    first. They are real trades (`decode` prints them). They overlap what we have: trades older than
    the symbol's tape are not news and are dropped; the rest go through as ticks (known ids are
    de-duplicated there); a snapshot reaching back over our last trade closes the span we were
    away without REST (ingest/sequence.py `on_replay`)."""
    symbol: str            # canonical
    ticks: list


@dataclass(slots=True)
class Pause:
    """The venue stops this link's data for a while without closing it (Bitfinex maintenance):
    what the link would carry is a gap from now until it is replaced; it is not reconnected."""
    reason: str


@dataclass(slots=True)
class Ignored:
    """A well-formed control frame the parser recognises and that carries nothing for us
    (pongs, heartbeats, acks of other requests, status). Never a data frame."""
    kind: str = ""


@dataclass(slots=True)
class Unrecognised:
    """A well-formed frame the parser does not read: a data channel, topic, type or event it was
    not told about. Nothing is silently passed over: the runtime counts and logs it."""
    kind: str
    detail: str = ""


@dataclass(slots=True)
class Unsequenced:
    """A trade that lacks the venue's sequence field (Gate.io `id_market` in recordings before
    2025-01-08). The trade is published all the same; the symbol's continuity falls back to
    time (holes are spans of time, repaired by time) until the field is back."""
    tick: Tick
    missing: str


@dataclass(slots=True)
class Instrument:
    venue_symbol: str      # as the venue spells it in REST and payloads
    symbol: str            # canonical BASE-QUOTE
    status: str = "TRADING"
    extra: dict = field(default_factory=dict)


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    weight: int = 1
    headers: dict[str, str] | None = None    # venue credentials (Alpaca keys): never logged


Event = (Tick | Ack | VenueError | UnknownSymbol | Reconnect | LastTradeId | Replay | Pause | Ignored
         | Unrecognised | Unsequenced)

# Every event a parser may return: anything else (or an exception other than MalformedFrame) is a
# bug in the parser (the fuzz tests hold every venue to it).
PARSER_EVENTS = (Tick, Ack, VenueError, UnknownSymbol, Reconnect, LastTradeId, Replay, Pause, Ignored,
                 Unrecognised, Unsequenced)


# --- checked canonical ticks ---------------------------------------------------------------------

_DECIMAL = re.compile(r"\d+(?:\.\d+)?")
_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII).fullmatch     # plain ASCII decimal text, as sent
_SIDES = ("buy", "sell", "unknown")
MAX_TS_US = 4_102_444_800_000_000      # 2100-01-01


def decimal_text(v: Any, what: str) -> str:
    """A venue's price or quantity as plain non-negative decimal text, exactly as sent; exponent
    forms (5e-08) are written out. Anything else (numbers as JSON floats, NaN, signs, words)
    is malformed: a parser passes strings, or number text it read without a float."""
    if type(v) is not str or not v.isascii():
        raise MalformedFrame(f"{what} is not decimal text: {str(v)[:40]!r}")
    if _DECIMAL.fullmatch(v):
        return v
    try:
        d = Decimal(v)
    except (InvalidOperation, ValueError):
        raise MalformedFrame(f"{what} is not a decimal: {v[:40]!r}") from None
    if not d.is_finite() or d.is_signed() or v.strip() != v or "_" in v:
        raise MalformedFrame(f"{what} is not a non-negative decimal: {v[:40]!r}")
    return format(d, "f")


def trade_tick(exchange: str, symbol: str, ts_us: Any, price: Any, qty: Any, side: Any, trade_id: Any,
               recv_us: int, trade_count: Any = 1, source: str = "ws", event: str = "trade") -> Tick:
    """A single fill (or one venue-aggregated fill at one price) as a canonical tick, checked:
    positive integer µs before 2100, decimal text for price and quantity, a known taker side, a
    non-empty trade id, a positive count. (No lower bound on time: venues' own documentation
    examples carry 1973 times, and `int_field` already refuses true/false and text.) A field that fails is a MalformedFrame, so a retyped
    or renamed field never reaches Redis as a tick with a wrong value."""
    # One test for the common case (every field well-typed, plain decimals): 0.8 -> 0.45 µs a
    # trade; anything else goes through the checks below, which name the field that fails.
    if (type(ts_us) is int and 0 < ts_us < MAX_TS_US and type(price) is str and type(qty) is str
            and _PLAIN(price) is not None and _PLAIN(qty) is not None and side in _SIDES
            and type(trade_id) is str and 0 < len(trade_id) <= 64 and type(trade_count) is int and trade_count > 0):
        return Tick(exchange, symbol, ts_us, price, price, price, price, qty, trade_count, side,
                    trade_id, recv_us, source, event)
    if type(ts_us) is not int or not 0 < ts_us < MAX_TS_US:
        raise MalformedFrame(f"trade time {str(ts_us)[:40]!r} is not positive µs before 2100")
    if side not in _SIDES:
        raise MalformedFrame(f"taker side {str(side)[:20]!r} is not buy, sell or unknown")
    if type(trade_id) is not str or not trade_id or len(trade_id) > 64:
        raise MalformedFrame(f"trade id {str(trade_id)[:40]!r} is not a non-empty text id")
    if type(trade_count) is not int or trade_count < 1:
        raise MalformedFrame(f"trade count {str(trade_count)[:20]!r} is not a positive integer")
    px = decimal_text(price, "price")
    return Tick(exchange, symbol, ts_us, px, px, px, px, decimal_text(qty, "quantity"), trade_count, side,
                trade_id, recv_us, source, event)


def int_field(v: Any, what: str) -> int:
    """An integer field that venues send as a JSON number or as digit text ("1700000000123")."""
    if type(v) is int:
        return v
    if type(v) is str and v.isascii() and v.isdigit() and len(v) < 20:
        return int(v)
    raise MalformedFrame(f"{what} is not an integer: {str(v)[:40]!r}")


# What a venue module declares (see venues/binance.py for a complete one):
#
#   NAME, LIVE_WS_URL, LIVE_REST_URL
#   IDLE_TIMEOUT          s without any bytes before a link is declared dead (silent drop)
#   MAX_LIFETIME          s after which to reconnect on our terms (0: none)
#   LATENESS_US           how late a trade may arrive after its venue timestamp
#   SEQUENTIAL_IDS        trade ids +1 per trade per symbol: a jump is a gap
#   REPAIR_BY             "id" (history_by_id_request/parse_history, REPAIR_PAGE),
#                         "time" (history_by_time_request/parse_history_page), or None: the venue
#                         cannot give past trades back, so holes are recorded unrepairable
#   validate_options(options), instruments_request(), parse_instruments(body),
#   connect_url(base, venue_symbols, options), subscribe_messages(venue_symbols, options),
#   Parser(symbols_by_venue_symbol, options).parse(frame, recv_us) -> list[Event]  (one per link:
#       per-connection state such as channel ids lives in the parser),
#   retry_after(status, headers), to_venue_symbol(symbol), candles_request/parse_candles.
#   Links that need a session (KuCoin bullet token): session_request(options) -> HttpRequest,
#       parse_session(body) -> session (given to connect_url and keepalive), session_ttl(session,
#       options) -> s; the runtime fetches one per link and rotates make-before-break at 80 % of it.
#   Parser.ready (optional): False until the venue's greeting (KuCoin welcome); the runtime
#       subscribes only after it.
#   parse_history_page(body, symbol, recv_us, options, start_us, end_us)
#       -> (ticks, next_cursor | None, complete: bool)   complete=False: history ran out
