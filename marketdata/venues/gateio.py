"""Gate.io API v4 spot: trades over `spot.trades` on /ws/v4/.

Facts this module encodes (shared/reference/venues-*.md §3):
- one trade per push; `id` is platform-wide (not consecutive per pair), `id_market` grows by one
  per trade of the pair: it is the continuity field, so it is our trade id (REST calls it
  `sequence_id`), and a jump in it is a gap;
- `id_market` exists only since 2025-01-08 (older recordings, and the sheet says to treat it as
  optional): a push without it is still a trade. It is emitted as `Unsequenced` with the platform
  `id` as its trade id, and the runtime's continuity for the pair falls back to time (holes are
  spans of time, repaired from REST by time: `/spot/trades?from=&to=&page=`) until `id_market`
  is back. A trade is never dropped for a missing sequence field;
- `create_time_ms` is a STRING of milliseconds with sub-millisecond decimals ("…213.4578"):
  parsed by hand to integer µs, never through a float;
- one ack per request `{"event":"subscribe","error":null,"result":{"status":"success"}}`; errors
  carry `error: {code, message}`;
- keepalive `{"time":s,"channel":"spot.ping"}` -> `spot.pong`; it also resets the server's idle
  timer (the request time must be current, so the ping is built anew each time);
- REST `/spot/trades?last_id=` pages by the PLATFORM id (ids after it, newest first, <= 1000): to
  repair market ids lo.. we need the platform id of market id lo-1, which the parser remembers
  for recent trades (`_Cursors`); where it is not known (a restart) the newest page is asked for
  and what it does not reach is recorded unrepairable;
- candlestick rows are [t, quote_vol, close, high, low, open, base_vol, closed] (odd order).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..tick import Tick
from .base import (Ack, HttpRequest, Ignored, Instrument, MalformedFrame, UnknownSymbol, Unrecognised,
                   Unsequenced, Venue, VenueError, VenueOptions, int_field, json_object, seconds_in,
                   trade_tick)

NAME = "gateio"

KEEPALIVE_INTERVAL = 10.0    # the official demo's period
REPAIR_PAGE = 1000


@dataclass(frozen=True)
class Options(VenueOptions):
    ping_interval: float = KEEPALIVE_INTERVAL   # s between our spot.ping requests

    def check(self) -> None:
        seconds_in("ping_interval", self.ping_interval, 60)


class Gateio(Venue):
    """Gate.io spot, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://api.gateio.ws"
    LIVE_REST_URL = "https://api.gateio.ws"
    IDLE_TIMEOUT = 25.0          # our spot.ping every 10 s draws a pong, the server pings too
    SEQUENTIAL_IDS = True        # on id_market
    REPAIR_BY = "id"
    REPAIR_PAGE = REPAIR_PAGE
    Options = Options
    BACKFILL_BY = "time"               # spot/trades?from&to


@Gateio.member
def to_venue_symbol(symbol: str) -> str:
    return symbol.replace("-", "_")


def ts_us_of(ms_text: str) -> int:
    """Gate's "1606292218213.4578" (ms, decimals optional) -> 1606292218213457 µs, exactly. Older
    pushes carry the number (1606292218213) rather than text."""
    if type(ms_text) is int:
        return ms_text * 1000
    if type(ms_text) is not str or not ms_text.isascii():
        raise ValueError(f"not a millisecond timestamp: {str(ms_text)[:40]!r}")
    ms, _, frac = ms_text.partition(".")
    if not ms.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a millisecond timestamp: {ms_text!r}")
    return int(ms) * 1000 + int((frac + "000")[:3])


class _Cursors:
    """Platform id of recent trades by (pair, id_market): the REST `last_id` for a repair."""

    KEEP = 200_000

    def __init__(self) -> None:
        self._by_pair: dict[str, dict[int, int]] = {}

    def note(self, pair: str, id_market: int, platform_id: int) -> None:
        d = self._by_pair.setdefault(pair, {})
        d[id_market] = platform_id
        if len(d) > self.KEEP * 1.2:
            for k in list(d)[: len(d) - self.KEEP]:
                del d[k]

    def get(self, pair: str, id_market: int) -> int | None:
        return self._by_pair.get(pair, {}).get(id_market)


CURSORS = _Cursors()
_BY_PAIR = CURSORS._by_pair                 # the parser's inline note (below KEEP it is just a store)
_NOTE_INLINE_BELOW = int(_Cursors.KEEP * 1.2)


# --- instruments -------------------------------------------------------------------------------

@Gateio.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/api/v4/spot/currency_pairs")


@Gateio.member
def parse_instruments(body: Any) -> list[Instrument]:
    if not isinstance(body, list):
        raise MalformedFrame(f"gateio currency_pairs is not a list: {str(body)[:200]}")
    return [Instrument(r["id"], f"{r['base']}-{r['quote']}", "TRADING")
            for r in body if r.get("trade_status") == "tradable"]


# --- websocket ---------------------------------------------------------------------------------

@Gateio.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + "/ws/v4/"


@Gateio.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[int, str]]:
    return [(first_id, orjson.dumps({"time": int(time.time()), "id": first_id, "channel": "spot.trades",
                                     "event": "subscribe", "payload": venue_symbols}).decode())]


def _ping() -> str:
    return '{"time":%d,"channel":"spot.ping"}' % int(time.time())


@Gateio.member
def keepalive(options: Options, session: object = None):
    return float(options.ping_interval), _ping


@Gateio.member
class Parser:
    __slots__ = ("symbols",)

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        msg = json_object(frame)
        channel, event = msg.get("channel"), msg.get("event")
        if event == "update" and channel == "spot.trades":
            r = msg.get("result")
            try:
                pair = r["currency_pair"]
                sym = self.symbols.get(pair)
                if sym is None:
                    return [UnknownSymbol(str(pair))]
                platform = r["id"]
                if type(platform) is not int:
                    platform = int_field(platform, "id")
                ts = ts_us_of(r["create_time_ms"]) if "create_time_ms" in r else int_field(r["create_time"], "create_time") * 1_000_000
                m = r.get("id_market")
                if type(m) is int:         # the current push: note the cursor inline (a call less a trade)
                    d = _BY_PAIR.get(pair)
                    if d is not None and len(d) < _NOTE_INLINE_BELOW:
                        d[m] = platform
                    else:
                        CURSORS.note(pair, m, platform)
                    return [trade_tick(NAME, sym, ts, r["price"], r["amount"], r["side"], str(m), recv_us)]
                if m is None:
                    # An older push: still a trade. Its id is the platform id; continuity by time.
                    return [Unsequenced(trade_tick(NAME, sym, ts, r["price"], r["amount"], r["side"], str(platform),
                                                   recv_us), "id_market")]
                m = int_field(m, "id_market")
                CURSORS.note(pair, m, platform)
                return [trade_tick(NAME, sym, ts, r["price"], r["amount"], r["side"], str(m), recv_us)]
            except (KeyError, TypeError, ValueError) as ex:
                raise MalformedFrame(f"spot.trades update lacks or mistypes field {ex}") from None
        err = msg.get("error")
        if err:
            if not isinstance(err, dict):
                raise MalformedFrame(f"error is not an object: {str(err)[:100]!r}")
            return [VenueError(err.get("code"), str(err.get("message", "")), msg.get("id"))]
        if event in ("subscribe", "unsubscribe"):
            return [Ack(msg.get("id"))]
        if channel in ("spot.pong", "spot.ping"):
            return [Ignored(channel)]
        if channel is not None:
            return [Unrecognised(f"{str(channel)[:40]} {str(event)[:20]}", "a channel or event this parser does not read")]
        raise MalformedFrame("frame has no channel")


# --- REST repair ---------------------------------------------------------------------------------

@Gateio.member
def history_by_id_request(venue_symbol: str, from_id: int, options: Options) -> HttpRequest:
    """Market ids from_id.. : the trades after the platform id of market id from_id-1."""
    params: dict[str, Any] = {"currency_pair": venue_symbol, "limit": str(REPAIR_PAGE)}
    cursor = CURSORS.get(venue_symbol, from_id - 1)
    if cursor is not None:
        params.update({"last_id": str(cursor), "reverse": "false"})
    return HttpRequest("GET", "/api/v4/spot/trades", params)


@Gateio.member
def parse_history(body: Any, symbol: str, recv_us: int, options: Options) -> list[Tick]:
    if not isinstance(body, list):
        raise MalformedFrame(f"gateio trades is not a list: {str(body)[:200]}")
    out = []
    try:
        for r in body:
            m = int(r["sequence_id"])
            CURSORS.note(r["currency_pair"], m, int(r["id"]))
            out.append(Tick.trade(NAME, symbol, ts_us_of(r["create_time_ms"]), r["price"], r["amount"], r["side"],
                                  str(m), recv_us, "rest"))
    except (KeyError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"gateio trade row lacks or mistypes field {ex}") from None
    out.sort(key=lambda t: int(t.trade_id))
    return out


@Gateio.member
def history_by_time_request(venue_symbol: str, start_us: int, end_us: int | None, options: Options,
                            cursor: Any = None) -> HttpRequest:
    """Trades with from <= create_time <= to (whole seconds, so the span is widened to them),
    newest first, <= 1000 a page: for a pair whose pushes lack `id_market`, where holes are spans
    of time. A page walks back from `to`; the next one ends at the oldest second of the last
    (`cursor`), inclusive, so no trade of that second is skipped (repeats are de-duplicated)."""
    params: dict[str, Any] = {"currency_pair": venue_symbol, "limit": str(REPAIR_PAGE),
                              "from": str(start_us // 1_000_000)}
    if cursor is not None:
        params["to"] = str(cursor)
    elif end_us is not None:
        params["to"] = str(-(-end_us // 1_000_000))
    return HttpRequest("GET", "/api/v4/spot/trades", params)


def _row_tick(r: Any, symbol: str, recv_us: int) -> Tick:
    """A REST row as a tick: its trade id is `sequence_id` (= WS id_market) where the row has one,
    else the platform `id`, the same rule as for pushes."""
    seq = r.get("sequence_id")
    tid = str(int_field(seq, "sequence_id")) if seq not in (None, "") else str(int_field(r["id"], "id"))
    if seq not in (None, ""):
        CURSORS.note(r["currency_pair"], int(tid), int_field(r["id"], "id"))
    return trade_tick(NAME, symbol, ts_us_of(r["create_time_ms"]), r["price"], r["amount"], r["side"], tid,
                      recv_us, source="rest")


@Gateio.member
def parse_history_page(body: Any, symbol: str, recv_us: int, options: Options, start_us: int,
                       end_us: int | None) -> tuple[list[Tick], Any, bool]:
    """One page by time -> (ticks inside [start_us, end_us], next page or None, complete)."""
    if not isinstance(body, list):
        raise MalformedFrame(f"gateio trades is not a list: {str(body)[:200]}")
    try:
        ticks = [_row_tick(r, symbol, recv_us) for r in body]
    except (KeyError, TypeError, ValueError, AttributeError) as ex:
        raise MalformedFrame(f"gateio trade row lacks or mistypes field {ex}") from None
    inside = [t for t in ticks if t.ts_us >= start_us and (end_us is None or t.ts_us <= end_us)]
    inside.sort(key=lambda t: (t.ts_us, int(t.trade_id)))
    if len(body) < REPAIR_PAGE:
        return inside, None, True
    oldest, newest = min(t.ts_us for t in ticks) // 1_000_000, max(t.ts_us for t in ticks) // 1_000_000
    if oldest >= newest:
        return inside, None, False      # a whole page in one second: paging by time cannot get past it
    return inside, oldest, True


# --- candles (reconciliation) --------------------------------------------------------------------

@Gateio.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    return HttpRequest("GET", "/api/v4/spot/candlesticks",
                       {"currency_pair": venue_symbol, "interval": "1m", "from": str(start_ms // 1000),
                        "to": str(end_ms // 1000)})


@Gateio.member
def parse_candles(body: Any) -> list[dict]:
    if not isinstance(body, list):
        raise MalformedFrame(f"gateio candlesticks is not a list: {str(body)[:200]}")
    return sorted(({"minute_us": int(r[0]) * 1_000_000, "open": r[5], "high": r[3], "low": r[4], "close": r[2],
                    "volume": r[6], "trade_count": None} for r in body), key=lambda c: c["minute_us"])
