"""OKX v5 public: trades over the `trades` channel on /ws/v5/public (default) or `trades-all` on
/ws/v5/business (option `channel: trades-all`).

Facts this module encodes (shared/reference/venues-*.md §2):
- keepalive is the literal text `ping` (not a WebSocket ping frame), answered by the text `pong`,
  which is not JSON; the server drops a connection it has heard nothing from for 30 s, without a
  close frame, also in quiet markets;
- a `trades` message aggregates the fills of one taker order at one price: `tradeId` is the LAST id
  and `count` fills are covered (ids tradeId-count+1 .. tradeId, consecutive per instrument), so
  continuity is `tradeId - count == last`; every number, `ts` and `count` included, is a string;
- `trades-all` (business endpoint) pushes exactly one fill per message, every trade id, without
  `count`; its ticks cover one id each. The parser reads both channels' frames whichever the
  link subscribed; any other data channel is counted as unrecognised, never passed over;
- one subscribe ack per arg; errors as {"event":"error","code":"600xx"}; notice 64008 announces a
  disconnect for maintenance;
- REST answers {"code":"0","data":[...]}; history-trades pages by tradeId with `after` (records
  OLDER than the id, newest first, <= 100), so ids lo..lo+99 are `after=lo+100`; with `type=2`,
  `after` is a ms timestamp (records older than it), over the last 3 months;
- instId is already BASE-QUOTE; base/quote come from the instruments list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..tick import Tick
from .base import (Ack, HttpRequest, Ignored, Instrument, MalformedFrame, Reconnect, UnknownSymbol,
                   Unrecognised, Venue, VenueError, VenueOptions, int_field, json_object, one_of, seconds_in,
                   trade_tick)

NAME = "okx"

KEEPALIVE_INTERVAL = 15.0    # < the venue's 30 s idle cut
REPAIR_PAGE = 100

CHANNELS = {"trades": "/ws/v5/public", "trades-all": "/ws/v5/business"}
_EVENTS = ("unsubscribe", "login", "channel-conn-count", "channel-conn-count-error")


@dataclass(frozen=True)
class Options(VenueOptions):
    ping_interval: float = KEEPALIVE_INTERVAL   # s between our text pings (under the venue's 30 s)
    # trades: one message per taker order, on /ws/v5/public; trades-all: one per fill, on /ws/v5/business
    channel: str = "trades"

    def check(self) -> None:
        one_of("channel", self.channel, sorted(CHANNELS))
        seconds_in("ping_interval", self.ping_interval, 30, upper_open=True)


class Okx(Venue):
    """OKX spot, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://ws.okx.com:8443"
    LIVE_REST_URL = "https://www.okx.com"
    IDLE_TIMEOUT = 25.0          # our text pings every 15 s draw a pong: 25 s of nothing is a dead link
    SEQUENTIAL_IDS = True
    ID_SPAN_IS_COUNT = True      # a tick covers `count` consecutive ids ending at tradeId
    REPAIR_BY = "id"
    REPAIR_PAGE = REPAIR_PAGE
    Options = Options
    # history-trades?type=2&after=<ms> walks back by timestamp (history_by_time_request)
    BACKFILL_BY = "time"


@Okx.member
def to_venue_symbol(symbol: str) -> str:
    return symbol


# --- instruments -------------------------------------------------------------------------------

def _data(body: Any) -> list:
    if not isinstance(body, dict) or "data" not in body:
        raise MalformedFrame(f"okx REST answer lacks data: {str(body)[:200]}")
    if str(body.get("code", "0")) != "0":
        raise MalformedFrame(f"okx REST error {body.get('code')}: {body.get('msg')}")
    return body["data"]


@Okx.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/api/v5/public/instruments", {"instType": "SPOT"})


@Okx.member
def parse_instruments(body: Any) -> list[Instrument]:
    return [Instrument(r["instId"], f"{r['baseCcy']}-{r['quoteCcy']}", r.get("state", "live"))
            for r in _data(body) if r.get("state", "live") == "live"]


# --- websocket ---------------------------------------------------------------------------------

@Okx.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + CHANNELS[options.channel]


@Okx.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[str, str]]:
    rid = str(first_id)
    channel = options.channel
    args = [{"channel": channel, "instId": s} for s in venue_symbols]
    return [(rid, orjson.dumps({"id": rid, "op": "subscribe", "args": args}).decode())]


@Okx.member
def keepalive(options: Options, session: object = None) -> tuple[float, str]:
    return float(options.ping_interval), "ping"


@Okx.member
class Parser:
    __slots__ = ("symbols",)

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        if frame == "pong" or frame == b"pong":
            return [Ignored("pong")]
        msg = json_object(frame)
        event = msg.get("event")
        if event is not None:
            if event == "subscribe":
                return [Ack(msg.get("id"))]
            if event == "error":
                return [VenueError(msg.get("code"), str(msg.get("msg", "")), msg.get("id"))]
            if event == "notice":
                return [Reconnect(f"notice {msg.get('code')}: {msg.get('msg', '')}")]
            if event in _EVENTS:
                return [Ignored(str(event))]
            return [Unrecognised(f"event {str(event)[:40]}")]
        arg, data = msg.get("arg"), msg.get("data")
        if not isinstance(arg, dict) or not isinstance(data, list):
            raise MalformedFrame("frame has neither event nor arg+data")
        channel = arg.get("channel")
        if type(channel) is not str or channel not in CHANNELS:
            return [Unrecognised(f"channel {str(channel)[:40]}", "a data channel this parser does not read")]
        out = []
        symbols = self.symbols
        try:
            for d in data:
                vs = d["instId"]
                sym = symbols.get(vs)
                if sym is None:
                    out.append(UnknownSymbol(str(vs)))
                    continue
                count = d.get("count")          # trades only; trades-all is one fill per message
                tid = str(int_field(d["tradeId"], "tradeId"))     # consecutive per instrument
                side = d["side"]
                out.append(trade_tick(NAME, sym, int_field(d["ts"], "ts") * 1000, d["px"], d["sz"],
                                      side if side == "buy" or side == "sell" else _side(side), tid, recv_us,
                                      1 if count is None or count == "1" or count == "" else int_field(count, "count")))
        except (KeyError, TypeError, ValueError) as ex:
            raise MalformedFrame(f"{channel} frame lacks or mistypes field {ex}") from None
        return out


def _side(s: Any) -> str:
    if s not in ("buy", "sell"):
        raise MalformedFrame(f"side {str(s)[:20]!r} is not buy or sell")
    return s


# --- REST repair ---------------------------------------------------------------------------------

@Okx.member
def history_by_id_request(venue_symbol: str, from_id: int, options: Options) -> HttpRequest:
    # `after` returns ids older than it, newest first: after=lo+100 gives lo .. lo+99.
    return HttpRequest("GET", "/api/v5/market/history-trades",
                       {"instId": venue_symbol, "type": "1", "after": str(from_id + REPAIR_PAGE),
                        "limit": str(REPAIR_PAGE)})


@Okx.member
def parse_history(body: Any, symbol: str, recv_us: int, options: Options) -> list[Tick]:
    rows = _data(body)
    out = [Tick.trade(NAME, symbol, int(r["ts"]) * 1000, r["px"], r["sz"], r["side"], r["tradeId"], recv_us, "rest")
           for r in rows]
    out.sort(key=lambda t: int(t.trade_id))
    return out


HISTORY_US = 90 * 86_400_000_000      # history-trades reaches 3 months back


@Okx.member
def history_by_time_request(venue_symbol: str, start_us: int, end_us: int | None, options: Options,
                            cursor: Any = None) -> HttpRequest:
    """Trades older than a ms timestamp (type=2), newest first, <= 100: the first page ends at
    ``end_us``; the cursor is ("ts", ms) or, past a full page inside one ms, ("id", trade id)."""
    params = {"instId": venue_symbol, "type": "2", "limit": str(REPAIR_PAGE)}
    if cursor is not None:
        kind, at = cursor
        params.update(type="2" if kind == "ts" else "1", after=str(at))
    elif end_us is not None:
        params["after"] = str(end_us // 1000 + 1)
    return HttpRequest("GET", "/api/v5/market/history-trades", params)


@Okx.member
def parse_history_page(body: Any, symbol: str, recv_us: int, options: Options, start_us: int,
                       end_us: int | None) -> tuple[list[Tick], Any, bool]:
    """One page walking back -> (ticks inside [start_us, end_us], next cursor or None, complete).
    Several trades share a ms, so the next page is `after` the oldest ms + 1: it repeats the
    oldest ms's trades (the pager drops them by id) and loses none. A full page inside one ms
    cannot get past it by time: the next page is then by id (type=1, ids per instrument rise
    with time), `after` its oldest id."""
    ticks = parse_history(body, symbol, recv_us, options)
    inside = [t for t in ticks if t.ts_us >= start_us and (end_us is None or t.ts_us <= end_us)]
    if len(ticks) < REPAIR_PAGE:
        return inside, None, start_us >= recv_us - HISTORY_US   # older than 3 months: not kept
    oldest = min(t.ts_us for t in ticks)
    if oldest < start_us:
        return inside, None, True
    oldest_ms, newest_ms = oldest // 1000, max(t.ts_us for t in ticks) // 1000
    if oldest_ms < newest_ms:
        return inside, ("ts", oldest_ms + 1), True
    return inside, ("id", int(ticks[0].trade_id)), True


# --- candles (reconciliation) --------------------------------------------------------------------

@Okx.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    # `after`: rows older than ts; `before`: newer than ts (both exclusive).
    return HttpRequest("GET", "/api/v5/market/history-candles",
                       {"instId": venue_symbol, "bar": "1m", "after": str(end_ms + 1),
                        "before": str(start_ms - 1), "limit": "100"})


@Okx.member
def parse_candles(body: Any) -> list[dict]:
    return sorted(({"minute_us": int(r[0]) * 1000, "open": r[1], "high": r[2], "low": r[3], "close": r[4],
                    "volume": r[5], "trade_count": None} for r in _data(body)), key=lambda c: c["minute_us"])

