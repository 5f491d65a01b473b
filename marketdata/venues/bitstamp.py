"""Bitstamp WebSocket API v2: trades over `live_trades_{pair}` on wss://ws.bitstamp.net.

Facts this module encodes (shared/reference/venues-*.md §4):
- trade ids exceed 2^53: the JSON number `id` is not exact (a double), `id_str` is -- the trade id
  is `id_str`; prices and amounts likewise come from `price_str`/`amount_str`, time from
  `microtimestamp` (µs string); `type` 0 = taker buy, 1 = taker sell;
- ids are platform-wide, not consecutive per pair: loss cannot be seen in the ids, so what a
  connector can vouch for is the time it was subscribed (SEQUENTIAL_IDS False);
- client frames must stay under 512 bytes: one channel per subscribe frame, acked one by one
  (`bts:subscription_succeeded` echoes the channel, our request id);
- an unknown lowercase pair is ACKED and then silent: configured symbols are checked against
  `trading-pairs-info` at start (the runtime fails the start for an unlisted one);
- `bts:request_reconnect` (maintenance) gives a few seconds: answered make-before-break, a new
  link subscribed before the old one is closed, so nothing is missed (Reconnect(rotate=True));
- REST `transactions?time=minute|hour|day` gives only a window back from now, second timestamps
  and no paging: it cannot restore the µs tape of a hole, so holes are recorded unrepairable
  (REPAIR_BY None). Run `connections: 2` so one dropped link loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .base import (Ack, HttpRequest, Ignored, Instrument, MalformedFrame, Reconnect, UnknownSymbol,
                   Unrecognised, Venue, VenueError, VenueOptions, int_field, json_object, seconds_in,
                   trade_tick)

NAME = "bitstamp"

KEEPALIVE_INTERVAL = 15.0

_SIDES = ("buy", "sell")
# control events: heartbeat replies, unsubscription acks, the greeting
_CONTROL = ("bts:heartbeat", "bts:unsubscription_succeeded", "bts:connection_established")
_TRADES = "live_trades_"


@dataclass(frozen=True)
class Options(VenueOptions):
    heartbeat_interval: float = KEEPALIVE_INTERVAL   # s between our bts:heartbeat requests

    def check(self) -> None:
        seconds_in("heartbeat_interval", self.heartbeat_interval, 60)


class Bitstamp(Venue):
    """Bitstamp, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://ws.bitstamp.net"
    LIVE_REST_URL = "https://www.bitstamp.net"
    IDLE_TIMEOUT = 40.0          # our heartbeat every 15 s draws a reply; the server pings ~54 s
    MAX_LIFETIME = 0             # the 90-day age limit ends in a close we survive like any other
    REPAIR_BY = None             # no trade history: holes are recorded unrepairable
    Options = Options
    BACKFILL_BY = None
    NO_BACKFILL = "its REST returns only the last minute, hour or day of trades (transactions?time=)"


@Bitstamp.member
def to_venue_symbol(symbol: str) -> str:
    return symbol.replace("-", "").lower()


# --- instruments -------------------------------------------------------------------------------

@Bitstamp.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/api/v2/trading-pairs-info/")


@Bitstamp.member
def parse_instruments(body: Any) -> list[Instrument]:
    if not isinstance(body, list):
        raise MalformedFrame(f"bitstamp trading-pairs-info is not a list: {str(body)[:200]}")
    out = []
    for r in body:
        if r.get("trading") != "Enabled" or "/" not in r.get("name", ""):
            continue
        base, quote = r["name"].split("/", 1)
        out.append(Instrument(r["url_symbol"], f"{base}-{quote}", "TRADING"))
    return out


# --- websocket ---------------------------------------------------------------------------------

@Bitstamp.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + "/"


@Bitstamp.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[str, str]]:
    return [(_TRADES + s, orjson.dumps({"event": "bts:subscribe", "data": {"channel": _TRADES + s}}).decode())
            for s in venue_symbols]


@Bitstamp.member
def keepalive(options: Options, session: object = None) -> tuple[float, str]:
    return float(options.heartbeat_interval), '{"event":"bts:heartbeat"}'


@Bitstamp.member
class Parser:
    __slots__ = ("symbols",)

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        msg = json_object(frame)
        event = msg.get("event")
        if event == "trade":
            channel = msg.get("channel")
            if not isinstance(channel, str) or not channel.startswith(_TRADES):
                return [Unrecognised(f"channel {str(channel)[:40]}", "a data channel this parser does not read")]
            pair = channel[len(_TRADES):]
            sym = self.symbols.get(pair)
            if sym is None:
                return [UnknownSymbol(pair)]
            d = msg.get("data")
            try:
                tid = d.get("id_str")      # the number is only exact below 2^53
                if not tid:
                    tid = d["id"]
                    tid = str(tid if type(tid) is int else int_field(tid, "id"))
                t = d["microtimestamp"]    # µs as digit text: int() straight, int_field only for the other forms
                return [trade_tick(NAME, sym, int(t) if type(t) is str and len(t) < 20 and t.isdigit() and t.isascii()
                                   else int_field(t, "microtimestamp"), d["price_str"],
                                   d["amount_str"], _SIDES[d["type"]], tid, recv_us)]
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as ex:
                raise MalformedFrame(f"trade lacks or mistypes field {ex}") from None
        if event == "bts:subscription_succeeded":
            return [Ack(msg.get("channel"))]
        if event == "bts:request_reconnect":
            return [Reconnect("bts:request_reconnect", rotate=True)]
        if event == "bts:error":
            d = msg.get("data") if isinstance(msg.get("data"), dict) else {}
            return [VenueError(d.get("code"), str(d.get("message", "")), msg.get("channel"))]
        if event in _CONTROL:
            return [Ignored(event)]
        if isinstance(event, str):
            return [Unrecognised(f"event {event[:40]}", "an event this parser does not read")]
        raise MalformedFrame("frame has no event")


# --- candles (reconciliation) --------------------------------------------------------------------

@Bitstamp.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    return HttpRequest("GET", f"/api/v2/ohlc/{venue_symbol}/",
                       {"step": "60", "limit": "1000", "start": str(start_ms // 1000), "end": str(end_ms // 1000)})


@Bitstamp.member
def parse_candles(body: Any) -> list[dict]:
    try:
        rows = body["data"]["ohlc"]
    except (KeyError, TypeError):
        raise MalformedFrame(f"bitstamp ohlc lacks data.ohlc: {str(body)[:200]}") from None
    return sorted(({"minute_us": int(r["timestamp"]) * 1_000_000, "open": r["open"], "high": r["high"],
                    "low": r["low"], "close": r["close"], "volume": r["volume"], "trade_count": None}
                   for r in rows), key=lambda c: c["minute_us"])
