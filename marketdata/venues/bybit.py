"""Bybit v5 spot public: trades over `publicTrade.{symbol}` on /v5/public/spot.

Facts this module encodes (shared/reference/venues-bybit-bitfinex-gateio-bitstamp-alpaca.md §1):
- keepalive is the JSON `{"op":"ping"}` every 20 s (no server pings on public streams); the pong is
  `{"success":true,"ret_msg":"pong","op":"ping"}` -- its `op` is "ping", so match on ret_msg;
- spot accepts at most 10 args per subscribe request ("args size >10" otherwise) and answers one
  ack per request: subscribes are split into requests of <= 10 topics, each with its own req_id;
- a `publicTrade` message carries many trades (`data[]`, ascending); `p`/`v` are strings, `T` is
  ms, `S` the taker side (Buy/Sell), `i` the id as a string;
- trade ids are NOT documented as consecutive per symbol (spot ids come from a shared counter), so
  a dropped message cannot be seen in the ids: holes are spans of time from a disconnect until the
  next trade (SEQUENTIAL_IDS = False), de-duplicated by id;
- REST `recent-trade` gives ONLY the last <= 60 trades, with no time or id paging: a hole is
  repaired only when those reach back past its start; otherwise what it gives is kept and the hole
  is recorded unrepairable (its minutes stay incomplete). A redundant second connection
  (`connections: 2`) is how Bybit loses nothing across a drop;
- REST answers `{"retCode":0,"result":{...}}`, errors as retCode != 0 even with HTTP 200;
- symbols are BTCUSDT; base/quote come from instruments-info `baseCoin`/`quoteCoin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..tick import Tick
from .base import (Ack, HttpRequest, Ignored, Instrument, MalformedFrame, UnknownSymbol, Unrecognised, Venue,
                   VenueError, VenueOptions, int_field, json_object, seconds_in, trade_tick)

from .retry_after import RetryAfter
NAME = "bybit"

KEEPALIVE_INTERVAL = 20.0    # the venue's recommendation
RECENT_LIMIT = 60            # spot recent-trade maximum
MAX_ARGS = 10                # spot args per subscribe request


_SIDES = {"Buy": "buy", "Sell": "sell"}


@dataclass(frozen=True)
class Options(VenueOptions):
    ping_interval: float = KEEPALIVE_INTERVAL   # s between our op pings

    def check(self) -> None:
        seconds_in("ping_interval", self.ping_interval, 60)


class Bybit(Venue):
    """Bybit spot, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://stream.bybit.com"
    LIVE_REST_URL = "https://api.bybit.com"
    IDLE_TIMEOUT = 30.0          # our pings every 20 s draw a pong: 30 s of nothing is a dead link
    SEQUENTIAL_IDS = False       # ids are not consecutive: holes are spans of time
    REPAIR_BY = "time"
    Options = Options
    BACKFILL_BY = None
    NO_BACKFILL = "its spot REST returns only the last 60 trades (recent-trade has no time or id parameter)"
    RETRY_AFTER = RetryAfter(statuses=(403, 429))     # 403: the IP rate block


@Bybit.member
def to_venue_symbol(symbol: str) -> str:
    return symbol.replace("-", "")


# --- REST envelope and instruments ----------------------------------------------------------------

def _result(body: Any) -> dict:
    if not isinstance(body, dict) or not isinstance(body.get("result"), dict):
        raise MalformedFrame(f"bybit REST answer lacks result: {str(body)[:200]}")
    if body.get("retCode", 0) != 0:
        raise MalformedFrame(f"bybit REST error {body.get('retCode')}: {body.get('retMsg')}")
    return body["result"]


def _list(body: Any) -> list:
    rows = _result(body).get("list")
    if not isinstance(rows, list):
        raise MalformedFrame("bybit REST result lacks list")
    return rows


@Bybit.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/v5/market/instruments-info", {"category": "spot"})


@Bybit.member
def parse_instruments(body: Any) -> list[Instrument]:
    return [Instrument(r["symbol"], f"{r['baseCoin']}-{r['quoteCoin']}", r.get("status", ""))
            for r in _list(body) if r.get("status") == "Trading"]


# --- websocket -----------------------------------------------------------------------------------

@Bybit.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + "/v5/public/spot"


@Bybit.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[str, str]]:
    topics = [f"publicTrade.{s}" for s in venue_symbols]
    out = []
    for k in range(0, len(topics), MAX_ARGS):
        rid = f"sub-{first_id + len(out)}"
        out.append((rid, orjson.dumps({"req_id": rid, "op": "subscribe", "args": topics[k:k + MAX_ARGS]}).decode()))
    return out


@Bybit.member
def keepalive(options: Options, session: object = None) -> tuple[float, str]:
    return float(options.ping_interval), '{"op":"ping"}'


@Bybit.member
class Parser:
    __slots__ = ("symbols",)

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        msg = json_object(frame)
        topic = msg.get("topic")
        if topic is None:
            return [self._control(msg)]
        if not isinstance(topic, str) or not topic.startswith("publicTrade."):
            return [Unrecognised(f"topic {str(topic)[:40]}", "a data topic this parser does not read")]
        data = msg.get("data")
        if not isinstance(data, list):
            raise MalformedFrame("publicTrade frame lacks data[]")
        out: list = []
        try:
            for d in data:
                vs = d["s"]
                sym = self.symbols.get(vs)
                if sym is None:
                    out.append(UnknownSymbol(str(vs)))
                    continue
                out.append(trade_tick(NAME, sym, int_field(d["T"], "T") * 1000, d["p"], d["v"], _SIDES[d["S"]],
                                      d["i"], recv_us))
        except (KeyError, TypeError, ValueError) as ex:
            raise MalformedFrame(f"publicTrade frame lacks or mistypes field {ex}") from None
        return out

    @staticmethod
    def _control(msg: dict) -> object:
        op, ret = msg.get("op"), msg.get("ret_msg")
        if ret == "pong" or op == "pong":
            return Ignored("pong")
        if op in ("subscribe", "unsubscribe"):
            if msg.get("success"):
                return Ack(msg.get("req_id"))
            return VenueError(op, str(ret), msg.get("req_id"))
        if "success" in msg:
            return VenueError(op, str(ret), msg.get("req_id")) if not msg["success"] else Ignored(str(op))
        raise MalformedFrame("frame has neither topic nor op")


# --- REST repair ------------------------------------------------------------------------------------

@Bybit.member
def history_by_time_request(venue_symbol: str, start_us: int, end_us: int | None, options: Options,
                            cursor: object = None) -> HttpRequest:
    # No time or id parameters exist on spot: the last 60 trades are all the venue gives back.
    return HttpRequest("GET", "/v5/market/recent-trade",
                       {"category": "spot", "symbol": venue_symbol, "limit": str(RECENT_LIMIT)})


@Bybit.member
def parse_history_page(body: Any, symbol: str, recv_us: int, options: Options, start_us: int,
                       end_us: int | None) -> tuple[list[Tick], None, bool]:
    """(ticks oldest first, no next page, complete). Complete only when the page reaches strictly
    before `start_us` (a trade at `start_us` itself may have had same-millisecond siblings that fell
    off the page) or holds fewer rows than asked (the venue's whole tape)."""
    rows = _list(body)
    try:
        ticks = [Tick.trade(NAME, symbol, int(r["time"]) * 1000, r["price"], r["size"], _SIDES[r["side"]],
                            str(r["execId"]), recv_us, "rest") for r in rows]
    except (KeyError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"recent-trade row lacks or mistypes field {ex}") from None
    ticks.sort(key=lambda t: (t.ts_us, int(t.trade_id)))
    complete = len(ticks) < RECENT_LIMIT or (bool(ticks) and ticks[0].ts_us < start_us)
    if end_us is not None:
        ticks = [t for t in ticks if t.ts_us <= end_us]
    return ticks, None, complete


# --- candles (reconciliation) -------------------------------------------------------------------------

@Bybit.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    return HttpRequest("GET", "/v5/market/kline", {"category": "spot", "symbol": venue_symbol, "interval": "1",
                                                   "start": str(start_ms), "end": str(end_ms), "limit": "1000"})


@Bybit.member
def parse_candles(body: Any) -> list[dict]:
    # Newest first on the wire; no trade count.
    return sorted(({"minute_us": int(r[0]) * 1000, "open": r[1], "high": r[2], "low": r[3], "close": r[4],
                    "volume": r[5], "trade_count": None} for r in _list(body)), key=lambda c: c["minute_us"])
