"""Kraken Spot: WebSocket v1 (``/``) and v2 (``/v2``) public market data and public REST, encoded
from the reference sheet (``../shared/reference/venues-binance-okx-kucoin-kraken-coinbase.md``
section 4), independently of ``marketdata.venues``.

Names: canonical ``BTC-USD`` <-> v1 wsname ``XBT/USD`` (``BTC`` -> ``XBT``, ``DOGE`` -> ``XDG``), REST
altname ``XBTUSD``, REST key ``XXBTZUSD`` (X/Z-prefixed legacy asset codes for legacy crypto against
fiat, otherwise the altname, e.g. ``XDGUSD``, ``SOLUSD``, ``XBTUSDT``), v2 symbol ``BTC/USD``.

WebSocket v1 (path ``/``):

* on connect ``{"connectionID":..,"event":"systemStatus","status":"online","version":"1.9.1"}``;
* ``{"event":"subscribe","reqid"?,"pair":[..],"subscription":{"name":"trade"|"book","depth"?}}``
  -> one ``subscriptionStatus`` per pair with a ``channelID`` drawn at random for every
  subscription (never the same on two live connections, never reused soon), or ``status:"error"``
  with ``errorMessage`` (unknown pair, unsupported depth/name, already subscribed);
  ``unsubscribe`` by pair+subscription or ``channelID``;
* trades ``[channelID, [[price, volume, time, side, orderType, misc], ...], "trade", "XBT/USD"]``,
  all trades of a generation step in one frame, strings, ``time`` = ``sec.µs``, side ``b``/``s``
  (taker), orderType ``m``/``l`` (per taker order), no trade id (the v1 50-trade snapshot after
  subscribing is UNCONFIRMED and not sent);
* ``book`` (depth 10|25|100|500|1000, default 10): snapshot ``[cid, {"as":..,"bs":..}, "book-N",
  pair]`` right after the status, then updates (``{"a":..}``, ``{"b":..}`` or both as two dicts,
  ``"c"`` = unsigned CRC32 of the top 10 in the last dict) after every generation step that
  changed the top N: levels ``[price, volume, time]`` (``"r"`` appended for a republished level
  that re-enters the top N), deletes first (volume ``0.00000000``) and only for levels that left
  the book; levels pushed below depth N get no message (the client truncates).  Book prices use
  ``pair_decimals``, volumes ``lot_decimals`` (8), as AssetPairs says;
* ``{"event":"ping","reqid"?}`` -> ``{"event":"pong","reqid"?}``; ``{"event":"heartbeat"}`` when
  nothing was sent for ``heartbeat_interval`` (1 s).  No idle drop.

WebSocket v2 (path ``/v2``): ``status`` message on connect; ``{"method":"subscribe","params":
{"channel":"trade","symbol":["BTC/USD"],"snapshot":true},"req_id"?}`` -> one ack per symbol
(``success``, ``time_in``, ``time_out``), then (``snapshot`` default true) the last 50 trades as
``type:"snapshot"``, then ``type:"update"`` messages with ``trade_id`` (the tape's consecutive ids
per symbol), JSON-number ``price``/``qty``, RFC 3339 µs ``timestamp``; ``{"channel":"heartbeat"}``
as in v1; ``{"method":"ping"}`` -> ``pong``.  v2 ``book`` is not implemented (error reply).

REST (envelope ``{"error":[],"result":..}``; errors are HTTP 200 with ``error`` strings, except
injected 429/5xx; unknown paths 404 ``EGeneral:Unknown method``): ``/0/public/Time``,
``/0/public/SystemStatus``, ``/0/public/Assets`` (the listed pairs' assets by REST code, ``altname``
the wsname code: ``XXBT`` -> ``XBT``; ``asset=`` filters), ``/0/public/AssetPairs`` (plus
a ``.d`` dark-pool entry without ``wsname`` for the first pair, option ``dark_pool``),
``/0/public/Trades?pair=&since=&count=`` (rows ``[price, volume, time, side, ordertype, misc,
trade_id]`` ascending, <= 1000; ``since`` in seconds (< 1e11, inclusive) or nanoseconds (>= 1e17,
exclusive); each trade's cursor is ``ts_us * 1000 + its rank among trades of the same µs`` and
``last`` is the cursor of the last row, so feeding ``last`` back pages without loss or repeats),
``/0/public/OHLC?pair=&interval=&since=`` (rows ``[time, o, h, l, c, vwap, volume, count]``, the
last 720 bars up to the still-open one, empty bars in between carried flat with count 0,
``since`` exclusive, ``last`` = start of the last closed bar), ``/0/public/Depth?pair=&count=``
(<= 500).

Venue options: ``heartbeat_interval`` (1.0 s), ``dark_pool`` (True), plus ``book_depth_ticks`` /
``book_density``.  Faults: ``skip_ids`` (v1: trades withheld; v2: ``trade_id`` jumps),
``silent_drop``, ``close``, ``abort``, ``malformed``, ``unknown_symbol``, ``notice`` (status
``maintenance``), ``seq_gap`` (v1 book updates withheld: the next checksum fails),
``bad_checksum``, ``rest_fail`` / ``rest_delay``.
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_left
from collections import deque
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from operator import mul
from typing import Any

import orjson
from aiohttp import web

from .book import ASK, BID, kraken_checksum
from .conn import WSConnection, frame_text
from .faults import FaultError
from .generator import split_canonical
from .venue import SliceInfo, StrMemo, Venue, decimals_of, fmt_units, strip_zeros

_ALT = {"BTC": "XBT", "DOGE": "XDG"}
_LEGACY = {"XBT", "ETH", "LTC", "XRP", "XLM", "XMR", "ETC", "ZEC", "MLN", "REP"}
_FIAT = {"USD", "EUR", "GBP", "JPY", "CAD", "AUD"}
_DEPTHS = (10, 25, 100, 500, 1000)
_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
_SIDE_V1 = ("s", "b")
_SIDE_V2 = ("sell", "buy")


def asset_code(a: str) -> str:
    if a in _LEGACY or a == "XDG":
        return "X" + a
    if a in _FIAT:
        return "Z" + a
    return a


def _ts_v1(ts_us: int) -> str:
    return "%d.%06d" % divmod(ts_us, 1_000_000)


class _TsCache:
    """RFC 3339 with microseconds, cached per second."""

    def __init__(self) -> None:
        self.sec = -1
        self.prefix = ""

    def __call__(self, ts_us: int) -> str:
        s, us = divmod(ts_us, 1_000_000)
        if s != self.sec:
            self.sec = s
            self.prefix = datetime.fromtimestamp(s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return "%s.%06dZ" % (self.prefix, us)


class _View:
    """What subscribers of one (symbol, depth) book channel have been sent: the top N."""

    __slots__ = ("bids", "asks", "uid")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.uid = -1


class _KrState:
    __slots__ = ("v2", "conn_num", "subs", "trades", "books", "last_send", "book_drop", "book_drop_sym",
                 "bad_checksum")

    def __init__(self, v2: bool, conn_num: int) -> None:
        self.v2 = v2
        self.conn_num = conn_num
        self.subs: dict[int, tuple[str, int, int]] = {}  # v1 channelID -> (name, si, depth)
        self.trades: dict[int, int] = {}  # si -> channelID (v2: 0)
        self.books: dict[tuple[int, int], int] = {}  # (si, depth) -> channelID
        self.last_send = time.monotonic()
        self.book_drop = 0
        self.book_drop_sym: int | None = None
        self.bad_checksum = 0


class KrakenVenue(Venue):
    name = "kraken"
    ts_quantum_us = 1
    id_range = (10_000_000, 90_000_000)
    server_pings = False

    def __init__(self, sim, symbols, rate, options) -> None:
        super().__init__(sim, symbols, rate, options)
        self.hb_interval = float(self.options.get("heartbeat_interval", 1.0))
        self.dark_pool = bool(self.options.get("dark_pool", True))
        self._ws1, self._alt, self._key, self._ws2, self._assets = [], [], [], [], []
        for sp in self.specs:
            b, q = _ALT.get(sp.base, sp.base), _ALT.get(sp.quote, sp.quote)
            self._ws1.append(f"{b}/{q}")
            self._alt.append(b + q)
            legacy = b in _LEGACY and (q in _FIAT or q in _LEGACY)
            self._key.append(asset_code(b) + asset_code(q) if legacy else b + q)
            self._ws2.append(f"{sp.base}/{sp.quote}")
            self._assets.append((asset_code(b), asset_code(q)))
        self._names: dict[str, int] = {}
        for si, sp in enumerate(self.specs):
            for n in (self._ws1[si], self._alt[si], self._key[si], self._ws2[si], sp.base + sp.quote):
                self._names.setdefault(n, si)
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]  # pair_decimals
        self._tdec = [max(5, d) for d in self._pdec]  # trade price strings
        # v2 prints numbers without trailing zeros
        self._v2_px = [StrMemo(lambda u, si=si: strip_zeros(self.fmt_trade_price(si, u))) for si in range(len(self.specs))]
        self._v2_qty = [StrMemo(lambda u, si=si: strip_zeros(self.fmt_trade_qty(si, u))) for si in range(len(self.specs))]
        self._rng = random.Random(f"{self.config.seed}:{self.name}:channels")
        self._recent_ids: deque[int] = deque(maxlen=10_000)
        self._recent_set: set[int] = set()
        self._views: dict[tuple[int, int], _View] = {}
        self._hb_next = 0.0
        self._rfc = _TsCache()
        self.heartbeats = 0
        self.book_updates = 0

    # ------------------------------------------------------------------ names / formatting
    def venue_symbol(self, si: int) -> str:
        return self._ws1[si]

    def fmt_trade_price(self, si: int, units: int) -> str:
        return fmt_units(units, self._tdec[si])

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return fmt_units(units, 8)

    def fmt_book_price(self, si: int, units: int) -> str:
        return fmt_units(units, self._pdec[si])

    def fmt_book_qty(self, si: int, units: int) -> str:
        return fmt_units(units, 8)

    def _order_type(self, ts_us: int, px: int) -> int:
        """0 = market, 1 = limit; a pure function of the taker order (its fills share ts and price)."""
        return 1 if ((ts_us * 2654435761 + px) >> 5) % 10 < 3 else 0

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._h_ws_v1)
        r.add_get("/v2", self._h_ws_v2)
        r.add_get("/0/public/Time", self._rest(self._r_time))
        r.add_get("/0/public/SystemStatus", self._rest(self._r_status))
        r.add_get("/0/public/AssetPairs", self._rest(self._r_asset_pairs))
        r.add_get("/0/public/Assets", self._rest(self._r_assets))
        r.add_get("/0/public/Trades", self._rest(self._r_trades))
        r.add_get("/0/public/OHLC", self._rest(self._r_ohlc))
        r.add_get("/0/public/Depth", self._rest(self._r_depth))

    async def _h_ws_v1(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"error": ["EGeneral:Unknown method"]}, status=404)
        return await self.ws_session(request, _KrState(False, self._rng.randrange(2**62, 2**63)))

    async def _h_ws_v2(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"error": ["EGeneral:Unknown method"]}, status=404)
        return await self.ws_session(request, _KrState(True, self._rng.randrange(2**62, 2**63)))

    # ------------------------------------------------------------------ WebSocket plumbing
    def _send(self, conn: WSConnection, obj: Any) -> None:
        if conn.send_text(orjson.dumps(obj).decode()):
            conn.venue_state.last_send = time.monotonic()

    def _send_text(self, conn: WSConnection, text: str) -> None:
        if conn.send_text(text):
            conn.venue_state.last_send = time.monotonic()

    def _new_channel_id(self) -> int:
        in_use = {cid for c in self.conns.values() for cid in c.venue_state.subs}
        while True:
            cid = self._rng.randrange(100, 1_000_000)
            if cid not in in_use and cid not in self._recent_set:
                break
        if len(self._recent_ids) == self._recent_ids.maxlen:
            self._recent_set.discard(self._recent_ids[0])
        self._recent_ids.append(cid)
        self._recent_set.add(cid)
        return cid

    def _status_v2(self, conn: WSConnection, system: str) -> None:
        st: _KrState = conn.venue_state
        self._send(conn, {"channel": "status", "type": "update", "data": [{
            "api_version": "v2", "connection_id": st.conn_num, "system": system, "version": "2.0.10"}]})

    def on_ws_open(self, conn: WSConnection) -> None:
        st: _KrState = conn.venue_state
        if st.v2:
            self._status_v2(conn, "online")
        else:
            self._send(conn, {"connectionID": st.conn_num, "event": "systemStatus", "status": "online",
                              "version": "1.9.1"})

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _KrState = conn.venue_state
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            msg = None
        if st.v2:
            self._on_v2(conn, msg)
        else:
            self._on_v1(conn, msg)

    # ------------------------------------------------------------------ v1 requests
    def _on_v1(self, conn: WSConnection, msg: Any) -> None:
        st: _KrState = conn.venue_state
        if not isinstance(msg, dict):
            self._send(conn, {"errorMessage": "Malformed request", "event": "error"})
            return
        ev = msg.get("event")
        reqid = msg.get("reqid")
        extra = {"reqid": reqid} if reqid is not None else {}
        if ev == "ping":
            self._send(conn, {"event": "pong", **extra})
            return
        if ev not in ("subscribe", "unsubscribe"):
            self._send(conn, {"errorMessage": "Unsupported event", "event": "error", **extra})
            return
        sub = msg.get("subscription")
        if ev == "unsubscribe" and "channelID" in msg:
            cid = msg.get("channelID")
            ent = st.subs.get(cid) if isinstance(cid, int) else None
            if ent is None:
                self._send(conn, {"errorMessage": "Subscription Not Found", "event": "subscriptionStatus",
                                  "status": "error", **extra})
                return
            self._unsub_v1(conn, cid, extra)
            return
        if not isinstance(sub, dict) or not isinstance(sub.get("name"), str):
            self._send(conn, {"errorMessage": "Subscription name invalid", "event": "error", **extra})
            return
        pairs = msg.get("pair")
        if not isinstance(pairs, list) or not pairs or not all(isinstance(p, str) for p in pairs):
            self._send(conn, {"errorMessage": "Pair(s) not found", "event": "error", **extra})
            return
        name = sub["name"]
        depth = 0
        echo: dict[str, Any] = {"name": name}
        err = None
        if name == "book":
            depth = sub.get("depth", 10)
            echo = {"depth": depth, "name": name}
            if not self.books:
                err = "Subscription name invalid"
            elif depth not in _DEPTHS:
                err = "Subscription depth not supported"
        elif name != "trade":
            err = "Subscription name invalid"
        channel_name = f"book-{depth}" if name == "book" else name
        for pair in pairs:
            base = {"event": "subscriptionStatus", "pair": pair, **extra}
            si = self._names.get(pair)
            if err is None and (si is None or self._ws1[si] != pair):
                if "/" not in pair:
                    e = f"Currency pair not in ISO 4217-A3 format {pair}"
                else:
                    e = f"Currency pair not supported {pair}"
                self._send(conn, {"errorMessage": e, **base, "status": "error", "subscription": echo})
                continue
            if err is not None:
                self._send(conn, {"errorMessage": err, **base, "status": "error", "subscription": echo})
                continue
            key = (name, si, depth)
            cid = next((c for c, k in st.subs.items() if k == key), None)
            if ev == "unsubscribe":
                if cid is None:
                    self._send(conn, {"errorMessage": "Subscription Not Found", **base, "status": "error",
                                      "subscription": echo})
                else:
                    self._unsub_v1(conn, cid, extra)
                continue
            if cid is not None:
                self._send(conn, {"errorMessage": "Already subscribed", **base, "status": "error",
                                  "subscription": echo})
                continue
            cid = self._new_channel_id()
            st.subs[cid] = key
            self._send(conn, {"channelID": cid, "channelName": channel_name, "event": "subscriptionStatus",
                              "pair": pair, **extra, "status": "subscribed", "subscription": echo})
            if name == "trade":
                st.trades[si] = cid
            else:
                st.books[(si, depth)] = cid
                self._send_book_snapshot(conn, si, depth, cid)

    def _unsub_v1(self, conn: WSConnection, cid: int, extra: dict[str, Any]) -> None:
        st: _KrState = conn.venue_state
        name, si, depth = st.subs.pop(cid)
        if name == "trade":
            st.trades.pop(si, None)
            echo: dict[str, Any] = {"name": name}
        else:
            st.books.pop((si, depth), None)
            echo = {"depth": depth, "name": name}
        self._send(conn, {"channelID": cid, "channelName": f"book-{depth}" if name == "book" else name,
                          "event": "subscriptionStatus", "pair": self._ws1[si], **extra, "status": "unsubscribed",
                          "subscription": echo})

    # ------------------------------------------------------------------ v2 requests
    def _on_v2(self, conn: WSConnection, msg: Any) -> None:
        st: _KrState = conn.venue_state
        t_in = self._rfc(self.now_us())
        if not isinstance(msg, dict):
            self._send(conn, {"error": "Malformed request", "success": False, "time_in": t_in,
                              "time_out": self._rfc(self.now_us())})
            return
        method = msg.get("method")
        req_id = msg.get("req_id")
        extra = {"req_id": req_id} if req_id is not None else {}
        if method == "ping":
            self._send(conn, {"method": "pong", **extra, "time_in": t_in, "time_out": self._rfc(self.now_us())})
            return
        if method not in ("subscribe", "unsubscribe"):
            self._send(conn, {"error": f"Method not found: {method}", "method": method, **extra, "success": False,
                              "time_in": t_in, "time_out": self._rfc(self.now_us())})
            return
        params = msg.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
            self._send(conn, {"error": "Missing channel", "method": method, **extra, "success": False,
                              "time_in": t_in, "time_out": self._rfc(self.now_us())})
            return
        channel = params["channel"]
        symbols = params.get("symbol")
        if channel in ("heartbeat", "status"):
            self._send(conn, {"method": method, "result": {"channel": channel}, "success": True, **extra,
                              "time_in": t_in, "time_out": self._rfc(self.now_us())})
            return
        if channel != "trade":
            self._send(conn, {"error": f"Channel not supported by the simulator: {channel}", "method": method,
                              **extra, "success": False, "time_in": t_in, "time_out": self._rfc(self.now_us())})
            return
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            self._send(conn, {"error": "Missing symbol", "method": method, **extra, "success": False,
                              "time_in": t_in, "time_out": self._rfc(self.now_us())})
            return
        snapshot = params.get("snapshot", True) is not False
        for sym in symbols:
            si = self._names.get(sym)
            if si is None or self._ws2[si] != sym:
                self._send(conn, {"error": "Currency pair not supported", "method": method, **extra,
                                  "success": False, "symbol": sym, "time_in": t_in,
                                  "time_out": self._rfc(self.now_us())})
                continue
            if method == "subscribe":
                if si in st.trades:
                    self._send(conn, {"error": "Already subscribed", "method": method, **extra, "success": False,
                                      "symbol": sym, "time_in": t_in, "time_out": self._rfc(self.now_us())})
                    continue
                st.trades[si] = 0
                result = {"channel": "trade", "snapshot": snapshot, "symbol": sym}
            else:
                if si not in st.trades:
                    self._send(conn, {"error": "Subscription Not Found", "method": method, **extra,
                                      "success": False, "symbol": sym, "time_in": t_in,
                                      "time_out": self._rfc(self.now_us())})
                    continue
                del st.trades[si]
                result = {"channel": "trade", "symbol": sym}
            self._send(conn, {"method": method, "result": result, "success": True, **extra, "time_in": t_in,
                              "time_out": self._rfc(self.now_us())})
            if method == "subscribe" and snapshot:
                n = len(self.tapes[si])
                if n:
                    self._send_text(conn, '{"channel":"trade","type":"snapshot","data":[%s]}'
                                    % self._v2_rows(si, max(0, n - 50), n, [])[0])

    # ------------------------------------------------------------------ trades
    def _v1_rows(self, si: int, i0: int, i1: int, skip: list[tuple[int, int]]) -> tuple[str, int]:
        tape = self.tapes[si]
        ts, px, qty, side = tape.ts, tape.px, tape.qty, tape.side
        pm, qm = self.px_str[si], self.qty_str[si]
        parts = []
        for i in range(i0, i1):
            if skip and any(lo <= i < hi for lo, hi in skip):
                continue
            parts.append('["%s","%s","%s","%s","%s",""]' % (
                pm[px[i]], qm[qty[i]], _ts_v1(ts[i]), _SIDE_V1[side[i]],
                "ml"[self._order_type(ts[i], px[i])]))
        return ",".join(parts), len(parts)

    def _v2_rows(self, si: int, i0: int, i1: int, skip: list[tuple[int, int]]) -> tuple[str, int]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        pm, qm = self._v2_px[si], self._v2_qty[si]
        sym = self._ws2[si]
        rfc = self._rfc
        parts = []
        for i in range(i0, i1):
            if skip and any(lo <= i < hi for lo, hi in skip):
                continue
            parts.append('{"symbol":"%s","side":"%s","price":%s,"qty":%s,"ord_type":"%s","trade_id":%d,'
                         '"timestamp":"%s"}' % (sym, _SIDE_V2[side[i]], pm[px[i]], qm[qty[i]],
                                                ("market", "limit")[self._order_type(ts[i], px[i])], ids[i],
                                                rfc(ts[i])))
        return ",".join(parts), len(parts)

    def on_slice(self, sl: SliceInfo) -> None:
        if not self.conns:
            return
        now = time.monotonic()
        cache: dict[tuple, tuple[str, int]] = {}
        ranges = sl.ranges
        for conn in list(self.conns.values()):
            if not conn.can_send:
                continue
            st: _KrState = conn.venue_state
            if not st.trades:
                continue
            parts = []
            trades = 0
            for si, cid in st.trades.items():
                rng = ranges.get(si)
                if rng is None:
                    continue
                target = conn.id if sl.conn_specific(si) else None
                key = (si, st.v2, target)
                ent = cache.get(key)
                if ent is None:
                    skip = sl.withheld_for(si, target)
                    if st.v2:
                        rows, n = self._v2_rows(si, rng[0], rng[1], skip)
                        ent = ('{"channel":"trade","type":"update","data":[%s]}' % rows, n)
                    else:
                        rows, n = self._v1_rows(si, rng[0], rng[1], skip)
                        ent = (rows, n)
                    cache[key] = ent
                if not ent[1]:
                    continue
                if st.v2:
                    parts.append(ent[0])
                else:
                    parts.append('[%d,[%s],"trade","%s"]' % (cid, ent[0], self._ws1[si]))
                trades += ent[1]
            if parts:
                data = b"".join(frame(p) for p in parts)
                if conn.write(data, len(parts), trades):
                    st.last_send = now

    # ------------------------------------------------------------------ books (v1)
    def books_wanted(self) -> bool:
        return super().books_wanted() or any(c.venue_state.books for c in self.conns.values()
                                             if c.venue_state is not None)

    def _lvl(self, si: int, side: int, p: int, q: int, ts_us: int, republish: bool = False) -> str:
        s = '["%s","%s","%s"' % (self.fmt_book_price(si, p), self.fmt_book_qty(si, q), _ts_v1(ts_us))
        return s + (',"r"]' if republish else "]")

    def checksum(self, si: int) -> int:
        self.ensure_books()
        book = self.books[si]
        fp, fq = self.fmt_book_price, self.fmt_book_qty
        bids = [(fp(si, p), fq(si, q)) for p, q in book.top(BID, 10)]
        asks = [(fp(si, p), fq(si, q)) for p, q in book.top(ASK, 10)]
        return kraken_checksum(bids, asks)

    def _sync_view(self, si: int, depth: int) -> _View:
        view = self._views.get((si, depth))
        self.ensure_books()
        book = self.books[si]
        if view is None:
            view = self._views[(si, depth)] = _View()
        if view.uid != book.update_id:
            view.bids = dict(book.top(BID, depth))
            view.asks = dict(book.top(ASK, depth))
            view.uid = book.update_id
        return view

    def _send_book_snapshot(self, conn: WSConnection, si: int, depth: int, cid: int) -> None:
        view = self._sync_view(si, depth)
        book = self.books[si]
        a = ",".join(self._lvl(si, ASK, p, view.asks[p], book.level_ts(ASK, p)) for p in sorted(view.asks))
        b = ",".join(self._lvl(si, BID, p, view.bids[p], book.level_ts(BID, p))
                     for p in sorted(view.bids, reverse=True))
        self._send_text(conn, '[%d,{"as":[%s],"bs":[%s]},"book-%d","%s"]' % (cid, a, b, depth, self._ws1[si]))

    def _diff_side(self, si: int, side: int, depth: int, view: _View, changed: dict[int, tuple[int, int]],
                   now_us: int) -> list[str]:
        book = self.books[si]
        full = book.asks if side == ASK else book.bids
        old = view.asks if side == ASK else view.bids
        new_top = book.top(side, depth)
        new = dict(new_top)
        out = []
        for p in sorted(old, reverse=side == BID):
            if p not in new and p not in full:
                out.append(self._lvl(si, side, p, 0, now_us))
        for p, q in new_top:
            oq = old.get(p)
            if oq is None:
                out.append(self._lvl(si, side, p, q, book.level_ts(side, p), republish=p not in changed))
            elif oq != q:
                out.append(self._lvl(si, side, p, q, book.level_ts(side, p)))
        if side == ASK:
            view.asks = new
        else:
            view.bids = new
        return out

    def _emit_books(self) -> None:
        subs: dict[tuple[int, int], list[WSConnection]] = {}
        for conn in self.conns.values():
            st: _KrState = conn.venue_state
            if st.books and conn.can_send:
                for key in st.books:
                    subs.setdefault(key, []).append(conn)
        if not subs:
            return
        now_us = self.now_us()
        checksums: dict[int, int] = {}
        for (si, depth), targets in subs.items():
            view = self._views.get((si, depth))
            book = self.books[si]
            if view is None or view.uid == book.update_id:
                continue
            _first, cb, ca = book.coalesced(view.uid)
            a = self._diff_side(si, ASK, depth, view, ca, now_us)
            b = self._diff_side(si, BID, depth, view, cb, now_us)
            view.uid = book.update_id
            if not a and not b:
                continue
            c = checksums.get(si)
            if c is None:
                c = checksums[si] = self.checksum(si)
            if a and b:
                body = '{"a":[%s]},{"b":[%s],"c":"%%d"}' % (",".join(a), ",".join(b))
            elif a:
                body = '{"a":[%s],"c":"%%d"}' % ",".join(a)
            else:
                body = '{"b":[%s],"c":"%%d"}' % ",".join(b)
            tail = ',"book-%d","%s"]' % (depth, self._ws1[si])
            good = body % c
            self.book_updates += 1
            for conn in targets:
                st = conn.venue_state
                cid = st.books.get((si, depth))
                if cid is None:
                    continue
                if st.book_drop > 0 and st.book_drop_sym in (None, si):
                    st.book_drop -= 1
                    continue
                if st.bad_checksum > 0:
                    st.bad_checksum -= 1
                    text = body % (c ^ 0x5A5A5A)
                else:
                    text = good
                self._send_text(conn, "[%d,%s%s" % (cid, text, tail))

    def periodic(self, mono: float) -> None:
        if self.books:
            self._emit_books()
        if self.hb_interval > 0 and mono >= self._hb_next:
            self._hb_next = mono + min(0.05, self.hb_interval / 4)
            for conn in list(self.conns.values()):
                st: _KrState = conn.venue_state
                if conn.can_send and mono - st.last_send >= self.hb_interval:
                    self.heartbeats += 1
                    self._send_text(conn, '{"channel":"heartbeat"}' if st.v2 else '{"event":"heartbeat"}')

    def book_view(self, si: int, depth: int | None = None) -> dict[str, Any]:
        view = super().book_view(si, depth)
        view["checksum"] = str(self.checksum(si))
        return view

    # ------------------------------------------------------------------ faults
    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _KrState = conn.venue_state
        count = int(params.get("count", 1))
        si = next(iter(st.trades), 0)
        cid = st.trades.get(si) or self._rng.randrange(100, 1_000_000)
        now = self.now_us()
        if kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            for k in range(count):
                bad_json = variant == "invalid_json" or (variant == "mixed" and k % 2 == 0)
                if st.v2:
                    text = ('{"channel":"trade","type":"update","data":[{"symbol":"%s","price":' % self._ws2[si]
                            if bad_json else '{"channel":"trade","type":"update","data":[{"symbol":"%s","side":"buy"}]}'
                            % self._ws2[si])
                else:
                    text = ('[%d,[["1.0","0.1",' % cid if bad_json
                            else '[%d,[["%s"]],"trade","%s"]' % (cid, _ts_v1(now), self._ws1[si]))
                self._send_text(conn, text)
        elif kind == "unknown_symbol":
            name = str(params.get("symbol", "ZZZ-USD")).upper()
            base, quote = split_canonical(name)
            if f"{base}-{quote}" in self.symbols:
                raise FaultError(f"{base}-{quote} is listed; unknown_symbol needs an unlisted symbol")
            for _ in range(count):
                if st.v2:
                    self._send_text(conn, '{"channel":"trade","type":"update","data":[{"symbol":"%s/%s","side":"buy",'
                                          '"price":1.234,"qty":10,"ord_type":"market","trade_id":%d,"timestamp":"%s"}]}'
                                    % (base, quote, self._rng.randrange(1, 10**6), self._rfc(now)))
                else:
                    self._send_text(conn, '[%d,[["1.23400","10.00000000","%s","b","m",""]],"trade","%s/%s"]'
                                    % (self._rng.randrange(100, 1_000_000), _ts_v1(now), _ALT.get(base, base),
                                       _ALT.get(quote, quote)))
        elif kind == "notice":
            if st.v2:
                self._status_v2(conn, "maintenance")
            else:
                self._send(conn, {"connectionID": st.conn_num, "event": "systemStatus", "status": "maintenance",
                                  "version": "1.9.1"})
            close_after = params.get("close_after")
            if close_after is not None:
                self.spawn(self._close_later(conn, float(close_after)))
        elif kind == "seq_gap":
            name = params.get("symbol")
            sidx = self.symbol_index(name) if name else None
            if name and sidx is None:
                raise FaultError(f"kraken: unknown symbol {name!r}")
            st.book_drop += count
            st.book_drop_sym = sidx
        elif kind == "bad_checksum":
            st.bad_checksum += count
        else:
            raise FaultError(f"kraken does not implement fault {kind!r}")

    async def _close_later(self, conn: WSConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await conn.close(1001, "maintenance")

    def venue_stats(self) -> dict[str, Any]:
        return {"kraken": {"heartbeats": self.heartbeats, "book_updates": self.book_updates}}

    # ------------------------------------------------------------------ REST plumbing
    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                result = fn(request)
            except _KrakenError as e:
                return web.Response(body=orjson.dumps({"error": [e.msg]}), content_type="application/json")
            return web.Response(body=orjson.dumps({"error": [], "result": result}), content_type="application/json")

        return handler

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        msg = "EGeneral:Too many requests" if status == 429 else \
            "EService:Unavailable" if status >= 500 else "EGeneral:Invalid arguments"
        headers = {"Retry-After": str(max(0, int(round(retry_after))))} if retry_after is not None else {}
        return web.Response(body=orjson.dumps({"error": [msg]}), status=status, headers=headers,
                            content_type="application/json")

    def _pair(self, request: web.Request) -> int:
        name = request.query.get("pair")
        if not name:
            raise _KrakenError("EGeneral:Invalid arguments")
        si = self._names.get(name.split(",")[0].strip().upper())
        if si is None:
            raise _KrakenError("EQuery:Unknown asset pair")
        return si

    # ------------------------------------------------------------------ REST endpoints
    def _r_time(self, request: web.Request) -> Any:
        now = self.now_us()
        dt = datetime.fromtimestamp(now // 1_000_000, tz=timezone.utc)
        return {"unixtime": now // 1_000_000, "rfc1123": dt.strftime("%a, %d %b %y %H:%M:%S +0000")}

    def _r_status(self, request: web.Request) -> Any:
        return {"status": "online", "timestamp": self._rfc(self.now_us())[:19] + "Z"}

    def _pair_info(self, si: int, dark: bool = False) -> dict[str, Any]:
        sp = self.specs[si]
        base, quote = self._assets[si]
        info = {
            "altname": self._alt[si] + (".d" if dark else ""), "wsname": self._ws1[si], "aclass_base": "currency",
            "base": base, "aclass_quote": "currency", "quote": quote, "lot": "unit", "cost_decimals": 5,
            "pair_decimals": self._pdec[si], "lot_decimals": 8, "lot_multiplier": 1, "leverage_buy": [],
            "leverage_sell": [], "fees": [[0, 0.4], [10000, 0.35], [50000, 0.24]],
            "fees_maker": [[0, 0.25], [10000, 0.2], [50000, 0.14]], "fee_volume_currency": "ZUSD",
            "margin_call": 80, "margin_stop": 40, "ordermin": strip_zeros(fmt_units(sp.lot_units * 10)),
            "costmin": "0.5", "tick_size": strip_zeros(fmt_units(sp.tick_units)), "status": "online",
        }
        if dark:
            del info["wsname"]
        return info

    def _r_assets(self, request: web.Request) -> Any:
        """``/0/public/Assets`` (ccxt's load_markets): the assets of the listed pairs by REST code."""
        out = {}
        for si in range(len(self.specs)):
            for code, alt in zip(self._assets[si], self._alt_assets(si)):
                out[code] = {"aclass": "currency", "altname": alt, "decimals": 10, "display_decimals": 5,
                             "collateral_value": 1.0, "status": "enabled"}
        wanted = request.query.get("asset")
        if wanted:
            names = {w.strip().upper() for w in wanted.split(",")}
            out = {k: v for k, v in out.items() if k in names or v["altname"] in names}
            if not out:
                raise _KrakenError("EQuery:Unknown asset")
        return dict(sorted(out.items()))

    def _alt_assets(self, si: int) -> tuple[str, str]:
        base, quote = self._ws1[si].split("/")
        return base, quote

    def not_found_body(self, request: web.Request) -> Any:
        return {"error": ["EGeneral:Unknown method"]}

    def _r_asset_pairs(self, request: web.Request) -> Any:
        wanted = request.query.get("pair")
        if wanted:
            out = {}
            for w in wanted.split(","):
                si = self._names.get(w.strip().upper())
                if si is None:
                    raise _KrakenError("EQuery:Unknown asset pair")
                out[self._key[si]] = self._pair_info(si)
            return out
        out = {self._key[si]: self._pair_info(si) for si in range(len(self.specs))}
        if self.dark_pool:
            out[self._key[0] + ".d"] = self._pair_info(0, dark=True)
        return out

    def _cursor(self, si: int, i: int) -> int:
        ts = self.tapes[si].ts
        return ts[i] * 1000 + (i - bisect_left(ts, ts[i]))

    def _r_trades(self, request: web.Request) -> Any:
        si = self._pair(request)
        count = request.query.get("count")
        try:
            count = min(1000, max(1, int(count))) if count else 1000
        except ValueError:
            raise _KrakenError("EGeneral:Invalid arguments:count") from None
        tape = self.tapes[si]
        n = len(tape)
        since = request.query.get("since")
        if since:
            try:
                v = Decimal(since)
            except InvalidOperation:
                raise _KrakenError("EGeneral:Invalid arguments:since") from None
            if v < Decimal(10) ** 11:
                since_ns = int(v * 1_000_000_000) - 1  # seconds: inclusive
            elif v >= Decimal(10) ** 17:
                since_ns = int(v)  # nanosecond cursor: exclusive
            else:
                raise _KrakenError("EGeneral:Invalid arguments:since")
            us, rank = divmod(since_ns, 1000)
            i0 = bisect_left(tape.ts, us)
            i0 = min(bisect_left(tape.ts, us + 1), i0 + rank + 1)  # skip ranks <= rank at that µs
            i1 = min(n, i0 + count)
        else:
            since_ns = None
            i1 = n
            i0 = max(0, n - count)
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        d = self._tdec[si]
        rows = [[fmt_units(px[i], d), fmt_units(qty[i]), ts[i] / 1_000_000, _SIDE_V1[side[i]],
                 "ml"[self._order_type(ts[i], px[i])], "", ids[i]] for i in range(i0, i1)]
        if i1 > i0:
            last = self._cursor(si, i1 - 1)
        elif since_ns is not None:
            last = max(since_ns, 0)
        else:
            last = self.now_us() * 1000
        return {self._key[si]: rows, "last": str(last)}

    def _r_ohlc(self, request: web.Request) -> Any:
        si = self._pair(request)
        interval = request.query.get("interval", "1") or "1"
        if not interval.isdigit() or int(interval) not in _INTERVALS:
            raise _KrakenError("EGeneral:Invalid arguments")
        iv = int(interval) * 60_000_000
        since = request.query.get("since")
        try:
            since_s = int(Decimal(since)) if since else None
        except InvalidOperation:
            raise _KrakenError("EGeneral:Invalid arguments:since") from None
        now = self.now_us()
        cur = now - now % iv
        first_b = cur - 719 * iv
        tape = self.tapes[si]
        rows: list[list[Any]] = []
        d = self._pdec[si]
        if len(tape) > tape.first:
            t0 = tape.ts[tape.first] - tape.ts[tape.first] % iv
            # previous close before the window (for leading empty bars)
            b = max(first_b, t0)
            i = bisect_left(tape.ts, b)
            prev = tape.px[i - 1] if i > tape.first else None
            ts, pxs_all, qs_all = tape.ts, tape.px, tape.qty
            while b <= cur:
                j = bisect_left(ts, b + iv, i)
                if j > i:
                    pxs = pxs_all[i:j]
                    qs = qs_all[i:j]
                    vol = sum(qs)
                    vwap = sum(map(mul, pxs, qs)) // vol
                    rows.append([b // 1_000_000, fmt_units(pxs[0], d), fmt_units(max(pxs), d),
                                 fmt_units(min(pxs), d), fmt_units(pxs[-1], d), fmt_units(vwap, d),
                                 fmt_units(vol), j - i])
                    prev = pxs[-1]
                elif prev is not None:
                    p = fmt_units(prev, d)
                    rows.append([b // 1_000_000, p, p, p, p, p, "0.00000000", 0])
                i = j
                b += iv
        if since_s is not None:
            rows = [r for r in rows if r[0] > since_s]
        return {self._key[si]: rows, "last": (cur - iv) // 1_000_000}

    def _r_depth(self, request: web.Request) -> Any:
        si = self._pair(request)
        count = request.query.get("count")
        try:
            count = min(500, max(1, int(count))) if count else 100
        except ValueError:
            raise _KrakenError("EGeneral:Invalid arguments:count") from None
        self.ensure_books()
        book = self.books[si]
        fp, fq = self.fmt_book_price, self.fmt_book_qty
        return {self._key[si]: {
            "asks": [[fp(si, p), fq(si, q), book.level_ts(ASK, p) // 1_000_000] for p, q in book.top(ASK, count)],
            "bids": [[fp(si, p), fq(si, q), book.level_ts(BID, p) // 1_000_000] for p, q in book.top(BID, count)],
        }}


class _KrakenError(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


def frame(text: str) -> bytes:
    return frame_text(text).encode("latin-1")
