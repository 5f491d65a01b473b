"""Coinbase Exchange public ws-feed: trades over the `matches` channel, gap evidence from `heartbeat`.

Facts this module encodes (shared/reference/venues-*.md §5):
- subscribe within 5 s of connecting or the venue disconnects: the subscribe goes out with the
  connection, nothing (no REST call, no waiting for a welcome) sits between them;
- one ack, `{"type":"subscriptions"}`, listing every channel and product the link now has; errors
  are `{"type":"error","message","reason"}`; unknown `type`s are to be ignored;
- `side` on `match`/`last_match` and on REST trades is the MAKER's side: the taker side is the
  opposite (`sell` = the maker sold = the taker bought);
- `trade_id` is an int, +1 per trade per product: a jump is a gap (`sequence` is shared with every
  order event and jumps, so it says nothing about trades);
- the first message after subscribing is `last_match`, the latest trade: on a reconnect it is
  either one we have (a duplicate, dropped by id) or the head of the tape, which closes the span
  we were away;
- `heartbeat` (1/s per product) carries the venue's `last_trade_id`: if it is beyond the last id
  we saw, trades were missed even though none follow (a quiet market) -> `LastTradeId`;
- REST `/products/{id}/trades` pages by trade id: `after=X` returns the page of ids below X,
  newest first, <= 1000 rows, so ids lo..lo+999 are `after=lo+1000`; without `after` it is the
  latest 1000 (where a search for the id at a time starts: ids rise with time); `/time` is the
  venue clock (`iso`, ms);
- `time` is RFC 3339 with µs and `Z`; product ids are already BASE-QUOTE;
- candles `[time, low, high, open, close, volume]` as JSON numbers, newest first, <= 300 per
  request, no trade count.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from ..tick import Tick
from .base import (Ack, HttpRequest, Ignored, Instrument, LastTradeId, MalformedFrame, UnknownSymbol,
                   Unrecognised, Venue, VenueError, int_field, json_object, trade_tick)

NAME = "coinbase"

REPAIR_PAGE = 1000
SUBSCRIBE_ID = "subscribe"   # the venue's ack has no request id: one subscribe, one ack

_TAKER = {"sell": "buy", "buy": "sell"}


class Coinbase(Venue):
    """Coinbase Exchange, the venue contract filled in (venues/base.py says what each member is); no options."""

    NAME = NAME
    LIVE_WS_URL = "wss://ws-feed.exchange.coinbase.com"
    LIVE_REST_URL = "https://api.exchange.coinbase.com"
    IDLE_TIMEOUT = 5.0           # heartbeats arrive every second per product: 5 s of nothing is a dead link
    SEQUENTIAL_IDS = True
    REPAIR_BY = "id"
    REPAIR_PAGE = REPAIR_PAGE
    CANDLES_HAVE_TRADE_COUNT = False
    # trades?after= pages by id only: the id at a time is searched for from the latest trades
    # (head_request; rest/pager.py search_first_id), then pages walk ids forward
    BACKFILL_BY = "id"


@Coinbase.member
def to_venue_symbol(symbol: str) -> str:
    return symbol


_last_head = ["", 0]     # consecutive trades share their second: parse it once


def parse_time_us(text: str) -> int:
    """RFC 3339 (`2014-11-07T08:19:27.028459Z`) -> µs; exact, without float rounding."""
    if type(text) is not str or not text.endswith("Z"):
        raise ValueError(f"time {str(text)[:40]!r} is not RFC 3339 UTC")
    head, _, frac = text[:-1].partition(".")
    if frac and not (frac.isascii() and frac.isdigit()):
        raise ValueError(f"time {text[:40]!r} has a bad fraction")
    if head != _last_head[0]:
        dt = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
        _last_head[0], _last_head[1] = head, int(dt.timestamp()) * 1_000_000
    return _last_head[1] + (int((frac + "000000")[:6]) if frac else 0)


# --- instruments -------------------------------------------------------------------------------

@Coinbase.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/products")


@Coinbase.member
def parse_instruments(body: Any) -> list[Instrument]:
    if not isinstance(body, list):
        raise MalformedFrame(f"coinbase /products answer is not a list: {str(body)[:200]}")
    return [Instrument(r["id"], f"{r['base_currency']}-{r['quote_currency']}", r.get("status", "online"))
            for r in body if r.get("status") == "online" and not r.get("trading_disabled")]


# --- websocket ---------------------------------------------------------------------------------

@Coinbase.member
def connect_url(base: str, venue_symbols: list[str], options: dict, session: object = None) -> str:
    return base.rstrip("/") + "/"


@Coinbase.member
def subscribe_messages(venue_symbols: list[str], options: dict, first_id: int = 1) -> list[tuple[str, str]]:
    return [(SUBSCRIBE_ID, orjson.dumps({"type": "subscribe", "product_ids": venue_symbols,
                                         "channels": ["matches", "heartbeat"]}).decode())]


@Coinbase.member
def keepalive(options: dict, session: object = None) -> None:
    """The heartbeat channel keeps bytes flowing; the library's ping frames do the rest."""
    return None


@Coinbase.member
class Parser:
    __slots__ = ("symbols",)

    def __init__(self, symbols: dict[str, str], options: dict):
        self.symbols = symbols

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        msg = json_object(frame)
        typ = msg.get("type")
        try:
            if typ == "match" or typ == "last_match":
                pid = msg["product_id"]
                sym = self.symbols.get(pid)
                if sym is None:
                    return [UnknownSymbol(str(pid))]
                tid = msg["trade_id"]      # a JSON number: str() straight, int_field only for the other forms
                return [trade_tick(NAME, sym, parse_time_us(msg["time"]), msg["price"], msg["size"],
                                   _TAKER[msg["side"]], str(tid if type(tid) is int else int_field(tid, "trade_id")),
                                   recv_us)]
            if typ == "heartbeat":
                pid = msg["product_id"]
                sym = self.symbols.get(pid)
                if sym is None:
                    return [Ignored("heartbeat")]
                return [LastTradeId(sym, int_field(msg["last_trade_id"], "last_trade_id"), parse_time_us(msg["time"]))]
        except (KeyError, TypeError, ValueError) as ex:
            raise MalformedFrame(f"{typ} frame lacks or mistypes field {ex}") from None
        if typ == "subscriptions":
            try:
                subscribed = {c.get("name"): set(c.get("product_ids") or ()) for c in msg.get("channels") or ()
                              if isinstance(c, dict)}
            except TypeError as ex:
                raise MalformedFrame(f"subscriptions frame mistypes its channels: {ex}") from None
            if set(self.symbols) <= subscribed.get("matches", set()):
                return [Ack(SUBSCRIBE_ID)]
            return [Ignored("subscriptions")]
        if typ == "error":
            return [VenueError(msg.get("message"), str(msg.get("reason", "")), None)]
        if typ is None:
            raise MalformedFrame("frame has no type")
        return [Unrecognised(f"type {str(typ)[:40]}", "a message type this parser does not read")]


# --- REST repair ---------------------------------------------------------------------------------

@Coinbase.member
def history_by_id_request(venue_symbol: str, from_id: int, options: dict) -> HttpRequest:
    # `after` returns the ids below it, newest first: after=lo+1000 gives lo .. lo+999.
    return HttpRequest("GET", f"/products/{venue_symbol}/trades",
                       {"after": str(from_id + REPAIR_PAGE), "limit": str(REPAIR_PAGE)})


@Coinbase.member
def head_request(venue_symbol: str, options: dict) -> HttpRequest:
    return HttpRequest("GET", f"/products/{venue_symbol}/trades", {"limit": str(REPAIR_PAGE)})


@Coinbase.member
def server_time_request() -> HttpRequest:
    return HttpRequest("GET", "/time")


@Coinbase.member
def parse_server_time(body: Any) -> int:
    if not isinstance(body, dict) or "iso" not in body:
        raise MalformedFrame(f"coinbase /time answer lacks iso: {str(body)[:200]}")
    return parse_time_us(body["iso"])


@Coinbase.member
def parse_history(body: Any, symbol: str, recv_us: int, options: dict) -> list[Tick]:
    if not isinstance(body, list):
        raise MalformedFrame(f"coinbase trades answer is not a list: {str(body)[:200]}")
    try:
        out = [Tick.trade(NAME, symbol, parse_time_us(r["time"]), r["price"], r["size"], _TAKER[r["side"]],
                          str(int(r["trade_id"])), recv_us, "rest") for r in body]
    except (KeyError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"coinbase trade row lacks or mistypes field {ex}") from None
    out.sort(key=lambda t: int(t.trade_id))
    return out


# --- candles (reconciliation) --------------------------------------------------------------------

def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@Coinbase.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    # At most 300 buckets per request; a wider range is rejected, so ask for 300 and page on.
    end_ms = min(end_ms, start_ms + 299 * 60_000)
    return HttpRequest("GET", f"/products/{venue_symbol}/candles",
                       {"granularity": "60", "start": _iso(start_ms), "end": _iso(end_ms)})


@Coinbase.member
def parse_candles(body: Any) -> list[dict]:
    if not isinstance(body, list):
        raise MalformedFrame(f"coinbase candles answer is not a list: {str(body)[:200]}")
    return sorted(({"minute_us": int(r[0]) * 1_000_000, "low": str(r[1]), "high": str(r[2]), "open": str(r[3]),
                    "close": str(r[4]), "volume": str(r[5]), "trade_count": None} for r in body),
                  key=lambda c: c["minute_us"])
