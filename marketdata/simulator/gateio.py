"""Gate.io API v4 spot: WebSocket ``spot.trades`` and the public REST a client calls, encoded
from the reference sheet (``../shared/reference/venues-bybit-bitfinex-gateio-bitstamp-alpaca.md``
section 3), independently of ``marketdata.venues``.

WebSocket (same port as REST), path ``/ws/v4/`` (``/ws/v4`` too):

* ``{"time":s,"id":n,"channel":"spot.trades","event":"subscribe","payload":["BTC_USDT",..]}`` ->
  ONE ack per request ``{"time","time_ms","id","conn_id","channel","event":"subscribe",
  "error":null,"result":{"status":"success"}}`` (``id`` echoed only when sent).  An unknown pair
  rejects the whole request: ``"error":{"code":2,"message":"unknown currency pair X"},
  "result":null``; an unknown channel is code 2 too; a body that is not a JSON object with
  ``channel``/``event`` is code 1 ``invalid request body``.  ``unsubscribe`` removes the listed pairs.
  The request ``time`` is not checked against the server clock (simulated time is not wall time).
* Trades: one push per fill ``{"time","time_ms","channel":"spot.trades","event":"update",
  "result":{"id","id_market","create_time","create_time_ms","side","currency_pair","amount",
  "price","range"}}``.  ``id_market`` = the tape id, consecutive per pair (the gap-detectable
  field); ``id`` = the platform-wide id ``id_market * 64 + symbol index`` (unique across pairs,
  increasing per pair, never consecutive per pair); ``range`` = ``"M-M"``.  ``create_time_ms``
  is a STRING with the sub-millisecond digits of the µs timestamp, trailing zeros dropped
  (``"1767607200123.45"``, ``"1767607200123"`` on a whole ms): ``int()`` on it fails and a float
  round trip can lose the last µs.  ``side`` is the taker side.
* Keepalive: ``{"time":t,"channel":"spot.ping"}`` -> ``{"time","time_ms","channel":"spot.pong",
  "event":"","error":null,"result":null}``.  The server also sends WebSocket ping frames
  (``--ping-interval``/``--pong-timeout``).  Idle cut (undocumented length, option
  ``idle_timeout``, default 0 = off): a connection that sent no text frame (``spot.ping`` or any
  request) for that long is dropped without a close frame.

REST under ``/api/v4`` (errors: HTTP 4xx ``{"label":..,"message":..}``; unknown paths 404
``NOT_FOUND``): ``/spot/currencies`` (one chain per currency), ``/margin/currency_pairs`` (every
tradable pair, leverage 3), ``/futures/{settle}/contracts``, ``/delivery/{settle}/contracts`` and
``/options/underlyings`` (empty: not simulated; ccxt loads them with its markets),
``/spot/currency_pairs`` (+ ``/{pair}``; option ``untradable_symbols``, default ``["LUNA-USDT"]``,
listed with ``trade_status: untradable``), ``/spot/trades?currency_pair=&limit=&last_id=&reverse=
&from=&to=&page=`` (<= 1000, default 100, rows newest first; ``last_id`` overrides from/to:
``reverse=false`` -> the ``limit`` trades right after ``last_id`` (ids > last_id, the oldest of
them), ``reverse=true`` -> the newest ``limit`` with ids < last_id; rows carry ``id`` as a string,
``create_time``/``create_time_ms`` strings, ``sequence_id`` = ``id_market`` as a string),
``/spot/candlesticks?currency_pair=&interval=&from=&to=&limit=`` (rows ``[t, quote_volume, close,
high, low, open, base_volume, window_closed]`` as strings, oldest first, only buckets with trades,
<= 1000; ``limit`` together with ``from`` and ``to`` is rejected).

Faults: ``skip_ids`` (``id_market`` jumps), ``silent_drop``, ``close``, ``abort``, ``malformed``,
``unknown_symbol`` (pushes for an unlisted pair), ``rest_fail``/``rest_delay`` (429 answers
``TOO_MANY_REQUESTS``).  Gate.io has no reconnect notice: ``notice`` is refused.

Ground truth: ``trade_id`` = ``id_market`` (REST ``sequence_id``), ``ts_us`` µs.
"""

from __future__ import annotations

import random
import time
from operator import mul
from typing import Any

import orjson
from aiohttp import web

from .conn import HDR, WSConnection, text_header
from .faults import FaultError
from .generator import SCALE, split_canonical
from .venue import SliceInfo, Venue, VenueRestError, decimals_of, fmt_units, strip_zeros

PLATFORM_ID_STRIDE = 64        # platform id = id_market * 64 + symbol index
_SIDE = ("sell", "buy")
_INTERVALS = {"10s": 10, "1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14400,
              "8h": 28800, "1d": 86400, "7d": 604800}


class GateError(VenueRestError):
    pass


def ms_text(ts_us: int) -> str:
    """µs -> Gate's ``create_time_ms`` string: milliseconds with the sub-ms digits, no trailing zeros."""
    ms, frac = divmod(ts_us, 1000)
    if not frac:
        return str(ms)
    return f"{ms}.{frac:03d}".rstrip("0")


class _GState:
    __slots__ = ("tag", "trades", "last_recv")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.trades: list[int] = []
        self.last_recv = time.monotonic()


class GateioVenue(Venue):
    name = "gateio"
    ts_quantum_us = 1
    id_range = (10_000_000, 90_000_000)
    server_pings = True

    def __init__(self, sim, symbols, rate, options) -> None:
        if len(symbols) > PLATFORM_ID_STRIDE:
            raise ValueError(f"gateio: at most {PLATFORM_ID_STRIDE} symbols")
        super().__init__(sim, symbols, rate, options)
        self.idle_timeout = float(self.options.get("idle_timeout", 0.0))
        self.untradable = [s.upper() for s in self.options.get("untradable_symbols", ["LUNA-USDT"])
                           if s.upper() not in self.symbols]
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]
        self._qdec = [decimals_of(sp.lot_units) for sp in self.specs]
        self._rng = random.Random(f"{self.config.seed}:{self.name}:conns")
        self._idle_next = 0.0
        self.idle_drops = 0
        self._tpl = ['{"time":%d,"time_ms":%d,"channel":"spot.trades","event":"update","result":{"id":%d,'
                     '"id_market":%d,"create_time":%d,"create_time_ms":"%s","side":"%s","currency_pair":"'
                     + self.venue_symbol(si) + '","amount":"%s","price":"%s","range":"%d-%d"}}'
                     for si in range(len(self.symbols))]

    # ------------------------------------------------------------------ formatting
    def venue_symbol(self, si: int) -> str:
        return self.symbols[si].replace("-", "_")

    def fmt_trade_price(self, si: int, units: int) -> str:
        return fmt_units(units, self._pdec[si])

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return fmt_units(units, self._qdec[si])

    def platform_id(self, si: int, id_market: int) -> int:
        return id_market * PLATFORM_ID_STRIDE + si

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/ws/v4/", self._h_ws)
        r.add_get("/ws/v4", self._h_ws)
        r.add_get("/api/v4/spot/currency_pairs", self._rest(self._r_pairs))
        r.add_get("/api/v4/spot/currency_pairs/{pair}", self._rest(self._r_pair))
        r.add_get("/api/v4/spot/currencies", self._rest(self._r_currencies))
        r.add_get("/api/v4/margin/currency_pairs", self._rest(self._r_margin_pairs))
        # Derivative listings a client loads with its markets (ccxt): not simulated, so empty.
        for path in ("/api/v4/futures/{settle}/contracts", "/api/v4/delivery/{settle}/contracts",
                     "/api/v4/options/underlyings"):
            r.add_get(path, self._rest(lambda rq: []))
        r.add_get("/api/v4/spot/trades", self._rest(self._r_trades))
        r.add_get("/api/v4/spot/candlesticks", self._rest(self._r_candles))

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        return await self.ws_session(request, _GState(f"{self._rng.getrandbits(48):012x}"))

    # ------------------------------------------------------------------ WebSocket control
    def _reply(self, conn: WSConnection, channel: str, event: str, rid: Any, error: Any, result: Any) -> None:
        now = self.now_us()
        obj: dict[str, Any] = {"time": now // 1_000_000, "time_ms": now // 1000}
        if rid is not None:
            obj["id"] = rid
        obj.update({"conn_id": conn.venue_state.tag, "channel": channel, "event": event, "error": error,
                    "result": result})
        conn.send_text(orjson.dumps(obj).decode())

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _GState = conn.venue_state
        st.last_recv = time.monotonic()
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("channel"), str):
            self._reply(conn, "", "", None, {"code": 1, "message": "invalid request body"}, None)
            return
        channel, event, rid = msg["channel"], msg.get("event"), msg.get("id")
        if channel == "spot.ping":
            self._reply(conn, "spot.pong", "", rid, None, None)
            return
        if event not in ("subscribe", "unsubscribe"):
            self._reply(conn, channel, event or "", rid, {"code": 1, "message": "invalid request body"}, None)
            return
        if channel != "spot.trades":
            self._reply(conn, channel, event, rid, {"code": 2, "message": f"unknown channel {channel}"}, None)
            return
        payload = msg.get("payload")
        if not isinstance(payload, list) or not payload or not all(isinstance(p, str) for p in payload):
            self._reply(conn, channel, event, rid, {"code": 2, "message": "invalid argument: payload"}, None)
            return
        sis = []
        for p in payload:
            si = self.symbol_index(p) if "_" in p else None
            if si is None or self.venue_symbol(si) != p:
                self._reply(conn, channel, event, rid, {"code": 2, "message": f"unknown currency pair {p}"},
                            {"status": "fail"})
                return
            sis.append(si)
        for si in sis:
            if event == "subscribe" and si not in st.trades:
                st.trades.append(si)
            elif event == "unsubscribe" and si in st.trades:
                st.trades.remove(si)
        self._reply(conn, channel, event, rid, None, {"status": "success"})

    # ------------------------------------------------------------------ trades
    def on_slice(self, sl: SliceInfo) -> None:
        if not self.conns:
            return
        cache: dict[tuple, tuple[bytes, int]] = {}
        for conn in list(self.conns.values()):
            st: _GState = conn.venue_state
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
                    ent = cache[(si, target)] = self._encode(si, rng[0], rng[1], sl.withheld_for(si, target),
                                                             sl.now_us)
                if ent[1]:
                    parts.append(ent[0])
                    n += ent[1]
            if n:
                conn.write(b"".join(parts), n, n)

    def _encode(self, si: int, i0: int, i1: int, skip: list[tuple[int, int]], now_us: int) -> tuple[bytes, int]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        tpl, pm, qm = self._tpl[si], self.px_str[si], self.qty_str[si]
        t_s, t_ms = now_us // 1_000_000, now_us // 1000
        parts: list[str] = []
        app = parts.append
        n = 0
        for i in range(i0, i1):
            if skip and any(lo <= i < hi for lo, hi in skip):
                continue
            m = ids[i]
            s = tpl % (t_s, t_ms, m * PLATFORM_ID_STRIDE + si, m, ts[i] // 1_000_000, ms_text(ts[i]),
                       _SIDE[side[i]], qm[qty[i]], pm[px[i]], m, m)
            L = len(s)
            app(HDR[L] if L < 4096 else text_header(L))
            app(s)
            n += 1
        return "".join(parts).encode("latin-1"), n

    def periodic(self, mono: float) -> None:
        self.drop_idle(mono)

    # ------------------------------------------------------------------ faults
    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _GState = conn.venue_state
        count = int(params.get("count", 1))
        now = self.now_us()
        pair = self.venue_symbol(st.trades[0] if st.trades else 0)
        head = '{"time":%d,"time_ms":%d,"channel":"spot.trades","event":"update","result":' % (
            now // 1_000_000, now // 1000)
        if kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            for k in range(count):
                if variant == "invalid_json" or (variant == "mixed" and k % 2 == 0):
                    conn.send_text(head + '{"id":12,"id_market":')
                else:
                    conn.send_text(head + '{"currency_pair":"%s","side":"buy"}}' % pair)
        elif kind == "unknown_symbol":
            sym = str(params.get("symbol", "ZZZ-USDT")).upper()
            base, quote = split_canonical(sym)
            if f"{base}-{quote}" in self.symbols:
                raise FaultError(f"{sym} is listed; unknown_symbol needs an unlisted symbol")
            for _ in range(count):
                m = self._rng.randrange(1_000_000, 9_000_000)
                conn.send_text(head + '{"id":%d,"id_market":%d,"create_time":%d,"create_time_ms":"%s",'
                                      '"side":"buy","currency_pair":"%s_%s","amount":"10","price":"1.234",'
                                      '"range":"%d-%d"}}'
                               % (m * PLATFORM_ID_STRIDE, m, now // 1_000_000, ms_text(now), base, quote, m, m))
        else:
            raise FaultError(f"gateio does not implement fault {kind!r} (Gate.io sends no reconnect notice)")

    def venue_stats(self) -> dict[str, Any]:
        return {"gateio": {"idle_drops": self.idle_drops}}

    # ------------------------------------------------------------------ REST plumbing
    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                data = fn(request)
            except GateError as e:
                return web.Response(body=orjson.dumps({"label": e.code, "message": e.msg}), status=e.status,
                                    content_type="application/json")
            return web.Response(body=orjson.dumps(data), content_type="application/json")
        return handler

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        label = {429: "TOO_MANY_REQUESTS"}.get(status, "SERVER_ERROR" if status >= 500 else "INVALID_PARAM_VALUE")
        headers = {"Retry-After": str(max(0, int(round(retry_after))))} if retry_after is not None else {}
        return web.Response(body=orjson.dumps({"label": label, "message": "simulated failure"}), status=status,
                            headers=headers, content_type="application/json")

    def bad_param(self, name: str) -> Exception:
        return GateError("INVALID_PARAM_VALUE", f"invalid parameter {name}")

    def _pair(self, request: web.Request) -> int:
        pair = request.query.get("currency_pair")
        if not pair:
            raise GateError("MISSING_REQUIRED_PARAM", "Missing required parameter: currency_pair")
        si = self.symbol_index(pair) if "_" in pair else None
        if si is None or self.venue_symbol(si) != pair:
            raise GateError("INVALID_CURRENCY_PAIR", f"Invalid currency pair: {pair}")
        return si

    # ------------------------------------------------------------------ REST endpoints
    def _pair_row(self, pair: str, base: str, quote: str, pdec: int, qdec: int, status: str) -> dict[str, Any]:
        return {"id": pair, "base": base, "quote": quote, "fee": "0.2", "min_base_amount": f"{10 ** -qdec:.{qdec}f}",
                "min_quote_amount": "3", "amount_precision": qdec, "precision": pdec, "trade_status": status,
                "sell_start": 0, "buy_start": 0}

    def _pairs(self) -> list[dict[str, Any]]:
        out = [self._pair_row(self.venue_symbol(si), sp.base, sp.quote, self._pdec[si], self._qdec[si], "tradable")
               for si, sp in enumerate(self.specs)]
        for s in self.untradable:
            base, quote = split_canonical(s)
            out.append(self._pair_row(f"{base}_{quote}", base, quote, 6, 2, "untradable"))
        return out

    def _r_pairs(self, request: web.Request) -> Any:
        return self._pairs()

    def _r_currencies(self, request: web.Request) -> Any:
        """``/spot/currencies`` (ccxt's load_markets): one chain per currency."""
        return [{"currency": c, "name": c, "delisted": False, "withdraw_disabled": False, "withdraw_delayed": False,
                 "deposit_disabled": False, "trade_disabled": False, "fixed_rate": "", "chain": c,
                 "chains": [{"name": c, "addr": "", "withdraw_disabled": False, "withdraw_delayed": False,
                             "deposit_disabled": False}]}
                for c in self.currencies()]

    def _r_margin_pairs(self, request: web.Request) -> Any:
        """``/margin/currency_pairs``: every tradable simulated pair, leverage 3."""
        return [{"id": row["id"], "base": row["base"], "quote": row["quote"], "leverage": 3,
                 "min_base_amount": row.get("min_base_amount", "0.0001"), "min_quote_amount": "1",
                 "max_quote_amount": "1000000", "status": 1}
                for row in self._pairs() if row.get("trade_status") == "tradable"]

    def not_found_body(self, request: web.Request) -> Any:
        return {"label": "NOT_FOUND", "message": "Not Found"}

    def _r_pair(self, request: web.Request) -> Any:
        pair = request.match_info["pair"]
        for row in self._pairs():
            if row["id"] == pair:
                return row
        raise GateError("INVALID_CURRENCY_PAIR", f"Invalid currency pair: {pair}", 400)

    def _rows(self, si: int, idx) -> list[dict[str, Any]]:
        tape = self.tapes[si]
        ids, ts, px, qty, side = tape.ids, tape.ts, tape.px, tape.qty, tape.side
        pair, pd, qd = self.venue_symbol(si), self._pdec[si], self._qdec[si]
        return [{"id": str(ids[i] * PLATFORM_ID_STRIDE + si), "create_time": str(ts[i] // 1_000_000),
                 "create_time_ms": ms_text(ts[i]), "currency_pair": pair, "side": _SIDE[side[i]], "role": "taker",
                 "amount": fmt_units(qty[i], qd), "price": fmt_units(px[i], pd), "sequence_id": str(ids[i])}
                for i in idx]

    def _r_trades(self, request: web.Request) -> Any:
        si = self._pair(request)
        limit = self.query_limit(request, 100, 1000)
        tape = self.tapes[si]
        n = len(tape)
        last_id = self.query_int(request, "last_id")
        reverse = request.query.get("reverse", "false")
        if reverse not in ("true", "false"):
            raise self.bad_param("reverse")
        if last_id is not None:
            # platform ids of this pair are m * STRIDE + si: compare on the market id
            if reverse == "true":
                hi = tape.index_of_id((last_id - si - 1) // PLATFORM_ID_STRIDE + 1)   # ids < last_id
                lo = max(tape.first, hi - limit)
            else:
                lo = tape.index_of_id((last_id - si) // PLATFORM_ID_STRIDE + 1)       # ids > last_id
                hi = min(n, lo + limit)
            return self._rows(si, range(hi - 1, lo - 1, -1))
        t_from = self.query_int(request, "from")
        t_to = self.query_int(request, "to")
        page = self.query_int(request, "page", 1) or 1
        if t_from is None and t_to is None:
            return self._rows(si, range(n - 1, max(0, n - limit) - 1, -1))
        now_s = self.now_us() // 1_000_000
        t_to = now_s if t_to is None else t_to
        t_from = t_to - 30 * 86400 if t_from is None else t_from
        if limit * (page - 1) > 100_000:
            raise GateError("INVALID_PARAM_VALUE", "page * limit too large")
        lo = tape.index_at_ts(t_from * 1_000_000)
        hi = tape.index_at_ts((t_to + 1) * 1_000_000)
        top = hi - limit * (page - 1)
        return self._rows(si, range(top - 1, max(lo, top - limit) - 1, -1)) if top > lo else []

    def _r_candles(self, request: web.Request) -> Any:
        si = self._pair(request)
        iv_name = request.query.get("interval", "30m")
        if iv_name not in _INTERVALS:
            raise GateError("INVALID_PARAM_VALUE", f"invalid interval {iv_name}")
        iv = _INTERVALS[iv_name] * 1_000_000
        t_from, t_to = self.query_int(request, "from"), self.query_int(request, "to")
        if request.query.get("limit") and t_from is not None and t_to is not None:
            raise GateError("INVALID_PARAM_VALUE", "limit conflicts with from and to")
        limit = self.query_limit(request, 100, 1000)
        now = self.now_us()
        lo = None if t_from is None else t_from * 1_000_000
        hi = None if t_to is None else t_to * 1_000_000
        newest = t_from is None
        rows = self.buckets(si, iv, lo, hi, 1000 if (lo is not None and hi is not None) else limit, newest_first=newest)
        if newest:
            rows.reverse()
        tape = self.tapes[si]
        pd, qd = self._pdec[si], self._qdec[si]
        out = []
        for b, i, j in rows:
            pxs, qs = tape.px[i:j], tape.qty[i:j]
            quote = strip_zeros(fmt_units(sum(map(mul, pxs, qs)) // SCALE))
            out.append([str(b // 1_000_000), quote, fmt_units(pxs[-1], pd), fmt_units(max(pxs), pd),
                        fmt_units(min(pxs), pd), fmt_units(pxs[0], pd), fmt_units(sum(qs), qd),
                        "true" if b + iv <= now else "false"])
        return out
