"""Kraken Spot public trades over WebSocket v2 (default, option ``protocol: v2``) or v1
(``protocol: v1``), REST ``Trades?since=`` for repair, REST ``OHLC`` (with trade count) for
reconciliation.

Facts this module encodes (shared/reference/venues-*.md §4):
- v2 (``/v2``): JSON objects; one ack per symbol; `trade` messages carry ``trade_id``, consecutive
  per pair, so a jump is a gap; price/qty are JSON *numbers* (read as their literal text, never as
  floats), timestamps RFC 3339 µs; the last 50 trades come as a ``snapshot`` after subscribing,
  which closes short reconnect holes by itself;
- v1 (``/``): events are objects, data are arrays ``[channelID, [[price, volume, time, side,
  orderType, misc], ...], "trade", pair]``; the ``channelID`` is assigned per subscription *per
  connection* by ``subscriptionStatus`` -- the Parser learns it on every connection and never shares
  it (a cached id routes trades to the wrong pair or nowhere); the trailing pair name must agree;
- v1 trades carry **no trade id**. A v1 tick's id is derived from its content --
  ``<ts_us>:<price>:<volume>:<b|s>`` (numbers without trailing zeros), ``#n`` appended for the n-th
  identical trade of the same µs (on one connection; REST pages never split a µs) -- and REST
  rows get the same id in v1 mode, so a reconnect span (v1 holes are spans of time) is repaired
  from REST by time and deduplicated by that id. Limits, which is why v2 is the default: a trade
  withheld *while connected* is invisible in v1 (no id to jump), and identical fills of one µs
  split by a reconnect could be taken for one;
- both: ``{"event":"heartbeat"}`` / ``{"channel":"heartbeat"}`` about every second on a quiet link
  (bytes for the runtime's idle watchdog); optional app-level ping -> pong;
- REST envelope ``{"error":[...],"result":{...}}``, errors as HTTP 200 with strings; ``Trades``
  rows ``[price, volume, time(float s), side, ordertype, misc, trade_id]`` ascending, <= 1000;
  ``since`` is a ns cursor (exclusive), ``last`` the cursor to feed back; the result key is the
  legacy pair name (XXBTZUSD), so the first non-``last`` key is taken;
- v2 holes are by id but Kraken REST pages by time: the runtime fetches by time from the trade
  before the hole (``REPAIR_BY = "time"`` with sequential ids) and keeps the ids inside the hole;
- names: ``ASSET_CODES`` is the one table from Kraken asset codes to canonical ones (XBT->BTC,
  XDG->DOGE, X/Z-prefixed legacy codes); never strip prefixes blindly (XTZ is Tezos).
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass
from typing import Any

import orjson

from ..tick import Tick
from .base import (Ack, HttpRequest, Ignored, Instrument, MalformedFrame, UnknownSymbol, Unrecognised, Venue,
                   VenueError, VenueOptions, one_of, trade_tick)

NAME = "kraken"

KEEPALIVE_INTERVAL = 15.0
REPAIR_PAGE = 1000

PROTOCOLS = ("v2", "v1")
BOOK_DEPTHS = (10, 25, 100, 500, 1000)

# Kraken asset code -> canonical. Legacy codes carry an X (crypto) or Z (fiat) prefix in REST.
ASSET_CODES = {
    "XBT": "BTC", "XDG": "DOGE",
    "XXBT": "BTC", "XXDG": "DOGE", "XETH": "ETH", "XLTC": "LTC", "XXRP": "XRP", "XXLM": "XLM",
    "XXMR": "XMR", "XETC": "ETC", "XZEC": "ZEC", "XMLN": "MLN", "XREP": "REP",
    "ZUSD": "USD", "ZEUR": "EUR", "ZGBP": "GBP", "ZJPY": "JPY", "ZCAD": "CAD", "ZAUD": "AUD",
}
# canonical -> the code Kraken uses in v1 wsnames and REST altnames
_WS_CODES = {"BTC": "XBT", "DOGE": "XDG"}


@dataclass(frozen=True)
class Options(VenueOptions):
    protocol: str = "v2"            # v2: sequential trade ids, gaps detectable; v1: channel ids, no trade id
    ping_interval: float = KEEPALIVE_INTERVAL   # s between our application pings (0: none)
    # order-book levels with `books` on: 10 (the checksummed depth), 25, 100, 500, 1000
    book_depth: int = 10

    def check(self) -> None:
        one_of("protocol", self.protocol, list(PROTOCOLS), " (v2 is the default)")
        pi = self.ping_interval
        if not isinstance(pi, (int, float)) or isinstance(pi, bool) or pi < 0:
            raise ValueError(f"ping_interval must be a number of seconds >= 0, not {pi!r}")
        one_of("book_depth", self.book_depth, list(BOOK_DEPTHS))


class Kraken(Venue):
    """Kraken spot, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://ws.kraken.com"
    LIVE_REST_URL = "https://api.kraken.com"
    IDLE_TIMEOUT = 10.0          # heartbeats come ~1/s on a quiet link: 10 s of nothing is a dead link
    # Module defaults are the default protocol's (v2); `sequence_rules(options)` gives the per-protocol ones.
    SEQUENTIAL_IDS = True
    REPAIR_BY = "time"
    REPAIR_PAGE = REPAIR_PAGE
    Options = Options
    BACKFILL_BY = "time"               # Trades?since pages its whole history


def _v1(options: Options) -> bool:
    return options.protocol == "v1"


@Kraken.member
def sequence_rules(options: Options) -> tuple[bool, str | None]:
    """(sequential ids, repair_by) for these options: v2 ids are consecutive; v1 has none, so its
    holes are spans of time. Both repair by time from REST."""
    return (not _v1(options), Kraken.REPAIR_BY)


def canonical_asset(code: str) -> str:
    return ASSET_CODES.get(code, code)


@Kraken.member
def to_venue_symbol(symbol: str) -> str:
    """Canonical -> v1 wsname (BTC-USD -> XBT/USD): the venue symbol everything here is keyed by."""
    base, _, quote = symbol.partition("-")
    return f"{_WS_CODES.get(base, base)}/{_WS_CODES.get(quote, quote)}"


def _v2_name(wsname: str) -> str:
    base, _, quote = wsname.partition("/")
    return f"{canonical_asset(base)}/{canonical_asset(quote)}"


def _rest_pair(wsname: str) -> str:
    return wsname.replace("/", "")          # the altname (XBTUSD)


# --- REST envelope, instruments ------------------------------------------------------------------

def _result(body: Any) -> Any:
    if not isinstance(body, dict):
        raise MalformedFrame(f"kraken REST answer is not an object: {str(body)[:200]}")
    if body.get("error"):
        raise MalformedFrame(f"kraken REST error: {', '.join(map(str, body['error']))}")
    if "result" not in body:
        raise MalformedFrame(f"kraken REST answer lacks result: {str(body)[:200]}")
    return body["result"]


def _pair_rows(result: Any) -> list:
    if not isinstance(result, dict):
        raise MalformedFrame("kraken REST result is not an object")
    for k, v in result.items():
        if k != "last":
            if not isinstance(v, list):
                raise MalformedFrame(f"kraken REST rows under {k!r} are not a list")
            return v
    return []


@Kraken.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/0/public/AssetPairs")


@Kraken.member
def parse_instruments(body: Any) -> list[Instrument]:
    out = []
    for key, p in _result(body).items():
        wsname = p.get("wsname") if isinstance(p, dict) else None
        if key.endswith(".d") or not wsname or p.get("status", "online") != "online":
            continue                      # dark pools have no wsname and no public tape
        base, _, quote = wsname.partition("/")
        out.append(Instrument(wsname, f"{canonical_asset(base)}-{canonical_asset(quote)}", "online",
                              {"key": key, "altname": p.get("altname"), "pair_decimals": p.get("pair_decimals"),
                               "lot_decimals": p.get("lot_decimals")}))
    return out


# --- websocket ---------------------------------------------------------------------------------

@Kraken.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + ("/" if _v1(options) else "/v2")


@Kraken.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[int, str]]:
    # One message for all pairs (the venue rate-limits messages); the Parser acks it once every
    # pair is subscribed.
    if _v1(options):
        msg = {"event": "subscribe", "reqid": first_id, "pair": list(venue_symbols), "subscription": {"name": "trade"}}
    else:
        msg = {"method": "subscribe", "params": {"channel": "trade", "symbol": [_v2_name(s) for s in venue_symbols],
                                                 "snapshot": True}, "req_id": first_id}
    return [(first_id, orjson.dumps(msg).decode())]


@Kraken.member
def keepalive(options: Options, session: object = None) -> tuple[float, str] | None:
    interval = float(options.ping_interval)
    if not interval:
        return None
    return interval, '{"event":"ping"}' if _v1(options) else '{"method":"ping"}'


def _num(text: str) -> str:
    """A decimal without trailing zeros, so WS and REST spell a trade's content alike."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _v1_ts(t: str) -> int:
    if type(t) is not str:
        raise ValueError(f"time {str(t)[:40]!r} is not seconds text")
    sec, _, frac = t.partition(".")
    if not (sec.isascii() and sec.isdigit()) or (frac and not (frac.isascii() and frac.isdigit())):
        raise ValueError(f"time {t[:40]!r} is not seconds text")
    return int(sec) * 1_000_000 + int((frac + "000000")[:6])


class _ContentIds:
    """v1 trade ids from content, for one symbol's tape in time order: the n-th identical trade of
    a µs gets ``#n`` (fills of one taker order share µs and price, and sizes can repeat)."""
    __slots__ = ("seen", "ts")

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.ts = -1

    def __call__(self, ts_us: int, price: str, qty: str, side: str) -> str:
        if ts_us != self.ts:
            self.ts = ts_us
            self.seen.clear()
        tid = f"{ts_us}:{_num(price)}:{_num(qty)}:{side[0]}"
        n = self.seen.get(tid, 0)
        self.seen[tid] = n + 1
        return tid if n == 0 else f"{tid}#{n}"


_SIDES_V1 = {"b": "buy", "s": "sell"}


class _TsParser:
    """RFC 3339 (``2024-10-25T08:40:22.921337Z``) -> µs, with the whole-second part cached."""
    __slots__ = ("prefix", "sec")

    def __init__(self) -> None:
        self.prefix, self.sec = "", 0

    def __call__(self, s: str) -> int:
        if type(s) is not str:
            raise ValueError(f"timestamp {str(s)[:40]!r} is not RFC 3339 text")
        head = s[:19]
        if head != self.prefix:
            if len(head) != 19 or head[10] != "T":
                raise ValueError(f"timestamp {s!r}")
            self.sec = calendar.timegm((int(head[:4]), int(head[5:7]), int(head[8:10]), int(head[11:13]),
                                        int(head[14:16]), int(head[17:19])))
            self.prefix = head
        rest = s[19:]
        if not rest.endswith("Z"):
            raise ValueError(f"timestamp {s!r} is not UTC")
        frac = rest[1:-1] if rest.startswith(".") else ""
        if frac and not (frac.isascii() and frac.isdigit()) or (not frac and rest != "Z"):
            raise ValueError(f"timestamp {s!r} has a bad fraction")
        return self.sec * 1_000_000 + int((frac + "000000")[:6])


@Kraken.member
class Parser:
    """Frames of one connection. v1 channel ids live here and nowhere else."""

    __slots__ = ("symbols", "v1", "channels", "pending", "v2_symbols", "ts", "ids")

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols                        # wsname (XBT/USD) -> canonical
        self.v1 = _v1(options)
        self.channels: dict[int, tuple[str, str]] = {}  # channelID -> (wsname, canonical), this link only
        self.pending = set(symbols)                   # pairs not yet acknowledged
        self.v2_symbols = {_v2_name(vs): c for vs, c in symbols.items()}
        self.ts = _TsParser()
        self.ids = {c: _ContentIds() for c in symbols.values()}

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        return self._v1(frame, recv_us) if self.v1 else self._v2(frame, recv_us)

    def _acked(self, pair: str, reqid: Any) -> list:
        self.pending.discard(pair)
        return [] if self.pending else [Ack(reqid)]

    # --- v1 ------------------------------------------------------------------------------------

    def _v1(self, frame: str | bytes, recv_us: int) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as e:
            raise MalformedFrame(f"invalid JSON: {e}") from None
        if isinstance(msg, list):
            return self._v1_data(msg, recv_us)
        if not isinstance(msg, dict):
            raise MalformedFrame("frame is neither an event object nor a data array")
        event = msg.get("event")
        if event in ("heartbeat", "pong", "systemStatus"):
            return [Ignored(event)]
        if event == "subscriptionStatus":
            pair = msg.get("pair") if isinstance(msg.get("pair"), str) else None
            status = msg.get("status")
            if status == "subscribed":
                cid = msg.get("channelID")
                if type(cid) is not int or pair not in self.symbols:
                    raise MalformedFrame(f"subscriptionStatus without a usable channelID/pair: {msg}")
                self.channels[cid] = (pair, self.symbols[pair])
                return self._acked(pair, msg.get("reqid"))
            if status == "unsubscribed":
                cid = msg.get("channelID")
                if type(cid) is int:
                    self.channels.pop(cid, None)
                return [Ignored("unsubscribed")]
            return [VenueError("subscriptionStatus", f"{pair}: {msg.get('errorMessage', status)}", msg.get("reqid"))]
        if event == "error":
            return [VenueError("error", str(msg.get("errorMessage", "")), msg.get("reqid"))]
        if event is None:
            raise MalformedFrame("event object without an event")
        return [Unrecognised(f"event {str(event)[:40]}")]

    def _v1_data(self, msg: list, recv_us: int) -> list:
        if len(msg) < 4 or not isinstance(msg[-1], str) or not isinstance(msg[-2], str):
            raise MalformedFrame("data array lacks channelName and pair at its end")
        channel_name, pair = msg[-2], msg[-1]
        if channel_name != "trade":
            return [Unrecognised(f"channel {channel_name[:40]}", "a data channel this parser does not read")]
        known = self.channels.get(msg[0]) if type(msg[0]) is int else None
        if known is None:
            if pair not in self.symbols:
                return [UnknownSymbol(pair)]
            raise MalformedFrame(f"trade on channel {msg[0]!r}, which this connection did not subscribe")
        if known[0] != pair:
            raise MalformedFrame(f"channel {msg[0]} is {known[0]} on this connection, the frame says {pair}")
        sym = known[1]
        ids = self.ids[sym]
        out = []
        try:
            for t in msg[1]:
                price, qty, ts = t[0], t[1], _v1_ts(t[2])
                side = _SIDES_V1[t[3]]
                if not isinstance(price, str) or not isinstance(qty, str):
                    raise TypeError("price/volume not strings")
                out.append(trade_tick(NAME, sym, ts, price, qty, side, ids(ts, price, qty, side), recv_us))
        except (IndexError, KeyError, TypeError, ValueError, AttributeError) as ex:
            raise MalformedFrame(f"trade row lacks or mistypes a field: {ex!r}") from None
        return out

    # --- v2 ------------------------------------------------------------------------------------

    def _v2(self, frame: str | bytes, recv_us: int) -> list:
        try:
            # Numbers as their literal text: a float would round or print as 1e-05.
            msg = json.loads(frame, parse_float=str)
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedFrame(f"invalid JSON: {e}") from None
        if not isinstance(msg, dict):
            raise MalformedFrame("frame is not a JSON object")
        channel = msg.get("channel")
        if channel == "trade":
            return self._v2_trades(msg, recv_us)
        if channel in ("heartbeat", "status"):
            return [Ignored(channel)]
        if channel is not None:
            return [Unrecognised(f"channel {str(channel)[:40]}", "a data channel this parser does not read")]
        method = msg.get("method")
        if method == "subscribe":
            result = msg.get("result") if isinstance(msg.get("result"), dict) else {}
            if msg.get("success") is True:
                sym = result.get("symbol")
                sym = self.v2_symbols.get(sym) if type(sym) is str else None
                vs = next((w for w, c in self.symbols.items() if sym is not None and sym == c), None)
                if vs is None:
                    return [Ignored("ack")]
                return self._acked(vs, msg.get("req_id"))
            return [VenueError("subscribe", f"{msg.get('symbol', '')}: {msg.get('error', '')}", msg.get("req_id"))]
        if method == "pong":
            return [Ignored("pong")]
        if msg.get("success") is False:
            return [VenueError(method or "error", str(msg.get("error", "")), msg.get("req_id"))]
        if method is None:
            raise MalformedFrame("frame has neither channel nor method")
        if method == "unsubscribe":
            return [Ignored(method)]
        return [Unrecognised(f"method {str(method)[:40]}")]

    def _v2_trades(self, msg: dict, recv_us: int) -> list:
        data = msg.get("data")
        if not isinstance(data, list):
            raise MalformedFrame("trade message without a data list")
        out = []
        try:
            for d in data:
                sym = self.v2_symbols.get(d["symbol"])
                if sym is None:
                    out.append(UnknownSymbol(d["symbol"]))
                    continue
                price, qty, side, tid = d["price"], d["qty"], d["side"], d["trade_id"]
                if side not in ("buy", "sell") or type(tid) is not int:
                    raise ValueError(f"side {side!r} / trade_id {tid!r}")
                if type(price) is int or type(qty) is int:   # an integral number comes as int
                    price, qty = (str(v) if type(v) is int else v for v in (price, qty))
                out.append(trade_tick(NAME, sym, self.ts(d["timestamp"]), price, qty, side, str(tid), recv_us))
        except (KeyError, TypeError, ValueError) as ex:
            raise MalformedFrame(f"trade lacks or mistypes field {ex!r}") from None
        return out


# --- REST repair (by time) ---------------------------------------------------------------------

@Kraken.member
def history_by_time_request(venue_symbol: str, start_us: int, end_us: int | None, options: Options,
                            cursor: str | None = None) -> HttpRequest:
    """Trades from start_us on: `since` as a ns cursor just before start_us (exclusive), so trades
    at start_us itself come back; later pages feed `last` back."""
    since = cursor if cursor is not None else str(start_us * 1000 - 1)
    return HttpRequest("GET", "/0/public/Trades", {"pair": _rest_pair(venue_symbol), "since": since,
                                                   "count": REPAIR_PAGE})


def _rest_ts(t: Any) -> int:
    if isinstance(t, str):
        return _v1_ts(t)
    return round(t * 1_000_000)     # float seconds: the µs are within float precision at today's epoch


@Kraken.member
def parse_history_page(body: Any, symbol: str, recv_us: int, options: Options, start_us: int,
                       end_us: int | None) -> tuple[list[Tick], str | None, bool]:
    """One Trades page -> (ticks in [start_us, end_us], next cursor or None when the page passed
    end_us or reached the head of the tape, complete). Kraken keeps its whole history, so a page
    is never short of the span."""
    result = _result(body)
    rows = _pair_rows(result)
    v1 = _v1(options)
    ids = _ContentIds()
    out = []
    passed = False
    try:
        for r in rows:
            ts = _rest_ts(r[2])
            if end_us is not None and ts > end_us:
                passed = True
                break
            price, qty, side = r[0], r[1], _SIDES_V1[r[3]]
            tid = ids(ts, price, qty, side) if v1 else str(int(r[6]))
            if ts >= start_us:
                out.append(Tick.trade(NAME, symbol, ts, price, qty, side, tid, recv_us, "rest"))
    except (IndexError, KeyError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"Trades row lacks or mistypes a field: {ex!r}") from None
    last = result.get("last")
    more = not passed and len(rows) >= REPAIR_PAGE and last is not None
    if not v1:
        out.sort(key=lambda t: int(t.trade_id))
    elif more and out and out[0].ts_us != out[-1].ts_us:
        # Content ids rank identical trades within a µs: never split a µs across pages. The next
        # page starts at the last row's µs again, and this one ends before it.
        cut = out[-1].ts_us
        out = [t for t in out if t.ts_us < cut]
        last = cut * 1000 - 1
    return out, (str(last) if more else None), True


# --- candles (reconciliation) --------------------------------------------------------------------

@Kraken.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    # `since` is exclusive and the answer is at most the last 720 bars, whatever `since` says.
    return HttpRequest("GET", "/0/public/OHLC", {"pair": _rest_pair(venue_symbol), "interval": 1,
                                                 "since": start_ms // 1000 - 1})


@Kraken.member
def parse_candles(body: Any) -> list[dict]:
    try:
        return [{"minute_us": int(r[0]) * 1_000_000, "open": r[1], "high": r[2], "low": r[3], "close": r[4],
                 "volume": r[6], "trade_count": int(r[7])} for r in _pair_rows(_result(body))]
    except (IndexError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"OHLC row lacks or mistypes a field: {ex!r}") from None
