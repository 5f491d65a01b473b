"""Bybit v5 spot public market data: WebSocket and REST, encoded from the reference sheet
(``../shared/reference/venues-bybit-bitfinex-gateio-bitstamp-alpaca.md`` section 1), independently
of ``marketdata.venues``.

WebSocket ``/v5/public/spot`` (same port as REST):

* ``{"req_id"?,"op":"subscribe","args":["publicTrade.BTCUSDT",...]}`` -> ONE ack per request,
  ``{"success":true,"ret_msg":"subscribe","conn_id":..,"req_id"?,"op":"subscribe"}``.  More than
  ``max_args`` (10) args -> ``{"success":false,"ret_msg":"args size >10",...}`` (text as seen in
  rust-bybit#24 and nautilus_trader#1793); an unknown topic or symbol rejects the whole request with
  ``"Invalid symbol :[publicTrade.XXX]"`` (text UNCONFIRMED).  ``unsubscribe`` alike.
* ``publicTrade.{symbol}``: per generation slice and symbol one message
  ``{"topic","type":"snapshot","ts":ms,"data":[...]}`` with every new trade of the slice (at most
  1024 per message, more are split), ascending, each ``{"T":ms,"s","S":"Buy"|"Sell" (taker),
  "v":str,"p":str,"i":str,"BT":false,"RPI":false,"seq":int}``.  ``ts`` = simulated time of the
  slice (>= every ``T``).
* Keepalive: ``{"req_id"?,"op":"ping"}`` -> ``{"success":true,"ret_msg":"pong","conn_id",
  "req_id"?,"op":"ping"}``.  A connection that sent no ``op: ping`` for ``idle_timeout`` (600 s
  on the real venue; the reference says "no ping/pong and no data") is dropped **without a close
  frame**; data flowing to it and WebSocket control pings do not count (the stricter choice).
  Bybit sends no server pings on public streams.

Trade ids: ``i`` is a long numeric string.  Bybit's spot id counter is shared by all symbols, so
per symbol ids increase but are NOT consecutive (the reference: contiguity undocumented): here
``i = 2290000000000000000 + tape_id * 16 + r`` with ``r`` in 0..15 a hash of the tape id.  The
ground-truth ``trade_id`` is that string (REST ``execId`` is the same).  ``seq`` is the cross
sequence: the book update id of the fill when books are on, else the tape id (monotonic, not
contiguous across symbols' shared counter -- not used for gap detection by clients).
``ts_us`` resolution: ms.  Prices print with the instrument's tick decimals (``"90387.46"``),
sizes with the lot decimals (``"0.00140"``).

REST (envelope ``{"retCode":0,"retMsg":"OK","result":{..},"retExtInfo":{},"time":ms}``; errors
are HTTP 200 with ``retCode != 0``): ``/v5/market/time``,
``/v5/market/instruments-info?category=spot[&symbol=]`` (``symbol``, ``baseCoin``, ``quoteCoin``,
``status`` ``Trading``; plus ``closed_symbols`` listed with status ``Closed``; ``linear``,
``inverse`` and ``option`` are answered like the real venue's, with an empty ``list``, since
clients such as ccxt and cryptofeed load every category),
``/v5/market/recent-trade?category=spot&symbol=&limit=`` (ONLY the last ``recent_trades`` (60)
trades, newest first, limit 1..60, no time or id parameters; ``time``/``seq`` are strings),
``/v5/market/kline?category=spot&symbol=&interval=1&start=&end=&limit=`` (ms, bucket starts in
``[start, end]``, limit 1..1000 default 200, newest first, only buckets with trades (UNCONFIRMED
whether Bybit prints empty minutes), rows ``[start, open, high, low, close, volume, turnover]``
as strings; no trade count).  Bad parameters: ``retCode 10001``; unknown symbol ``10001 "Not
supported symbols"``.  ``rest_fail`` 429 -> ``10006 "Too many visits!"`` with HTTP 429.

Venue options (``SimulatorConfig.venue_options["bybit"]``): ``idle_timeout`` (600 s; 0 off),
``max_args`` (10), ``recent_trades`` (60), ``closed_symbols`` (``["LUNA-USDT"]``), ``books``
(False: Bybit books are not simulated; on, they only feed ``seq``).

Faults: ``silent_drop``, ``close``, ``abort`` (one connection with ``conn``), ``skip_ids``
(withheld per trade; undetectable from ids), ``malformed``, ``unknown_symbol``, ``rest_fail`` /
``rest_delay``.  No ``notice`` (Bybit has no reconnect notice), no book faults.
"""

from __future__ import annotations

import random
import time
import uuid
from operator import mul
from typing import Any

import orjson
from aiohttp import web

from .conn import HDR, WSConnection, text_header
from .faults import FaultError
from .generator import SCALE, split_canonical
from .venue import SliceInfo, Venue, VenueRestError, decimals_of, fmt_units

_SIDE = ("Sell", "Buy")
_ID_BASE = 2_290_000_000_000_000_000
_MAX_PER_MSG = 1024
_INTERVALS = {"1": 60, "3": 180, "5": 300, "15": 900, "30": 1800, "60": 3600, "120": 7200, "240": 14400,
              "360": 21600, "720": 43200, "D": 86400, "W": 604800}


class BybitError(VenueRestError):
    pass


class _BState:
    __slots__ = ("conn_tag", "trades", "last_ping")

    def __init__(self, conn_tag: str) -> None:
        self.conn_tag = conn_tag
        self.trades: list[int] = []   # subscribed symbol indices
        self.last_ping = time.monotonic()


#: the categories the real venue's instruments-info serves (only spot is simulated)
ALL_CATEGORIES = ("spot", "linear", "inverse", "option")


class BybitVenue(Venue):
    name = "bybit"
    books_feed_trades = True      # its trade messages carry the book sequence (trade_seq)
    ts_quantum_us = 1000
    id_range = (60_000_000_000, 90_000_000_000)
    server_pings = False

    def __init__(self, sim, symbols, rate, options) -> None:
        super().__init__(sim, symbols, rate, {"books": False, **dict(options)})
        self.idle_timeout = float(self.options.get("idle_timeout", 600.0))
        self.max_args = int(self.options.get("max_args", 10))
        self.recent_trades = int(self.options.get("recent_trades", 60))
        self.closed = [s.upper() for s in self.options.get("closed_symbols", ["LUNA-USDT"])
                       if s.upper() not in self.symbols]
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]
        self._qdec = [decimals_of(sp.lot_units) for sp in self.specs]
        self._vsym = [sp.base + sp.quote for sp in self.specs]
        self._rng = random.Random(f"{self.config.seed}:{self.name}:conns")
        self._idle_next = 0.0
        self.idle_drops = 0
        self.rejected_subscribes = 0
        self._trade_tpl = ['{"T":%d,"s":"' + v + '","S":"%s","v":"%s","p":"%s","i":"%s","BT":false,"RPI":false,'
                           '"seq":%d}' for v in self._vsym]

    # ------------------------------------------------------------------ formatting
    def venue_symbol(self, si: int) -> str:
        return self._vsym[si]

    def fmt_trade_id(self, si: int, trade_id: int) -> str:
        # a counter shared with other symbols: increasing per symbol, never consecutive by promise
        return str(_ID_BASE + trade_id * 16 + (trade_id * 2654435761 >> 7) % 16)

    def fmt_trade_price(self, si: int, units: int) -> str:
        return fmt_units(units, self._pdec[si])

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return fmt_units(units, self._qdec[si])

    fmt_book_price = fmt_trade_price
    fmt_book_qty = fmt_trade_qty

    def _seq(self, si: int, i: int) -> int:
        return self.books[si].trade_seq[i] if self.books else self.tapes[si].ids[i]

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v5/public/spot", self._h_ws)
        r.add_get("/v5/market/time", self._rest(self._r_time))
        r.add_get("/v5/market/instruments-info", self._rest(self._r_instruments))
        r.add_get("/v5/market/recent-trade", self._rest(self._r_recent_trade))
        r.add_get("/v5/market/kline", self._rest(self._r_kline))

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        return await self.ws_session(request, _BState(str(uuid.UUID(int=self._rng.getrandbits(128), version=4))))

    # ------------------------------------------------------------------ WebSocket control
    def _reply(self, conn: WSConnection, success: bool, ret_msg: str, op: str, req_id: Any) -> None:
        obj: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": conn.venue_state.conn_tag}
        if req_id is not None:
            obj["req_id"] = req_id
        obj["op"] = op
        conn.send_text(orjson.dumps(obj).decode())

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _BState = conn.venue_state
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._reply(conn, False, "error:invalid op", "", None)
            return
        if not isinstance(msg, dict):
            self._reply(conn, False, "error:invalid op", "", None)
            return
        op, rid = msg.get("op"), msg.get("req_id")
        if op == "ping":
            st.last_ping = time.monotonic()
            self._reply(conn, True, "pong", "ping", rid)
            return
        if op not in ("subscribe", "unsubscribe"):
            self._reply(conn, False, f"error:invalid op {op}", str(op), rid)
            return
        args = msg.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            self._reply(conn, False, "error:args is empty", op, rid)
            return
        if len(args) > self.max_args:
            self.rejected_subscribes += 1
            self._reply(conn, False, f"args size >{self.max_args}", op, rid)
            return
        parsed = []
        for a in args:
            topic, _, vs = a.partition(".")
            si = self.symbol_index(vs) if vs and vs == vs.upper() and "-" not in vs else None
            if topic != "publicTrade" or si is None:
                self.rejected_subscribes += 1
                self._reply(conn, False, f"Invalid symbol :[{a}]", op, rid)
                return
            parsed.append(si)
        for si in parsed:
            if op == "subscribe" and si not in st.trades:
                st.trades.append(si)
            elif op == "unsubscribe" and si in st.trades:
                st.trades.remove(si)
        self._reply(conn, True, op, op, rid)

    # ------------------------------------------------------------------ trades
    def on_slice(self, sl: SliceInfo) -> None:
        if not self.conns:
            return
        cache: dict[tuple, tuple[bytes, int, int]] = {}
        ms = sl.now_us // 1000
        for conn in list(self.conns.values()):
            if not conn.can_send or not conn.venue_state.trades:
                continue
            parts = []
            frames = trades = 0
            for si in conn.venue_state.trades:
                rng = sl.ranges.get(si)
                if rng is None:
                    continue
                target = conn.id if sl.conn_specific(si) else None
                ent = cache.get((si, target))
                if ent is None:
                    ent = cache[(si, target)] = self._encode(si, rng[0], rng[1], sl.withheld_for(si, target), ms)
                if ent[1]:
                    parts.append(ent[0])
                    frames += ent[1]
                    trades += ent[2]
            if frames:
                conn.write(b"".join(parts), frames, trades)

    def _encode(self, si: int, i0: int, i1: int, skip: list[tuple[int, int]], ms: int) -> tuple[bytes, int, int]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        tpl = self._trade_tpl[si]
        pm, qm, fi = self.px_str[si], self.qty_str[si], self.fmt_trade_id
        seq = self.books[si].trade_seq if self.books else ids
        rows = [tpl % (ts[i] // 1000, _SIDE[side[i]], qm[qty[i]], pm[px[i]], fi(si, ids[i]), seq[i])
                for i in range(i0, i1) if not (skip and any(lo <= i < hi for lo, hi in skip))]
        head = '{"topic":"publicTrade.%s","type":"snapshot","ts":%d,"data":[' % (self._vsym[si], ms)
        out = []
        frames = 0
        for k in range(0, len(rows), _MAX_PER_MSG):
            s = head + ",".join(rows[k:k + _MAX_PER_MSG]) + "]}"
            out.append(text_header(len(s)) if len(s) >= 4096 else HDR[len(s)])
            out.append(s)
            frames += 1
        return "".join(out).encode("latin-1"), frames, len(rows)

    # ------------------------------------------------------------------ idle cut
    def periodic(self, mono: float) -> None:
        self.drop_idle(mono, "last_ping")

    # ------------------------------------------------------------------ faults
    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _BState = conn.venue_state
        count = int(params.get("count", 1))
        ms = self.now_us() // 1000
        vs = self._vsym[st.trades[0] if st.trades else 0]
        if kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            for k in range(count):
                if variant == "invalid_json" or (variant == "mixed" and k % 2 == 0):
                    conn.send_text('{"topic":"publicTrade.%s","type":"snapshot","ts":%d,"data":[{"T":' % (vs, ms))
                else:
                    conn.send_text('{"topic":"publicTrade.%s","type":"snapshot","ts":%d,"data":[{"T":%d,"s":"%s"}]}'
                                   % (vs, ms, ms, vs))
        elif kind == "unknown_symbol":
            name = str(params.get("symbol", "ZZZ-USDT")).upper()
            base, quote = split_canonical(name)
            if f"{base}-{quote}" in self.symbols:
                raise FaultError(f"{base}-{quote} is listed; unknown_symbol needs an unlisted symbol")
            for _ in range(count):
                tid = _ID_BASE + self._rng.randrange(10**12, 10**13)
                conn.send_text('{"topic":"publicTrade.%s%s","type":"snapshot","ts":%d,"data":[{"T":%d,"s":"%s%s",'
                               '"S":"Buy","v":"10","p":"1.234","i":"%d","BT":false,"RPI":false,"seq":%d}]}'
                               % (base, quote, ms, ms, base, quote, tid, tid % 10**9))
        else:
            raise FaultError(f"bybit does not implement fault {kind!r}")

    def venue_stats(self) -> dict[str, Any]:
        return {"bybit": {
            "idle_drops": self.idle_drops, "rejected_subscribes": self.rejected_subscribes,
            "subscriptions": {str(c.id): [self._vsym[si] for si in c.venue_state.trades]
                              for c in self.conns.values()},
        }}

    # ------------------------------------------------------------------ REST plumbing
    def _envelope(self, code: int, msg: str, result: Any) -> bytes:
        return orjson.dumps({"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {},
                             "time": self.now_us() // 1000})

    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                result = fn(request)
            except BybitError as e:
                return web.Response(body=self._envelope(e.code, e.msg, {}), status=e.status,
                                    content_type="application/json")
            return web.Response(body=self._envelope(0, "OK", result), content_type="application/json")

        return handler

    def not_found_body(self, request: web.Request) -> Any:
        return {"retCode": 10001, "retMsg": "Not Found", "result": {}, "retExtInfo": {}, "time": self.now_us() // 1000}

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        if status in (403, 429):
            code, msg = 10006, "Too many visits!"
        elif status >= 500:
            code, msg = 10016, "Server error."
        else:
            code, msg = 10001, "params error"
        headers = {"Retry-After": str(max(0, int(round(retry_after))))} if retry_after is not None else {}
        return web.Response(body=self._envelope(code, msg, {}), status=status, headers=headers,
                            content_type="application/json")

    def bad_param(self, name: str) -> Exception:
        return BybitError(10001, f"params error: {name} invalid", 200)

    def _category(self, request: web.Request, served: tuple[str, ...] = ("spot",)) -> str:
        cat = request.query.get("category")
        if not cat:
            raise BybitError(10001, "params error: Category is required", 200)
        if cat not in served:
            raise BybitError(10001, "params error: Category is invalid", 200)
        return cat

    def _sym(self, request: web.Request) -> int:
        self._category(request)
        name = request.query.get("symbol")
        if not name:
            raise BybitError(10001, "params error: symbol is required", 200)
        si = self.symbol_index(name) if name == name.upper() and "-" not in name else None
        if si is None:
            raise BybitError(10001, "Not supported symbols", 200)
        return si

    # ------------------------------------------------------------------ REST endpoints
    def _r_time(self, request: web.Request) -> Any:
        now = self.now_us()
        return {"timeSecond": str(now // 1_000_000), "timeNano": str(now * 1000)}

    def _instrument(self, base: str, quote: str, tick: int, lot: int, status: str) -> dict[str, Any]:
        return {
            "symbol": base + quote, "baseCoin": base, "quoteCoin": quote, "innovation": "0", "status": status,
            "marginTrading": "utaOnly", "stTag": "0",
            "lotSizeFilter": {"basePrecision": fmt_units(lot, decimals_of(lot)), "quotePrecision": "0.00000001",
                              "minOrderQty": fmt_units(lot * 10, decimals_of(lot)), "maxOrderQty": "71.73956243",
                              "minOrderAmt": "1", "maxOrderAmt": "2000000"},
            "priceFilter": {"tickSize": fmt_units(tick, decimals_of(tick))},
            "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
        }

    def _r_instruments(self, request: web.Request) -> Any:
        # The real venue serves every category; this one lists spot only, the others are empty.
        cat = self._category(request, ALL_CATEGORIES)
        if cat != "spot":
            return {"category": cat, "list": [], "nextPageCursor": ""}
        out = [self._instrument(sp.base, sp.quote, sp.tick_units, sp.lot_units, "Trading") for sp in self.specs]
        for s in self.closed:
            base, quote = split_canonical(s)
            out.append(self._instrument(base, quote, 1_000_000, 10_000, "Closed"))
        sym = request.query.get("symbol")
        if sym:
            out = [o for o in out if o["symbol"] == sym]
        return {"category": "spot", "list": out, "nextPageCursor": ""}

    def _r_recent_trade(self, request: web.Request) -> Any:
        si = self._sym(request)
        limit = self.query_limit(request, self.recent_trades, self.recent_trades)
        tape = self.tapes[si]
        n = len(tape)
        vs, fi = self._vsym[si], self.fmt_trade_id
        rows = [{"execId": fi(si, tape.ids[i]), "symbol": vs, "price": self.fmt_trade_price(si, tape.px[i]),
                 "size": self.fmt_trade_qty(si, tape.qty[i]), "side": _SIDE[tape.side[i]],
                 "time": str(tape.ts[i] // 1000), "isBlockTrade": False, "isRPITrade": False,
                 "seq": str(self._seq(si, i))} for i in range(n - 1, max(0, n - limit) - 1, -1)]
        return {"category": "spot", "list": rows}

    def _r_kline(self, request: web.Request) -> Any:
        si = self._sym(request)
        interval = request.query.get("interval")
        if interval not in _INTERVALS:
            raise BybitError(10001, "params error: interval invalid", 200)
        iv = _INTERVALS[interval] * 1_000_000
        limit = self.query_limit(request, 200, 1000)
        start = self.query_int(request, "start")
        end = self.query_int(request, "end")
        tape = self.tapes[si]
        pd, qd = self._pdec[si], self._qdec[si]
        rows = []
        for b, i, j in self.buckets(si, iv, None if start is None else start * 1000,
                                    None if end is None else end * 1000, limit, newest_first=True):
            pxs, qs = tape.px[i:j], tape.qty[i:j]
            turnover = fmt_units(sum(map(mul, pxs, qs)) // SCALE, 8)
            rows.append([str(b // 1000), fmt_units(pxs[0], pd), fmt_units(max(pxs), pd), fmt_units(min(pxs), pd),
                         fmt_units(pxs[-1], pd), fmt_units(sum(qs), qd), turnover])
        return {"category": "spot", "symbol": self._vsym[si], "list": rows}
