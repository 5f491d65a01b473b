"""Coinbase Exchange public market data: the ws-feed and REST, encoded from the reference sheet
(``../shared/reference/venues-binance-okx-kucoin-kraken-coinbase.md`` section 5), independently
of ``marketdata.venues``.

WebSocket (``/`` on the REST port, like ``wss://ws-feed.exchange.coinbase.com``):

* ``{"type":"subscribe","product_ids":[..],"channels":["matches","heartbeat"]}`` (channels also as
  objects ``{"name","product_ids"}``) -> ``{"type":"subscriptions","channels":[{"name",
  "product_ids"}]}`` listing everything the connection is subscribed to now; ``unsubscribe``
  likewise.  A request naming an unlisted product or an unknown channel is rejected whole:
  ``{"type":"error","message":"Failed to subscribe","reason":"FOO-USD is not a valid product"}``.
  Invalid JSON / an unknown ``type`` -> ``{"type":"error","message":"Malformed JSON"|..}``
  (wording UNCONFIRMED).
* Subscribe deadline: a connection that has not subscribed successfully within
  ``subscribe_deadline`` wall seconds (5) gets an error frame and a close frame 1008
  (``closed_reason = "subscribe_deadline"``).  What the venue really sends is UNCONFIRMED.
* ``matches``: on subscribe, one ``last_match`` per product (the tape's latest trade, same shape),
  then one ``match`` per fill: ``trade_id`` int, consecutive per product; ``side`` is the MAKER's
  side (``sell`` = the taker bought); ``sequence`` is the product's order-book sequence (it jumps:
  shared with all order events); ``time`` RFC 3339 with µs and ``Z``; ``maker_order_id`` /
  ``taker_order_id`` deterministic UUID-shaped strings (one taker id per taker order).
* ``heartbeat``: every ``heartbeat_interval`` wall seconds (1) per subscribed product
  ``{"type":"heartbeat","sequence","last_trade_id","product_id","time"}``; ``last_trade_id`` is
  the venue's latest trade id, withheld trades included -- so a client that missed the last
  trades before a quiet period learns it from the heartbeat.
* No server pings (UNCONFIRMED); client pings are answered.  No idle cut.

REST (errors ``{"message": ..}``; unknown product or path 404 ``NotFound``):
``/time``; ``/currencies`` (the listed products' currencies, ``details.type`` crypto / fiat); ``/products`` (listed symbols plus ``delisted_symbols``, default ``["UST-USD"]``, with
``status: "delisted"``, ``trading_disabled: true``); ``/products/{id}``;
``/products/{id}/trades?limit=&after=&before=``: newest first, ``limit`` <= 1000 (default 1000);
``after=X`` -> the ``limit`` newest ids below X (the next older page), ``before=X`` -> the
``limit`` oldest ids above X (the next newer page; whether the venue returns the adjacent page
or the newest one is UNCONFIRMED), both -> ids strictly between, adjacent to ``after``; headers
``CB-BEFORE`` (first row's id) and ``CB-AFTER`` (last row's id); ``side`` = maker side.
``/products/{id}/candles?granularity=&start=&end=`` (ISO 8601 or epoch seconds, both inclusive):
rows ``[time, low, high, open, close, volume]`` as JSON numbers, newest first, only buckets with
trades, at most 300 -- a range implying more is rejected (400); without start/end the latest 300.

Ground truth: ``trade_id`` as on the wire, ``side`` = the TAKER side (the opposite of the wire's),
``ts_us`` at µs.  Prices print with the product's quote increment, sizes with 8 decimals, the same
on WS and REST.

Venue options (``SimulatorConfig.venue_options["coinbase"]``): ``subscribe_deadline`` (5.0 wall s;
0 = off), ``heartbeat_interval`` (1.0 wall s), ``delisted_symbols``, plus the common
``book_depth_ticks`` / ``book_density`` / ``books`` (the book drives ``sequence``).

Faults: ``skip_ids`` (withheld from ``matches``; still on REST, in heartbeats' ``last_trade_id``
and the ground truth); with ``"then_pause": true`` the rest of that generation slice of the symbol
is withheld as well and generation pauses right after (``/_sim/resume`` ends the quiet period), so
the withheld trades are the LAST before a quiet market and only a heartbeat reveals them;
``silent_drop``, ``close``, ``abort``, ``malformed`` (``invalid_json`` | ``missing_fields`` |
``mixed``), ``unknown_symbol`` (well-formed matches for an unlisted product), ``rest_fail`` /
``rest_delay``.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web

from .conn import HDR, WSConnection, close_frame, text_header
from .faults import FaultError
from .generator import split_canonical
from .venue import SliceInfo, Venue, VenueRestError, decimals_of, fmt_units, strip_zeros

_CHANNELS = ("matches", "heartbeat")
_MAKER_SIDE = ("buy", "sell")          # indexed by the tape's taker side (0 sell, 1 buy)
_GRANULARITIES = {60, 300, 900, 3600, 21600, 86400}
_MAX_CANDLES = 300


class CoinbaseError(VenueRestError):
    pass


class _CState:
    __slots__ = ("matches", "heartbeat", "subscribed")

    def __init__(self) -> None:
        self.matches: list[int] = []     # symbol indices
        self.heartbeat: list[int] = []
        self.subscribed = False          # a subscribe succeeded once: the deadline no longer applies


class _TimeFmt:
    """RFC 3339 with µs and ``Z``; the seconds part is cached (trades share seconds)."""

    __slots__ = ("_s", "_txt")

    def __init__(self) -> None:
        self._s = -1
        self._txt = ""

    def __call__(self, ts_us: int) -> str:
        s, us = divmod(ts_us, 1_000_000)
        if s != self._s:
            self._s = s
            self._txt = datetime.fromtimestamp(s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._txt}.{us:06d}Z"


def _uuid(a: int, b: int) -> str:
    return f"{a & 0xFFFFFFFF:08x}-{(a >> 32) & 0xFFFF:04x}-4{b & 0xFFF:03x}-8{(b >> 12) & 0xFFF:03x}-{b & 0xFFFFFFFFFFFF:012x}"


class CoinbaseVenue(Venue):
    name = "coinbase"
    books_feed_trades = True      # its trade messages carry the book sequence (trade_seq)
    ts_quantum_us = 1
    id_range = (100_000_000, 900_000_000)
    server_pings = False
    qty_decimals = 8

    def __init__(self, sim, symbols, rate, options) -> None:
        super().__init__(sim, symbols, rate, options)
        self.subscribe_deadline = float(self.options.get("subscribe_deadline", 5.0))
        self.heartbeat_interval = float(self.options.get("heartbeat_interval", 1.0))
        self.delisted = [s.upper() for s in self.options.get("delisted_symbols", ["UST-USD"])
                         if s.upper() not in self.symbols]
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]
        self._rng = random.Random(f"{self.config.seed}:{self.name}:conns")
        self._tfmt = _TimeFmt()
        self._hb_next = 0.0
        self._deadline_next = 0.0
        self._quiet: list[tuple[int, Any, int]] = []   # then_pause skips: (symbol, record, count)
        self.quiet_periods: list[dict[str, Any]] = []
        self.deadline_cuts = 0
        self.heartbeats_sent = 0
        self._tpl = ['{"type":"%s","trade_id":%d,"maker_order_id":"%s","taker_order_id":"%s","side":"%s",'
                     '"size":"%s","price":"%s","product_id":"' + s + '","sequence":%d,"time":"%s"}'
                     for s in self.symbols]

    # ------------------------------------------------------------------ formatting
    def venue_symbol(self, si: int) -> str:
        return self.symbols[si]

    def fmt_trade_price(self, si: int, units: int) -> str:
        return fmt_units(units, self._pdec[si])

    fmt_book_price = fmt_trade_price

    def _sequence(self, si: int, i: int) -> int:
        return self.books[si].trade_seq[i] if self.books else self.tapes[si].ids[i] * 3

    def _head_sequence(self, si: int) -> int:
        if self.books:
            return self.books[si].update_id
        tape = self.tapes[si]
        return tape.ids[-1] * 3 if len(tape) else 0

    def _taker_uuid(self, si: int, order: int) -> str:
        return _uuid(self.specs[si].first_order_id + order, order * 40503 + si)

    def _match_row(self, si: int, i: int, kind: str, order: int | None = None, taker: str | None = None) -> str:
        tape = self.tapes[si]
        if order is None:
            order = tape.order_of_index(i)
        sp = self.specs[si]
        return self._tpl[si] % (
            kind, tape.ids[i], _uuid(tape.ids[i] * 2654435761, sp.first_order_id + i),
            taker or self._taker_uuid(si, order), _MAKER_SIDE[tape.side[i]],
            self.qty_str[si][tape.qty[i]], self.px_str[si][tape.px[i]], self._sequence(si, i),
            self._tfmt(tape.ts[i]))

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._h_ws)
        r.add_get("/time", self._rest(self._r_time))
        r.add_get("/products", self._rest(self._r_products))
        r.add_get("/currencies", self._rest(self._r_currencies))
        r.add_get("/products/{pid}", self._rest(self._r_product))
        r.add_get("/products/{pid}/trades", self._r_trades)
        r.add_get("/products/{pid}/candles", self._rest(self._r_candles))

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"message": "NotFound"}, status=404)
        return await self.ws_session(request, _CState())

    # ------------------------------------------------------------------ WebSocket control
    def _send(self, conn: WSConnection, obj: dict[str, Any]) -> None:
        conn.send_text(orjson.dumps(obj).decode())

    def _error(self, conn: WSConnection, message: str, reason: str | None = None) -> None:
        obj = {"type": "error", "message": message}
        if reason is not None:
            obj["reason"] = reason
        self._send(conn, obj)

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _CState = conn.venue_state
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._error(conn, "Malformed JSON")
            return
        if not isinstance(msg, dict):
            self._error(conn, "Malformed JSON")
            return
        typ = msg.get("type")
        if typ not in ("subscribe", "unsubscribe"):
            self._error(conn, "Failed to subscribe", f"{typ!r} is not a valid type")
            return
        top = msg.get("product_ids", [])
        chans = msg.get("channels")
        if not isinstance(top, list) or not isinstance(chans, list) or not chans:
            self._error(conn, f"Failed to {typ}", "channels and product_ids must be lists")
            return
        wanted: list[tuple[str, int]] = []
        for ch in chans:
            if isinstance(ch, str):
                name, pids = ch, top
            elif isinstance(ch, dict) and isinstance(ch.get("name"), str):
                name, pids = ch["name"], ch.get("product_ids", top)
            else:
                self._error(conn, f"Failed to {typ}", "malformed channel")
                return
            if name not in _CHANNELS:
                self._error(conn, f"Failed to {typ}", f"{name} is not a valid channel")
                return
            if not isinstance(pids, list) or not pids:
                self._error(conn, f"Failed to {typ}", f"{name}: no product_ids")
                return
            for pid in pids:
                si = self.symbol_index(pid) if isinstance(pid, str) and pid == pid.upper() else None
                if si is None or self.symbols[si] != pid:
                    self._error(conn, f"Failed to {typ}", f"{pid} is not a valid product")
                    return
                wanted.append((name, si))
        new_matches = []
        for name, si in wanted:
            subs = st.matches if name == "matches" else st.heartbeat
            if typ == "subscribe" and si not in subs:
                subs.append(si)
                if name == "matches":
                    new_matches.append(si)
            elif typ == "unsubscribe" and si in subs:
                subs.remove(si)
        if typ == "subscribe":
            st.subscribed = True
        self._send(conn, {"type": "subscriptions", "channels": [
            {"name": n, "product_ids": [self.symbols[si] for si in subs]}
            for n, subs in (("matches", st.matches), ("heartbeat", st.heartbeat)) if subs]})
        for si in new_matches:
            if len(self.tapes[si]):
                conn.send_text(self._match_row(si, len(self.tapes[si]) - 1, "last_match"))

    # ------------------------------------------------------------------ trades
    def apply_fault(self, kind: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        then_pause = bool((params or {}).get("then_pause"))
        if then_pause and kind != "skip_ids":
            raise FaultError("then_pause applies to skip_ids only")
        out = super().apply_fault(kind, params)
        if then_pause:
            rec = self.faults.records[-1]
            self._quiet.append((self.symbol_index(params.get("symbol")), rec, int(params.get("count", 1))))
        return out

    def _quiet_after_skip(self, sl: SliceInfo) -> None:
        """A then_pause skip that completed in this slice: the symbol's later trades of the slice
        are withheld too, and generation pauses, so the withheld trades end the tape for now."""
        for q in list(self._quiet):
            si, rec, count = q
            if rec.hits < count or si not in sl.ranges:
                continue
            self._quiet.remove(q)
            i1 = sl.ranges[si][1]
            w = sl.withheld.setdefault(si, [])
            end = max((hi for _, hi, c in w if c is None), default=sl.ranges[si][0])
            if end < i1:
                w.append((end, i1, None))
                self.tapes[si].withheld += i1 - end
            ids = self.tapes[si].ids
            first = int(rec.note.split()[-1].split("..")[0]) if rec.note else ids[end]
            rec.note = f"withheld trade ids {first}..{ids[i1 - 1]}, then paused"
            self.quiet_periods.append({"symbol": self.symbols[si], "first_id": first, "last_id": ids[i1 - 1],
                                       "paused_at_us": sl.now_us})
            self.pause()

    def on_slice(self, sl: SliceInfo) -> None:
        if self._quiet:
            self._quiet_after_skip(sl)
        if not self.conns:
            return
        cache: dict[tuple, tuple[bytes, int]] = {}
        for conn in list(self.conns.values()):
            if not conn.can_send:
                continue
            st: _CState = conn.venue_state
            if not st.matches:
                continue
            parts = []
            frames = 0
            for si in st.matches:
                rng = sl.ranges.get(si)
                if rng is None:
                    continue
                target = conn.id if sl.conn_specific(si) else None
                key = (si, target)
                ent = cache.get(key)
                if ent is None:
                    ent = cache[key] = self._encode(si, rng[0], rng[1], rng[2], sl.withheld_for(si, target))
                if ent[1]:
                    parts.append(ent[0])
                    frames += ent[1]
            if frames:
                conn.write(b"".join(parts), frames, frames)

    def _encode(self, si: int, i0: int, i1: int, o0: int, skip: list[tuple[int, int]]) -> tuple[bytes, int]:
        tape = self.tapes[si]
        ostart = tape.order_start
        n_orders = len(ostart)
        parts: list[str] = []
        app = parts.append
        n = 0
        o = o0 if o0 < n_orders and ostart[o0] <= i0 else tape.order_of_index(i0)
        taker = self._taker_uuid(si, o)
        # _match_row(si, i, "match", o) written out with the columns and memos held locally
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        seq = self.books[si].trade_seq if self.books else None
        pm, qm, tpl, tfmt = self.px_str[si], self.qty_str[si], self._tpl[si], self._tfmt
        first_order = self.specs[si].first_order_id
        for i in range(i0, i1):
            while o + 1 < n_orders and ostart[o + 1] <= i:
                o += 1
                taker = None
            if skip and any(lo <= i < hi for lo, hi in skip):
                continue
            if taker is None:
                taker = self._taker_uuid(si, o)
            tid = ids[i]
            s = tpl % ("match", tid, _uuid(tid * 2654435761, first_order + i), taker, _MAKER_SIDE[side[i]],
                       qm[qty[i]], pm[px[i]], seq[i] if seq is not None else tid * 3, tfmt(ts[i]))
            L = len(s)
            app(HDR[L] if L < 4096 else text_header(L))
            app(s)
            n += 1
        return "".join(parts).encode("latin-1"), n

    # ------------------------------------------------------------------ timers
    def periodic(self, mono: float) -> None:
        if self.subscribe_deadline > 0 and mono >= self._deadline_next:
            self._deadline_next = mono + min(0.05, self.subscribe_deadline / 10)
            for conn in list(self.conns.values()):
                if conn.state == "open" and not conn.silent and not conn.venue_state.subscribed \
                        and mono - conn.opened_mono >= self.subscribe_deadline:
                    self._cut_late(conn)
        if self.heartbeat_interval > 0 and mono >= self._hb_next:
            self._hb_next = self._hb_next + self.heartbeat_interval \
                if mono - self._hb_next < self.heartbeat_interval else mono + self.heartbeat_interval
            self._emit_heartbeats()

    def _cut_late(self, conn: WSConnection) -> None:
        self.deadline_cuts += 1
        self._error(conn, "Failed to subscribe",
                    f"you must subscribe within {self.subscribe_deadline:g} seconds of connecting")
        conn.closed_reason = "subscribe_deadline"
        if conn.write(close_frame(1008, "subscribe timeout")):
            conn.state = "closed"
            if conn.transport is not None:
                conn.transport.close()
        else:
            conn.abort("subscribe_deadline")

    def _emit_heartbeats(self) -> None:
        now = self._tfmt(self.now_us())
        msgs: dict[int, str] = {}
        for conn in list(self.conns.values()):
            st: _CState = conn.venue_state
            if not st.heartbeat or not conn.can_send:
                continue
            parts = []
            for si in st.heartbeat:
                s = msgs.get(si)
                if s is None:
                    tape = self.tapes[si]
                    if not len(tape):
                        continue
                    s = msgs[si] = ('{"type":"heartbeat","last_trade_id":%d,"product_id":"%s","sequence":%d,'
                                    '"time":"%s"}' % (tape.ids[-1], self.symbols[si], self._head_sequence(si), now))
                parts.append(HDR[len(s)] + s)
            if parts:
                conn.write("".join(parts).encode("latin-1"), len(parts))
                self.heartbeats_sent += len(parts)

    # ------------------------------------------------------------------ faults
    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _CState = conn.venue_state
        count = int(params.get("count", 1))
        si = st.matches[0] if st.matches else 0
        pid = self.symbols[si]
        now = self._tfmt(self.now_us())
        if kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            for k in range(count):
                if variant == "invalid_json" or (variant == "mixed" and k % 2 == 0):
                    conn.send_text('{"type":"match","trade_id":12,"product_id":"%s","price":' % pid)
                else:
                    conn.send_text('{"type":"match","product_id":"%s","side":"buy","time":"%s"}' % (pid, now))
        elif kind == "unknown_symbol":
            sym = str(params.get("symbol", "ZZZ-USD")).upper()
            base, quote = split_canonical(sym)
            sym = f"{base}-{quote}"
            if sym in self.symbols:
                raise FaultError(f"{sym} is listed; unknown_symbol needs an unlisted symbol")
            for _ in range(count):
                tid = self._rng.randrange(1_000_000, 9_000_000)
                conn.send_text('{"type":"match","trade_id":%d,"maker_order_id":"%s","taker_order_id":"%s",'
                               '"side":"sell","size":"10.00000000","price":"1.234","product_id":"%s",'
                               '"sequence":%d,"time":"%s"}' % (tid, _uuid(tid, 1), _uuid(tid, 2), sym, tid * 3, now))
        else:
            raise FaultError(f"coinbase does not implement fault {kind!r}")

    def venue_stats(self) -> dict[str, Any]:
        return {"coinbase": {"deadline_cuts": self.deadline_cuts, "heartbeats_sent": self.heartbeats_sent,
                             "quiet_periods": list(self.quiet_periods)}}

    # ------------------------------------------------------------------ REST plumbing
    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                data = fn(request)
            except CoinbaseError as e:
                return web.Response(body=orjson.dumps({"message": e.msg}), status=e.status,
                                    content_type="application/json")
            if isinstance(data, web.Response):
                return data
            return web.Response(body=orjson.dumps(data), content_type="application/json")

        return handler

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        msg = {429: "Public rate limit exceeded"}.get(status, "Internal server error" if status >= 500 else "BadRequest")
        headers = {"Retry-After": str(max(0, int(round(retry_after))))} if retry_after is not None else {}
        return web.Response(body=orjson.dumps({"message": msg}), status=status, headers=headers,
                            content_type="application/json")

    def bad_param(self, name: str) -> Exception:
        return CoinbaseError(400, f"Invalid {name}", 400)

    def _product(self, request: web.Request) -> int:
        pid = request.match_info["pid"]
        si = self.symbol_index(pid) if pid == pid.upper() else None
        if si is None or self.symbols[si] != pid:
            raise CoinbaseError(404, "NotFound", 404)
        return si

    # ------------------------------------------------------------------ REST endpoints
    def _r_time(self, request: web.Request) -> Any:
        now = self.now_us()
        return {"iso": self._tfmt(now)[:-4] + "Z", "epoch": now / 1e6}

    def _product_row(self, pid: str, base: str, quote: str, tick: int, status: str) -> dict[str, Any]:
        online = status == "online"
        return {
            "id": pid, "base_currency": base, "quote_currency": quote, "quote_increment": strip_zeros(fmt_units(tick)),
            "base_increment": "0.00000001", "display_name": pid.replace("-", "/"), "min_market_funds": "1",
            "margin_enabled": False, "post_only": False, "limit_only": False, "cancel_only": False,
            "status": status, "status_message": "", "trading_disabled": not online, "fx_stablecoin": False,
            "max_slippage_percentage": "0.02000000", "auction_mode": False, "high_bid_limit_percentage": "",
        }

    def _products(self) -> list[dict[str, Any]]:
        out = [self._product_row(sp.canonical, sp.base, sp.quote, sp.tick_units, "online") for sp in self.specs]
        for s in self.delisted:
            base, quote = split_canonical(s)
            out.append(self._product_row(f"{base}-{quote}", base, quote, 1_000_000, "delisted"))
        return out

    def _r_products(self, request: web.Request) -> Any:
        return self._products()

    def _r_currencies(self, request: web.Request) -> Any:
        """``/currencies`` (ccxt's load_markets): the currencies of the listed products."""
        fiat = {"USD", "EUR", "GBP"}
        out = []
        for c in self.currencies():
            kind = "fiat" if c in fiat else "crypto"
            out.append({"id": c, "name": c, "min_size": "0.01" if kind == "fiat" else "0.00000001",
                        "status": "online", "message": "", "max_precision": "0.01" if kind == "fiat" else "0.00000001",
                        "convertible_to": [], "details": {"type": kind, "symbol": "", "network_confirmations": 2,
                                                          "sort_order": 0, "push_payment_methods": [kind],
                                                          "min_withdrawal_amount": 0.0001,
                                                          "max_withdrawal_amount": 1000},
                        "default_network": c.lower() if kind == "crypto" else "", "supported_networks": []})
        return out

    def not_found_body(self, request: web.Request) -> Any:
        return {"message": "NotFound"}

    def _r_product(self, request: web.Request) -> Any:
        return self._products()[self._product(request)]

    async def _r_trades(self, request: web.Request) -> web.Response:
        try:
            si = self._product(request)
            limit = self.query_limit(request, 1000, 1000)
            after = self.query_int(request, "after")
            before = self.query_int(request, "before")
        except CoinbaseError as e:
            return web.Response(body=orjson.dumps({"message": e.msg}), status=e.status,
                                content_type="application/json")
        tape = self.tapes[si]
        n = len(tape)
        hi = n if after is None else tape.index_of_id(after)            # ids < after
        lo = tape.first if before is None else tape.index_of_id(before + 1)      # ids > before
        if before is not None and after is None:
            hi = min(hi, lo + limit)      # the next newer page: adjacent to the cursor
        lo = max(lo, hi - limit)
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        pd = self._pdec[si]
        rows = [{"time": self._tfmt(ts[i]), "trade_id": ids[i], "price": fmt_units(px[i], pd),
                 "size": fmt_units(qty[i], 8), "side": _MAKER_SIDE[side[i]]} for i in range(hi - 1, lo - 1, -1)]
        headers = {}
        if rows:
            headers = {"CB-BEFORE": str(rows[0]["trade_id"]), "CB-AFTER": str(rows[-1]["trade_id"])}
        return web.Response(body=orjson.dumps(rows), headers=headers, content_type="application/json")

    def _time_param(self, request: web.Request, name: str) -> int | None:
        v = request.query.get(name)
        if not v:
            return None
        try:
            if v.replace(".", "", 1).isdigit():
                return int(float(v) * 1_000_000)
            return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1_000_000)
        except ValueError:
            raise CoinbaseError(400, f"Invalid {name}", 400) from None

    def _r_candles(self, request: web.Request) -> Any:
        si = self._product(request)
        g = self.query_int(request, "granularity", 60)
        if g not in _GRANULARITIES:
            raise CoinbaseError(400, "Unsupported granularity", 400)
        iv = g * 1_000_000
        start, end = self._time_param(request, "start"), self._time_param(request, "end")
        if start is not None and end is not None:
            if end < start:
                raise CoinbaseError(400, "start must be before end", 400)
            first = -(-start // iv) * iv
            if end >= first and (end - first) // iv + 1 > _MAX_CANDLES:
                raise CoinbaseError(400, "granularity too small for the requested time range. "
                                         "Count of aggregations requested exceeds 300", 400)
        tape = self.tapes[si]
        pd = self._pdec[si]
        rows = []
        for b, i, j in self.buckets(si, iv, start, end, _MAX_CANDLES, newest_first=True):
            pxs = tape.px[i:j]
            vol = sum(tape.qty[i:j])
            rows.append("[%d,%s,%s,%s,%s,%s]" % (b // 1_000_000, fmt_units(min(pxs), pd), fmt_units(max(pxs), pd),
                                                 fmt_units(pxs[0], pd), fmt_units(pxs[-1], pd), fmt_units(vol, 8)))
        # Numbers are written as decimal text so the client reads exactly what the tape holds.
        return web.Response(body=("[" + ",".join(rows) + "]").encode(), content_type="application/json")

