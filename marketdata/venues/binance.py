"""Binance spot: trades over `<sym>@trade` (default) or `<sym>@aggTrade`.

Facts this module encodes (see shared/reference/venues-*.md §1):
- one trade per frame; combined streams wrap it as {"stream": ..., "data": ...};
- `m` is "buyer is maker", so m=true means the taker SOLD;
- trade ids `t` are per symbol and +1 per trade, so a jump is a gap; aggTrade ids `a` are +1 per
  aggregate and cover trade ids f..l;
- the server pings every 20 s and drops a client that has not ponged within 60 s (the websockets
  library answers pings); the connection lives at most 24 h;
- REST `historicalTrades?fromId=` (<=1000) repairs by id; `aggTrades?fromId=` for aggTrade;
  to page by id from a time, `aggTrades?startTime=` gives the first trade id at it
  (first_id_request / first_id_at);
- REST weight: a budget per minute (exchangeInfo rateLimits), used weight in a response header,
  429/418 with Retry-After.
- Symbols: BTCUSDT on REST and in payloads, btcusdt in stream names; base/quote only from
  exchangeInfo, never by splitting the string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from ..tick import Tick
from .base import (Ack, HttpRequest, Instrument, MalformedFrame, Reconnect, UnknownSymbol, Unrecognised,
                   Venue, VenueError, VenueOptions, int_field, json_object, one_of, trade_tick)

from .retry_after import RetryAfter
NAME = "binance"

REPAIR_PAGE = 1000
MAX_STREAMS_PER_CONNECTION = 1024
TRADE_STREAMS = ("trade", "aggTrade")


@dataclass(frozen=True)
class Options(VenueOptions):
    trade_stream: str = "trade"     # "trade" (one frame per fill) or "aggTrade" (per taker order)

    def check(self) -> None:
        one_of("trade_stream", self.trade_stream, TRADE_STREAMS)


class Binance(Venue):
    """Binance spot, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://stream.binance.com:9443"
    LIVE_REST_URL = "https://api.binance.com"
    IDLE_TIMEOUT = 30.0         # s without any frame (trades or pings) before we call the link dead
    MAX_LIFETIME = 23.5 * 3600  # reconnect on our terms before the venue's 24 h cut
    SEQUENTIAL_IDS = True       # trade ids are +1 per trade: a jump is a gap
    REPAIR_BY = "id"
    BY_ID_TAKES_LIMIT = True
    REPAIR_PAGE = REPAIR_PAGE
    Options = Options
    BACKFILL_BY = "id"                 # aggTrades?startTime finds the first id; historicalTrades pages by id
    RETRY_AFTER = RetryAfter(statuses=(429, 418))   # 418: an IP ban for ignoring 429s, as long as Retry-After says


# --- instruments ---------------------------------------------------------------------------

@Binance.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/api/v3/exchangeInfo", weight=20)


@Binance.member
def parse_instruments(body: Any) -> list[Instrument]:
    out = []
    for s in body.get("symbols", []):
        out.append(Instrument(venue_symbol=s["symbol"], symbol=f"{s['baseAsset']}-{s['quoteAsset']}",
                              status=s.get("status", "")))
    return [i for i in out if i.status == "TRADING"]


# --- websocket -----------------------------------------------------------------------------

def stream_names(venue_symbols: Iterable[str], options: Options) -> list[str]:
    kind = options.trade_stream
    return [f"{vs.lower()}@{kind}" for vs in venue_symbols]


@Binance.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    # Combined endpoint, subscribed by message after connect (so the ack confirms each stream).
    return base.rstrip("/") + "/stream"


@Binance.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[int, str]]:
    """SUBSCRIBE in bulk: the venue allows 5 inbound messages/s, so one message per 200 streams."""
    names = stream_names(venue_symbols, options)
    out = []
    for i in range(0, len(names), 200):
        rid = first_id + len(out)
        out.append((rid, orjson.dumps({"method": "SUBSCRIBE", "params": names[i:i + 200], "id": rid}).decode()))
    return out


@Binance.member
def keepalive(options: Options, session: object = None) -> tuple[float, str] | None:
    """Binance keeps the link alive with WebSocket ping frames, answered by the library."""
    return None


@Binance.member
class Parser:
    """Frame -> events for one connection. `symbols` maps venue symbol (BTCUSDT) to canonical."""

    __slots__ = ("symbols", "exchange", "agg")

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols
        self.exchange = NAME
        self.agg = options.trade_stream == "aggTrade"

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        msg = json_object(frame)
        data = msg.get("data", msg) if "stream" in msg else msg
        if not isinstance(data, dict):
            raise MalformedFrame("data is not a JSON object")
        e = data.get("e")
        try:
            if e == "trade":
                vs = data["s"]
                sym = self.symbols.get(vs)
                if sym is None:
                    return [UnknownSymbol(str(vs))]
                ts, m, t = data["T"], data["m"], data["t"]
                if type(ts) is int and type(m) is bool and type(t) is int:     # as Binance sends them
                    return [trade_tick(NAME, sym, ts * 1000, data["p"], data["q"], "sell" if m else "buy",
                                       str(t), recv_us)]
                return [trade_tick(NAME, sym, int_field(ts, "T") * 1000, data["p"], data["q"],
                                   _taker(m), str(int_field(t, "t")), recv_us)]
            if e == "aggTrade":
                vs = data["s"]
                sym = self.symbols.get(vs)
                if sym is None:
                    return [UnknownSymbol(str(vs))]
                first, last = int_field(data["f"], "f"), int_field(data["l"], "l")
                return [trade_tick(NAME, sym, int_field(data["T"], "T") * 1000, data["p"], data["q"],
                                   _taker(data["m"]), str(int_field(data["a"], "a")), recv_us,
                                   last - first + 1)]
        except (KeyError, TypeError) as ex:
            raise MalformedFrame(f"{e} frame lacks or mistypes field {ex}") from None
        if e == "serverShutdown":
            return [Reconnect("serverShutdown")]
        if "result" in msg and "id" in msg:
            return [Ack(msg["id"])]
        if "code" in msg and "msg" in msg:
            return [VenueError(msg["code"], str(msg["msg"]), msg.get("id"))]
        if e is None:
            raise MalformedFrame("frame has no event type")
        return [Unrecognised(str(e)[:60], "an event type this parser does not read")]


def _taker(buyer_is_maker: Any) -> str:
    """`m` is "buyer is maker": true means the taker sold."""
    if type(buyer_is_maker) is not bool:
        raise MalformedFrame(f"m is not true/false: {str(buyer_is_maker)[:20]!r}")
    return "sell" if buyer_is_maker else "buy"


# --- REST repair ---------------------------------------------------------------------------

@Binance.member
def history_by_id_request(venue_symbol: str, from_id: int, options: Options,
                          limit: int = REPAIR_PAGE) -> HttpRequest:
    """Trades (or aggTrades, with trade_stream aggTrade) with id >= from_id, ascending, <= limit."""
    limit = max(1, min(int(limit), REPAIR_PAGE))
    if options.trade_stream == "aggTrade":
        return HttpRequest("GET", "/api/v3/aggTrades",
                           {"symbol": venue_symbol, "fromId": from_id, "limit": limit}, weight=4)
    return HttpRequest("GET", "/api/v3/historicalTrades",
                       {"symbol": venue_symbol, "fromId": from_id, "limit": limit}, weight=25)


@Binance.member
def first_id_request(venue_symbol: str, start_us: int, options: Options) -> HttpRequest:
    """The first aggregate trade at or after start_us (aggTrades?startTime, the oldest first): its
    `f` (first trade id) or `a` (aggTrade id) is where paging by id starts (``first_id_at``)."""
    start_ms = -(-start_us // 1000)          # ceil: no trade before start_us
    return HttpRequest("GET", "/api/v3/aggTrades",
                       {"symbol": venue_symbol, "startTime": start_ms, "limit": 1}, weight=4)


@Binance.member
def first_id_at(body: Any, options: Options) -> int | None:
    """Id to page from (history_by_id_request) for a first_id_request answer; None when
    no trade happened at or after the requested time yet."""
    if not isinstance(body, list):
        raise MalformedFrame(f"aggTrades response is not a list: {str(body)[:200]}")
    if not body:
        return None
    return int(body[0]["a"] if options.trade_stream == "aggTrade" else body[0]["f"])


@Binance.member
def server_time_request() -> HttpRequest:
    return HttpRequest("GET", "/api/v3/time", weight=1)


@Binance.member
def parse_server_time(body: Any) -> int:
    """The venue clock in µs: a tape is complete up to it (less LATENESS_US)."""
    return int(body["serverTime"]) * 1000


@Binance.member
def rest_weight_limit(exchange_info: Any) -> int | None:
    """REQUEST_WEIGHT per minute from exchangeInfo.rateLimits (6000 today; read it, don't assume)."""
    for r in exchange_info.get("rateLimits", []) if isinstance(exchange_info, dict) else []:
        if r.get("rateLimitType") == "REQUEST_WEIGHT" and r.get("interval") == "MINUTE":
            return int(r["limit"]) // max(1, int(r.get("intervalNum", 1)))
    return None


@Binance.member
def used_weight(headers: Any) -> int | None:
    """Weight used in the venue's current minute, as its response header reports it."""
    v = headers.get("x-mbx-used-weight-1m") or headers.get("X-MBX-USED-WEIGHT-1M")
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


@Binance.member
def parse_history(body: Any, symbol: str, recv_us: int, options: Options) -> list[Tick]:
    """REST trades (ascending by id) as ticks with source 'rest'."""
    if not isinstance(body, list):
        raise MalformedFrame(f"history response is not a list: {str(body)[:200]}")
    out = []
    if options.trade_stream == "aggTrade":
        for r in body:
            out.append(Tick.trade(NAME, symbol, r["T"] * 1000, r["p"], r["q"], "sell" if r["m"] else "buy",
                                  str(r["a"]), recv_us, "rest", trade_count=r["l"] - r["f"] + 1))
    else:
        for r in body:
            out.append(Tick.trade(NAME, symbol, r["time"] * 1000, r["price"], r["qty"],
                                  "sell" if r["isBuyerMaker"] else "buy", str(r["id"]), recv_us, "rest"))
    return out


# --- candles (reconciliation) ----------------------------------------------------------------

@Binance.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    return HttpRequest("GET", "/api/v3/klines", {"symbol": venue_symbol, "interval": "1m",
                                                 "startTime": start_ms, "endTime": end_ms, "limit": 1000}, weight=2)


@Binance.member
def parse_candles(body: Any) -> list[dict]:
    return [{"minute_us": r[0] * 1000, "open": r[1], "high": r[2], "low": r[3], "close": r[4],
             "volume": r[5], "trade_count": int(r[8])} for r in body]


@Binance.member
def to_venue_symbol(symbol: str) -> str:
    """Canonical -> venue spelling (BTC-USDT -> BTCUSDT). Safe in this direction; the reverse
    needs exchangeInfo."""
    return symbol.replace("-", "")
