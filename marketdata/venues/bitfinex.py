"""Bitfinex v2 public: trades over the `trades` channel on /ws/2.

Facts this module encodes (shared/reference/venues-bybit-bitfinex-gateio-bitstamp-alpaca.md §2):
- data frames are positional arrays keyed only by a numeric chanId that the `subscribed` event
  assigns per connection: the map lives in the Parser (one per link), never across reconnects;
- every trade arrives twice, `te` (at once) and `tu` (the same id after the venue's DB write, ~1 s
  later). We take `te`: it is the earlier of the two, and taking one of them counts each trade
  once without relying on de-duplication; `tu` frames still advance the sequence number;
- each (re)subscribe starts with a snapshot of the last ~30 trades, newest first, which overlaps
  what we have: it is handed over as a `Replay` of ticks (real trades, emitted; `decode` prints
  them). The runtime drops those older than the symbol's tape and de-duplicates known ids, so a
  resubscribe never counts a trade twice; where the snapshot reaches back over the last trade we
  had, the span we were away closes without REST;
- `[chanId,"hb"]` every 15 s on an idle channel: ignored, but its bytes keep the link alive;
- `conf` flag SEQ_ALL (65536) numbers every channel frame of the connection, across channels,
  heartbeats included. Trade ids are platform-wide (increasing, not consecutive per pair), so a
  lost frame shows only as a sequence jump: we cannot name the symbol, so the link is replaced
  and every symbol's span since its last trade is repaired by time;
- info 20051: reconnect now; 20060: maintenance starts, data stops (up to ~120 s): the link is
  paused, not replaced (no reconnect storm against a venue in maintenance), and what it would
  carry is a gap; 20061: maintenance over, channels must be subscribed again: reconnect;
- REST trades/hist pages by time only (ms, start/end inclusive, sort=1 oldest first, <= 10000);
  candles are [MTS, OPEN, CLOSE, HIGH, LOW, VOLUME] (O,C,H,L order) without a trade count;
- prices and amounts are JSON numbers; the sign of AMOUNT is the taker side;
- Bitfinex names currencies its own way (UST = USDT): one table maps both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from ..tick import Tick
from .base import (Ack, HttpRequest, Ignored, Instrument, MalformedFrame, Pause, Reconnect, Replay,
                   UnknownSymbol, Unrecognised, Venue, VenueError, VenueOptions, trade_tick)

from .retry_after import RetryAfter
NAME = "bitfinex"

REPAIR_PAGE = 10_000
MAX_CHANNELS_PER_CONNECTION = 25
SEQ_ALL = 65536

# Bitfinex ticker -> canonical currency (and back). Whole-currency lookups only: a substring
# replace of "UST" would corrupt names that merely contain it.
CURRENCIES = {"UST": "USDT", "UDC": "USDC", "BCHN": "BCH"}
_TO_VENUE = {v: k for k, v in CURRENCIES.items()}


@dataclass(frozen=True)
class Options(VenueOptions):
    sequence_numbers: bool = True   # ask for SEQ_ALL sequence numbers to detect lost frames

    def check(self) -> None:
        if not isinstance(self.sequence_numbers, bool):
            raise ValueError("sequence_numbers must be true or false")


class Bitfinex(Venue):
    """Bitfinex, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://api-pub.bitfinex.com"
    LIVE_REST_URL = "https://api-pub.bitfinex.com"
    IDLE_TIMEOUT = 35.0           # every idle channel heartbeats each 15 s: 35 s of nothing is a dead link
    SEQUENTIAL_IDS = False        # platform-wide ids: holes are spans of time
    REPAIR_BY = "time"
    REPAIR_PAGE = REPAIR_PAGE
    Options = Options
    BACKFILL_BY = "time"               # trades/hist?start&end&sort=1
    RETRY_AFTER = RetryAfter(default_s=60.0)        # a rate block lasts about 60 s


@Bitfinex.member
def to_venue_symbol(symbol: str) -> str:
    base, _, quote = symbol.partition("-")
    b, q = _TO_VENUE.get(base, base), _TO_VENUE.get(quote, quote)
    return f"t{b}{q}" if len(b) == 3 and len(q) == 3 else f"t{b}:{q}"


def canonical(pair: str) -> str | None:
    """`BTCUST` / `DOGE:USD` (pair names without the `t`) -> `BTC-USDT` / `DOGE-USD`."""
    if ":" in pair:
        base, _, quote = pair.partition(":")
    elif len(pair) == 6:
        base, quote = pair[:3], pair[3:]
    else:
        return None
    if not base or not quote:
        return None
    return f"{CURRENCIES.get(base, base)}-{CURRENCIES.get(quote, quote)}"


def number(v: Any) -> str:
    """A JSON number as plain decimal text: orjson gives floats, whose shortest repr is the digits
    the venue sent, except that small ones come out in exponent form (1e-05)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MalformedFrame(f"not a number: {v!r}")
    if isinstance(v, int):
        return str(v)
    r = repr(v)
    return format(Decimal(r), "f") if "e" in r or "E" in r else r


# --- instruments -------------------------------------------------------------------------------

@Bitfinex.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/v2/conf/pub:list:pair:exchange")


@Bitfinex.member
def parse_instruments(body: Any) -> list[Instrument]:
    if not isinstance(body, list) or not body or not isinstance(body[0], list):
        raise MalformedFrame(f"bitfinex pair list is not [[...]]: {str(body)[:200]}")
    out = []
    for pair in body[0]:
        sym = canonical(pair) if isinstance(pair, str) else None
        if sym is not None:
            out.append(Instrument("t" + pair, sym))
    return out


# --- websocket ---------------------------------------------------------------------------------

@Bitfinex.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + "/ws/2"


@Bitfinex.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[str, str]]:
    """conf first (flags apply to the frames after it), then one subscribe per symbol; each is
    acknowledged under its own key (`conf`, or the symbol the `subscribed` event echoes)."""
    out = []
    if options.sequence_numbers:
        out.append(("conf", orjson.dumps({"event": "conf", "flags": SEQ_ALL}).decode()))
    for s in venue_symbols:
        out.append((s, orjson.dumps({"event": "subscribe", "channel": "trades", "symbol": s}).decode()))
    return out


@Bitfinex.member
def keepalive(options: Options, session: object = None) -> None:
    """The venue heartbeats each channel; WebSocket pings (answered by the library) suffice."""
    return None


# JSON number type -> its text, for the common case of _trade (bool is its own type: not here).
_TEXT = {float: repr, int: str}


def _unexp(r: str) -> str | None:
    """A positive float's repr in `d[.ddd]e-XX` form as plain decimal text, the digits that
    format(Decimal(r), "f") gives (number()'s way) without a Decimal; None for any other form."""
    m, _, e = r.partition("e")
    if e[:1] != "-" or not e[1:].isdigit() or m[:1] == "-" or (len(m) > 1 and m[1] != "."):
        return None
    return "0." + "0" * (int(e[1:]) - 1) + m.replace(".", "")


def _trade(sym: str, t: Any, recv_us: int, source: str = "ws") -> Tick:
    # Common case first: [int, int, nonzero float/int, float/int] whose texts carry no exponent.
    # It skips number()'s isinstance/Decimal work (te parse 5.0 -> ~3 us); trade_tick still checks.
    if type(t) is list and len(t) >= 4:
        tid, mts, amount, price = t[0], t[1], t[2], t[3]
        a_text, p_text = _TEXT.get(type(amount)), _TEXT.get(type(price))
        if a_text is not None and p_text is not None and type(tid) is int and type(mts) is int and amount:
            px = p_text(price)
            qty = a_text(amount) if amount > 0 else a_text(-amount)
            if "e" in qty:          # amounts under 1e-4 (0.00001234 -> 1.234e-05): most of the simulator's
                qty = _unexp(qty)
            if "e" in px:
                px = _unexp(px)
            if px is not None and qty is not None:
                return trade_tick(NAME, sym, mts * 1000, px, qty, "buy" if amount > 0 else "sell", str(tid),
                                  recv_us, source=source)
    if not isinstance(t, list) or len(t) < 4 or type(t[0]) is not int or type(t[1]) is not int:
        raise MalformedFrame(f"trade is not [ID,MTS,AMOUNT,PRICE]: {str(t)[:120]}")
    amount = t[2]
    px = number(t[3])
    qty = number(abs(amount) if isinstance(amount, (int, float)) and not isinstance(amount, bool) else amount)
    if amount == 0:
        raise MalformedFrame(f"trade amount 0 has no taker side: {str(t)[:120]}")
    return trade_tick(NAME, sym, t[1] * 1000, px, qty, "buy" if amount > 0 else "sell", str(t[0]), recv_us,
                      source=source)


@Bitfinex.member
class Parser:
    """Frame -> events for one connection: its chanId map, its sequence number, its pause."""

    __slots__ = ("symbols", "chans", "check_seq", "last_seq", "paused")

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols
        self.chans: dict[int, str] = {}
        self.check_seq = bool(options.sequence_numbers)
        self.last_seq: int | None = None
        self.paused = False

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as e:
            raise MalformedFrame(f"invalid JSON: {e}") from None
        if isinstance(msg, dict):
            return self._event(msg)
        if not isinstance(msg, list) or len(msg) < 2 or not isinstance(msg[0], int):
            raise MalformedFrame("frame is neither an event nor [chanId, ...]")
        kind = msg[1]
        pos = 3 if kind in ("te", "tu", "fte", "ftu", "cs") else 2
        if self.check_seq and len(msg) > pos and type(msg[pos]) is int:
            seq = msg[pos]
            if self.last_seq is not None and seq != self.last_seq + 1:
                lost = seq - self.last_seq - 1
                self.last_seq = seq
                # This frame's own trade may be older than a lost one: it goes with the repair.
                return [Reconnect(f"sequence jumped from {seq - lost - 1} to {seq}: frames lost")]
            self.last_seq = seq
        if kind == "tu":
            return [Ignored(kind)]      # the te's trade again, after the venue's DB write (half the frames)
        cid = msg[0]
        sym = self.chans.get(cid)
        if kind == "hb":
            return [Ignored("hb")]
        if kind == "te":
            if sym is None:
                return [UnknownSymbol(f"chanId {cid}")]
            if self.paused:
                return [Ignored("maintenance")]
            return [_trade(sym, msg[2] if len(msg) > 2 else None, recv_us)]
        if isinstance(kind, list):
            if sym is None:
                return [UnknownSymbol(f"chanId {cid}")]
            if self.paused:
                return [Ignored("maintenance")]
            ticks = [_trade(sym, t, recv_us) for t in kind]
            ticks.sort(key=lambda t: (t.ts_us, int(t.trade_id)))   # the venue sends newest first
            return [Replay(sym, ticks)]
        if isinstance(kind, str):
            return [Unrecognised(f"frame kind {kind[:20]}", "a channel frame this parser does not read")]
        raise MalformedFrame(f"unknown channel frame kind {str(kind)[:50]}")

    def _event(self, msg: dict) -> list:
        event = msg.get("event")
        if event == "subscribed":
            cid, vs = msg.get("chanId"), msg.get("symbol")
            if msg.get("channel") != "trades" or not isinstance(cid, int):
                return [Ignored("subscribed")]
            sym = self.symbols.get(vs) if isinstance(vs, str) else None
            if sym is None:
                return [UnknownSymbol(str(vs)[:40])]
            self.chans[cid] = sym
            return [Ack(vs)]
        if event == "conf":
            if msg.get("status") == "OK":
                return [Ack("conf")]
            return [VenueError(msg.get("code"), f"conf refused: {msg}", "conf")]
        if event == "error":
            return [VenueError(msg.get("code"), str(msg.get("msg", "")), msg.get("symbol"))]
        if event == "info":
            code = msg.get("code")
            if code == 20051:
                return [Reconnect("info 20051: server restart")]
            if code == 20060:
                self.paused = True
                return [Pause("info 20060: maintenance")]
            if code == 20061:
                return [Reconnect("info 20061: maintenance over, subscribe again")]
            platform = msg.get("platform")
            if isinstance(platform, dict) and platform.get("status") == 0:
                self.paused = True
                return [Pause("platform status 0: maintenance")]
            return [Ignored("info")]
        if event in ("unsubscribed", "pong"):
            return [Ignored(event)]
        if event is None:
            raise MalformedFrame("event object without event")
        return [Unrecognised(f"event {str(event)[:40]}")]


# --- REST repair ---------------------------------------------------------------------------------

def _rows(body: Any) -> list:
    if not isinstance(body, list):
        raise MalformedFrame(f"bitfinex REST answer is not a list: {str(body)[:200]}")
    if body and body[0] == "error":
        raise MalformedFrame(f"bitfinex REST error {body[1:3]}")
    return body


@Bitfinex.member
def history_by_time_request(venue_symbol: str, start_us: int, end_us: int | None, options: Options,
                            cursor: Any = None) -> HttpRequest:
    """Trades with start <= MTS <= end, oldest first; a page continues from its last MTS."""
    params = {"start": str(cursor if cursor is not None else start_us // 1000), "limit": str(REPAIR_PAGE),
              "sort": "1"}
    if end_us is not None:
        params["end"] = str(-(-end_us // 1000))
    return HttpRequest("GET", f"/v2/trades/{venue_symbol}/hist", params)


@Bitfinex.member
def parse_history_page(body: Any, symbol: str, recv_us: int, options: Options, start_us: int,
                       end_us: int | None) -> tuple[list[Tick], Any, bool]:
    rows = _rows(body)
    ticks = [_trade(symbol, r, recv_us, "rest") for r in rows]
    if len(rows) < REPAIR_PAGE:
        return ticks, None, True
    last_ms = rows[-1][1]
    if last_ms <= rows[0][1]:
        return ticks, None, False      # a whole page in one ms: paging by time cannot get past it
    # The next page starts at the last ms again (inclusive): its repeats are de-duplicated by id.
    return ticks, last_ms, True


# --- candles (reconciliation) --------------------------------------------------------------------

@Bitfinex.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    return HttpRequest("GET", f"/v2/candles/trade:1m:{venue_symbol}/hist",
                       {"start": str(start_ms), "end": str(end_ms), "limit": "10000", "sort": "1"})


@Bitfinex.member
def parse_candles(body: Any) -> list[dict]:
    return sorted(({"minute_us": int(r[0]) * 1000, "open": number(r[1]), "high": number(r[3]), "low": number(r[4]),
                    "close": number(r[2]), "volume": number(r[5]), "trade_count": None} for r in _rows(body)),
                  key=lambda c: c["minute_us"])
