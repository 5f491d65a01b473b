"""KuCoin spot (classic public WebSocket with bullet tokens): trades over `/market/match:<symbols>`.

Facts this module encodes (shared/reference/venues-*.md §3):
- a connection needs a token: `POST /api/v1/bullet-public` answers the token and the instance
  server(s) with `endpoint`, `pingInterval` and `pingTimeout` (milliseconds); the endpoint is
  dynamic, so the URL is always built from the session, `{endpoint}?token=..&connectId=..`;
- the token lives 24 h and the answer carries no expiry: `token_ttl` (option) is how long we trust
  one; the runtime rotates make-before-break at 80 % of it. A stale token draws
  `{"type":"error","code":401,"data":"token is expired"}` -> Reconnect (with a fresh token);
- the server greets with `{"id":<connectId>,"type":"welcome"}` and may ignore a subscribe sent
  before it: `Parser.ready` stays False until the welcome;
- keepalive is a client JSON `{"id","type":"ping"}` every pingInterval, answered by `pong`; a
  client silent for pingInterval + pingTimeout is dropped without a close frame;
- <= 100 topics per subscribe message; `response: true` draws `{"id","type":"ack"}` (ids come
  back as strings);
- `trade.l3match`: one trade per frame, `time` a string in ns, `side` the taker side, `tradeId`
  == `sequence`, which increases but jumps (book events share the counter): a missed trade cannot
  be seen from the ids, so holes are spans of time (SEQUENTIAL_IDS False);
- REST `/api/v1/market/histories` returns only the last 100 trades (ns int `time`, `sequence`, no
  paging): a hole it does not reach back to is unrepairable;
- candles `[time, open, CLOSE, high, low, volume, turnover]`, times in seconds, no trade count.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ..tick import Tick
from .base import (Ack, HttpRequest, Ignored, Instrument, MalformedFrame, Reconnect, UnknownSymbol,
                   Unrecognised, Venue, VenueError, VenueOptions, int_field, json_object, seconds_in,
                   trade_tick)

NAME = "kucoin"

HISTORY_LIMIT = 100          # histories returns the last 100 trades, no more, no paging
MAX_TOPICS_PER_MESSAGE = 100
DEFAULT_TOKEN_TTL = 20 * 3600.0    # the venue's 24 h, less a margin: we rotate at 80 % of it
SUCCESS = "200000"


@dataclass(frozen=True)
class Options(VenueOptions):
    token_ttl: float = DEFAULT_TOKEN_TTL   # s a bullet token is trusted (below the venue's 24 h)

    def check(self) -> None:
        seconds_in("token_ttl", self.token_ttl, 86400, upper_open=True, note=" (tokens live 24 h)")


class Kucoin(Venue):
    """KuCoin spot, the venue contract filled in (venues/base.py says what each member is)."""

    NAME = NAME
    LIVE_WS_URL = "wss://ws-api-spot.kucoin.com"   # informational: the bullet answer names the endpoint
    LIVE_REST_URL = "https://api.kucoin.com"
    IDLE_TIMEOUT = 30.0          # our pings every pingInterval (18 s) draw a pong within pingTimeout (10 s)
    MAX_LIFETIME = 0             # the token's lifetime governs (session_ttl)
    GREETING = True              # the welcome message comes before any subscribe
    SEQUENTIAL_IDS = False       # tradeId == the shared matching-engine sequence: it jumps
    REPAIR_BY = "time"
    CANDLES_HAVE_TRADE_COUNT = False   # reconciliation compares volume (and high/low) only
    Options = Options
    BACKFILL_BY = None
    NO_BACKFILL = "its REST returns only the last 100 trades (market/histories has no time or id parameter)"


@Kucoin.member
def to_venue_symbol(symbol: str) -> str:
    return symbol


def _data(body: Any) -> Any:
    if not isinstance(body, dict) or "data" not in body:
        raise MalformedFrame(f"kucoin REST answer lacks data: {str(body)[:200]}")
    if str(body.get("code", SUCCESS)) != SUCCESS:
        raise MalformedFrame(f"kucoin REST error {body.get('code')}: {body.get('msg')}")
    return body["data"]


# --- instruments ---------------------------------------------------------------------------------

@Kucoin.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/api/v2/symbols")


@Kucoin.member
def parse_instruments(body: Any) -> list[Instrument]:
    # Canonical from the exchange's currency codes (like base/quote elsewhere); the API `symbol`
    # is what goes on the wire.
    try:
        return [Instrument(r["symbol"], f"{r['baseCurrency']}-{r['quoteCurrency']}")
                for r in _data(body) if r.get("enableTrading")]
    except (KeyError, TypeError) as e:
        raise MalformedFrame(f"kucoin symbols lack field {e}") from None


# --- session (bullet token) ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Session:
    token: str
    endpoint: str
    ping_interval: float     # seconds
    ping_timeout: float      # seconds


@Kucoin.member
def session_request(options: Options) -> HttpRequest:
    return HttpRequest("POST", "/api/v1/bullet-public")


@Kucoin.member
def parse_session(body: Any) -> Session:
    d = _data(body)
    try:
        server = d["instanceServers"][0]
        return Session(str(d["token"]), str(server["endpoint"]), int(server["pingInterval"]) / 1000.0,
                       int(server["pingTimeout"]) / 1000.0)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise MalformedFrame(f"kucoin bullet answer lacks or mistypes {e}: {str(d)[:200]}") from None


@Kucoin.member
def session_ttl(session: Session | None, options: Options | None = None) -> float:
    return float((options or {}).get("token_ttl", DEFAULT_TOKEN_TTL))


@Kucoin.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: Session | None = None) -> str:
    if session is None:
        raise ValueError("kucoin needs a bullet session (session_request) to connect")
    sep = "&" if "?" in session.endpoint else "?"
    # connectId: ours, echoed in the welcome; unique per connection.
    return f"{session.endpoint}{sep}token={session.token}&connectId={uuid.uuid4().hex}"


@Kucoin.member
def keepalive(options: Options, session: Session | None = None) -> tuple[float, str]:
    interval = session.ping_interval if session is not None else 18.0
    return interval, orjson.dumps({"id": uuid.uuid4().hex, "type": "ping"}).decode()


@Kucoin.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[str, str]]:
    out = []
    for i in range(0, len(venue_symbols), MAX_TOPICS_PER_MESSAGE):
        rid = str(first_id + len(out))
        topic = "/market/match:" + ",".join(venue_symbols[i:i + MAX_TOPICS_PER_MESSAGE])
        out.append((rid, orjson.dumps({"id": rid, "type": "subscribe", "topic": topic,
                                       "privateChannel": False, "response": True}).decode()))
    return out


@Kucoin.member
class Parser:
    """Frame -> events for one connection; `ready` once the server's welcome arrived."""

    __slots__ = ("symbols", "ready")

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols
        self.ready = False

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        msg = json_object(frame)
        typ = msg.get("type")
        if typ == "message":
            return self._message(msg, recv_us)
        if typ == "ack":
            return [Ack(msg.get("id"))]
        if typ == "pong":
            return [Ignored("pong")]
        if typ == "welcome":
            self.ready = True
            return [Ignored("welcome")]
        if typ == "error":
            code, text = msg.get("code"), str(msg.get("data", ""))
            if str(code) == "401":
                return [Reconnect(f"token rejected: {text}")]
            return [VenueError(code, text, msg.get("id"))]
        if not isinstance(typ, str):
            raise MalformedFrame("frame has no type")
        return [Unrecognised(f"type {typ[:40]}")]

    def _message(self, msg: dict, recv_us: int) -> list:
        topic, subject, d = msg.get("topic"), msg.get("subject"), msg.get("data")
        if not isinstance(topic, str) or not isinstance(d, dict):
            raise MalformedFrame("message lacks topic or data")
        if not topic.startswith("/market/match:"):
            return [Unrecognised(f"topic {topic.partition(':')[0][:40]}", "a data topic this parser does not read")]
        if subject != "trade.l3match":
            return [Unrecognised(f"subject {str(subject)[:40]}", "a match-topic subject this parser does not read")]
        try:
            vs = d["symbol"]
            sym = self.symbols.get(vs)
            if sym is None:
                return [UnknownSymbol(str(vs))]
            side = d["side"]
            if side not in ("buy", "sell"):
                raise MalformedFrame(f"trade side {str(side)[:20]!r}")
            tid = d.get("tradeId") or d["sequence"]
            if type(tid) is not str:
                tid = str(int_field(tid, "tradeId"))
            t = d["time"]          # ns as digit text: int() straight, int_field only for the other forms
            return [trade_tick(NAME, sym, (int(t) if type(t) is str and len(t) < 20 and t.isdigit() and t.isascii()
                                           else int_field(t, "time")) // 1000, d["price"], d["size"], side,
                               tid, recv_us)]
        except (KeyError, TypeError, ValueError) as e:
            raise MalformedFrame(f"trade.l3match lacks or mistypes field {e}") from None


# --- REST repair (last 100 trades only) ------------------------------------------------------------

@Kucoin.member
def history_by_time_request(venue_symbol: str, start_us: int, end_us: int | None, options: Options,
                            cursor: Any = None) -> HttpRequest:
    return HttpRequest("GET", "/api/v1/market/histories", {"symbol": venue_symbol})


@Kucoin.member
def parse_history_page(body: Any, symbol: str, recv_us: int, options: Options, start_us: int,
                       end_us: int | None) -> tuple[list[Tick], None, bool]:
    """The last 100 trades in [start_us, end_us]; complete only if they reach back past start_us
    (a trade strictly older: trades sharing start_us's µs may have been missed) or the venue's
    whole tape is shorter than a page."""
    rows = _data(body)
    if not isinstance(rows, list):
        raise MalformedFrame(f"kucoin histories is not a list: {str(rows)[:200]}")
    try:
        ticks = [Tick.trade(NAME, symbol, int(r["time"]) // 1000, r["price"], r["size"], r["side"],
                            str(r.get("tradeId") or r["sequence"]), recv_us, "rest")
                 for r in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise MalformedFrame(f"kucoin histories row lacks or mistypes {e}") from None
    ticks.sort(key=lambda t: (t.ts_us, int(t.trade_id) if t.trade_id.isdigit() else 0))
    complete = len(ticks) < HISTORY_LIMIT or (bool(ticks) and ticks[0].ts_us < start_us)
    ticks = [t for t in ticks if t.ts_us >= start_us and (end_us is None or t.ts_us <= end_us)]
    return ticks, None, complete


# --- candles (reconciliation) ----------------------------------------------------------------------

@Kucoin.member
def candles_request(venue_symbol: str, start_ms: int, end_ms: int) -> HttpRequest:
    return HttpRequest("GET", "/api/v1/market/candles", {"type": "1min", "symbol": venue_symbol,
                                                         "startAt": -(-start_ms // 1000), "endAt": end_ms // 1000})


@Kucoin.member
def parse_candles(body: Any) -> list[dict]:
    rows = _data(body)
    try:
        return sorted(({"minute_us": int(r[0]) * 1_000_000, "open": r[1], "close": r[2], "high": r[3],
                        "low": r[4], "volume": r[5], "trade_count": None} for r in rows),
                      key=lambda c: c["minute_us"])
    except (IndexError, TypeError, ValueError) as e:
        raise MalformedFrame(f"kucoin candle row malformed: {e}") from None
