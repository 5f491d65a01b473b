"""KuCoin Spot (classic public WebSocket with bullet tokens) and public REST, encoded from the
reference sheet (``../shared/reference/venues-binance-okx-kucoin-kraken-coinbase.md`` section 3),
independently of ``marketdata.venues``.

Token flow: ``POST /api/v1/bullet-public`` -> ``{"code":"200000","data":{"token":..,
"instanceServers":[{"endpoint":"ws://host:port/<path>","encrypt":false,"protocol":"websocket",
"pingInterval":ms,"pingTimeout":ms}]}}``.  The endpoint path alternates between the entries of
``endpoint_paths`` (``/`` and ``/endpoint``), so a client must use what it was given.  Connect to
``{endpoint}?token=..&connectId=..``: a valid token gets ``{"id":<connectId>,"type":"welcome"}``;
an unknown / expired / missing token gets ``{"type":"error","code":401,"data":"token is expired"|
"token is invalid"}`` and a close frame.  Tokens expire ``token_ttl`` wall seconds after issue
(24 h default); at expiry every connection of that token gets the 401 error and a close frame
(``expiry_action="drop"``: a TCP reset instead).  Any number of tokens and connections may be
live at once (make-before-break rotation works).

WebSocket: ``{"id","type":"ping"}`` -> ``{"id","type":"pong"}``; a connection that sends no JSON
ping for ``pingInterval + pingTimeout`` is dropped without a close frame (control pings do not
count: UNCONFIRMED in the reference, the stricter choice).  ``subscribe`` / ``unsubscribe`` with
``topic`` ``/market/match:S1,S2`` or ``/market/level2:S1,S2`` (spaces after ``:``/``,``
tolerated; <= 100 symbols per message) -> ``{"id","type":"ack"}`` when ``response`` is true;
unknown topics or symbols -> ``{"id","type":"error","code":404,"data":"topic ... is not found"}``.

Sequence model: every order-book change has the next per-symbol sequence number, and every fill
*is* a book change (the maker level shrinks), so a trade's ``sequence`` == ``tradeId`` == the
sequence of its book change: trade sequences increase but jump (book events in between).  The
ground truth ``trade_id`` is that number.  ``trade.l3match`` messages: one per trade, ``time`` in
ns (the tape's µs * 1000).  ``trade.l2update`` messages are pushed every ``level2_interval_ms``
(0 = every generation step, 5 ms): ``sequenceStart`` = previous ``sequenceEnd`` + 1,
``sequenceEnd`` = the book's last sequence, ``changes`` = last change per price ``[price, size,
sequence]`` (size ``"0"`` = delete).  ``/api/v1/market/orderbook/level2_20|_100`` (and the full
``/api/v3/market/orderbook/level2``, which needs a ``KC-API-KEY`` header) return ``sequence``.

REST (envelope ``{"code":"200000","data":..}``): ``/api/v1/timestamp``, ``/api/v1/symbols`` and
``/api/v2/symbols`` (plus a disabled ``BSV-USDT``, option ``disabled_symbols``), ``/api/v3/currencies``
(one chain per currency), ``/api/v1/contracts/active`` (empty: futures are not simulated) and
``/api/v1/market/allTickers`` (empty ticker list) -- what ccxt's ``load_markets`` calls; unknown paths
404 ``{"code":"404000","msg":"Not Found"}``,
``/api/v1/market/histories?symbol=`` (ONLY the last 100 trades, oldest first, ``sequence``,
``price``, ``size``, ``side``, ``time`` ns int; no paging), ``/api/v1/market/candles?type=1min&
symbol=&startAt=&endAt=`` (seconds, bucket starts inclusive, <= 1500 rows newest first, only
buckets with trades, rows ``[time, open, close, high, low, volume, turnover]``).

Venue options: ``token_ttl`` (86400 s), ``ping_interval_ms`` (18000), ``ping_timeout_ms`` (10000),
``expiry_action`` (``close`` | ``drop``), ``endpoint_paths`` (``["/", "/endpoint"]``),
``level2_interval_ms`` (0), ``disabled_symbols``.

Faults: ``token_expiry`` (now; ``conn`` = that connection's token, else every token),
``skip_ids`` (trades withheld from the WebSocket; undetectable from sequences), ``silent_drop``,
``close``, ``abort``, ``malformed``, ``unknown_symbol``, ``seq_gap`` (level2 messages withheld ->
``sequenceStart`` jumps), ``rest_fail`` / ``rest_delay``.
"""

from __future__ import annotations

import random
import time
from operator import mul
from typing import Any

import orjson
from aiohttp import web

from .book import ASK, BID
from .conn import HDR, WSConnection, text_header
from .faults import FaultError
from .generator import SCALE, split_canonical
from .venue import SliceInfo, Venue, decimals_of, fmt_units, strip_zeros, VenueRestError

_TYPES = {
    "1min": 60, "3min": 180, "5min": 300, "15min": 900, "30min": 1800, "1hour": 3600, "2hour": 7200,
    "4hour": 14400, "6hour": 21600, "8hour": 28800, "12hour": 43200, "1day": 86400, "1week": 604800,
}
_SIDE = ("sell", "buy")
_MASK = (1 << 64) - 1


def _object_id(ts_us: int, x: int) -> str:
    """A 24-hex order id shaped like a Mongo ObjectId (4-byte seconds + 8 pseudo-random bytes)."""
    return "%08x%016x" % ((ts_us // 1_000_000) & 0xFFFFFFFF, (x * 0x9E3779B97F4A7C15) & _MASK)


class KucoinError(VenueRestError):
    pass


class _Token:
    __slots__ = ("token", "issued", "expires", "path", "expired", "conns")

    def __init__(self, token: str, issued: float, ttl: float, path: str) -> None:
        self.token = token
        self.issued = issued
        self.expires = issued + ttl
        self.path = path
        self.expired = False
        self.conns: set[int] = set()


class _KState:
    __slots__ = ("token", "connect_id", "reject", "match", "level2", "last_ping", "l2_drop", "l2_drop_sym")

    def __init__(self, token: _Token | None, connect_id: str, reject: str | None) -> None:
        self.token = token
        self.connect_id = connect_id
        self.reject = reject
        self.match: list[int] = []
        self.level2: list[int] = []
        self.last_ping = time.monotonic()
        self.l2_drop = 0
        self.l2_drop_sym: int | None = None


class KucoinVenue(Venue):
    name = "kucoin"
    ts_quantum_us = 1
    server_pings = False
    books_required = True

    def __init__(self, sim, symbols, rate, options) -> None:
        super().__init__(sim, symbols, rate, options)
        self.token_ttl = float(self.options.get("token_ttl", 86400.0))
        self.ping_interval_ms = int(self.options.get("ping_interval_ms", 18000))
        self.ping_timeout_ms = int(self.options.get("ping_timeout_ms", 10000))
        self.expiry_action = str(self.options.get("expiry_action", "close"))
        if self.expiry_action not in ("close", "drop"):
            raise ValueError("kucoin expiry_action must be close | drop")
        self.l2_interval = float(self.options.get("level2_interval_ms", 0)) / 1000.0
        self.disabled = [s.upper() for s in self.options.get("disabled_symbols", ["BSV-USDT"])
                         if s.upper() not in self.symbols]
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]
        self._qdec = [decimals_of(sp.lot_units) for sp in self.specs]
        self._rng = random.Random(f"{self.config.seed}:{self.name}:tokens")
        self.tokens: dict[str, _Token] = {}
        self.tokens_issued = 0
        self.tokens_expired = 0
        self.ping_drops = 0
        self._l2_cursor = [b.update_id for b in self.books]
        self._l2_next = 0.0
        self._check_next = 0.0
        self._tpl = ['{"type":"message","topic":"/market/match:' + s + '","subject":"trade.l3match","data":{'
                     '"makerOrderId":"%s","price":"%s","sequence":"%d","side":"%s","size":"%s","symbol":"' + s
                     + '","takerOrderId":"%s","time":"%d","tradeId":"%d","type":"match"}}' for s in self.symbols]

    # ------------------------------------------------------------------ formatting
    def venue_symbol(self, si: int) -> str:
        return self.symbols[si]

    def fmt_trade_id(self, si: int, trade_id: int) -> str:
        return str(self.books[si].trade_seq[trade_id - self.specs[si].first_trade_id])

    def fmt_trade_price(self, si: int, units: int) -> str:
        return strip_zeros(fmt_units(units, self._pdec[si]))

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return strip_zeros(fmt_units(units, self._qdec[si]))

    fmt_book_price = fmt_trade_price
    fmt_book_qty = fmt_trade_qty

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        self.endpoint_paths = [str(p) for p in self.options.get("endpoint_paths", ["/", "/endpoint"])] or ["/"]
        for path in sorted(set(self.endpoint_paths)):
            r.add_get(path, self._h_ws)
        r.add_post("/api/v1/bullet-public", self._rest(self._r_bullet))
        r.add_get("/api/v1/timestamp", self._rest(self._r_timestamp))
        r.add_get("/api/v1/symbols", self._rest(self._r_symbols))
        r.add_get("/api/v3/currencies", self._rest(self._r_currencies))
        # Listings a client loads with its markets (ccxt): futures are not simulated, so none are
        # active; tickers are not simulated either (an empty ticker list).
        r.add_get("/api/v1/contracts/active", self._rest(lambda rq: []))
        r.add_get("/api/v1/market/allTickers", self._rest(lambda rq: {"time": self.now_us() // 1000, "ticker": []}))
        r.add_get("/api/v2/symbols", self._rest(self._r_symbols))
        r.add_get("/api/v1/market/histories", self._rest(self._r_histories))
        r.add_get("/api/v1/market/candles", self._rest(self._r_candles))
        r.add_get("/api/v1/market/orderbook/level2_20", self._rest(lambda rq: self._r_level2(rq, 20)))
        r.add_get("/api/v1/market/orderbook/level2_100", self._rest(lambda rq: self._r_level2(rq, 100)))
        r.add_get("/api/v3/market/orderbook/level2", self._rest(self._r_level2_full))

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"code": "404", "msg": "Not Found"}, status=404)
        tok = request.query.get("token", "")
        connect_id = request.query.get("connectId") or f"{self._rng.getrandbits(40):010x}"
        t = self.tokens.get(tok)
        reject = None
        if not tok or t is None:
            reject = "token is invalid"
        elif t.expired:
            reject = "token is expired"
        return await self.ws_session(request, _KState(None if reject else t, connect_id, reject))

    # ------------------------------------------------------------------ WebSocket
    def _send(self, conn: WSConnection, obj: dict[str, Any]) -> None:
        conn.send_text(orjson.dumps(obj).decode())

    def on_ws_open(self, conn: WSConnection) -> None:
        st: _KState = conn.venue_state
        if st.reject is not None:
            self._send(conn, {"type": "error", "code": 401, "data": st.reject})
            conn.closed_reason = "token_rejected"
            self.spawn(conn.close(1000, st.reject))
            return
        st.token.conns.add(conn.id)
        self._send(conn, {"id": st.connect_id, "type": "welcome"})

    def on_ws_closed(self, conn: WSConnection) -> None:
        st: _KState = conn.venue_state
        if st.token is not None:
            st.token.conns.discard(conn.id)

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _KState = conn.venue_state
        if st.reject is not None:
            return
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._send(conn, {"type": "error", "code": 400, "data": "json format error"})
            return
        if not isinstance(msg, dict):
            self._send(conn, {"type": "error", "code": 400, "data": "json format error"})
            return
        rid = msg.get("id")
        rid = "" if rid is None else str(rid)
        typ = msg.get("type")
        if typ == "ping":
            st.last_ping = time.monotonic()
            self._send(conn, {"id": rid, "type": "pong"})
            return
        if typ not in ("subscribe", "unsubscribe"):
            self._send(conn, {"id": rid, "type": "error", "code": 404, "data": f"type {typ} is not supported"})
            return
        topic = msg.get("topic")
        if not isinstance(topic, str) or ":" not in topic:
            self._send(conn, {"id": rid, "type": "error", "code": 404, "data": f"topic {topic} is not found"})
            return
        prefix, _, rest = topic.partition(":")
        names = [s.strip() for s in rest.split(",")]
        if prefix not in ("/market/match", "/market/level2") or not names or any(
                n not in self.symbols for n in names):
            self._send(conn, {"id": rid, "type": "error", "code": 404, "data": f"topic {topic} is not found"})
            return
        if len(names) > 100:
            self._send(conn, {"id": rid, "type": "error", "code": 509,
                              "data": "exceed max subscription count limitation of 100 per time"})
            return
        lst = st.match if prefix == "/market/match" else st.level2
        for n in names:
            si = self.symbols.index(n)
            if typ == "subscribe" and si not in lst:
                lst.append(si)
            elif typ == "unsubscribe" and si in lst:
                lst.remove(si)
        if msg.get("response"):
            self._send(conn, {"id": rid, "type": "ack"})

    # ------------------------------------------------------------------ trades
    def on_slice(self, sl: SliceInfo) -> None:
        if not self.conns:
            return
        cache: dict[tuple, tuple[bytes, int]] = {}
        ranges = sl.ranges
        for conn in list(self.conns.values()):
            if not conn.can_send:
                continue
            st: _KState = conn.venue_state
            if not st.match:
                continue
            parts = []
            frames = 0
            for si in st.match:
                rng = ranges.get(si)
                if rng is None:
                    continue
                target = conn.id if sl.conn_specific(si) else None
                key = (si, target)
                ent = cache.get(key)
                if ent is None:
                    ent = cache[key] = self._encode(si, rng[2], rng[3], sl.withheld_for(si, target))
                if ent[1]:
                    parts.append(ent[0])
                    frames += ent[1]
            if frames:
                conn.write(b"".join(parts), frames, frames)

    def _encode(self, si: int, o0: int, o1: int, skip: list[tuple[int, int]]) -> tuple[bytes, int]:
        tape = self.tapes[si]
        ts, px, qty, side, ostart = tape.ts, tape.px, tape.qty, tape.side, tape.order_start
        seq = self.books[si].trade_seq
        n_orders, n_trades = len(ostart), len(tape.ids)
        tpl = self._tpl[si]
        pm, qm = self.px_str[si], self.qty_str[si]
        salt = (si + 1) << 48
        parts: list[str] = []
        app = parts.append
        n = 0
        for o in range(o0, o1):
            a = ostart[o]
            b = ostart[o + 1] if o + 1 < n_orders else n_trades
            t = ts[a]
            taker = _object_id(t, salt + o)
            p = pm[px[a]]
            sd = _SIDE[side[a]]
            for i in range(a, b):
                if skip and any(lo <= i < hi for lo, hi in skip):
                    continue
                s = tpl % (_object_id(t, ~seq[i] & _MASK), p, seq[i], sd, qm[qty[i]], taker, t * 1000, seq[i])
                L = len(s)
                app(HDR[L] if L < 4096 else text_header(L))
                app(s)
                n += 1
        return "".join(parts).encode("latin-1"), n

    # ------------------------------------------------------------------ timers: level2, pings, tokens
    def periodic(self, mono: float) -> None:
        if mono >= self._check_next:
            self._check_next = mono + 0.05
            self._check_tokens(mono)
            limit = (self.ping_interval_ms + self.ping_timeout_ms) / 1000.0
            for conn in list(self.conns.values()):
                st: _KState = conn.venue_state
                if conn.state == "open" and not conn.silent and st.reject is None and mono - st.last_ping > limit:
                    self.ping_drops += 1
                    conn.abort("ping_timeout")
        if mono >= self._l2_next:
            self._l2_next = mono + self.l2_interval
            self._emit_level2()

    def _emit_level2(self) -> None:
        subs: dict[int, list[WSConnection]] = {}
        for conn in self.conns.values():
            st: _KState = conn.venue_state
            if st.level2 and conn.can_send:
                for si in st.level2:
                    subs.setdefault(si, []).append(conn)
        ms = self.now_us() // 1000
        for si, book in enumerate(self.books):
            uid = book.update_id
            cur = self._l2_cursor[si]
            if uid == cur:
                continue
            self._l2_cursor[si] = uid
            targets = subs.get(si)
            if not targets:
                continue
            first, bids, asks = book.coalesced(cur)
            fp, fq = self.fmt_book_price, self.fmt_book_qty
            a = ",".join('["%s","%s","%d"]' % (fp(si, p), fq(si, asks[p][0]), asks[p][1]) for p in sorted(asks))
            b = ",".join('["%s","%s","%d"]' % (fp(si, p), fq(si, bids[p][0]), bids[p][1])
                         for p in sorted(bids, reverse=True))
            sym = self.symbols[si]
            payload = ('{"type":"message","topic":"/market/level2:%s","subject":"trade.l2update","data":{"changes":'
                       '{"asks":[%s],"bids":[%s]},"sequenceStart":%d,"sequenceEnd":%d,"symbol":"%s","time":%d}}'
                       % (sym, a, b, first, uid, sym, ms))
            for conn in targets:
                st = conn.venue_state
                if st.l2_drop > 0 and st.l2_drop_sym in (None, si):
                    st.l2_drop -= 1
                    continue
                conn.send_text(payload)

    def _check_tokens(self, mono: float) -> None:
        for t in list(self.tokens.values()):
            if not t.expired and mono >= t.expires:
                self._expire(t)
            elif t.expired and not t.conns and mono - t.expires > 3600:
                del self.tokens[t.token]

    def _expire(self, t: _Token) -> None:
        if not t.expired:
            t.expired = True
            self.tokens_expired += 1
            t.expires = min(t.expires, time.monotonic())
        for cid in list(t.conns):
            conn = self.conns.get(cid)
            if conn is None or conn.state != "open":
                continue
            if self.expiry_action == "drop":
                conn.abort("token_expired")
            elif conn.silent:
                conn.abort("token_expired")
            else:
                self._send(conn, {"type": "error", "code": 401, "data": "token is expired"})
                conn.closed_reason = "token_expired"
                self.spawn(conn.close(1000, "token is expired"))

    # ------------------------------------------------------------------ faults
    def apply_fault(self, kind: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if kind != "token_expiry":
            return super().apply_fault(kind, params)
        params = {k: v for k, v in (params or {}).items() if v is not None and k not in ("kind", "venue")}
        conn_id = params.get("conn")
        if conn_id is None:
            targets = [t for t in self.tokens.values() if not t.expired]
        else:
            try:
                conn = self.conns.get(int(conn_id))
            except (TypeError, ValueError):
                raise FaultError(f"conn must be an integer, got {conn_id!r}") from None
            if conn is None or conn.state != "open" or conn.venue_state.token is None:
                raise FaultError(f"kucoin: no open connection {conn_id}")
            targets = [conn.venue_state.token]
        rec = self.faults.record(kind, params, self.now_us())
        for t in targets:
            rec.applied_to.extend(sorted(t.conns))
            self._expire(t)
        rec.hits = len(targets)
        rec.note = f"expired {len(targets)} token(s)"
        return rec.as_dict()

    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _KState = conn.venue_state
        count = int(params.get("count", 1))
        si = st.match[0] if st.match else 0
        sym = self.symbols[si]
        ns = self.now_us() * 1000
        if kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            for k in range(count):
                if variant == "invalid_json" or (variant == "mixed" and k % 2 == 0):
                    conn.send_text('{"type":"message","topic":"/market/match:%s","subject":"trade.l3match","data":{'
                                   '"price":' % sym)
                else:
                    conn.send_text('{"type":"message","topic":"/market/match:%s","subject":"trade.l3match","data":{'
                                   '"symbol":"%s","time":"%d","type":"match"}}' % (sym, sym, ns))
        elif kind == "unknown_symbol":
            name = str(params.get("symbol", "ZZZ-USDT")).upper()
            base, quote = split_canonical(name)
            name = f"{base}-{quote}"
            if name in self.symbols:
                raise FaultError(f"{name} is listed; unknown_symbol needs an unlisted symbol")
            for _ in range(count):
                q = self._rng.randrange(10**15, 10**16)
                conn.send_text('{"type":"message","topic":"/market/match:%s","subject":"trade.l3match","data":{'
                               '"makerOrderId":"%s","price":"1.234","sequence":"%d","side":"buy","size":"10",'
                               '"symbol":"%s","takerOrderId":"%s","time":"%d","tradeId":"%d","type":"match"}}'
                               % (name, _object_id(ns // 1000, q), q, name, _object_id(ns // 1000, q + 1), ns, q))
        elif kind == "seq_gap":
            name = params.get("symbol")
            sidx = self.symbol_index(name) if name else None
            if name and sidx is None:
                raise FaultError(f"kucoin: unknown symbol {name!r}")
            st.l2_drop += count
            st.l2_drop_sym = sidx
        else:
            raise FaultError(f"kucoin does not implement fault {kind!r}")

    def book_view(self, si: int, depth: int | None = None) -> dict[str, Any]:
        view = super().book_view(si, depth)
        view["sequence"] = str(view["update_id"])
        return view

    def venue_stats(self) -> dict[str, Any]:
        return {"kucoin": {
            "tokens_issued": self.tokens_issued, "tokens_expired": self.tokens_expired,
            "tokens_live": sum(1 for t in self.tokens.values() if not t.expired), "ping_drops": self.ping_drops,
            "sequences": {s: {"book": b.update_id, "last_trade": b.trade_seq[-1] if len(b.trade_seq) else None}
                          for s, b in zip(self.symbols, self.books)},
        }}

    # ------------------------------------------------------------------ REST plumbing
    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                data = fn(request)
            except KucoinError as e:
                return web.Response(body=orjson.dumps({"code": e.code, "msg": e.msg}), status=e.status,
                                    content_type="application/json")
            return web.Response(body=orjson.dumps({"code": "200000", "data": data}), content_type="application/json")

        return handler

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        if status == 429:
            body = {"code": "429000", "msg": "Too Many Requests"}
        elif status >= 500:
            body = {"code": "500000", "msg": "Internal Server Error"}
        else:
            body = {"code": "400000", "msg": "Bad Request"}
        headers = {"Retry-After": str(max(0, int(round(retry_after))))} if retry_after is not None else {}
        return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")

    def _sym(self, request: web.Request) -> int:
        name = request.query.get("symbol")
        if not name:
            raise KucoinError("400100", "Parameter symbol is required")
        if name not in self.symbols:
            raise KucoinError("400100", "This pair is not provided at present")
        return self.symbols.index(name)

    def bad_param(self, name: str) -> Exception:
        return KucoinError("400100", f"Parameter {name} is invalid")
    # ------------------------------------------------------------------ REST endpoints
    def _r_bullet(self, request: web.Request) -> Any:
        path = self.endpoint_paths[self.tokens_issued % len(self.endpoint_paths)]
        token = "2neAiuYvAU61ZDXANAGAsiL4-iAExhsBXZxftpOeh_55i3Ysy2q2LEsEWU64mdzUOPusi34M_wGoSf7iNyEWJ%s" % (
            "%032x" % self._rng.getrandbits(128)) + ".mvnekBb8DJegZIgYLs2FBQ=="
        self.tokens[token] = _Token(token, time.monotonic(), self.token_ttl, path)
        self.tokens_issued += 1
        return {"token": token, "instanceServers": [{
            "endpoint": f"ws://{self.host}:{self.port}{path}", "encrypt": False, "protocol": "websocket",
            "pingInterval": self.ping_interval_ms, "pingTimeout": self.ping_timeout_ms}]}

    def _r_timestamp(self, request: web.Request) -> Any:
        return self.now_us() // 1000

    def _symbol(self, name: str, base: str, quote: str, tick: int, lot: int, enabled: bool) -> dict[str, Any]:
        return {
            "symbol": name, "name": name, "baseCurrency": base, "quoteCurrency": quote, "feeCurrency": quote,
            "market": "USDS", "baseMinSize": strip_zeros(fmt_units(lot * 10)), "quoteMinSize": "0.1",
            "baseMaxSize": "10000000000", "quoteMaxSize": "99999999",
            "baseIncrement": strip_zeros(fmt_units(lot)), "quoteIncrement": "0.000001",
            "priceIncrement": strip_zeros(fmt_units(tick)), "priceLimitRate": "0.1", "minFunds": "0.1",
            "isMarginEnabled": True, "enableTrading": enabled, "feeCategory": 1, "makerFeeCoefficient": "1.00",
            "takerFeeCoefficient": "1.00", "st": False,
        }

    def _r_symbols(self, request: web.Request) -> Any:
        out = [self._symbol(sp.canonical, sp.base, sp.quote, sp.tick_units, sp.lot_units, True) for sp in self.specs]
        for s in self.disabled:
            base, quote = split_canonical(s)
            out.append(self._symbol(f"{base}-{quote}", base, quote, 1_000_000, 10_000, False))
        return out

    def _r_currencies(self, request: web.Request) -> Any:
        """``/api/v3/currencies`` (ccxt's load_markets): one chain per currency."""
        return [{"currency": c, "name": c, "fullName": c, "precision": 8, "confirms": None,
                 "contractAddress": None, "isMarginEnabled": True, "isDebitEnabled": True,
                 "chains": [{"chainName": c, "withdrawalMinSize": "0.001", "depositMinSize": "0.0001",
                             "withdrawFeeRate": "0", "withdrawalMinFee": "0.0005", "isWithdrawEnabled": True,
                             "isDepositEnabled": True, "confirms": 3, "preConfirms": 1, "contractAddress": "",
                             "withdrawPrecision": 8, "maxWithdraw": None, "maxDeposit": None, "needTag": False,
                             "chainId": c.lower()}]}
                for c in self.currencies()]

    def not_found_body(self, request: web.Request) -> Any:
        return {"code": "404000", "msg": "Not Found"}

    def _r_histories(self, request: web.Request) -> Any:
        si = self._sym(request)
        tape = self.tapes[si]
        seq = self.books[si].trade_seq
        n = len(tape)
        fp, fq = self.fmt_trade_price, self.fmt_trade_qty
        return [{"sequence": str(seq[i]), "price": fp(si, tape.px[i]), "size": fq(si, tape.qty[i]),
                 "side": _SIDE[tape.side[i]], "time": tape.ts[i] * 1000} for i in range(max(0, n - 100), n)]

    def _r_candles(self, request: web.Request) -> Any:
        si = self._sym(request)
        typ = request.query.get("type")
        if typ not in _TYPES:
            raise KucoinError("400100", "Parameter type is invalid")
        iv = _TYPES[typ] * 1_000_000
        start = self.query_int(request, "startAt") or 0
        end = self.query_int(request, "endAt") or 0
        hi = end * 1_000_000 if end else self.now_us()
        lo = start * 1_000_000 if start else None
        tape = self.tapes[si]
        fp, fq = self.fmt_trade_price, self.fmt_trade_qty
        rows = []
        for b, i, j in self.buckets(si, iv, lo, hi, 1500, newest_first=True):
            pxs = tape.px[i:j]
            qs = tape.qty[i:j]
            turnover = strip_zeros(fmt_units(sum(map(mul, pxs, qs)) // SCALE))
            rows.append([str(b // 1_000_000), fp(si, pxs[0]), fp(si, pxs[-1]), fp(si, max(pxs)), fp(si, min(pxs)),
                         fq(si, sum(qs)), turnover])
        return rows

    def _level2(self, si: int, n: int | None) -> Any:
        book = self.books[si]
        fp, fq = self.fmt_book_price, self.fmt_book_qty
        return {
            "time": self.now_us() // 1000, "sequence": str(book.update_id),
            "bids": [[fp(si, p), fq(si, q)] for p, q in book.top(BID, n)],
            "asks": [[fp(si, p), fq(si, q)] for p, q in book.top(ASK, n)],
        }

    def _r_level2(self, request: web.Request, n: int) -> Any:
        return self._level2(self._sym(request), n)

    def _r_level2_full(self, request: web.Request) -> Any:
        if not request.headers.get("KC-API-KEY"):
            raise KucoinError("400003", "KC-API-KEY not exists", 401)
        return self._level2(self._sym(request), None)

