"""What a venue module declares, and the parsed-frame vocabulary the ingest runtime understands.

A venue module is protocol knowledge only. It turns raw frames into these events and builds
the requests the runtime sends; the runtime (``marketdata.ingest``) owns sockets, timers,
sequence state and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    first. They overlap what we have: trades older than the symbol's tape are not news and are
    dropped; the rest go through as ticks (known ids are de-duplicated there)."""
    symbol: str            # canonical
    ticks: list


@dataclass(slots=True)
class Pause:
    """The venue stops this link's data for a while without closing it (Bitfinex maintenance):
    what the link would carry is a gap from now until it is replaced; it is not reconnected."""
    reason: str


@dataclass(slots=True)
class Ignored:
    """A well-formed frame that carries nothing for us (heartbeats, info)."""
    kind: str = ""


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


Event = Tick | Ack | VenueError | UnknownSymbol | Reconnect | LastTradeId | Replay | Pause | Ignored


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
