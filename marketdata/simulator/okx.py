"""OKX v5 public market data: WebSocket and REST, encoded from the reference sheet
(``../shared/reference/venues-binance-okx-kucoin-kraken-coinbase.md`` section 2), independently of
``marketdata.venues``.

WebSocket (same port as REST):

* ``/ws/v5/public``: channels ``trades`` (one push per taker order: ``tradeId`` = the order's
  last fill id, ``count`` = its fills, ``sz`` = their sum; the fills are the trade ids
  ``tradeId-count+1 .. tradeId``, one ground-truth row each, same ``px``/``side``/``ts``) and
  ``books`` (400-level snapshot, then 100 ms incremental updates with ``seqId``/``prevSeqId`` and
  the signed CRC32 ``checksum`` over the top 25 levels; an empty update with ``seqId ==
  prevSeqId`` after ``book_keepalive_s`` without changes).
  ``/ws/v5/business``: ``trades-all`` (one push per fill).  A channel on the wrong path, an
  unknown channel or instrument -> ``{"event":"error","code":"60018",...}`` (the whole request is
  rejected); bad requests / invalid JSON -> ``60012``.
* ``{"op":"subscribe","args":[{"channel","instId"}],"id"?}`` -> one ``{"event":"subscribe",
  "arg":..,"connId":..}`` per arg (``id`` echoed when sent); ``unsubscribe`` likewise.  Subscribing
  ``books`` again yields a fresh snapshot.
* Keepalive: the literal text ``ping`` -> ``pong``.  A connection from which no text frame was
  received for ``idle_timeout`` (30 s) is dropped **without a close frame** (TCP reset), whether
  or not data flows.  WebSocket control pings do not count unless ``idle_control_pings`` is set
  (UNCONFIRMED in the reference; the stricter choice).

REST (envelope ``{"code":"0","msg":"","data":[...]}``, errors ``{"code":"5xxxx","msg",...}``):
``/api/v5/public/time``, ``/api/v5/public/instruments?instType=SPOT``,
``/api/v5/market/trades`` (per fill, newest first, <= 500),
``/api/v5/market/history-trades?instId=&type=1|2&after=&before=&limit=`` (per fill, newest first,
<= 100, the last 3 months of sim time; ``type=1``: ``after``/``before`` are trade ids, rows with
id < after and id > before, the newest ``limit`` of them; ``type=2``: ``after`` is a ms timestamp,
rows with ts < after, the newest ``limit`` of them; ``before`` is rejected),
``/api/v5/market/candles`` (<= 300, only the latest 1440 bars reachable) and
``/api/v5/market/history-candles`` (<= 100): rows ``[ts, o, h, l, c, vol, volCcy, volCcyQuote,
confirm]`` newest first, only bars with trades, ``after``/``before`` exclusive ms cursors;
``/api/v5/market/books?instId=&sz=`` (<= 400, no seqId).

Venue options (``SimulatorConfig.venue_options["okx"]``): ``idle_timeout`` (30 s; 0 off),
``idle_control_pings`` (False), ``book_interval_ms`` (100), ``book_keepalive_s`` (60),
``book_snapshot_levels`` (400), ``suspended_symbols`` (``["BSV-USDT"]``: listed with state
``suspend``), plus the common ``book_depth_ticks`` / ``book_density``.

Faults: ``skip_ids`` (a withheld fill withholds its whole aggregated push, so ``tradeId - count``
jumps), ``silent_drop``, ``close``, ``abort``, ``malformed``, ``unknown_symbol``, ``notice``
(``64008``; ``close_after`` then closes), ``seq_gap`` (book updates withheld -> ``prevSeqId``
mismatch), ``bad_checksum``, ``rest_fail`` / ``rest_delay``.
"""

from __future__ import annotations

import asyncio
import random
import time
from operator import mul
from typing import Any

import orjson
from aiohttp import web

from .book import ASK, BID, okx_checksum
from .conn import HDR, WSConnection, text_header
from .faults import FaultError
from .generator import SCALE, split_canonical
from .venue import SliceInfo, Venue, decimals_of, fmt_units, strip_zeros, VenueRestError

_BARS = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1H": 3600, "2H": 7200, "4H": 14400,
    "6H": 21600, "12H": 43200, "1D": 86400, "6Hutc": 21600, "12Hutc": 43200, "1Dutc": 86400,
}
_PUBLIC_CHANNELS = {"trades", "books"}
_BUSINESS_CHANNELS = {"trades-all"}
_SIDE = ("sell", "buy")
HISTORY_TRADES_US = 90 * 86_400_000_000     # history-trades reaches back 3 months


class OkxError(VenueRestError):
    pass


class _OState:
    __slots__ = ("conn_tag", "business", "trades", "trades_all", "books", "last_recv", "book_drop",
                 "book_drop_sym", "bad_checksum")

    def __init__(self, conn_tag: str, business: bool) -> None:
        self.conn_tag = conn_tag
        self.business = business
        self.trades: list[int] = []  # symbol indices subscribed to ``trades``
        self.trades_all: list[int] = []
        self.books: dict[int, int] = {}  # symbol index -> last seqId sent (-1: snapshot due)
        self.last_recv = time.monotonic()
        self.book_drop = 0
        self.book_drop_sym: int | None = None
        self.bad_checksum = 0


class OkxVenue(Venue):
    name = "okx"
    books_feed_trades = True      # its trade messages carry the book sequence (trade_seq)
    ts_quantum_us = 1000
    id_range = (300_000_000, 2_000_000_000)
    server_pings = False

    def __init__(self, sim, symbols, rate, options) -> None:
        super().__init__(sim, symbols, rate, options)
        self.idle_timeout = float(self.options.get("idle_timeout", 30.0))
        self.idle_control_pings = bool(self.options.get("idle_control_pings", False))
        self.book_interval = float(self.options.get("book_interval_ms", 100)) / 1000.0
        self.book_keepalive = float(self.options.get("book_keepalive_s", 60.0))
        self.snapshot_levels = int(self.options.get("book_snapshot_levels", 400))
        self.suspended = [s.upper() for s in self.options.get("suspended_symbols", ["BSV-USDT"])
                          if s.upper() not in self.symbols]
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]
        self._qdec = [decimals_of(sp.lot_units) for sp in self.specs]
        self._rng = random.Random(f"{self.config.seed}:{self.name}:conns")
        self._book_cursor = [b.update_id for b in self.books]
        self._book_emitted = [time.monotonic()] * len(self.books)
        self._book_next = 0.0
        self._idle_next = 0.0
        self.idle_drops = 0
        self.book_updates = 0
        tpl_t, tpl_a = [], []
        for s in self.symbols:
            tpl_t.append('{"arg":{"channel":"trades","instId":"' + s + '"},"data":[{"instId":"' + s
                         + '","tradeId":"%d","px":"%s","sz":"%s","side":"%s","ts":"%d","count":"%d",'
                           '"source":"0","seqId":%d}]}')
            tpl_a.append('{"arg":{"channel":"trades-all","instId":"' + s + '"},"data":[{"instId":"' + s
                         + '","tradeId":"%d","px":"%s","sz":"%s","side":"%s","source":"0","ts":"%d"}]}')
        self._tpl_trades = tpl_t
        self._tpl_all = tpl_a

    # ------------------------------------------------------------------ formatting
    def venue_symbol(self, si: int) -> str:
        return self.symbols[si]

    def fmt_trade_price(self, si: int, units: int) -> str:
        return fmt_units(units, self._pdec[si])

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return fmt_units(units, self._qdec[si])

    fmt_book_price = fmt_trade_price
    fmt_book_qty = fmt_trade_qty

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/ws/v5/public", self._h_ws_public)
        r.add_get("/ws/v5/business", self._h_ws_business)
        r.add_get("/api/v5/public/time", self._rest(self._r_time))
        r.add_get("/api/v5/public/instruments", self._rest(self._r_instruments))
        r.add_get("/api/v5/market/trades", self._rest(self._r_trades))
        r.add_get("/api/v5/market/history-trades", self._rest(self._r_history_trades))
        r.add_get("/api/v5/market/candles", self._rest(self._r_candles))
        r.add_get("/api/v5/market/history-candles", self._rest(self._r_history_candles))
        r.add_get("/api/v5/market/books", self._rest(self._r_books))

    async def _h_ws_public(self, request: web.Request) -> web.StreamResponse:
        return await self.ws_session(request, _OState(f"{self._rng.getrandbits(32):08x}", False))

    async def _h_ws_business(self, request: web.Request) -> web.StreamResponse:
        return await self.ws_session(request, _OState(f"{self._rng.getrandbits(32):08x}", True))

    # ------------------------------------------------------------------ WebSocket control
    def _send(self, conn: WSConnection, obj: dict[str, Any]) -> None:
        conn.send_text(orjson.dumps(obj).decode())

    def _error(self, conn: WSConnection, code: str, msg: str, rid: Any = None) -> None:
        obj: dict[str, Any] = {}
        if rid is not None:
            obj["id"] = rid
        obj.update({"event": "error", "code": code, "msg": msg, "connId": conn.venue_state.conn_tag})
        self._send(conn, obj)

    def on_ws_control(self, conn: WSConnection, kind: str) -> None:
        if self.idle_control_pings and kind == "ping":
            conn.venue_state.last_recv = time.monotonic()

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _OState = conn.venue_state
        st.last_recv = time.monotonic()
        if data == "ping":
            conn.send_text("pong")
            return
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._error(conn, "60012", f"Invalid request: {data[:200]}")
            return
        if not isinstance(msg, dict):
            self._error(conn, "60012", f"Invalid request: {data[:200]}")
            return
        rid = msg.get("id")
        if rid is not None and not (isinstance(rid, str) and len(rid) <= 32 and rid.isalnum()):
            self._error(conn, "60012", f"Invalid request: {data[:200]}")
            return
        op = msg.get("op")
        args = msg.get("args")
        if op not in ("subscribe", "unsubscribe"):
            if op == "login":
                self._error(conn, "60009", "Login failed.", rid)
            else:
                self._error(conn, "60012", f"Invalid request: {data[:200]}", rid)
            return
        if not isinstance(args, list) or not args or not all(
                isinstance(a, dict) and isinstance(a.get("channel"), str) and isinstance(a.get("instId"), str)
                for a in args):
            self._error(conn, "60012", f"Invalid request: {data[:200]}", rid)
            return
        parsed = []
        allowed = _BUSINESS_CHANNELS if st.business else _PUBLIC_CHANNELS
        for a in args:
            ch, inst = a["channel"], a["instId"]
            si = self.symbol_index(inst) if inst == inst.upper() else None
            if ch not in allowed or si is None or self.symbols[si] != inst:
                self._error(conn, "60018", f"Wrong URL or channel:{ch},instId:{inst} doesn't exist. Please use the "
                                           "correct URL, channel and parameters referring to API document.", rid)
                return
            parsed.append((ch, si))
        for ch, si in parsed:
            if op == "subscribe":
                if ch == "trades" and si not in st.trades:
                    st.trades.append(si)
                elif ch == "trades-all" and si not in st.trades_all:
                    st.trades_all.append(si)
                elif ch == "books":
                    st.books[si] = -1  # (re)subscribe: a fresh snapshot at the next book push
            else:
                if ch == "trades" and si in st.trades:
                    st.trades.remove(si)
                elif ch == "trades-all" and si in st.trades_all:
                    st.trades_all.remove(si)
                elif ch == "books":
                    st.books.pop(si, None)
            ack: dict[str, Any] = {}
            if rid is not None:
                ack["id"] = rid
            ack.update({"event": op, "arg": {"channel": ch, "instId": self.symbols[si]}, "connId": st.conn_tag})
            self._send(conn, ack)

    # ------------------------------------------------------------------ trades
    def on_slice(self, sl: SliceInfo) -> None:
        if not self.conns:
            return
        cache: dict[tuple, tuple[bytes, int, int]] = {}
        ranges = sl.ranges
        for conn in list(self.conns.values()):
            if not conn.can_send:
                continue
            st: _OState = conn.venue_state
            if not st.trades and not st.trades_all:
                continue
            parts = []
            frames = trades = 0
            for kind, sis in ((0, st.trades), (1, st.trades_all)):
                for si in sis:
                    rng = ranges.get(si)
                    if rng is None:
                        continue
                    target = conn.id if sl.conn_specific(si) else None
                    key = (si, kind, target)
                    ent = cache.get(key)
                    if ent is None:
                        skip = sl.withheld_for(si, target)
                        ent = self._encode_aggs(si, rng[2], rng[3], skip) if kind == 0 else \
                            self._encode_fills(si, rng[0], rng[1], skip)
                        cache[key] = ent
                    if ent[1]:
                        parts.append(ent[0])
                        frames += ent[1]
                        trades += ent[2]
            if frames:
                conn.write(b"".join(parts), frames, trades)

    def _encode_aggs(self, si: int, o0: int, o1: int, skip: list[tuple[int, int]]) -> tuple[bytes, int, int]:
        tape = self.tapes[si]
        ids, ts, px, qty, side, ostart = tape.ids, tape.ts, tape.px, tape.qty, tape.side, tape.order_start
        seq = self.books[si].trade_seq if self.books else None
        n_orders, n_trades = len(ostart), len(ids)
        tpl = self._tpl_trades[si]
        pm, qm = self.px_str[si], self.qty_str[si]
        parts: list[str] = []
        app = parts.append
        frames = fills = 0
        for o in range(o0, o1):
            a = ostart[o]
            b = ostart[o + 1] if o + 1 < n_orders else n_trades
            if skip and any(lo < b and a < hi for lo, hi in skip):
                continue
            q = qty[a] if b - a == 1 else sum(qty[a:b])
            s = tpl % (ids[b - 1], pm[px[a]], qm[q], _SIDE[side[a]], ts[a] // 1000, b - a,
                       seq[b - 1] if seq is not None else ids[b - 1])
            L = len(s)
            app(HDR[L] if L < 4096 else text_header(L))
            app(s)
            frames += 1
            fills += b - a
        return "".join(parts).encode("latin-1"), frames, fills

    def _encode_fills(self, si: int, i0: int, i1: int, skip: list[tuple[int, int]]) -> tuple[bytes, int, int]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        tpl = self._tpl_all[si]
        pm, qm = self.px_str[si], self.qty_str[si]
        parts: list[str] = []
        app = parts.append
        n = 0
        for i in range(i0, i1):
            if skip and any(lo <= i < hi for lo, hi in skip):
                continue
            s = tpl % (ids[i], pm[px[i]], qm[qty[i]], _SIDE[side[i]], ts[i] // 1000)
            L = len(s)
            app(HDR[L] if L < 4096 else text_header(L))
            app(s)
            n += 1
        return "".join(parts).encode("latin-1"), n, n

    # ------------------------------------------------------------------ books, idle timeout
    def _level(self, si: int, p: int, q: int) -> str:
        lot = self.specs[si].lot_units
        n = 1 + (q // lot) % 7 if q else 0
        return '["%s","%s","0","%d"]' % (fmt_units(p, self._pdec[si]), fmt_units(q, self._qdec[si]), n)

    def checksum(self, si: int) -> int:
        book = self.books[si]
        fp, fq = self.fmt_book_price, self.fmt_book_qty
        bids = [(fp(si, p), fq(si, q)) for p, q in book.top(BID, 25)]
        asks = [(fp(si, p), fq(si, q)) for p, q in book.top(ASK, 25)]
        return okx_checksum(bids, asks)

    def _book_msg(self, si: int, action: str, asks: str, bids: str, checksum: int, prev: int, seq: int) -> str:
        return ('{"arg":{"channel":"books","instId":"%s"},"action":"%s","data":[{"asks":[%s],"bids":[%s],'
                '"ts":"%d","checksum":%d,"prevSeqId":%d,"seqId":%d}]}'
                % (self.symbols[si], action, asks, bids, self.now_us() // 1000, checksum, prev, seq))

    def periodic(self, mono: float) -> None:
        self.drop_idle(mono)
        if self.books and mono >= self._book_next:
            self._book_next = self._book_next + self.book_interval \
                if mono - self._book_next < self.book_interval else mono + self.book_interval
            self._emit_books(mono)

    def _emit_books(self, mono: float) -> None:
        subs: dict[int, list[WSConnection]] = {}
        for conn in self.conns.values():
            st: _OState = conn.venue_state
            if st.books and conn.can_send:
                for si in st.books:
                    subs.setdefault(si, []).append(conn)
        for si, book in enumerate(self.books):
            uid = book.update_id
            cur = self._book_cursor[si]
            targets = subs.get(si)
            if not targets:
                self._book_cursor[si] = uid
                self._book_emitted[si] = mono
                continue
            update = None
            checksum = None
            if uid != cur or mono - self._book_emitted[si] >= self.book_keepalive:
                _first, bids, asks = book.coalesced(cur) if uid != cur else (uid, {}, {})
                checksum = self.checksum(si)
                a = ",".join(self._level(si, p, asks[p][0]) for p in sorted(asks))
                b = ",".join(self._level(si, p, bids[p][0]) for p in sorted(bids, reverse=True))
                update = (a, b, cur, uid)
                self._book_emitted[si] = mono
                self.book_updates += 1
            snapshot = None
            for conn in targets:
                st = conn.venue_state
                last = st.books[si]
                if last == -1:
                    if snapshot is None:
                        if checksum is None:
                            checksum = self.checksum(si)
                        n = self.snapshot_levels
                        sa = ",".join(self._level(si, p, q) for p, q in book.top(ASK, n))
                        sb = ",".join(self._level(si, p, q) for p, q in book.top(BID, n))
                        snapshot = self._book_msg(si, "snapshot", sa, sb, checksum, -1, uid)
                    conn.send_text(snapshot)
                    st.books[si] = uid
                elif update is not None:
                    st.books[si] = uid
                    if st.book_drop > 0 and st.book_drop_sym in (None, si):
                        st.book_drop -= 1
                        continue
                    c = checksum
                    if st.bad_checksum > 0:
                        st.bad_checksum -= 1
                        c = checksum ^ 0x2A2A
                    conn.send_text(self._book_msg(si, "update", update[0], update[1], c, update[2], update[3]))
            self._book_cursor[si] = uid

    def book_view(self, si: int, depth: int | None = None) -> dict[str, Any]:
        view = super().book_view(si, depth)
        view["seqId"] = view["update_id"]
        view["checksum"] = self.checksum(si)
        return view

    # ------------------------------------------------------------------ faults
    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _OState = conn.venue_state
        count = int(params.get("count", 1))
        ts = self.now_us() // 1000
        si = 0
        if st.trades:
            si = st.trades[0]
        inst = self.symbols[si]
        if kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            for k in range(count):
                if variant == "invalid_json" or (variant == "mixed" and k % 2 == 0):
                    conn.send_text('{"arg":{"channel":"trades","instId":"%s"},"data":[{"instId":"%s","tradeId":'
                                   % (inst, inst))
                else:
                    conn.send_text('{"arg":{"channel":"trades","instId":"%s"},"data":[{"instId":"%s","ts":"%d"}]}'
                                   % (inst, inst, ts))
        elif kind == "unknown_symbol":
            sym = str(params.get("symbol", "ZZZ-USDT")).upper()
            base, quote = split_canonical(sym)
            sym = f"{base}-{quote}"
            if sym in self.symbols:
                raise FaultError(f"{sym} is listed; unknown_symbol needs an unlisted symbol")
            for _ in range(count):
                tid = self._rng.randrange(1_000_000, 9_000_000)
                conn.send_text('{"arg":{"channel":"trades","instId":"%s"},"data":[{"instId":"%s","tradeId":"%d",'
                               '"px":"1.234","sz":"10","side":"buy","ts":"%d","count":"1","source":"0","seqId":%d}]}'
                               % (sym, sym, tid, ts, tid))
        elif kind == "notice":
            conn.send_text(orjson.dumps({
                "event": "notice", "code": "64008",
                "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
                "connId": st.conn_tag}).decode())
            close_after = params.get("close_after")
            if close_after is not None:
                self.spawn(self._close_later(conn, float(close_after)))
        elif kind == "seq_gap":
            sym = params.get("symbol")
            sidx = self.symbol_index(sym) if sym else None
            if sym and sidx is None:
                raise FaultError(f"okx: unknown symbol {sym!r}")
            st.book_drop += count
            st.book_drop_sym = sidx
        elif kind == "bad_checksum":
            st.bad_checksum += count
        else:
            raise FaultError(f"okx does not implement fault {kind!r}")

    async def _close_later(self, conn: WSConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await conn.close(1001, "service upgrade")

    def venue_stats(self) -> dict[str, Any]:
        return {"okx": {"idle_drops": self.idle_drops, "book_updates": self.book_updates}}

    # ------------------------------------------------------------------ REST plumbing
    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                data = fn(request)
            except OkxError as e:
                return web.Response(body=orjson.dumps({"code": e.code, "msg": e.msg, "data": []}), status=e.status,
                                    content_type="application/json")
            return web.Response(body=orjson.dumps({"code": "0", "msg": "", "data": data}),
                                content_type="application/json")

        return handler

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        if status == 429:
            body = {"code": "50011", "msg": "Too Many Requests", "data": []}
        elif status >= 500:
            body = {"code": "50001", "msg": "Service temporarily unavailable, please try again later.", "data": []}
        else:
            body = {"code": "50000", "msg": "Body can not be empty.", "data": []}
        headers = {"Retry-After": str(max(0, int(round(retry_after))))} if retry_after is not None else {}
        return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")

    def _inst(self, request: web.Request) -> int:
        inst = request.query.get("instId")
        if not inst:
            raise OkxError("50014", "Parameter instId can not be empty")
        si = self.symbol_index(inst) if inst == inst.upper() else None
        if si is None or self.symbols[si] != inst:
            raise OkxError("51001", "Instrument ID does not exist")
        return si

    nonpositive_limit_is_error = True

    def bad_param(self, name: str) -> Exception:
        return OkxError("51000", f"Parameter {name} error")
    # ------------------------------------------------------------------ REST endpoints
    def _r_time(self, request: web.Request) -> Any:
        return [{"ts": str(self.now_us() // 1000)}]

    def _instrument(self, inst: str, base: str, quote: str, tick: int, lot: int, state: str) -> dict[str, Any]:
        return {
            "alias": "", "auctionEndTime": "", "baseCcy": base, "category": "1", "ctMult": "", "ctType": "",
            "ctVal": "", "ctValCcy": "", "expTime": "", "instFamily": "", "instId": inst, "instType": "SPOT",
            "lever": "10", "listTime": "1606468572000", "lotSz": strip_zeros(fmt_units(lot)),
            "maxIcebergSz": "9999999999", "maxLmtAmt": "20000000", "maxLmtSz": "9999999999",
            "maxMktAmt": "1000000", "maxMktSz": "1000000", "maxStopSz": "1000000", "maxTriggerSz": "9999999999",
            "maxTwapSz": "9999999999", "minSz": strip_zeros(fmt_units(lot * 10)), "optType": "", "quoteCcy": quote,
            "settleCcy": "", "state": state, "ruleType": "normal", "stk": "",
            "tickSz": strip_zeros(fmt_units(tick)), "uly": "",
        }

    def _r_instruments(self, request: web.Request) -> Any:
        inst_type = request.query.get("instType")
        if not inst_type:
            raise OkxError("50014", "Parameter instType can not be empty")
        if inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            raise OkxError("51000", "Parameter instType error")
        if inst_type != "SPOT":
            return []
        out = [self._instrument(sp.canonical, sp.base, sp.quote, sp.tick_units, sp.lot_units, "live")
               for sp in self.specs]
        for s in self.suspended:
            base, quote = split_canonical(s)
            out.append(self._instrument(f"{base}-{quote}", base, quote, 1_000_000, 10_000, "suspend"))
        inst = request.query.get("instId")
        if inst:
            out = [o for o in out if o["instId"] == inst]
            if not out:
                raise OkxError("51001", "Instrument ID does not exist")
        return out

    def _rows(self, si: int, idx) -> list[dict[str, Any]]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        inst = self.symbols[si]
        pd, qd = self._pdec[si], self._qdec[si]
        return [{"instId": inst, "side": _SIDE[side[i]], "sz": fmt_units(qty[i], qd), "px": fmt_units(px[i], pd),
                 "source": "0", "tradeId": str(ids[i]), "ts": str(ts[i] // 1000)} for i in idx]

    def _r_trades(self, request: web.Request) -> Any:
        si = self._inst(request)
        limit = self.query_limit(request, 100, 500)
        n = len(self.tapes[si])
        return self._rows(si, range(n - 1, max(0, n - limit) - 1, -1))

    def _r_history_trades(self, request: web.Request) -> Any:
        si = self._inst(request)
        typ = request.query.get("type", "1") or "1"
        if typ not in ("1", "2"):
            raise OkxError("51000", "Parameter type error")
        limit = self.query_limit(request, 100, 100)
        after = self.query_int(request, "after")
        before = self.query_int(request, "before")
        tape = self.tapes[si]
        n = len(tape)
        if typ == "1":
            hi = n if after is None else tape.index_of_id(after)  # ids < after
            lo = tape.first if before is None else tape.index_of_id(before + 1)  # ids > before
        else:
            if before is not None:
                raise OkxError("51000", "Parameter before error")
            hi = n if after is None else tape.index_at_ts(after * 1000)  # ts < after (ms)
            lo = tape.first
        lo = max(lo, tape.index_at_ts(self.now_us() - HISTORY_TRADES_US))      # the last 3 months only
        if hi <= lo:
            return []
        return self._rows(si, range(hi - 1, max(lo, hi - limit) - 1, -1))

    def _candles(self, request: web.Request, maximum: int, reachable: int | None) -> Any:
        si = self._inst(request)
        bar = request.query.get("bar", "1m") or "1m"
        if bar not in _BARS:
            raise OkxError("51000", "Parameter bar error")
        iv = _BARS[bar] * 1_000_000
        limit = self.query_limit(request, 100, maximum)
        after = self.query_int(request, "after")
        before = self.query_int(request, "before")
        now = self.now_us()
        hi = None if after is None else after * 1000 - 1
        lo = None if before is None else before * 1000 + 1
        if reachable is not None:
            cutoff = now - now % iv - (reachable - 1) * iv
            lo = cutoff if lo is None else max(lo, cutoff)
        tape = self.tapes[si]
        pd, qd = self._pdec[si], self._qdec[si]
        rows = []
        for b, i, j in self.buckets(si, iv, lo, hi, limit, newest_first=True):
            pxs = tape.px[i:j]
            qs = tape.qty[i:j]
            quote = strip_zeros(fmt_units(sum(map(mul, pxs, qs)) // SCALE))
            rows.append([str(b // 1000), fmt_units(pxs[0], pd), fmt_units(max(pxs), pd), fmt_units(min(pxs), pd),
                         fmt_units(pxs[-1], pd), fmt_units(sum(qs), qd), quote, quote,
                         "1" if b + iv <= now else "0"])
        return rows

    def _r_candles(self, request: web.Request) -> Any:
        return self._candles(request, 300, 1440)

    def _r_history_candles(self, request: web.Request) -> Any:
        return self._candles(request, 100, None)

    def _r_books(self, request: web.Request) -> Any:
        si = self._inst(request)
        sz = self.query_int(request, "sz") or 1
        sz = min(sz, 400)
        if not self.books:
            raise OkxError("50001", "Service temporarily unavailable, please try again later.", 503)
        book = self.books[si]
        lvl = self._level
        return [{
            "asks": [orjson.loads(lvl(si, p, q)) for p, q in book.top(ASK, sz)],
            "bids": [orjson.loads(lvl(si, p, q)) for p, q in book.top(BID, sz)],
            "ts": str(self.now_us() // 1000),
        }]
