"""Bitstamp WebSocket API v2 and the public REST a client calls, encoded from the reference
sheet (``../shared/reference/venues-bybit-bitfinex-gateio-bitstamp-alpaca.md`` section 4),
independently of ``marketdata.venues``.

WebSocket (same port as REST), path ``/``:

* ``{"event":"bts:subscribe","data":{"channel":"live_trades_btcusd"}}`` -> one
  ``{"event":"bts:subscription_succeeded","channel":..,"data":{}}`` per channel.  Any well-formed
  channel of a known kind (``live_trades_``, ``live_orders_``, ``order_book_``,
  ``detail_order_book_``, ``diff_order_book_`` + lowercase alphanumerics) is ACKED, also for a
  pair that does not exist -- which then stays silent forever (the trap).  Only ``live_trades``
  of listed pairs carries data.  Upper case pair -> ``bts:error`` "Bad subscription string.";
  unknown kind -> "Invalid channel provided."; not JSON -> "Incorrect JSON format.".  A client
  frame of 512 bytes or more -> close 1009 "read limited at 513 bytes".  ``bts:unsubscribe`` ->
  ``bts:unsubscription_succeeded``.
* Trades: ``{"event":"trade","channel":"live_trades_btcusd","data":{"id":N,"id_str":"N",
  "timestamp":"s","amount":f,"amount_str":"0.00280000","price":f,"price_str":"38416","type":0|1,
  "microtimestamp":"µs","buy_order_id":..,"sell_order_id":..}}``.  Ids are per pair, as on the
  real venue: the legacy pairs (``LEGACY_PAIRS``: btcusd, ethusd, btceur, ...) have small ids
  (``legacy_id_range``, a few hundred million); every newer market's ids start above 2^53
  (``id_range``): ``id_str`` is exact, the number ``id`` is what a double-precision encoder
  prints (rounded to a multiple of 2), so a client reading ``id`` corrupts and merges trades.
  ``type`` 0 = taker buy, 1 = taker sell; the taker's order id is the larger one.
  ``amount``/``price`` numbers are floats, ``_str`` the exact strings.
* ``{"event":"bts:heartbeat"}`` -> ``{"event":"bts:heartbeat","channel":"","data":{"status":
  "success"}}``.  The server sends WebSocket ping frames.  No idle cut by default (option
  ``idle_timeout``, s without a client text frame -> TCP reset; 0 = off).  ``max_lifetime`` (the
  90-day age) closes with 1000.

REST: ``/api/v2/markets/`` (ccxt's source of markets: ``name``, ``market_symbol``,
``base_currency``, ``counter_currency``, decimals, ``trading``, ``market_type: SPOT``; the same pairs
as trading-pairs-info), ``/api/v2/trading-pairs-info/`` (option ``disabled_symbols``, default ``["LUNA-USD"]``,
listed with ``trading: Disabled``; option ``quiet_symbols``: pairs listed as Enabled that never
trade), ``/api/v2/transactions/{pair}/?time=minute|hour|day`` (default hour; the trades of that
window up to now, newest first, all strings: ``date`` s, ``tid``, ``amount``, ``price``, ``type``;
no paging, no µs), ``/api/v2/ohlc/{pair}/?step=60&limit=&start=&end=`` (``{"data":{"pair":
"BTC/USD","ohlc":[{"timestamp","open","high","low","close","volume"}]}}``, oldest first, only
buckets with trades, <= 1000).  Errors ``{"status":"error","reason":..,"code":..}`` (404 for an
unknown pair; 429 answers code ``400.002``).

Faults: ``notice`` = ``{"event":"bts:request_reconnect","channel":"","data":""}`` then, after
``close_after`` wall seconds (default 3; ``-1`` = never), a close 1001; ``silent_drop``, ``close``,
``abort``, ``malformed``, ``unknown_symbol``, ``skip_ids`` (undetectable: Bitstamp has no
sequence), ``rest_fail``/``rest_delay``.

Ground truth: ``trade_id`` = ``id_str``, ``ts_us`` = ``microtimestamp``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
from aiohttp import web

from .conn import HDR, WSConnection, text_header
from .faults import FaultError
from .generator import SCALE, split_canonical
from .venue import SliceInfo, StrMemo, Venue, VenueRestError, decimals_of, fmt_units, strip_zeros

_CHANNEL = re.compile(r"^(live_trades|live_orders|order_book|detail_order_book|diff_order_book)_(.+)$")
_PAIR = re.compile(r"^[a-z0-9]+(-perp)?$")
_WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}
FRAME_LIMIT = 512
#: pairs whose trade ids are small, as on the real venue (listed before its ids passed 2^53); every
#: other pair's ids start above 2^53
LEGACY_PAIRS = frozenset({"BTC-USD", "BTC-EUR", "BTC-GBP", "ETH-USD", "ETH-EUR", "ETH-BTC", "ETH-GBP",
                          "XRP-USD", "XRP-EUR", "XRP-BTC", "LTC-USD", "LTC-EUR", "LTC-BTC", "BCH-USD",
                          "BCH-EUR", "BCH-BTC", "EUR-USD", "GBP-USD"})


class BitstampError(VenueRestError):
    pass


class _BState:
    __slots__ = ("trades", "last_recv")

    def __init__(self) -> None:
        self.trades: list[int] = []
        self.last_recv = time.monotonic()


class BitstampVenue(Venue):
    name = "bitstamp"
    ts_quantum_us = 1
    id_range = (2 ** 53 + 1_000_000, 2 ** 53 + 4_000_000_000)      # newer markets
    legacy_id_range = (200_000_000, 450_000_000)                    # the legacy pairs
    server_pings = True

    def id_range_for(self, symbol: str) -> tuple[int, int]:
        return self.legacy_id_range if symbol in LEGACY_PAIRS else self.id_range

    def __init__(self, sim, symbols, rate, options) -> None:
        super().__init__(sim, symbols, rate, options)
        self.idle_timeout = float(self.options.get("idle_timeout", 0.0))
        self.disabled = [s.upper() for s in self.options.get("disabled_symbols", ["LUNA-USD"])
                         if s.upper() not in self.symbols]
        self.quiet = [s.upper() for s in self.options.get("quiet_symbols", []) if s.upper() not in self.symbols]
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]
        self._idle_next = 0.0
        self.idle_drops = 0
        self.notices = 0
        self._tpl = ['{"event":"trade","channel":"live_trades_' + self.venue_symbol(si) + '","data":{"id":%d,'
                     '"id_str":"%d","timestamp":"%d","amount":%s,"amount_str":"%s","price":%s,"price_str":"%s",'
                     '"type":%d,"microtimestamp":"%d","buy_order_id":%d,"sell_order_id":%d}}'
                     for si in range(len(self.symbols))]
        self._float_str = StrMemo(lambda u: repr(u / SCALE))   # the JSON numbers amount and price

    # ------------------------------------------------------------------ formatting
    def venue_symbol(self, si: int) -> str:
        return self.symbols[si].replace("-", "").lower()

    def fmt_trade_price(self, si: int, units: int) -> str:
        return strip_zeros(fmt_units(units, self._pdec[si]))

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return fmt_units(units, 8)

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._h_ws)
        r.add_get("/api/v2/trading-pairs-info/", self._rest(self._r_pairs))
        r.add_get("/api/v2/markets/", self._rest(self._r_markets))
        r.add_get("/api/v2/transactions/{pair}/", self._rest(self._r_transactions))
        r.add_get("/api/v2/ohlc/{pair}/", self._rest(self._r_ohlc))

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        return await self.ws_session(request, _BState())

    # ------------------------------------------------------------------ WebSocket control
    def _send(self, conn: WSConnection, obj: dict[str, Any]) -> None:
        conn.send_text(orjson.dumps(obj).decode())

    def _error(self, conn: WSConnection, message: str) -> None:
        self._send(conn, {"event": "bts:error", "channel": "", "data": {"code": None, "message": message}})

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _BState = conn.venue_state
        st.last_recv = time.monotonic()
        if len(data.encode()) >= FRAME_LIMIT:
            self.spawn(conn.close(1009, "read limited at 513 bytes"))
            return
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            self._error(conn, "Incorrect JSON format.")
            return
        event = msg.get("event")
        if event == "bts:heartbeat":
            self._send(conn, {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}})
            return
        if event not in ("bts:subscribe", "bts:unsubscribe"):
            self._error(conn, "Incorrect JSON format.")
            return
        d = msg.get("data")
        channel = d.get("channel") if isinstance(d, dict) else None
        m = _CHANNEL.match(channel) if isinstance(channel, str) else None
        if m is None:
            self._error(conn, "Invalid channel provided.")
            return
        if not _PAIR.match(m.group(2)):
            self._error(conn, "Bad subscription string.")
            return
        si = self.symbol_index(m.group(2)) if m.group(1) == "live_trades" else None
        if si is not None and self.venue_symbol(si) != m.group(2):
            si = None
        if event == "bts:subscribe":
            if si is not None and si not in st.trades:
                st.trades.append(si)
            self._send(conn, {"event": "bts:subscription_succeeded", "channel": channel, "data": {}})
        else:
            if si is not None and si in st.trades:
                st.trades.remove(si)
            self._send(conn, {"event": "bts:unsubscription_succeeded", "channel": channel, "data": {}})

    # ------------------------------------------------------------------ trades
    def on_slice(self, sl: SliceInfo) -> None:
        if not self.conns:
            return
        cache: dict[tuple, tuple[bytes, int]] = {}
        for conn in list(self.conns.values()):
            st: _BState = conn.venue_state
            if not conn.can_send or not st.trades:
                continue
            parts, n = [], 0
            for si in st.trades:
                rng = sl.ranges.get(si)
                if rng is None:
                    continue
                target = conn.id if sl.conn_specific(si) else None
                ent = cache.get((si, target))
                if ent is None:
                    ent = cache[(si, target)] = self._encode(si, rng[0], rng[1], sl.withheld_for(si, target))
                if ent[1]:
                    parts.append(ent[0])
                    n += ent[1]
            if n:
                conn.write(b"".join(parts), n, n)

    def _encode(self, si: int, i0: int, i1: int, skip: list[tuple[int, int]]) -> tuple[bytes, int]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        tpl = self._tpl[si]
        ord0 = self.specs[si].first_order_id
        pm, qm, fl = self.px_str[si], self.qty_str[si], self._float_str
        parts: list[str] = []
        app = parts.append
        n = 0
        o = tape.order_of_index(i0) if i0 < len(tape) else 0
        ostart = tape.order_start
        for i in range(i0, i1):
            while o + 1 < len(ostart) and ostart[o + 1] <= i:
                o += 1
            if skip and any(lo <= i < hi for lo, hi in skip):
                continue
            tid = ids[i]
            p, q = px[i], qty[i]
            taker = ord0 + 10 ** 9 + o      # the taker's order is the newer (larger) id
            maker = ord0 + i
            buy, sell = (taker, maker) if side[i] else (maker, taker)
            s = tpl % (int(float(tid)), tid, ts[i] // 1_000_000, fl[q], qm[q], fl[p],
                       pm[p], 0 if side[i] else 1, ts[i], buy, sell)
            L = len(s)
            app(HDR[L] if L < 4096 else text_header(L))
            app(s)
            n += 1
        return "".join(parts).encode("latin-1"), n

    def periodic(self, mono: float) -> None:
        self.drop_idle(mono)

    # ------------------------------------------------------------------ faults
    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _BState = conn.venue_state
        count = int(params.get("count", 1))
        now = self.now_us()
        pair = self.venue_symbol(st.trades[0] if st.trades else 0)
        if kind == "notice":
            self.notices += 1
            conn.send_text('{"event":"bts:request_reconnect","channel":"","data":""}')
            close_after = float(params.get("close_after", 3.0))
            if close_after >= 0:
                self.spawn(self._close_later(conn, close_after))
        elif kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            for k in range(count):
                if variant == "invalid_json" or (variant == "mixed" and k % 2 == 0):
                    conn.send_text('{"event":"trade","channel":"live_trades_%s","data":{"id_str":' % pair)
                else:
                    conn.send_text('{"event":"trade","channel":"live_trades_%s","data":{"type":0}}' % pair)
        elif kind == "unknown_symbol":
            sym = str(params.get("symbol", "ZZZ-USD")).upper()
            base, quote = split_canonical(sym)
            if f"{base}-{quote}" in self.symbols:
                raise FaultError(f"{sym} is listed; unknown_symbol needs an unlisted symbol")
            vs = f"{base}{quote}".lower()
            for k in range(count):
                tid = 2 ** 53 + 77 + k
                conn.send_text('{"event":"trade","channel":"live_trades_%s","data":{"id":%d,"id_str":"%d",'
                               '"timestamp":"%d","amount":10.0,"amount_str":"10.00000000","price":1.234,'
                               '"price_str":"1.234","type":0,"microtimestamp":"%d","buy_order_id":2,'
                               '"sell_order_id":1}}' % (vs, int(float(tid)), tid, now // 1_000_000, now))
        else:
            raise FaultError(f"bitstamp does not implement fault {kind!r}")

    async def _close_later(self, conn: WSConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await conn.close(1001, "reconnect requested")

    def venue_stats(self) -> dict[str, Any]:
        return {"bitstamp": {"idle_drops": self.idle_drops, "reconnect_requests": self.notices}}

    # ------------------------------------------------------------------ REST plumbing
    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                data = fn(request)
            except BitstampError as e:
                return web.Response(body=orjson.dumps({"status": "error", "reason": e.msg, "code": e.code}),
                                    status=e.status, content_type="application/json")
            return web.Response(body=orjson.dumps(data), content_type="application/json")
        return handler

    def not_found_body(self, request: web.Request) -> Any:
        return {"status": "error", "reason": "Not Found", "code": "404.000"}

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        code = "400.002" if status == 429 else f"{status}.000"
        headers = {"Retry-After": str(max(0, int(round(retry_after))))} if retry_after is not None else {}
        return web.Response(body=orjson.dumps({"status": "error", "reason": "simulated failure", "code": code}),
                            status=status, headers=headers, content_type="application/json")

    def bad_param(self, name: str) -> Exception:
        return BitstampError("400.000", f"Invalid {name}")

    def _pair(self, request: web.Request) -> int:
        pair = request.match_info["pair"]
        si = self.symbol_index(pair) if pair == pair.lower() else None
        if si is None or self.venue_symbol(si) != pair:
            raise BitstampError("404.002", "Market not found", 404)
        return si

    # ------------------------------------------------------------------ REST endpoints
    def _pair_row(self, base: str, quote: str, pdec: int, trading: str) -> dict[str, Any]:
        return {"name": f"{base}/{quote}", "url_symbol": f"{base}{quote}".lower(), "base_decimals": 8,
                "counter_decimals": pdec, "instant_order_counter_decimals": pdec,
                "minimum_order": f"10.0 {quote}", "trading": trading, "instant_and_market_orders": trading,
                "description": f"{base} / {quote}"}

    def _r_pairs(self, request: web.Request) -> Any:
        out = [self._pair_row(sp.base, sp.quote, self._pdec[si], "Enabled") for si, sp in enumerate(self.specs)]
        out += [self._pair_row(*split_canonical(s), 2, "Enabled") for s in self.quiet]
        out += [self._pair_row(*split_canonical(s), 2, "Disabled") for s in self.disabled]
        return out

    def _r_markets(self, request: web.Request) -> Any:
        """``/api/v2/markets/``: the pairs of trading-pairs-info in the newer shape."""
        out = []
        for row in self._r_pairs(request):
            base, quote = row["name"].split("/")
            out.append({"name": row["name"], "market_symbol": row["url_symbol"], "base_currency": base,
                        "base_decimals": row["base_decimals"], "counter_currency": quote,
                        "counter_decimals": row["counter_decimals"], "minimum_order_value": "10",
                        "trading": row["trading"], "instant_order_counter_decimals": row["counter_decimals"],
                        "instant_and_market_orders": row["instant_and_market_orders"],
                        "description": row["description"], "market_type": "SPOT"})
        return out

    def _r_transactions(self, request: web.Request) -> Any:
        si = self._pair(request)
        window = request.query.get("time", "hour")
        if window not in _WINDOWS:
            raise BitstampError("400.000", "Invalid time")
        tape = self.tapes[si]
        now = self.now_us()
        lo = tape.index_at_ts(now - _WINDOWS[window] * 1_000_000)
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        return [{"date": str(ts[i] // 1_000_000), "tid": str(ids[i]), "amount": fmt_units(qty[i], 8),
                 "price": self.fmt_trade_price(si, px[i]), "type": "0" if side[i] else "1"}
                for i in range(len(tape) - 1, lo - 1, -1)]

    def _r_ohlc(self, request: web.Request) -> Any:
        si = self._pair(request)
        step = self.query_int(request, "step")
        if step not in (60, 180, 300, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400, 259200):
            raise BitstampError("400.000", "Invalid step")
        limit = self.query_limit(request, 1000, 1000)
        start, end = self.query_int(request, "start"), self.query_int(request, "end")
        iv = step * 1_000_000
        newest = start is None
        rows = self.buckets(si, iv, None if start is None else start * 1_000_000,
                            None if end is None else end * 1_000_000, limit, newest_first=newest)
        if newest:
            rows.reverse()
        tape = self.tapes[si]
        out = []
        for b, i, j in rows:
            pxs, qs = tape.px[i:j], tape.qty[i:j]
            fp = self.fmt_trade_price
            out.append({"timestamp": str(b // 1_000_000), "open": fp(si, pxs[0]), "high": fp(si, max(pxs)),
                        "low": fp(si, min(pxs)), "close": fp(si, pxs[-1]), "volume": fmt_units(sum(qs), 8)})
        sp = self.specs[si]
        return {"data": {"pair": f"{sp.base}/{sp.quote}", "ohlc": out}}
