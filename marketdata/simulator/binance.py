"""Binance Spot: WebSocket market streams and public REST, encoded from the reference sheet
(``../shared/reference/venues-binance-okx-kucoin-kraken-coinbase.md`` section 1), independently
of ``marketdata.venues``.

WebSocket (same port as REST):

* ``/ws`` (then ``SUBSCRIBE``), ``/ws/<stream>[/<stream>...]`` raw: payloads bare;
  ``/stream?streams=<s1>/<s2>`` combined: ``{"stream":..,"data":..}``; ``SET_PROPERTY combined``
  toggles the wrapping.
* ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY``
  with ``{"result":null,"id":..}`` acks and ``{"code":N,"msg":..,"id":..}`` errors (0 unknown
  property, 1 bad value type, 2 invalid request, 3 invalid JSON).
* Streams with data: ``<sym>@trade``, ``<sym>@aggTrade``, and the diff depth streams
  ``<sym>@depth`` (every 1000 ms; alias ``@depth@1000ms``) and ``<sym>@depth@100ms``
  (``depthUpdate`` with ``U``/``u`` = first/last book update id of the window, absolute
  quantities, ``"0"`` = delete; consistent with ``/api/v3/depth`` ``lastUpdateId``).  ``sym`` is
  lowercase; any other syntactically valid stream is accepted and silent, as are upper-case names.
* Server ping frame every ``ping_interval`` s; no pong (echoing the payload) within
  ``pong_timeout`` s -> TCP abort.
* More than ``max_incoming_per_s`` (5) client messages in one second (text frames, client
  pings and unsolicited pongs; pongs answering our pings are not counted) -> close 1008.

REST (JSON, numbers as strings, times in ms of simulated time, header ``X-MBX-USED-WEIGHT-1M``):
``/api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo``, ``/api/v3/trades``,
``/api/v3/historicalTrades``, ``/api/v3/aggTrades``, ``/api/v3/klines``, ``/api/v3/depth``.

Venue options (``SimulatorConfig.venue_options["binance"]``): ``max_incoming_per_s`` (5; 0 off),
``rest_weight_limit`` (6000 per wall minute; 0 off), ``max_streams`` (1024),
``break_symbols`` (``["BCCUSDT"]``: listed in exchangeInfo with status ``BREAK``, never trade),
``max_lifetime`` (wall seconds; off by default, Binance's is 24 h).
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_left, bisect_right
from collections import deque
from itertools import compress
from operator import mul
from typing import Any

import orjson
from aiohttp import web

from .book import ASK, BID
from .conn import HDR, WSConnection, text_header
from .faults import FaultError
from .generator import SCALE, split_canonical
from .venue import SliceInfo, Venue, fmt_units, VenueRestError

_M = ("true", "false")  # indexed by taker side: sell(0) -> buyer is maker
_KIND_TRADE = 0
_KIND_AGG = 1
_KIND_DEPTH = 2  # 1000 ms
_KIND_DEPTH100 = 3
_KINDS = {"trade": _KIND_TRADE, "aggTrade": _KIND_AGG}
_DEPTH_KINDS = {"depth": _KIND_DEPTH, "depth@1000ms": _KIND_DEPTH, "depth@100ms": _KIND_DEPTH100}
_METHODS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"

_INTERVALS_S = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
}
_WEIGHTS = {
    "/api/v3/ping": 1, "/api/v3/time": 1, "/api/v3/exchangeInfo": 20, "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25, "/api/v3/aggTrades": 4, "/api/v3/klines": 2,
}


class BinanceError(VenueRestError):
    pass


class _BState:
    """Per-connection Binance state."""

    __slots__ = ("streams", "combined", "data", "depth", "msg_times", "depth_drop", "depth_drop_sym")

    def __init__(self, combined: bool) -> None:
        self.streams: list[str] = []
        self.combined = combined
        self.data: list[tuple[str, int, int]] = []  # (stream, symbol index, kind): trade streams
        self.depth: list[tuple[str, int, int]] = []  # diff depth streams
        self.msg_times: deque[float] = deque()
        self.depth_drop = 0  # seq_gap fault: depth events still to withhold
        self.depth_drop_sym: int | None = None


class BinanceVenue(Venue):
    name = "binance"
    ts_quantum_us = 1000
    id_range = (1_000_000_000, 5_000_000_000)
    server_pings = True

    def __init__(self, sim, symbols, rate, options) -> None:
        super().__init__(sim, symbols, rate, options)
        self.msg_rate_limit = int(self.options.get("max_incoming_per_s", 5))
        self.weight_limit = int(self.options.get("rest_weight_limit", 6000))
        self.max_streams = int(self.options.get("max_streams", 1024))
        self.break_symbols = [str(s).upper() for s in self.options.get("break_symbols", ["BCCUSDT"])]
        self._vsym = [sp.base + sp.quote for sp in self.specs]
        self._lower = {v.lower(): i for i, v in enumerate(self._vsym)}
        self._tpl: dict[tuple[int, int, bool], str] = {}
        for si, v in enumerate(self._vsym):
            low = v.lower()
            trade = '{"e":"trade","E":%d,"s":"' + v + '","t":%d,"p":"%s","q":"%s","T":%d,"m":%s,"M":true}'
            agg = ('{"e":"aggTrade","E":%d,"s":"' + v
                   + '","a":%d,"p":"%s","q":"%s","f":%d,"l":%d,"T":%d,"m":%s,"M":true}')
            self._tpl[(si, _KIND_TRADE, False)] = trade
            self._tpl[(si, _KIND_AGG, False)] = agg
            self._tpl[(si, _KIND_TRADE, True)] = '{"stream":"' + low + '@trade","data":' + trade + "}"
            self._tpl[(si, _KIND_AGG, True)] = '{"stream":"' + low + '@aggTrade","data":' + agg + "}"
        self._pcache: list[dict[int, str]] = [{} for _ in self._vsym]
        self._qcache: list[dict[int, str]] = [{} for _ in self._vsym]
        self._weight_minute = 0
        self._weight_used = 0
        self.rate_limited_closes = 0
        self._rng = random.Random(f"{self.config.seed}:{self.name}:faults")
        # diff depth streams: one event stream per (symbol, speed), shared by all subscribers
        self._depth_cursor = {(si, k): b.update_id for si, b in enumerate(self.books)
                              for k in (_KIND_DEPTH, _KIND_DEPTH100)}
        self._depth_next = 0.0
        self._depth_step = 0
        self.depth_events = 0

    # ------------------------------------------------------------------ symbols / formatting
    def venue_symbol(self, si: int) -> str:
        return self._vsym[si]

    def _fp(self, si: int, units: int) -> str:
        c = self._pcache[si]
        s = c.get(units)
        if s is None:
            if len(c) > 100_000:
                c.clear()
            s = c[units] = f"{units // SCALE}.{units % SCALE:08d}"
        return s

    def _fq(self, si: int, units: int) -> str:
        c = self._qcache[si]
        s = c.get(units)
        if s is None:
            if len(c) > 100_000:
                c.clear()
            s = c[units] = f"{units // SCALE}.{units % SCALE:08d}"
        return s

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/ws", self._h_ws_raw)
        r.add_get("/ws/{streams:.+}", self._h_ws_raw)
        r.add_get("/stream", self._h_ws_combined)
        r.add_get("/api/v3/ping", self._rest(self._r_ping))
        r.add_get("/api/v3/time", self._rest(self._r_time))
        r.add_get("/api/v3/exchangeInfo", self._rest(self._r_exchange_info))
        r.add_get("/api/v3/trades", self._rest(self._r_trades))
        r.add_get("/api/v3/historicalTrades", self._rest(self._r_historical_trades))
        r.add_get("/api/v3/aggTrades", self._rest(self._r_agg_trades))
        r.add_get("/api/v3/klines", self._rest(self._r_klines))
        r.add_get("/api/v3/depth", self._rest(self._r_depth))
        # USD-M and COIN-M futures listings a client loads with its markets (ccxt): futures are not
        # simulated, so none are listed (the real hosts are fapi/dapi; a client points them here).
        for path in ("/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"):
            r.add_get(path, self._rest(lambda rq: {"timezone": "UTC", "serverTime": self.now_us() // 1000,
                                                   "rateLimits": [], "exchangeFilters": [], "symbols": []}))

    # ------------------------------------------------------------------ WebSocket
    async def _h_ws_raw(self, request: web.Request) -> web.StreamResponse:
        st = _BState(combined=False)
        path_streams = request.match_info.get("streams", "")
        self._set_streams(st, [s for s in path_streams.split("/") if s])
        return await self.ws_session(request, st)

    async def _h_ws_combined(self, request: web.Request) -> web.StreamResponse:
        st = _BState(combined=True)
        self._set_streams(st, [s for s in request.query.get("streams", "").split("/") if s])
        return await self.ws_session(request, st)

    def _set_streams(self, st: _BState, add: list[str] = (), remove: list[str] = ()) -> None:
        for s in add:
            if s not in st.streams:
                st.streams.append(s)
        for s in remove:
            if s in st.streams:
                st.streams.remove(s)
        data = []
        depth = []
        for s in st.streams:
            sym, _, kind = s.partition("@")
            si = self._lower.get(sym)
            if si is None:
                continue
            k = _KINDS.get(kind)
            if k is not None:
                data.append((s, si, k))
            elif kind in _DEPTH_KINDS and self.books:
                depth.append((s, si, _DEPTH_KINDS[kind]))
        st.data = data
        st.depth = depth

    def on_ws_control(self, conn: WSConnection, kind: str) -> None:
        if kind in ("ping", "unsolicited_pong"):
            self._count_msg(conn)

    def _count_msg(self, conn: WSConnection) -> bool:
        """Count one inbound message; close the connection when over the limit."""
        if self.msg_rate_limit <= 0:
            return True
        st: _BState = conn.venue_state
        now = time.monotonic()
        q = st.msg_times
        q.append(now)
        while q and now - q[0] > 1.0:
            q.popleft()
        if len(q) > self.msg_rate_limit:
            self.rate_limited_closes += 1
            conn.faults.append("incoming_rate_limit")
            conn.closed_reason = "incoming_rate_limit"
            self.spawn(conn.close(1008, "Too many requests"))
            return False
        return True

    def _reply(self, conn: WSConnection, obj: dict[str, Any]) -> None:
        conn.send_text(orjson.dumps(obj).decode())

    def _error(self, conn: WSConnection, code: int, msg: str, rid: Any = None, with_id: bool = True) -> None:
        obj: dict[str, Any] = {"code": code, "msg": msg}
        if with_id:
            obj["id"] = rid
        self._reply(conn, obj)

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        if not self._count_msg(conn):
            return
        st: _BState = conn.venue_state
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._error(conn, 3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}",
                        with_id=False)
            return
        if not isinstance(msg, dict):
            self._error(conn, 2, "Invalid request: expected a JSON object", with_id=False)
            return
        rid = msg.get("id")
        if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool) and -(2**63) <= rid < 2**63)
                or (isinstance(rid, str) and len(rid) <= 36 and rid.isalnum())):
            self._error(conn, 2, "Invalid request: request ID must be an unsigned integer or a string of up "
                                 "to 36 alphanumeric characters", None)
            return
        method = msg.get("method")
        params = msg.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                self._error(conn, 2, "Invalid request: 'params' must be an array of stream names", rid)
                return
            bad = [p for p in params if "@" not in p or not p.split("@", 1)[0] or not p.split("@", 1)[1]]
            if bad:
                self._error(conn, 2, f"Invalid request: invalid stream name {bad[0]!r}", rid)
                return
            if method == "SUBSCRIBE":
                new = [p for p in params if p not in st.streams]
                if len(st.streams) + len(set(new)) > self.max_streams:
                    self._error(conn, 2, f"Invalid request: too many streams (max {self.max_streams})", rid)
                    return
                self._set_streams(st, add=params)
            else:
                self._set_streams(st, remove=params)
            self._reply(conn, {"result": None, "id": rid})
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply(conn, {"result": list(st.streams), "id": rid})
        elif method == "SET_PROPERTY":
            if not isinstance(params, list) or len(params) != 2 or not isinstance(params[0], str):
                self._error(conn, 2, "Invalid request: SET_PROPERTY expects [name, value]", rid)
                return
            if params[0] != "combined":
                self._error(conn, 0, "Unknown property", rid)
                return
            if not isinstance(params[1], bool):
                self._error(conn, 1, "Invalid value type: expected Boolean", rid)
                return
            st.combined = params[1]
            self._reply(conn, {"result": None, "id": rid})
        elif method == "GET_PROPERTY":
            if not isinstance(params, list) or len(params) != 1 or params[0] != "combined":
                self._error(conn, 0, "Unknown property", rid)
                return
            self._reply(conn, {"result": st.combined, "id": rid})
        else:
            self._error(conn, 2, f"Invalid request: unknown variant `{method}`, expected one of {_METHODS}", rid)

    # ------------------------------------------------------------------ encoding / fan-out
    def on_slice(self, sl: SliceInfo) -> None:
        conns = self.conns
        if not conns:
            return
        E = sl.now_us // 1000
        ranges = sl.ranges
        cache: dict[tuple, tuple[bytes, int]] = {}
        for conn in list(conns.values()):
            if not conn.can_send:
                continue
            st: _BState = conn.venue_state
            if not st.data:
                continue
            parts = []
            frames = 0
            combined = st.combined
            for _stream, si, kind in st.data:
                rng = ranges.get(si)
                if rng is None:
                    continue
                target = conn.id if sl.conn_specific(si) else None
                key = (si, kind, combined, target)
                ent = cache.get(key)
                if ent is None:
                    skip = sl.withheld_for(si, target)
                    if kind == _KIND_TRADE:
                        ent = self._encode_trades(si, combined, rng[0], rng[1], E, skip)
                    else:
                        ent = self._encode_aggs(si, combined, rng[2], rng[3], E, skip)
                    cache[key] = ent
                if ent[1]:
                    parts.append(ent[0])
                    frames += ent[1]
            if frames:
                conn.write(b"".join(parts) if len(parts) > 1 else parts[0], frames, frames)

    def _encode_trades(self, si: int, combined: bool, i0: int, i1: int, E: int,
                       skip: list[tuple[int, int]]) -> tuple[bytes, int]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        tpl = self._tpl[(si, _KIND_TRADE, combined)]
        pc = self._pcache[si]
        qc = self._qcache[si]
        hdr = HDR
        parts: list[str] = []
        app = parts.append
        n = 0
        for i in range(i0, i1):
            if skip and any(lo <= i < hi for lo, hi in skip):
                continue
            p = px[i]
            ps = pc.get(p)
            if ps is None:
                ps = self._fp(si, p)
            q = qty[i]
            qs = qc.get(q)
            if qs is None:
                qs = self._fq(si, q)
            s = tpl % (E, ids[i], ps, qs, ts[i] // 1000, _M[side[i]])
            L = len(s)
            app(hdr[L] if L < 4096 else text_header(L))
            app(s)
            n += 1
        return "".join(parts).encode("latin-1"), n

    def _encode_aggs(self, si: int, combined: bool, o0: int, o1: int, E: int,
                     skip: list[tuple[int, int]]) -> tuple[bytes, int]:
        tape = self.tapes[si]
        ids, ts, px, qty, side, ostart = tape.ids, tape.ts, tape.px, tape.qty, tape.side, tape.order_start
        n_orders = len(ostart)
        n_trades = len(ids)
        first_agg = tape.spec.first_order_id
        tpl = self._tpl[(si, _KIND_AGG, combined)]
        hdr = HDR
        parts: list[str] = []
        app = parts.append
        n = 0
        for o in range(o0, o1):
            a = ostart[o]
            b = ostart[o + 1] if o + 1 < n_orders else n_trades
            if skip and any(lo < b and a < hi for lo, hi in skip):
                continue
            q = qty[a] if b - a == 1 else sum(qty[a:b])
            s = tpl % (E, first_agg + o, self._fp(si, px[a]), self._fq(si, q), ids[a], ids[b - 1], ts[a] // 1000,
                       _M[side[a]])
            L = len(s)
            app(hdr[L] if L < 4096 else text_header(L))
            app(s)
            n += 1
        return "".join(parts).encode("latin-1"), n

    # ------------------------------------------------------------------ diff depth streams
    def books_wanted(self) -> bool:
        return super().books_wanted() or any(c.venue_state.depth for c in self.conns.values()
                                             if c.venue_state is not None)

    def periodic(self, mono: float) -> None:
        if not self.books or mono < self._depth_next:
            return
        self._depth_next = self._depth_next + 0.1 if mono - self._depth_next < 0.1 else mono + 0.1
        self._depth_step += 1
        kinds = (_KIND_DEPTH100, _KIND_DEPTH) if self._depth_step % 10 == 0 else (_KIND_DEPTH100,)
        subs: dict[tuple[int, int], list[tuple[WSConnection, str]]] = {}
        for conn in self.conns.values():
            st: _BState = conn.venue_state
            if st.depth and conn.can_send:
                for stream, si, kind in st.depth:
                    subs.setdefault((si, kind), []).append((conn, stream))
        E = self.now_us() // 1000
        cursor = self._depth_cursor
        for si, book in enumerate(self.books):
            uid = book.update_id
            for kind in kinds:
                key = (si, kind)
                cur = cursor[key]
                if uid == cur:
                    continue
                cursor[key] = uid
                targets = subs.get(key)
                if not targets:
                    continue
                first, bids, asks = book.coalesced(cur)
                fp = self._fp
                b = ",".join('["%s","%s"]' % (fp(si, p), fmt_units(bids[p][0])) for p in sorted(bids, reverse=True))
                a = ",".join('["%s","%s"]' % (fp(si, p), fmt_units(asks[p][0])) for p in sorted(asks))
                payload = '{"e":"depthUpdate","E":%d,"s":"%s","U":%d,"u":%d,"b":[%s],"a":[%s]}' % (
                    E, self._vsym[si], first, uid, b, a)
                self.depth_events += 1
                for conn, stream in targets:
                    st = conn.venue_state
                    if st.depth_drop > 0 and st.depth_drop_sym in (None, si):
                        st.depth_drop -= 1
                        continue
                    if st.combined:
                        conn.send_text('{"stream":"%s","data":%s}' % (stream, payload))
                    else:
                        conn.send_text(payload)

    def book_view(self, si: int, depth: int | None = None) -> dict[str, Any]:
        view = super().book_view(si, depth)
        view["lastUpdateId"] = view["update_id"]
        return view

    def fmt_book_qty(self, si: int, units: int) -> str:
        return fmt_units(units)

    # ------------------------------------------------------------------ venue faults
    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _BState = conn.venue_state
        E = self.now_us() // 1000
        if kind == "malformed":
            count = int(params.get("count", 1))
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            if st.data:
                stream, si, _ = st.data[0]
            else:
                si = 0
                stream = self._vsym[0].lower() + "@trade"
            sym = self._vsym[si]
            for k in range(count):
                bad_json = variant == "invalid_json" or (variant == "mixed" and k % 2 == 0)
                if bad_json:
                    payload = '{"e":"trade","E":%d,"s":"%s","t":' % (E, sym)
                    if st.combined:
                        payload = '{"stream":"%s","data":%s' % (stream, payload)
                else:
                    payload = '{"e":"trade","E":%d,"s":"%s","T":%d,"M":true}' % (E, sym, E)
                    if st.combined:
                        payload = '{"stream":"%s","data":%s}' % (stream, payload)
                conn.send_text(payload)
        elif kind == "unknown_symbol":
            sym = str(params.get("symbol", "ZZZ-USDT"))
            if "-" in sym:
                base, quote = split_canonical(sym)
                sym = base + quote
            sym = sym.upper()
            if sym in self._vsym:
                raise FaultError(f"{sym} is listed; unknown_symbol needs an unlisted symbol")
            for _ in range(int(params.get("count", 1))):
                tid = self._rng.randrange(1_000_000, 9_000_000)
                payload = ('{"e":"trade","E":%d,"s":"%s","t":%d,"p":"1.23400000","q":"10.00000000","T":%d,'
                           '"m":false,"M":true}' % (E, sym, tid, E))
                if st.combined:
                    payload = '{"stream":"%s@trade","data":%s}' % (sym.lower(), payload)
                conn.send_text(payload)
        elif kind == "seq_gap":
            if not self.books:
                raise FaultError("binance: books are disabled")
            sym = params.get("symbol")
            si = self.symbol_index(sym) if sym else None
            if sym and si is None:
                raise FaultError(f"binance: unknown symbol {sym!r}")
            st.depth_drop += int(params.get("count", 1))
            st.depth_drop_sym = si
        elif kind == "notice":
            payload = '{"e":"serverShutdown","E":%d}' % E
            if st.combined:
                payload = '{"stream":"!serverShutdown","data":%s}' % payload
            conn.send_text(payload)
            close_after = params.get("close_after")
            if close_after is not None:
                self.spawn(self._close_later(conn, float(close_after)))
        else:
            raise FaultError(f"binance does not implement fault {kind!r}")

    async def _close_later(self, conn: WSConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await conn.close(1001, "server shutdown")

    # ------------------------------------------------------------------ REST plumbing
    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                body = fn(request)
            except BinanceError as e:
                return web.Response(body=orjson.dumps({"code": e.code, "msg": e.msg}), status=e.status,
                                    content_type="application/json")
            return web.Response(body=orjson.dumps(body), content_type="application/json")

        return handler

    def not_found_body(self, request: web.Request) -> Any:
        return {"code": -1000, "msg": "Not Found"}

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        if status in (429, 418):
            body = {"code": -1003, "msg": f"Too much request weight used; current limit is {self.weight_limit} "
                                          "request weight per 1 MINUTE. Please use WebSocket Streams for live "
                                          "updates to avoid polling the API."}
        elif status >= 500:
            body = {"code": -1000, "msg": "An unknown error occurred while processing the request."}
        else:
            body = {"code": -1000, "msg": "Simulated failure."}
        headers = {"X-MBX-USED-WEIGHT-1M": str(self._weight_used)}
        if retry_after is not None:
            headers["Retry-After"] = str(max(0, int(round(retry_after))))
        return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")

    def _request_weight(self, request: web.Request) -> int:
        path = request.path
        if path == "/api/v3/depth":
            try:
                limit = int(request.query.get("limit", "100"))
            except ValueError:
                limit = 100
            return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
        return _WEIGHTS.get(path, 1)

    def rest_before(self, request: web.Request) -> web.StreamResponse | None:
        now = time.time()
        minute = int(now // 60)
        if minute != self._weight_minute:
            self._weight_minute = minute
            self._weight_used = 0
        self._weight_used += self._request_weight(request)
        if self.weight_limit > 0 and self._weight_used > self.weight_limit:
            return self.rest_error(429, (minute + 1) * 60 - now)
        return None

    def rest_after(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(self._weight_used)

    def venue_stats(self) -> dict[str, Any]:
        return {"binance": {"used_weight_1m": self._weight_used, "rate_limited_closes": self.rate_limited_closes,
                            "depth_events": self.depth_events}}

    # ------------------------------------------------------------------ REST parameters
    def _sym(self, request: web.Request) -> int:
        name = request.query.get("symbol")
        if not name:
            raise BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        si = self._venue_sym_index(name)
        if si is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return si

    def _venue_sym_index(self, name: str) -> int | None:
        try:
            return self._vsym.index(name)
        except ValueError:
            return None

    signed_query_ints = True

    def bad_param(self, name: str) -> Exception:
        return BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                   "'^[0-9]{1,20}$'.")
    # ------------------------------------------------------------------ REST endpoints
    def _r_ping(self, request: web.Request) -> Any:
        return {}

    def _r_time(self, request: web.Request) -> Any:
        return {"serverTime": self.now_us() // 1000}

    def _symbol_info(self, si: int | None, vsym: str, base: str, quote: str, status: str) -> dict[str, Any]:
        if si is not None:
            spec = self.specs[si]
            tick, lot = spec.tick_units, spec.lot_units
        else:
            tick, lot = 1_000, 100_000
        return {
            "symbol": vsym, "status": status, "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
            "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": status == "TRADING",
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fmt_units(tick), "maxPrice": fmt_units(tick * 10**8),
                 "tickSize": fmt_units(tick)},
                {"filterType": "LOT_SIZE", "minQty": fmt_units(lot), "maxQty": "9000.00000000",
                 "stepSize": fmt_units(lot)},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
                 "stepSize": "0.00000000"},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": [], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _r_exchange_info(self, request: web.Request) -> Any:
        wanted: list[str] | None = None
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                wanted = orjson.loads(request.query["symbols"])
                if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
                    raise ValueError
            except (orjson.JSONDecodeError, ValueError):
                raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'.") from None
        entries = []
        for si, spec in enumerate(self.specs):
            entries.append((self._vsym[si], self._symbol_info(si, self._vsym[si], spec.base, spec.quote, "TRADING")))
        for bs in self.break_symbols:
            if bs not in self._vsym:
                base, quote = (bs[:-4], bs[-4:]) if bs.endswith("USDT") else (bs[:-3], bs[-3:])
                entries.append((bs, self._symbol_info(None, bs, base, quote, "BREAK")))
        if wanted is not None:
            known = dict(entries)
            if any(w not in known for w in wanted):
                raise BinanceError(-1121, "Invalid symbol.")
            symbols = [known[w] for w in wanted]
        else:
            symbols = [e for _, e in entries]
        return {
            "timezone": "UTC",
            "serverTime": self.now_us() // 1000,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.weight_limit or 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _trade_rows(self, si: int, i0: int, i1: int) -> list[dict[str, Any]]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        out = []
        for i in range(i0, i1):
            p, q = px[i], qty[i]
            out.append({
                "id": ids[i], "price": self._fp(si, p), "qty": self._fq(si, q),
                "quoteQty": fmt_units(p * q // SCALE), "time": ts[i] // 1000,
                "isBuyerMaker": not side[i], "isBestMatch": True,
            })
        return out

    def _r_trades(self, request: web.Request) -> Any:
        si = self._sym(request)
        limit = self.query_limit(request, 500, 1000)
        n = len(self.tapes[si])
        return self._trade_rows(si, max(0, n - limit), n)

    def _r_historical_trades(self, request: web.Request) -> Any:
        si = self._sym(request)
        limit = self.query_limit(request, 500, 1000)
        from_id = self.query_int(request, "fromId")
        tape = self.tapes[si]
        n = len(tape)
        if from_id is None:
            return self._trade_rows(si, max(0, n - limit), n)
        i0 = tape.index_of_id(from_id)
        return self._trade_rows(si, i0, min(n, i0 + limit))

    def _agg_rows(self, si: int, o0: int, o1: int) -> list[dict[str, Any]]:
        tape = self.tapes[si]
        ids, ts, px, qty, side, ostart = tape.ids, tape.ts, tape.px, tape.qty, tape.side, tape.order_start
        n_orders, n_trades = len(ostart), len(ids)
        first = tape.spec.first_order_id
        out = []
        for o in range(o0, o1):
            a = ostart[o]
            b = ostart[o + 1] if o + 1 < n_orders else n_trades
            out.append({
                "a": first + o, "p": self._fp(si, px[a]), "q": self._fq(si, sum(qty[a:b])), "f": ids[a],
                "l": ids[b - 1], "T": ts[a] // 1000, "m": not side[a], "M": True,
            })
        return out

    def _r_agg_trades(self, request: web.Request) -> Any:
        si = self._sym(request)
        limit = self.query_limit(request, 500, 1000)
        from_id = self.query_int(request, "fromId")
        start = self.query_int(request, "startTime")
        end = self.query_int(request, "endTime")
        tape = self.tapes[si]
        n_orders = len(tape.order_start)
        first = tape.spec.first_order_id
        if from_id is not None:
            if start is not None or end is not None:
                raise BinanceError(-1128, "Combination of optional parameters invalid.")
            o0 = min(max(getattr(tape.order_start, "base", 0), from_id - first), n_orders)
            return self._agg_rows(si, o0, min(n_orders, o0 + limit))
        if start is None and end is None:
            return self._agg_rows(si, max(0, n_orders - limit), n_orders)
        if start is not None and end is not None and end < start:
            raise BinanceError(-1128, "Combination of optional parameters invalid.")
        ts = tape.ts
        ostart = tape.order_start
        if start is not None:
            i0 = bisect_left(ts, start * 1000)
            o0 = bisect_left(ostart, i0)
            o1 = n_orders
            if end is not None:
                o1 = bisect_left(ostart, bisect_right(ts, end * 1000 + 999))
            return self._agg_rows(si, o0, min(o1, o0 + limit))
        o1 = bisect_left(ostart, bisect_right(ts, end * 1000 + 999))
        return self._agg_rows(si, max(0, o1 - limit), o1)

    def _kline(self, si: int, b_us: int, iv_us: int, i: int, j: int) -> list[Any]:
        tape = self.tapes[si]
        pxs = tape.px[i:j]
        qs = tape.qty[i:j]
        sd = tape.side[i:j]
        quote = sum(map(mul, pxs, qs)) // SCALE
        tb_q = list(compress(qs, sd))
        tb_p = list(compress(pxs, sd))
        tbq = sum(map(mul, tb_p, tb_q)) // SCALE
        return [
            b_us // 1000, self._fp(si, pxs[0]), self._fp(si, max(pxs)), self._fp(si, min(pxs)),
            self._fp(si, pxs[-1]), fmt_units(sum(qs)), (b_us + iv_us) // 1000 - 1, fmt_units(quote), j - i,
            fmt_units(sum(tb_q)), fmt_units(tbq), "0",
        ]

    def _r_klines(self, request: web.Request) -> Any:
        si = self._sym(request)
        interval = request.query.get("interval")
        if not interval:
            raise BinanceError(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in _INTERVALS_S:
            raise BinanceError(-1120, "Invalid interval.")
        iv = _INTERVALS_S[interval] * 1_000_000
        limit = self.query_limit(request, 500, 1000)
        start = self.query_int(request, "startTime")
        end = self.query_int(request, "endTime")
        ts = self.tapes[si].ts
        n = len(ts)
        first = self.tapes[si].first
        # a kline is returned when its open time lies in [startTime, endTime]
        hi = n if end is None else bisect_left(ts, (end * 1000) - (end * 1000) % iv + iv)
        rows: list[list[Any]] = []
        if start is not None:
            s_us = start * 1000
            s_us = s_us if s_us % iv == 0 else s_us - s_us % iv + iv
            i = bisect_left(ts, s_us)
            while i < hi and len(rows) < limit:
                b = ts[i] - ts[i] % iv
                j = bisect_left(ts, b + iv, i, hi)
                rows.append(self._kline(si, b, iv, i, j))
                i = j
            return rows
        j = hi
        while j > first and len(rows) < limit:
            b = ts[j - 1] - ts[j - 1] % iv
            i = max(first, bisect_left(ts, b, 0, j))
            rows.append(self._kline(si, b, iv, i, j))
            j = i
        rows.reverse()
        return rows

    def _r_depth(self, request: web.Request) -> Any:
        si = self._sym(request)
        limit = self.query_limit(request, 100, 5000)
        if not self.books:
            raise BinanceError(-1000, "An unknown error occurred while processing the request.", 500)
        self.ensure_books()
        book = self.books[si]
        fp = self._fp
        return {
            "lastUpdateId": book.update_id,
            "bids": [[fp(si, p), fmt_units(q)] for p, q in book.top(BID, limit)],
            "asks": [[fp(si, p), fmt_units(q)] for p, q in book.top(ASK, limit)],
        }
