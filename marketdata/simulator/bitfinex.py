"""Bitfinex WebSocket v2 public trades and public REST v2, encoded from the reference sheet
(``../shared/reference/venues-bybit-bitfinex-gateio-bitstamp-alpaca.md`` section 2), independently
of ``marketdata.venues``.

Names: canonical ``BTC-USD`` <-> ``tBTCUSD``; Bitfinex's own currency tickers on the wire
(``USDT`` -> ``UST``, ``USDC`` -> ``UDC``, ``BCH`` -> ``BCHN``), so ``BTC-USDT`` is ``tBTCUST``;
a base or quote that is not 3 letters gives ``tBASE:QUOTE`` (``tDOGE:USD``).

WebSocket (path ``/ws/2``, same port as REST):

* on connect ``{"event":"info","version":2,"serverId":..,"platform":{"status":1}}`` (status 0
  while a maintenance window is open);
* ``{"event":"conf","flags":N}`` -> ``{"event":"conf","status":"OK","flags":N}``; ``SEQ_ALL``
  (65536) appends a per-connection sequence number (+1 per channel frame, across channels,
  heartbeats included) to every channel frame; ``TIMESTAMP`` (32768) appends the sim time in ms
  after it (the order of the two is UNCONFIRMED). Other flags are acknowledged and ignored;
* ``{"event":"subscribe","channel":"trades","symbol":"tBTCUSD"}`` -> ``{"event":"subscribed",
  "channel":"trades","chanId":..,"symbol":"tBTCUSD","pair":"BTCUSD"}``: the chanId is drawn at
  random per subscription, never equal to one live on any connection nor one used recently, so
  it differs on every connection; then the snapshot ``[chanId,[[ID,MTS,AMOUNT,PRICE],..]]`` of
  the last ``snapshot_size`` (30) trades of the tape, newest first, on every (re)subscribe
  (trades withheld by faults included: the venue has them);
* live: one frame per trade, ``[chanId,"te",[ID,MTS,AMOUNT,PRICE]]`` at once and the same trade
  again as ``[chanId,"tu",[...]]`` ``tu_delay`` (1.0) wall seconds later (sent to whoever is
  subscribed then). JSON numbers; AMOUNT negative for a taker sell; MTS in ms;
* ``[chanId,"hb"]`` on a channel that sent nothing for ``heartbeat_interval`` (15) wall s;
* ``{"event":"ping","cid":N}`` -> ``{"event":"pong","ts":<sim ms>,"cid":N}``;
  ``{"event":"unsubscribe","chanId":N}`` -> ``{"event":"unsubscribed","status":"OK","chanId":N}``;
* errors ``{"event":"error","msg":..,"code":..}`` (subscribe errors echo channel/symbol):
  10000 unknown event / bad JSON, 10001 unknown pair, 10300 channel the simulator does not
  serve (``book``, ``candles``), 10301 already subscribed, 10302 unknown channel, 10305 more than
  ``max_channels`` (25) channels, 10400/10401 unsubscribe failures;
* at most ``max_connections_per_min`` (20) WebSocket connections per rolling wall minute; more
  get HTTP 429 before the upgrade.

Trade ids are platform-wide on Bitfinex: increasing per pair but not consecutive. The wire id is
a pure function of the tape's per-symbol id, strictly increasing per symbol with jumps of 1..3
strides (stride = number of symbols, so ids are unique across symbols); a missed trade cannot be
seen from the ids, only from ``SEQ_ALL`` or by time. The ground truth holds the wire ids.

Maintenance (fault ``notice`` with ``code``): 20051 -> ``{"event":"info","code":20051,"msg":
"Stop/Restart Websocket Server (please reconnect)"}`` (``close_after`` s then closes).
20060 opens a venue-wide window: the targeted connections get the 20060 info; every channel
subscribed before the window ends carries heartbeats only, never data again (UNCONFIRMED; the
strict reading of "unsubscribe/resubscribe all channels" after 20061); new connections get
platform status 0; REST (except ``/v2/platform/status``) answers 503 ``["error",20060,
"maintenance"]`` (option ``maintenance_rest``, True). The window ends after ``duration`` wall s or
with a ``notice`` ``code`` 20061; every open connection then gets the 20061 info. Trades go on
being generated (the tape, REST history and ground truth have them).

REST (errors ``["error",code,"msg"]``): ``/v2/platform/status`` -> ``[1]``;
``/v2/conf/{keys}``: one or several comma-joined keys (ccxt sends them so), answered with one list
element per key: ``pub:list:pair:exchange`` -> ``[["BTCUSD","BTCUST",..]]``, ``pub:list:pair:margin``
(every simulated pair), ``pub:info:pair`` (``[PAIR,[.,.,.,MIN_SIZE,MAX_SIZE,..]]``),
``pub:list:pair:futures`` / ``:securities`` / ``pub:info:pair:futures`` (empty: not simulated),
``pub:list:currency`` (+ ``:margin``), the currency maps ``pub:map:currency:sym``
(``[[["UST","USDT"],..]]``), ``:label``, ``:unit``, ``:undl``, ``:pool``, ``:explorer``,
``:tx:fee``, ``pub:map:tx:method``, ``pub:info:tx:status``; an unknown key -> 500 ``["error",10020,..]``; ``/v2/trades/{sym}/hist?limit=&start=&end=
&sort=`` rows ``[ID,MTS,AMOUNT,PRICE]``, limit default 125, max 10000, ``start``/``end`` ms
inclusive, ``sort`` -1 newest first (default) / 1 oldest first, ties in a ms by id;
``/v2/candles/trade:{tf}:{sym}/hist|last`` rows ``[MTS,OPEN,CLOSE,HIGH,LOW,VOLUME]`` (O,C,H,L order),
only buckets with trades, limit default 100, max 10000, sort -1 default, no trade count.

Venue options: ``heartbeat_interval`` (15.0), ``tu_delay`` (1.0), ``snapshot_size`` (30),
``max_channels`` (25), ``max_connections_per_min`` (20; 0 off), ``maintenance_rest`` (True), plus
``book_depth_ticks``/``book_density`` (books are not served on the WebSocket).

Faults: ``skip_ids`` (the te and tu frames of the withheld trades are lost: with ``SEQ_ALL``
their sequence numbers are consumed, so the sequence jumps), ``seq_gap`` (the next ``count``
channel frames of the connection, any kind, are lost the same way), ``silent_drop``, ``close``,
``abort``, ``malformed`` (no sequence number), ``unknown_symbol`` (a ``te`` frame on a chanId the
connection never subscribed), ``notice`` (above), ``rest_fail`` / ``rest_delay``.
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_left, bisect_right
from collections import deque
from typing import Any

import orjson
from aiohttp import web

from .conn import WSConnection, frame_text
from .faults import FaultError
from .generator import split_canonical
from .venue import SliceInfo, Venue, VenueRestError, decimals_of, fmt_units, strip_zeros

SEQ_ALL = 65536
TIMESTAMP = 32768
_TO_BFX = {"USDT": "UST", "USDC": "UDC", "BCH": "BCHN"}
# pub:map:currency:label and pub:map:tx:method entries for the common currencies; others use the ticker
_LABELS = {"BTC": "Bitcoin", "ETH": "Ethereum", "UST": "Tether USDt", "UDC": "USD Coin", "USD": "US Dollar",
           "SOL": "Solana", "DOGE": "Dogecoin", "XRP": "Ripple", "LTC": "Litecoin", "EUR": "Euro"}
_METHODS = {"BTC": "BITCOIN", "ETH": "ETHEREUM", "UST": "TETHERUSE", "UDC": "UDC", "SOL": "SOL",
            "DOGE": "DOGE", "XRP": "XRP", "LTC": "LITECOIN"}
_ID_BASE = 1_400_000_000
_ID_JUMPS = 3
_TIMEFRAMES = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "3h": 10800, "6h": 21600,
               "12h": 43200, "1D": 86400}
_INFO_MSGS = {20051: "Stop/Restart Websocket Server (please reconnect)",
              20060: "Entering in Maintenance mode. Please pause any activity and resume after receiving "
                     "the info message 20061 (it should take 120 seconds at most).",
              20061: "Maintenance ended. You can resume normal activity. It is advised to unsubscribe/subscribe "
                     "again all channels."}


class BitfinexError(VenueRestError):
    pass


class _BfState:
    __slots__ = ("chans", "trades", "flags", "seq", "last_send", "stale", "drop_frames")

    def __init__(self) -> None:
        self.chans: dict[int, int] = {}       # chanId -> symbol index
        self.trades: dict[int, int] = {}      # symbol index -> chanId
        self.flags = 0
        self.seq = 0
        self.last_send: dict[int, float] = {}
        self.stale: set[int] = set()          # channels from before a maintenance end: heartbeats only
        self.drop_frames = 0


class BitfinexVenue(Venue):
    name = "bitfinex"
    ts_quantum_us = 1000
    id_range = (100_000_000, 900_000_000)
    server_pings = False

    def __init__(self, sim, symbols, rate, options) -> None:
        super().__init__(sim, symbols, rate, options)
        o = self.options
        self.hb_interval = float(o.get("heartbeat_interval", 15.0))
        self.tu_delay = float(o.get("tu_delay", 1.0))
        self.snapshot_size = int(o.get("snapshot_size", 30))
        self.max_channels = int(o.get("max_channels", 25))
        self.max_conn_per_min = int(o.get("max_connections_per_min", 20))
        self.maintenance_rest = bool(o.get("maintenance_rest", True))
        self._pairs: list[str] = []
        for sp in self.specs:
            b, q = _TO_BFX.get(sp.base, sp.base), _TO_BFX.get(sp.quote, sp.quote)
            self._pairs.append(b + q if len(b) == 3 and len(q) == 3 else f"{b}:{q}")
        self._by_tsym = {"t" + p: si for si, p in enumerate(self._pairs)}
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]
        self._qdec = [decimals_of(sp.lot_units) for sp in self.specs]
        self._first = [sp.first_trade_id for sp in self.specs]
        self._nsym = len(self.specs)
        self._rng = random.Random(f"{self.config.seed}:{self.name}:chans")
        self._recent_cids: deque[int] = deque(maxlen=10_000)
        self._recent_set: set[int] = set()
        self._opens: deque[float] = deque()
        self._tu: deque[tuple[float, SliceInfo, dict[int, list[str]]]] = deque()
        self._hb_next = 0.0
        self.maintenance = False
        self._maint_end: float | None = None
        self.heartbeats = 0
        self.tu_sent = 0
        self.snapshots = 0
        self.rejected_connections = 0

    # ------------------------------------------------------------------ names / formatting
    def venue_symbol(self, si: int) -> str:
        return "t" + self._pairs[si]

    def wire_id(self, si: int, tape_id: int) -> int:
        n = tape_id - self._first[si]
        return _ID_BASE + (n * _ID_JUMPS + ((n * 2654435761) >> 11) % _ID_JUMPS) * self._nsym + si

    def fmt_trade_id(self, si: int, trade_id: int) -> str:
        return str(self.wire_id(si, trade_id))

    def fmt_trade_price(self, si: int, units: int) -> str:
        return strip_zeros(fmt_units(units, self._pdec[si]))

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return strip_zeros(fmt_units(units, self._qdec[si]))

    def _row(self, si: int, i: int) -> str:
        t = self.tapes[si]
        q = self.qty_str[si][t.qty[i]]
        return "[%d,%d,%s,%s]" % (self.wire_id(si, t.ids[i]), t.ts[i] // 1000, q if t.side[i] else "-" + q,
                                  self.px_str[si][t.px[i]])

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/ws/2", self._h_ws)
        r.add_get("/v2/platform/status", self._rest(self._r_status))
        r.add_get("/v2/conf/{key}", self._rest(self._r_conf))
        r.add_get("/v2/trades/{symbol}/hist", self._rest(self._r_trades))
        r.add_get("/v2/candles/{key}/{section}", self._rest(self._r_candles))

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._error_response(10020, "websocket only", 400)
        now = time.monotonic()
        while self._opens and now - self._opens[0] > 60.0:
            self._opens.popleft()
        if self.max_conn_per_min and len(self._opens) >= self.max_conn_per_min:
            self.rejected_connections += 1
            return self._error_response(11010, "ratelimit: error", 429)
        self._opens.append(now)
        return await self.ws_session(request, _BfState())

    # ------------------------------------------------------------------ WebSocket control
    def _send(self, conn: WSConnection, obj: dict[str, Any]) -> None:
        conn.send_text(orjson.dumps(obj).decode())

    def _error(self, conn: WSConnection, code: int, msg: str, **echo: Any) -> None:
        self._send(conn, {"event": "error", **echo, "msg": msg, "code": code})

    def on_ws_open(self, conn: WSConnection) -> None:
        self._send(conn, {"event": "info", "version": 2, "serverId": f"{self._rng.getrandbits(64):016x}",
                          "platform": {"status": 0 if self.maintenance else 1}})

    def _new_chan_id(self) -> int:
        live = {cid for c in self.conns.values() for cid in c.venue_state.chans}
        while True:
            cid = self._rng.randrange(1, 400_000)
            if cid not in live and cid not in self._recent_set:
                break
        if len(self._recent_cids) == self._recent_cids.maxlen:
            self._recent_set.discard(self._recent_cids[0])
        self._recent_cids.append(cid)
        self._recent_set.add(cid)
        return cid

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _BfState = conn.venue_state
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            self._error(conn, 10000, "Unknown event")
            return
        ev = msg.get("event")
        if ev == "ping":
            self._send(conn, {"event": "pong", "ts": self.now_us() // 1000, **({"cid": msg["cid"]} if "cid" in msg
                                                                                else {})})
        elif ev == "conf":
            flags = msg.get("flags")
            if not isinstance(flags, int) or isinstance(flags, bool) or flags < 0:
                self._error(conn, 10000, "conf: invalid flags")
                return
            st.flags = flags
            self._send(conn, {"event": "conf", "status": "OK", "flags": flags})
        elif ev == "subscribe":
            self._subscribe(conn, st, msg)
        elif ev == "unsubscribe":
            cid = msg.get("chanId")
            if not isinstance(cid, int) or cid not in st.chans:
                self._error(conn, 10401, "unsubscribe: invalid", chanId=cid)
                return
            si = st.chans.pop(cid)
            st.trades.pop(si, None)
            st.last_send.pop(cid, None)
            st.stale.discard(cid)
            self._send(conn, {"event": "unsubscribed", "status": "OK", "chanId": cid})
        else:
            self._error(conn, 10000, "Unknown event")

    def _subscribe(self, conn: WSConnection, st: _BfState, msg: dict) -> None:
        channel, symbol = msg.get("channel"), msg.get("symbol")
        echo = {"channel": channel, "symbol": symbol}
        if channel in ("book", "candles", "ticker", "status"):
            self._error(conn, 10300, f"subscribe: {channel} is not served by the simulator", **echo)
            return
        if channel != "trades":
            self._error(conn, 10302, "subscribe: unknown channel", **echo)
            return
        si = self._by_tsym.get(symbol) if isinstance(symbol, str) else None
        if si is None:
            self._error(conn, 10001, "Unknown pair", **echo)
            return
        if si in st.trades:
            self._error(conn, 10301, "subscribe: dup", **echo)
            return
        if len(st.chans) >= self.max_channels:
            self._error(conn, 10305, "Reached limit of open channels", **echo)
            return
        cid = self._new_chan_id()
        st.chans[cid] = si
        st.trades[si] = cid
        if self.maintenance:
            st.stale.add(cid)
        now = time.monotonic()
        st.last_send[cid] = now
        self._send(conn, {"event": "subscribed", "channel": "trades", "chanId": cid, "symbol": symbol,
                          "pair": self._pairs[si]})
        if cid in st.stale:
            return
        n = len(self.tapes[si])
        rows = ",".join(self._row(si, i) for i in range(n - 1, max(0, n - self.snapshot_size) - 1, -1))
        text = self._frame(st, cid, "[" + rows + "]", now)
        self.snapshots += 1
        if text is not None:
            conn.send_text(text)

    def _frame(self, st: _BfState, cid: int, body: str, now: float) -> str | None:
        """One channel frame ``[cid,body(,seq)(,mts)]``; None when a fault loses it (its sequence
        number is consumed all the same)."""
        st.last_send[cid] = now
        flags = st.flags
        tail = ""
        if flags & SEQ_ALL:
            st.seq += 1
            tail = ",%d" % st.seq
        if st.drop_frames > 0:
            st.drop_frames -= 1
            return None
        if flags & TIMESTAMP:
            tail += ",%d" % (self.now_us() // 1000)
        return "[%d,%s%s]" % (cid, body, tail)

    # ------------------------------------------------------------------ trades
    def _send_trades(self, sl: SliceInfo, rows: dict[int, list[str]], kind: str, now: float) -> None:
        for conn in list(self.conns.values()):
            if not conn.can_send:
                continue
            st: _BfState = conn.venue_state
            if not st.trades:
                continue
            frames: list[str] = []
            trades = 0
            for si, cid in st.trades.items():
                rng = sl.ranges.get(si)
                if rng is None or cid in st.stale:
                    continue
                i0, i1 = rng[0], rng[1]
                skip = sl.withheld_for(si, conn.id if sl.conn_specific(si) else None)
                srows = rows.get(si)
                if srows is None:
                    srows = rows[si] = [self._row(si, i) for i in range(i0, i1)]
                for k, row in enumerate(srows):
                    if skip and any(lo <= i0 + k < hi for lo, hi in skip):
                        if st.flags & SEQ_ALL:
                            st.seq += 1         # the frame is lost on the way: its number is gone
                        continue
                    text = self._frame(st, cid, kind + row, now)
                    if text is not None:
                        frames.append(frame_text(text))
                        trades += 1
            if frames:
                conn.write("".join(frames).encode("latin-1"), len(frames), trades if kind == '"te",' else 0)
                if kind == '"tu",':
                    self.tu_sent += len(frames)

    def on_slice(self, sl: SliceInfo) -> None:
        if not self.conns:
            return
        now = time.monotonic()
        rows: dict[int, list[str]] = {}
        self._send_trades(sl, rows, '"te",', now)
        if self.tu_delay >= 0:
            self._tu.append((now + self.tu_delay, sl, rows))

    def periodic(self, mono: float) -> None:
        while self._tu and self._tu[0][0] <= mono:
            _, sl, rows = self._tu.popleft()
            self._send_trades(sl, rows, '"tu",', mono)
        if self._maint_end is not None and mono >= self._maint_end:
            self._end_maintenance()
        if self.hb_interval > 0 and mono >= self._hb_next:
            self._hb_next = mono + min(0.05, self.hb_interval / 4)
            for conn in list(self.conns.values()):
                if not conn.can_send:
                    continue
                st: _BfState = conn.venue_state
                for cid, last in list(st.last_send.items()):
                    if mono - last >= self.hb_interval:
                        self.heartbeats += 1
                        text = self._frame(st, cid, '"hb"', mono)
                        if text is not None:
                            conn.send_text(text)

    # ------------------------------------------------------------------ maintenance
    def _info(self, conn: WSConnection, code: int) -> None:
        self._send(conn, {"event": "info", "code": code, "msg": _INFO_MSGS[code]})

    def _end_maintenance(self) -> None:
        self.maintenance = False
        self._maint_end = None
        for conn in list(self.conns.values()):
            if conn.can_send:
                self._info(conn, 20061)

    # ------------------------------------------------------------------ faults
    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _BfState = conn.venue_state
        count = int(params.get("count", 1))
        now = self.now_us()
        if kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            cid = next(iter(st.chans), 1)
            for k in range(count):
                bad_json = variant == "invalid_json" or (variant == "mixed" and k % 2 == 0)
                conn.send_text('[%d,"te",[%d,' % (cid, now) if bad_json else '[%d,"te",[%d]]' % (cid, now))
        elif kind == "unknown_symbol":
            name = str(params.get("symbol", "ZZZ-USD")).upper()
            base, quote = split_canonical(name)
            if f"{base}-{quote}" in self.symbols:
                raise FaultError(f"{base}-{quote} is listed; unknown_symbol needs an unlisted symbol")
            for _ in range(count):
                cid = self._new_chan_id()
                text = self._frame(st, cid, '"te",[%d,%d,1.5,1.234]' % (self._rng.randrange(1, 10**9), now // 1000),
                                   time.monotonic())
                st.last_send.pop(cid, None)
                if text is not None:
                    conn.send_text(text)
        elif kind == "notice":
            code = int(params.get("code", 20051))
            if code not in _INFO_MSGS:
                raise FaultError("bitfinex notice code must be 20051, 20060 or 20061")
            if code == 20061:
                if self.maintenance:
                    self._end_maintenance()
                return
            self._info(conn, code)
            if code == 20060:
                self.maintenance = True
                st.stale |= set(st.chans)
                if params.get("duration") is not None:
                    self._maint_end = time.monotonic() + float(params["duration"])
            elif params.get("close_after") is not None:
                self.spawn(self._close_later(conn, float(params["close_after"])))
        elif kind == "seq_gap":
            st.drop_frames += count
        else:
            raise FaultError(f"bitfinex does not implement fault {kind!r}")

    async def _close_later(self, conn: WSConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await conn.close(1001, "restart")

    def venue_stats(self) -> dict[str, Any]:
        return {"bitfinex": {"heartbeats": self.heartbeats, "tu_sent": self.tu_sent, "snapshots": self.snapshots,
                             "maintenance": self.maintenance, "rejected_connections": self.rejected_connections}}

    # ------------------------------------------------------------------ REST plumbing
    signed_query_ints = True

    def bad_param(self, name: str) -> Exception:
        return BitfinexError(10020, f"{name}: invalid", 500)

    @staticmethod
    def _error_response(code: int, msg: str, status: int) -> web.Response:
        return web.Response(body=orjson.dumps(["error", code, msg]), status=status, content_type="application/json")

    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                body = fn(request)
            except VenueRestError as e:
                return self._error_response(e.code, e.msg, e.status)
            if isinstance(body, str):
                return web.Response(text=body, content_type="application/json")
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        return handler

    def not_found_body(self, request: web.Request) -> Any:
        return ["error", 10020, "not found"]

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        code, msg = (11010, "ratelimit: error") if status == 429 else (10020, "simulated failure")
        resp = self._error_response(code, msg, status)
        if retry_after is not None:
            resp.headers["Retry-After"] = str(max(0, int(round(retry_after))))
        return resp

    def rest_before(self, request: web.Request) -> web.StreamResponse | None:
        if self.maintenance and self.maintenance_rest and request.path != "/v2/platform/status":
            return self._error_response(20060, "maintenance", 503)
        return None

    def _symbol(self, name: str) -> int:
        si = self._by_tsym.get(name)
        if si is None:
            raise BitfinexError(10020, "symbol: invalid", 500)
        return si

    def _window(self, request: web.Request, default: int) -> tuple[int | None, int | None, int, bool]:
        start = self.query_int(request, "start")
        end = self.query_int(request, "end")
        limit = self.query_limit(request, default, 10_000)
        sort = self.query_int(request, "sort", -1)
        return start, end, limit, sort == 1

    # ------------------------------------------------------------------ REST endpoints
    def _r_status(self, request: web.Request) -> Any:
        return [0 if self.maintenance else 1]

    def _currencies(self) -> list[str]:
        ccys: set[str] = set()
        for p in self._pairs:
            ccys.update(p.split(":") if ":" in p else (p[:3], p[3:]))
        return sorted(ccys)

    def _conf_value(self, key: str, si_lot: dict[str, int]) -> Any:
        """One configuration key's value (the element the real venue puts in the answer's list)."""
        ccys = self._currencies()
        if key in ("pub:list:pair:exchange", "pub:list:pair:margin"):
            return sorted(self._pairs)          # every simulated pair is margin-enabled
        if key == "pub:info:pair":
            # [PAIR, [_, _, _, MIN_ORDER_SIZE, MAX_ORDER_SIZE, _, _, _, INITIAL_MARGIN, MIN_MARGIN]]
            return [[p, [None, None, None, strip_zeros(fmt_units(si_lot[p])), "2000.0", None, None, None,
                         0.2, 0.1]] for p in sorted(self._pairs)]
        if key in ("pub:list:pair:futures", "pub:list:pair:securities", "pub:info:pair:futures",
                   "pub:map:currency:undl", "pub:map:currency:unit"):
            return []                           # futures and securities are not simulated
        if key in ("pub:list:currency", "pub:list:currency:margin"):
            return ccys
        if key == "pub:map:currency:sym":
            return [[v, k] for k, v in sorted(_TO_BFX.items())]
        if key == "pub:map:currency:label":
            return [[c, _LABELS.get(c, c)] for c in ccys]
        if key == "pub:map:currency:pool":
            return [[c, "ETH"] for c in ccys if c in ("UST", "UDC")]
        if key == "pub:map:currency:explorer":
            return [[c, [f"https://explorer.example/{c.lower()}", f"https://explorer.example/{c.lower()}/address/VAL",
                         f"https://explorer.example/{c.lower()}/tx/VAL"]] for c in ccys if c != "USD"]
        if key == "pub:map:currency:tx:fee":
            return [[c, [0, 0.0004]] for c in ccys if c != "USD"]
        if key == "pub:map:tx:method":
            return [[_METHODS.get(c, c), [c]] for c in ccys if c != "USD"]
        if key == "pub:info:tx:status":
            # [METHOD, _, DEPOSIT (1 = active), WITHDRAWAL (1 = active), _, ...]
            return [[_METHODS.get(c, c), 1, 1, None, None, None, None, 0, 0, None, None, 0] for c in ccys if c != "USD"]
        raise BitfinexError(10020, "conf: invalid key", 500)

    def _r_conf(self, request: web.Request) -> Any:
        # Like the real venue: several comma-joined keys in one request, one list element per key.
        keys = request.match_info["key"].split(",")
        lots = {p: self.specs[si].lot_units for si, p in enumerate(self._pairs)}
        return [self._conf_value(k, lots) for k in keys]

    def _r_trades(self, request: web.Request) -> Any:
        si = self._symbol(request.match_info["symbol"])
        start, end, limit, asc = self._window(request, 125)
        ts = self.tapes[si].ts
        lo = bisect_left(ts, start * 1000) if start is not None else self.tapes[si].first
        hi = bisect_right(ts, end * 1000 + 999) if end is not None else len(ts)
        idx = range(lo, min(hi, lo + limit)) if asc else range(hi - 1, max(lo, hi - limit) - 1, -1)
        return "[" + ",".join(self._row(si, i) for i in idx) + "]"

    def _r_candles(self, request: web.Request) -> Any:
        parts = request.match_info["key"].split(":", 2)
        section = request.match_info["section"]
        if len(parts) != 3 or parts[0] != "trade" or parts[1] not in _TIMEFRAMES or section not in ("hist", "last"):
            raise BitfinexError(10020, "key: invalid", 500)
        si = self._symbol(parts[2])
        start, end, limit, asc = self._window(request, 100)
        iv = _TIMEFRAMES[parts[1]] * 1_000_000
        if section == "last":
            start, end, limit, asc = None, None, 1, False
        tape = self.tapes[si]
        rows = []
        for b, i, j in self.buckets(si, iv, None if start is None else start * 1000,
                                    None if end is None else end * 1000, limit, not asc):
            pxs = tape.px[i:j]
            rows.append("[%d,%s,%s,%s,%s,%s]" % (
                b // 1000, self.fmt_trade_price(si, pxs[0]), self.fmt_trade_price(si, pxs[-1]),
                self.fmt_trade_price(si, max(pxs)), self.fmt_trade_price(si, min(pxs)),
                strip_zeros(fmt_units(sum(tape.qty[i:j])))))
        if section == "last":
            return rows[0] if rows else "[]"
        return "[" + ",".join(rows) + "]"
