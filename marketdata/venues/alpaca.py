"""Alpaca Market Data v2, US stocks on the IEX feed: trades, corrections and cancels over
`/v2/iex`, with key authentication.

Facts this module encodes (shared/reference/venues-bybit-bitfinex-gateio-bitstamp-alpaca.md §5):
- credentials come from the environment, APCA_API_KEY_ID and APCA_API_SECRET_KEY (the names
  Alpaca's own tools use); they go in the first message after `connected` and in REST headers,
  and are never logged;
- every server frame is a JSON array of messages of mixed types; control messages are arrays
  of one: `success` (connected / authenticated), `subscription` (the whole set), `error` with a
  code (402 auth failed, 405 symbol limit, 406 connection limit...);
- trades `T:"t"`: id `i` (not consecutive: holes cannot be seen by id, only by time), exchange
  `x`, price `p` (JSON number), size `s` (integer shares), conditions `c`, time `t` RFC 3339 with
  up to nanoseconds; no aggressor side, so side is "unknown";
- corrections `T:"c"` replace trade `oi` by `ci` with `cp`/`cs`; cancels `T:"x"` retract trade
  `i`. They become ticks with event "correct" / "cancel" carrying the trade's id and time, so
  the store supersedes or deletes the trade (when `ci != oi`, a cancel of `oi` plus the new
  trade as a correction);
- REST trades by time (`start`/`end`, `page_token` until `next_page_token` is null) repair
  holes; minute bars carry the trade count `n` for reconciliation;
- symbols: AAPL <-> canonical AAPL-USD.

Prices arrive as JSON numbers; orjson reads them as floats and `repr` gives back the shortest text
that round-trips, which is the text Alpaca sent for prices of up to 15 significant digits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from ..errors import ConfigError
from ..tick import Tick
from .base import (Ack, HttpRequest, Ignored, Instrument, MalformedFrame, UnknownSymbol, Unrecognised, Venue,
                   VenueError, VenueOptions, one_of, trade_tick)

from .retry_after import RetryAfter
NAME = "alpaca"
KEY_ENV = "APCA_API_KEY_ID"
SECRET_ENV = "APCA_API_SECRET_KEY"

REPAIR_PAGE = 10000

FEEDS = ("iex", "sip", "delayed_sip", "test")

# What each stream error means for whoever runs the connector.
_FIXES = {
    401: "not authenticated: the connector sent a request before authenticating (a bug; report it)",
    402: f"auth failed: Alpaca rejected the key in {KEY_ENV} / {SECRET_ENV}; set valid keys and restart",
    403: "already authenticated (harmless)",
    404: "auth timeout: no auth within the venue's limit; check the network latency to Alpaca",
    405: "symbol limit exceeded: the plan allows fewer symbols (IEX/Basic: 30 for trades+quotes); "
         "configure fewer alpaca symbols. Earlier subscriptions are kept",
    406: "connection limit exceeded: another connection with this key is open (one per endpoint on most "
         "plans); stop the other client. Backing off before retrying",
    407: "slow client: the venue is dropping us for reading too slowly",
    409: "insufficient subscription: the plan does not include this feed; set options.feed to iex",
}


@dataclass(frozen=True)
class Options(VenueOptions):
    feed: str = "iex"               # stream/REST feed, one of FEEDS

    def check(self) -> None:
        one_of("feed", self.feed, FEEDS)


class Alpaca(Venue):
    """Alpaca stocks, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://stream.data.alpaca.markets"
    LIVE_REST_URL = "https://data.alpaca.markets"
    # Outside the session the feed can be silent for hours; the protocol pings (ours every 20 s,
    # answered) are what keeps a live link from looking dead.
    IDLE_TIMEOUT = 60.0
    SEQUENTIAL_IDS = False      # ids are the reporting venue's, not +1 per trade
    REPAIR_BY = "time"
    REPAIR_PAGE = REPAIR_PAGE
    Options = Options
    BACKFILL_BY = "time"               # stocks/{sym}/trades?start&end&page_token
    RETRY_AFTER = RetryAfter(default_s=3.0)


def credentials() -> tuple[str, str]:
    """(key id, secret) from the environment; missing ones fail the start naming the variables."""
    key, secret = os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, "")
    missing = [n for n, v in ((KEY_ENV, key), (SECRET_ENV, secret)) if not v.strip()]
    if missing:
        raise ConfigError(f"alpaca needs API keys in the environment: set {' and '.join(missing)} "
                          "(Alpaca dashboard -> API keys)")
    return key.strip(), secret.strip()


def _headers() -> dict[str, str]:
    key, secret = credentials()
    return {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}


@Alpaca.member
def to_venue_symbol(symbol: str) -> str:
    return symbol.rsplit("-", 1)[0]


# --- time -------------------------------------------------------------------------------------

# Whole seconds of each `YYYY-MM-DDTHH:MM:SS` prefix already seen, in µs: a trade's time differs
# from the last one's mostly in the fraction, and strptime cost 10 µs a call (of ~15 µs a trade).
_SECONDS_US: dict[str, int] = {}
_SECONDS_KEEP = 4096


def parse_time_us(value: str) -> int:
    """RFC 3339 with 0..9 fractional digits and `Z` -> µs UTC (fromisoformat cannot take ns)."""
    # Fast path: the fixed layout `<19-char prefix seen before>.<digits>Z` (or `...Z`), the form
    # Alpaca sends; anything else, and the first time of each second, take the full parse below,
    # which decides what is accepted.
    if type(value) is str:
        sec = _SECONDS_US.get(value[:19])
        if sec is not None:
            tail = value[19:]
            if tail == "Z":
                return sec
            frac = tail[1:-1]
            if tail[:1] == "." and tail[-1:] == "Z" and frac.isdigit() and frac.isascii():
                return sec + int((frac + "000000")[:6])
    return _parse_time_us(value)


def _parse_time_us(value: str) -> int:
    try:
        head, _, frac = value.rstrip("Z").partition(".")
        if frac and not (frac.isascii() and frac.isdigit()):
            raise ValueError(frac)
        dt = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
        us = int((frac + "000000")[:6]) if frac else 0
    except (ValueError, AttributeError, TypeError):
        raise MalformedFrame(f"bad time {value!r}") from None
    sec = int(dt.timestamp()) * 1_000_000
    if len(head) == 19 and value[:19] == head:      # cache only the exact fixed-layout prefix
        if len(_SECONDS_US) >= _SECONDS_KEEP:
            _SECONDS_US.clear()
        _SECONDS_US[head] = sec
    return sec + us


def _rfc3339(us: int) -> str:
    s, rest = divmod(us, 1_000_000)
    return datetime.fromtimestamp(s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:06d}Z"


def _id(v: Any) -> str:
    """Trade ids are integers on the wire."""
    if type(v) is not int:
        raise MalformedFrame(f"trade id {str(v)[:40]!r} is not an integer")
    return str(v)


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MalformedFrame(f"not a number: {v!r}")
    return repr(v) if isinstance(v, float) else str(v)


# --- instruments --------------------------------------------------------------------------------

@Alpaca.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/v2/assets", {"status": "active", "asset_class": "us_equity"}, headers=_headers())


@Alpaca.member
def parse_instruments(body: Any) -> list[Instrument]:
    if not isinstance(body, list):
        raise MalformedFrame(f"alpaca assets answer is not a list: {str(body)[:200]}")
    return [Instrument(a["symbol"], f"{a['symbol']}-USD", "TRADING", {"asset_class": "equity"})
            for a in body if a.get("status") == "active" and a.get("tradable", True)]


# --- websocket --------------------------------------------------------------------------------

@Alpaca.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return f"{base.rstrip('/')}/v2/{options.feed}"


@Alpaca.member
def auth_messages(options: Options) -> list[str]:
    """Sent right after `connected`; the runtime waits for Ack("auth") before subscribing."""
    key, secret = credentials()
    return [orjson.dumps({"action": "auth", "key": key, "secret": secret}).decode()]


@Alpaca.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[str, str]]:
    # corrections and cancelErrors come implicitly with trades
    return [("subscription", orjson.dumps({"action": "subscribe", "trades": venue_symbols}).decode())]


@Alpaca.member
class Parser:
    __slots__ = ("symbols",)

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        try:
            msgs = orjson.loads(frame)
        except orjson.JSONDecodeError as e:
            raise MalformedFrame(f"invalid JSON: {e}") from None
        if not isinstance(msgs, list):
            raise MalformedFrame("frame is not a JSON array")
        out: list = []
        symbols = self.symbols
        append = out.append
        for m in msgs:
            if type(m) is not dict:
                if not isinstance(m, dict):
                    raise MalformedFrame("message is not a JSON object")
            try:
                # A trade, the common case, inline: the same checks as _one's, without the call.
                if m.get("T") == "t":
                    sym = symbols.get(m["S"])
                    if sym is not None:
                        p, q, i = m["p"], m["s"], m["i"]
                        append(trade_tick(NAME, sym, parse_time_us(m["t"]),
                                          repr(p) if type(p) is float else _num(p),
                                          str(q) if type(q) is int else _num(q), "unknown",
                                          str(i) if type(i) is int else _id(i), recv_us))
                        continue
                self._one(m, recv_us, out)
            except (KeyError, TypeError, ValueError) as ex:
                raise MalformedFrame(f"{m.get('T')!r} message lacks or mistypes field {ex}") from None
        return out

    def _one(self, m: dict, recv_us: int, out: list) -> None:
        t = m.get("T")
        if t == "t":
            sym = self.symbols.get(m["S"])
            if sym is None:
                out.append(UnknownSymbol(m["S"]))
                return
            out.append(trade_tick(NAME, sym, parse_time_us(m["t"]), _num(m["p"]), _num(m["s"]), "unknown",
                                  _id(m["i"]), recv_us))
        elif t == "c":
            sym = self.symbols.get(m["S"])
            if sym is None:
                out.append(UnknownSymbol(m["S"]))
                return
            ts = parse_time_us(m["t"])
            if m["ci"] != m["oi"]:
                out.append(trade_tick(NAME, sym, ts, _num(m["op"]), _num(m["os"]), "unknown", _id(m["oi"]),
                                      recv_us, event="cancel"))
            out.append(trade_tick(NAME, sym, ts, _num(m["cp"]), _num(m["cs"]), "unknown", _id(m["ci"]),
                                  recv_us, event="correct"))
        elif t == "x":
            sym = self.symbols.get(m["S"])
            if sym is None:
                out.append(UnknownSymbol(m["S"]))
                return
            out.append(trade_tick(NAME, sym, parse_time_us(m["t"]), _num(m["p"]), _num(m["s"]), "unknown",
                                  _id(m["i"]), recv_us, event="cancel"))
        elif t == "success":
            msg = m.get("msg")
            out.append(Ack("auth") if msg == "authenticated" else Ignored(str(msg)))
        elif t == "subscription":
            out.append(Ack("subscription"))
        elif t == "error":
            code = m.get("code")
            fix = _FIXES.get(code, "")
            out.append(VenueError(code, f"{m.get('msg', '')}" + (f" -- {fix}" if fix else "")))
        else:      # quotes, bars, statuses (not subscribed), and types Alpaca adds later
            out.append(Unrecognised(f"T {str(t)[:40]}", "a message type this parser does not read"))


# --- REST repair ----------------------------------------------------------------------------------

@Alpaca.member
def history_by_time_request(venue_symbol: str, start_us: int, end_us: int | None, options: Options,
                            cursor: str | None = None) -> HttpRequest:
    params = {"start": _rfc3339(start_us), "limit": str(REPAIR_PAGE), "feed": options.feed,
              "sort": "asc"}
    if end_us is not None:
        params["end"] = _rfc3339(end_us)
    if cursor:
        params["page_token"] = cursor
    return HttpRequest("GET", f"/v2/stocks/{venue_symbol}/trades", params, headers=_headers())


@Alpaca.member
def parse_history_page(body: Any, symbol: str, recv_us: int, options: Options, start_us: int,
                       end_us: int | None) -> tuple[list[Tick], str | None, bool]:
    if not isinstance(body, dict) or not isinstance(body.get("trades"), (list, type(None))):
        raise MalformedFrame(f"alpaca trades answer lacks trades: {str(body)[:200]}")
    try:
        ticks = [Tick.trade(NAME, symbol, parse_time_us(r["t"]), _num(r["p"]), _num(r["s"]), "unknown",
                            str(r["i"]), recv_us, "rest") for r in body["trades"] or []]
    except (KeyError, TypeError) as ex:
        raise MalformedFrame(f"alpaca trade row lacks {ex}") from None
    return ticks, body.get("next_page_token") or None, True


# --- candles (reconciliation) --------------------------------------------------------------------

@Alpaca.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    return HttpRequest("GET", f"/v2/stocks/{venue_symbol}/bars",
                       {"timeframe": "1Min", "start": _rfc3339(start_ms * 1000), "end": _rfc3339(end_ms * 1000),
                        "limit": "10000", "adjustment": "raw", "feed": "iex"}, headers=_headers())


@Alpaca.member
def parse_candles(body: Any) -> list[dict]:
    if not isinstance(body, dict):
        raise MalformedFrame(f"alpaca bars answer is not an object: {str(body)[:200]}")
    return [{"minute_us": parse_time_us(b["t"]), "open": _num(b["o"]), "high": _num(b["h"]), "low": _num(b["l"]),
             "close": _num(b["c"]), "volume": _num(b["v"]), "trade_count": int(b["n"])}
            for b in body.get("bars") or []]
