"""Alpaca Market Data v2, US stocks on the IEX feed, encoded from the reference sheet
(``../shared/reference/venues-bybit-bitfinex-gateio-bitstamp-alpaca.md`` section 5),
independently of ``marketdata.venues``.

WebSocket ``/v2/iex`` (same port as REST). Every server frame is a JSON array:

* on open ``[{"T":"success","msg":"connected"}]``; then ``{"action":"auth","key","secret"}`` ->
  ``[{"T":"success","msg":"authenticated"}]``, or ``402 auth failed`` and a close (1008).
  ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` handshake headers authenticate at connect.
  Errors are single-element arrays ``[{"T":"error","code":N,"msg":..}]``: 400 invalid syntax,
  401 not authenticated (any action before auth), 402 auth failed, 403 already authenticated,
  404 auth timeout (no auth within ``auth_timeout`` wall s; then a close), 405 symbol limit
  exceeded (trades+quotes symbols over ``max_symbols``; earlier subscriptions are kept),
  406 connection limit exceeded (an auth while ``max_connections`` other authenticated
  connections of the key are open -- a silently dropped one counts until its TCP is gone; then a
  close).
* ``{"action":"subscribe"|"unsubscribe","trades":[..],"quotes":[..],"bars":[..]}`` is incremental;
  the ack ``[{"T":"subscription",...}]`` lists the whole set, with ``corrections`` and
  ``cancelErrors`` mirroring ``trades``. ``"*"`` subscribes every symbol. Unlisted symbols are
  accepted and silent. Only trades carry data (no quotes/bars streams).
* Trades: one array per generation slice and connection holding every new trade of its symbols,
  ``{"T":"t","S":"AAPL","i":..,"x":"V","p":230.12,"s":12,"c":["@"],"z":"C","t":"<RFC3339 ns>"}``.
  Prices are JSON numbers (the symbol's tick decimals, trailing zeros dropped), sizes integer
  shares (one generator lot = one share), ``t`` has nanoseconds with trailing zeros dropped
  (variable length), the tape's µs times 1000 plus a deterministic sub-µs part.
* Trade ids ``i`` = generator id * 4 + (id mod 3): increasing but never consecutive, like an IEX
  tape interleaving other feeds' ids, so a client cannot find gaps by id.
* Trades are generated only inside NYSE regular sessions (``exchange_calendars`` XNYS: holidays,
  13:00 ET early closes, DST), venue option ``sessions: "nyse"`` (default) or ``"always"``. Outside
  sessions the stream is silent except for protocol pings (``server_pings``: the server pings
  every ``ping_interval``; whether Alpaca's server does is UNCONFIRMED, it keeps a quiet evening
  link observable).

Faults beyond the base ones (``POST /_sim/fault``):

* ``correct`` (``symbol``, ``count`` default 1): the last ``count`` live trades of the symbol are
  corrected: ``{"T":"c","S",..,"x":"V","oi":id,"op","os","oc","ci":id,"cp","cs","cc","z","t"}``
  with the new price one tick up and one more share. The corrected trade keeps its id
  (``ci == oi``, the reference's example shows distinct ids: UNCONFIRMED for IEX) and its time
  (``t`` = the original trade's time). The tape, REST and the ground truth carry the corrected
  values.
* ``cancel`` (``symbol``, ``count`` default 1): ``{"T":"x","S",..,"i":id,"x":"V","p","s","a":"C",
  "z":"C","t"}`` for the last ``count`` live trades; REST, bars and the ground truth drop them.
* ``malformed`` (``variant`` invalid_json | missing_fields | mixed), ``unknown_symbol``.

Both go to every authenticated connection subscribed to the symbol's trades (the fault is refused,
changing nothing, while there is none); a connection that misses them cannot learn them from REST
history (which simply reflects them), as with the real venue.

REST (``{"message": ..}`` errors, ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` headers required
unless option ``rest_auth`` is false: 401 otherwise):

* ``GET /v2/stocks/{symbol}/trades?start&end&limit&page_token&feed&sort``: trades with
  ``start <= t <= end`` (RFC 3339 or a date; end defaults to now), ascending, ``limit`` 1..10000
  (default 1000), ``next_page_token`` (opaque, base64 of the next tape index) or null.
* ``GET /v2/stocks/{symbol}/bars?timeframe=1Min&start&end&limit&page_token``: minute bars
  ``{"t","o","h","l","c","v","n","vw"}`` for minutes with trades (cancels excluded, corrections
  applied), bar ``t`` = minute start; only ``1Min``/``1T`` timeframes.
* ``GET /v2/assets?status=active&asset_class=us_equity``: the configured symbols (the Trading
  API host in reality; served here on the same port).

Venue options: ``key`` / ``secret`` (``sim-key`` / ``sim-secret``), ``max_symbols`` (30),
``max_connections`` (1), ``auth_timeout`` (10 wall s), ``sessions`` (``nyse``), ``rest_auth``
(true). Canonical symbols ``AAPL-USD`` <-> venue ``AAPL``.

Ground truth: ``trade_id`` = ``i``, ``ts_us`` = µs of ``t``, price/qty as the wire prints them,
``side`` = ``unknown`` (equity prints carry no aggressor). Corrections rewrite the trade's row,
cancels delete it (``truth_amendments``).
"""

from __future__ import annotations

import base64
import time
from bisect import bisect_left, bisect_right
from datetime import datetime, timezone
from typing import Any

import orjson
from aiohttp import web

from .conn import WSConnection, frame_text
from .faults import FaultError
from .generator import SCALE, split_canonical
from .venue import SliceInfo, Venue, VenueRestError, decimals_of, fmt_units, strip_zeros

_CONNECTED = '[{"T":"success","msg":"connected"}]'
_AUTHENTICATED = '[{"T":"success","msg":"authenticated"}]'
_ERRORS = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated",
           404: "auth timeout", 405: "symbol limit exceeded", 406: "connection limit exceeded"}
_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
_CONDITIONS = (["@"], ["@", "I"], ["@", "F"], ["@", "T"], ["@", "F", "I"])
_CONDITIONS_JSON = tuple(orjson.dumps(c).decode() for c in _CONDITIONS)
US_PER_MINUTE = 60_000_000


class AlpacaError(VenueRestError):
    pass


_SECOND_TEXT: dict[int, str] = {}


def _second_text(s: int) -> str:
    """Epoch second -> ``2026-01-05T15:00:01`` (memoized: consecutive trades share seconds)."""
    t = _SECOND_TEXT.get(s)
    if t is None:
        if len(_SECOND_TEXT) >= 4096:
            _SECOND_TEXT.clear()
        t = _SECOND_TEXT[s] = datetime.fromtimestamp(s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return t


def rfc3339_ns(ts_us: int, sub_ns: int = 0) -> str:
    """µs (+ ns below it) -> ``2026-01-05T15:00:01.123456789Z`` with trailing zeros dropped."""
    s, us = divmod(ts_us, 1_000_000)
    base = _second_text(s)
    frac = f"{us * 1000 + sub_ns:09d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def parse_rfc3339_us(value: str) -> int:
    """RFC 3339 (any fraction length, ``Z`` or offset) or ``YYYY-MM-DD`` -> µs UTC."""
    v = value.strip()
    if len(v) == 10:
        v += "T00:00:00Z"
    frac_us = 0
    if "." in v:
        head, rest = v.split(".", 1)
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        frac_us = int((digits + "000000")[:6]) if digits else 0
        v = head + rest[i:]
    dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000 + frac_us


class _AState:
    """Per-connection Alpaca state."""

    __slots__ = ("authed", "key", "subs", "all_trades", "trade_sis", "auth_deadline")

    def __init__(self) -> None:
        self.authed = False
        self.key: str | None = None
        self.subs: dict[str, list[str]] = {c: [] for c in _CHANNELS}
        self.all_trades = False
        self.trade_sis: list[int] = []
        self.auth_deadline = 0.0


class _Sessions:
    """NYSE regular sessions as sorted (open_us, close_us) lists, from exchange_calendars."""

    def __init__(self, start_us: int) -> None:
        import exchange_calendars

        day = datetime.fromtimestamp(start_us / 1e6, tz=timezone.utc).date()
        cal = exchange_calendars.get_calendar("XNYS", start=str(day.replace(year=day.year - 1)))
        sched = cal.schedule
        self.opens = [int(t.value // 1000) for t in sched["open"]]
        self.closes = [int(t.value // 1000) for t in sched["close"]]

    def at(self, t_us: int) -> tuple[int, int] | None:
        """The session containing ``t_us`` (open <= t < close), else None."""
        i = bisect_right(self.opens, t_us) - 1
        if i >= 0 and t_us < self.closes[i]:
            return self.opens[i], self.closes[i]
        return None

    def next_open(self, t_us: int) -> int | None:
        i = bisect_right(self.opens, t_us)
        return self.opens[i] if i < len(self.opens) else None


class AlpacaVenue(Venue):
    name = "alpaca"
    ts_quantum_us = 1
    id_range = (10_000_000_000, 60_000_000_000)
    server_pings = True

    def __init__(self, sim, symbols, rate, options) -> None:
        options = {"books": False, **options}
        super().__init__(sim, symbols, rate, options)
        self.key = str(self.options.get("key", "sim-key"))
        self.secret = str(self.options.get("secret", "sim-secret"))
        self.max_symbols = int(self.options.get("max_symbols", 30))
        self.max_connections = int(self.options.get("max_connections", 1))
        self.auth_timeout = float(self.options.get("auth_timeout", 10.0))
        self.rest_auth = bool(self.options.get("rest_auth", True))
        mode = str(self.options.get("sessions", "nyse"))
        if mode not in ("nyse", "always"):
            raise ValueError(f"alpaca option sessions must be 'nyse' or 'always', not {mode!r}")
        self.sessions = _Sessions(sim.clock.start_us) if mode == "nyse" else None
        self._vsym = [sp.base for sp in self.specs]
        for sp in self.specs:
            if sp.quote != "USD":
                raise ValueError(f"alpaca lists US equities as <TICKER>-USD, not {sp.canonical}")
        self._pdec = [decimals_of(sp.tick_units) for sp in self.specs]
        self._pcache: list[dict[int, str]] = [{} for _ in self.specs]
        # corrections and cancels: tape indices per symbol, and ground-truth rows to rewrite
        self.cancelled: list[set[int]] = [set() for _ in self.specs]
        self.corrected: list[set[int]] = [set() for _ in self.specs]
        self._amend: dict[tuple[str, str, str], str] = {}
        self.corrections_sent = 0
        self.cancels_sent = 0
        self.auth_failures = 0
        self.connection_limit_errors = 0

    # ------------------------------------------------------------------ symbols / formatting
    def venue_symbol(self, si: int) -> str:
        return self._vsym[si]

    def fmt_trade_id(self, si: int, trade_id: int) -> str:
        return str(trade_id * 4 + trade_id % 3)

    def wire_id(self, trade_id: int) -> int:
        return trade_id * 4 + trade_id % 3

    def fmt_trade_price(self, si: int, units: int) -> str:
        c = self._pcache[si]
        s = c.get(units)
        if s is None:
            if len(c) > 100_000:
                c.clear()
            s = c[units] = strip_zeros(fmt_units(units, self._pdec[si]))
        return s

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return str(units // self.specs[si].lot_units)

    def ground_truth_lines(self, si: int, i0: int, i1: int) -> str:
        prefix = f"{self.name},{self.symbols[si]},"
        gone = self.cancelled[si]
        out = []
        for i in range(i0, i1):
            if i in gone:
                continue
            out.append(self._truth_line(prefix, si, i))
        return "".join(out)

    def _truth_line(self, prefix: str, si: int, i: int) -> str:
        tape = self.tapes[si]
        return (f"{prefix}{self.fmt_trade_id(si, tape.ids[i])},{tape.ts[i]},{self.fmt_trade_price(si, tape.px[i])},"
                f"{self.fmt_trade_qty(si, tape.qty[i])},unknown\n")

    def truth_amendments(self) -> dict[tuple[str, str, str], str]:
        """Ground-truth rows superseded since they were written: (exchange, symbol, trade_id) ->
        the new line, or "" for a deleted row. Taken once."""
        out, self._amend = self._amend, {}
        return out

    # ------------------------------------------------------------------ sessions
    def _generate(self, mono: float) -> int:
        """Trades only inside sessions: pacing is frozen while the market is closed (no burst at
        the open), and a slice crossing the close stops at the close."""
        if self.sessions is None or self.paused or self.ended:
            return super()._generate(mono)
        clock = self.sim.clock
        now = clock.now_us(mono)
        prev = self._t_prev_us
        cur = self.sessions.at(prev)
        if cur is not None:
            if now < cur[1]:
                return super()._generate(mono)
            produced = super()._generate(clock.wall_for(cur[1] - 1))   # up to the close
            self._freeze(mono, now)
            return produced
        nxt = self.sessions.next_open(prev)
        if nxt is None or now < nxt:
            self._freeze(mono, now)
            return 0
        # the market opened during this step: start the tape at the open
        self._base_wall = clock.wall_for(nxt)
        self._base_count = self.gen.generated
        self._t_prev_us = nxt - 1
        return super()._generate(mono)

    def _freeze(self, mono: float, now: int) -> None:
        self._base_wall = mono
        self._base_count = self.gen.generated
        self._t_prev_us = max(self._t_prev_us, now)

    # ------------------------------------------------------------------ routes
    def build_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v2/iex", self._h_ws)
        r.add_get("/v2/stocks/{symbol}/trades", self._rest(self._r_trades))
        r.add_get("/v2/stocks/{symbol}/bars", self._rest(self._r_bars))
        r.add_get("/v2/assets", self._rest(self._r_assets))

    # ------------------------------------------------------------------ WebSocket
    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        st = _AState()
        st.auth_deadline = time.monotonic() + self.auth_timeout
        hdr_key = request.headers.get("APCA-API-KEY-ID")
        if hdr_key is not None:
            st.key = hdr_key
        return await self.ws_session(request, st)

    def on_ws_open(self, conn: WSConnection) -> None:
        st: _AState = conn.venue_state
        conn.send_text(_CONNECTED)
        if st.key is not None:
            secret = conn.request.headers.get("APCA-API-SECRET-KEY", "")
            key, st.key = st.key, None
            self._auth(conn, key, secret)

    def _error(self, conn: WSConnection, code: int, close: bool = False) -> None:
        conn.send_text('[{"T":"error","code":%d,"msg":"%s"}]' % (code, _ERRORS[code]))
        if close:
            self.spawn(conn.close(1008, _ERRORS[code]))

    def _auth(self, conn: WSConnection, key: Any, secret: Any) -> None:
        st: _AState = conn.venue_state
        if st.authed:
            self._error(conn, 403)
            return
        if key != self.key or secret != self.secret:
            self.auth_failures += 1
            conn.faults.append("auth_failed")
            self._error(conn, 402, close=True)
            return
        others = [c for c in self.conns.values()
                  if c is not conn and c.state == "open" and c.venue_state.authed and c.venue_state.key == key]
        if len(others) >= self.max_connections:
            self.connection_limit_errors += 1
            conn.faults.append("connection_limit")
            self._error(conn, 406, close=True)
            return
        st.authed, st.key = True, key
        conn.send_text(_AUTHENTICATED)

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        st: _AState = conn.venue_state
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._error(conn, 400)
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
            self._error(conn, 400)
            return
        action = msg["action"]
        if action == "auth":
            self._auth(conn, msg.get("key"), msg.get("secret"))
            return
        if not st.authed:
            self._error(conn, 401)
            return
        if action not in ("subscribe", "unsubscribe"):
            self._error(conn, 400)
            return
        lists = {c: msg.get(c) for c in _CHANNELS if c in msg}
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in lists.values()):
            self._error(conn, 400)
            return
        new = {c: list(st.subs[c]) for c in _CHANNELS}
        for c, syms in lists.items():
            for s in syms:
                if action == "subscribe" and s not in new[c]:
                    new[c].append(s)
                elif action == "unsubscribe" and s in new[c]:
                    new[c].remove(s)
        limited = {s for c in ("trades", "quotes") for s in new[c] if s != "*"}
        if self.max_symbols > 0 and len(limited) > self.max_symbols:
            self._error(conn, 405)        # the earlier subscriptions stay
            return
        st.subs = new
        st.all_trades = "*" in new["trades"]
        idx = {v: i for i, v in enumerate(self._vsym)}
        st.trade_sis = list(range(len(self._vsym))) if st.all_trades else \
            sorted({idx[s] for s in new["trades"] if s in idx})
        ack = {"T": "subscription", **{c: new[c] for c in _CHANNELS},
               "corrections": list(new["trades"]), "cancelErrors": list(new["trades"])}
        conn.send_text(orjson.dumps([ack]).decode())

    def periodic(self, mono: float) -> None:
        for conn in list(self.conns.values()):
            st: _AState = conn.venue_state
            if not st.authed and conn.can_send and mono > st.auth_deadline and "auth_timeout" not in conn.faults:
                conn.faults.append("auth_timeout")
                self._error(conn, 404, close=True)

    # ------------------------------------------------------------------ encoding / fan-out
    def _trade_json(self, si: int, i: int) -> str:
        tape = self.tapes[si]
        tid = tape.ids[i]
        return ('{"T":"t","S":"%s","i":%d,"x":"V","p":%s,"s":%s,"c":%s,"z":"C","t":"%s"}' % (
            self._vsym[si], self.wire_id(tid), self.px_str[si][tape.px[i]],
            self.qty_str[si][tape.qty[i]], _CONDITIONS_JSON[tid % 5],
            rfc3339_ns(tape.ts[i], tid % 1000)))

    def on_slice(self, sl: SliceInfo) -> None:
        if not self.conns:
            return
        cache: dict[tuple[int, int | None], list[str]] = {}
        for conn in list(self.conns.values()):
            st: _AState = conn.venue_state
            if not (st.authed and st.trade_sis and conn.can_send):
                continue
            parts: list[str] = []
            for si in st.trade_sis:
                rng = sl.ranges.get(si)
                if rng is None:
                    continue
                target = conn.id if sl.conn_specific(si) else None
                enc = cache.get((si, target))
                if enc is None:
                    skip = sl.withheld_for(si, target)
                    enc = cache[(si, target)] = [self._trade_json(si, i) for i in range(rng[0], rng[1])
                                                 if not (skip and any(lo <= i < hi for lo, hi in skip))]
                parts.extend(enc)
            if parts:
                conn.write(frame_text("[" + ",".join(parts) + "]").encode("latin-1"), 1, len(parts))

    def _broadcast(self, si: int, payload: str) -> int:
        n = 0
        for conn in list(self.conns.values()):
            st: _AState = conn.venue_state
            if st.authed and conn.can_send and si in st.trade_sis:
                conn.send_text(payload)
                n += 1
        return n

    # ------------------------------------------------------------------ faults
    def apply_fault(self, kind: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if kind not in ("correct", "cancel"):
            return super().apply_fault(kind, params)
        params = {k: v for k, v in (params or {}).items() if v is not None and k not in ("kind", "venue")}
        si = self.symbol_index(params.get("symbol"))
        if si is None:
            raise FaultError(f"alpaca: {kind} needs a listed symbol, got {params.get('symbol')!r}")
        try:
            count = int(params.get("count", 1))
        except (TypeError, ValueError):
            raise FaultError(f"count must be an integer, got {params.get('count')!r}") from None
        tape = self.tapes[si]
        gone, fixed = self.cancelled[si], self.corrected[si]
        picked: list[int] = []
        i = len(tape) - 1
        while i >= 0 and len(picked) < count:
            if i not in gone and i not in fixed:
                picked.append(i)
            i -= 1
        if len(picked) < count:
            raise FaultError(f"alpaca: {self.symbols[si]} has only {len(picked)} live trades to {kind}")
        listeners = sorted(c.id for c in self.conns.values()
                           if c.venue_state.authed and c.can_send and si in c.venue_state.trade_sis)
        if not listeners:   # nothing changes: a correction nobody hears is a different fault
            raise FaultError(f"alpaca: no connection subscribed to {self.symbols[si]} trades")
        rec = self.faults.record(kind, params, self.now_us())
        rec.applied_to = listeners
        prefix = f"{self.name},{self.symbols[si]},"
        ids = []
        for i in sorted(picked):
            tid = tape.ids[i]
            wid = self.fmt_trade_id(si, tid)
            ids.append(wid)
            old_p, old_q = self.fmt_trade_price(si, tape.px[i]), self.fmt_trade_qty(si, tape.qty[i])
            cond = orjson.dumps(_CONDITIONS[tid % 5]).decode()
            t = rfc3339_ns(tape.ts[i], tid % 1000)
            vs = self._vsym[si]
            if kind == "cancel":
                gone.add(i)
                self._amend[(self.name, self.symbols[si], wid)] = ""
                payload = ('[{"T":"x","S":"%s","i":%s,"x":"V","p":%s,"s":%s,"a":"C","z":"C","t":"%s"}]'
                           % (vs, wid, old_p, old_q, t))
                self.cancels_sent += 1
            else:
                fixed.add(i)
                tape.px[i] += self.specs[si].tick_units
                tape.qty[i] += self.specs[si].lot_units
                self._amend[(self.name, self.symbols[si], wid)] = self._truth_line(prefix, si, i)
                payload = ('[{"T":"c","S":"%s","x":"V","oi":%s,"op":%s,"os":%s,"oc":%s,"ci":%s,"cp":%s,'
                           '"cs":%s,"cc":%s,"z":"C","t":"%s"}]' % (
                               vs, wid, old_p, old_q, cond, wid, self.fmt_trade_price(si, tape.px[i]),
                               self.fmt_trade_qty(si, tape.qty[i]), cond, t))
                self.corrections_sent += 1
            self._broadcast(si, payload)
        rec.hits = len(ids)
        rec.note = f"{kind} trade ids {','.join(ids)}"
        return rec.as_dict()

    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        st: _AState = conn.venue_state
        now = self.now_us()
        if kind == "malformed":
            variant = str(params.get("variant", "mixed"))
            if variant not in ("mixed", "invalid_json", "missing_fields"):
                raise FaultError("malformed variant must be mixed | invalid_json | missing_fields")
            sym = self._vsym[st.trade_sis[0] if st.trade_sis else 0]
            for k in range(int(params.get("count", 1))):
                if variant == "invalid_json" or (variant == "mixed" and k % 2 == 0):
                    conn.send_text('[{"T":"t","S":"%s","i":' % sym)
                else:
                    conn.send_text('[{"T":"t","S":"%s","x":"V","t":"%s"}]' % (sym, rfc3339_ns(now)))
        elif kind == "unknown_symbol":
            sym = str(params.get("symbol", "ZZZZ-USD"))
            if "-" in sym:
                sym = split_canonical(sym)[0]
            if sym in self._vsym:
                raise FaultError(f"{sym} is listed; unknown_symbol needs an unlisted symbol")
            for k in range(int(params.get("count", 1))):
                conn.send_text('[{"T":"t","S":"%s","i":%d,"x":"V","p":12.34,"s":5,"c":["@"],"z":"C","t":"%s"}]'
                               % (sym, 1000 + k, rfc3339_ns(now)))
        else:
            raise FaultError(f"alpaca does not implement fault {kind!r}")

    # ------------------------------------------------------------------ REST plumbing
    def _rest(self, fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                if self.rest_auth and (request.headers.get("APCA-API-KEY-ID") != self.key
                                       or request.headers.get("APCA-API-SECRET-KEY") != self.secret):
                    raise AlpacaError(40110000, "request is not authorized", 401)
                body = fn(request)
            except AlpacaError as e:
                return web.Response(body=orjson.dumps({"code": e.code, "message": e.msg}), status=e.status,
                                    content_type="application/json")
            return web.Response(body=orjson.dumps(body), content_type="application/json")

        return handler

    def not_found_body(self, request: web.Request) -> Any:
        return {"message": "endpoint not found"}

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        msg = "too many requests." if status == 429 else "internal server error occurred"
        headers = {"Retry-After": str(max(0, int(round(retry_after))))} if retry_after is not None else {}
        return web.Response(body=orjson.dumps({"message": msg}), status=status, headers=headers,
                            content_type="application/json")

    def bad_param(self, name: str) -> Exception:
        return AlpacaError(42210000, f"invalid {name}", 422)

    def venue_stats(self) -> dict[str, Any]:
        return {"alpaca": {"corrections_sent": self.corrections_sent, "cancels_sent": self.cancels_sent,
                           "auth_failures": self.auth_failures,
                           "connection_limit_errors": self.connection_limit_errors}}

    def _sym(self, request: web.Request) -> int:
        name = request.match_info["symbol"]
        try:
            return self._vsym.index(name)
        except ValueError:
            raise AlpacaError(40410000, f"symbol {name} not found", 404) from None

    def _time(self, request: web.Request, name: str) -> int | None:
        v = request.query.get(name)
        if not v:
            return None
        try:
            return parse_rfc3339_us(v)
        except ValueError:
            raise AlpacaError(42210000, f"invalid {name}: {v!r} is not RFC-3339", 422) from None

    def _page(self, request: web.Request) -> int | None:
        tok = request.query.get("page_token")
        if not tok:
            return None
        try:
            return int(base64.urlsafe_b64decode(tok.encode()).decode())
        except ValueError:
            raise AlpacaError(42210000, "invalid page_token", 422) from None

    @staticmethod
    def _token(value: int) -> str:
        return base64.urlsafe_b64encode(str(value).encode()).decode()

    # ------------------------------------------------------------------ REST endpoints
    def _r_assets(self, request: web.Request) -> Any:
        return [{"id": f"00000000-0000-4000-8000-{si:012d}", "class": "us_equity", "exchange": "NASDAQ",
                 "symbol": v, "name": f"{v} Inc. (simulated)", "status": "active", "tradable": True,
                 "marginable": True, "shortable": True, "easy_to_borrow": True, "fractionable": True}
                for si, v in enumerate(self._vsym)]

    def _r_trades(self, request: web.Request) -> Any:
        si = self._sym(request)
        limit = self.query_limit(request, 1000, 10000)
        tape = self.tapes[si]
        start = self._time(request, "start")
        end = self._time(request, "end")
        n = len(tape)
        page = self._page(request)
        i = page if page is not None else (bisect_left(tape.ts, start) if start is not None else 0)
        i = max(i, tape.first)      # a bounded history (ring) starts later
        hi = bisect_right(tape.ts, end) if end is not None else n
        gone = self.cancelled[si]
        rows = []
        while i < hi and len(rows) < limit:
            if i not in gone:
                tid = tape.ids[i]
                rows.append({"t": rfc3339_ns(tape.ts[i], tid % 1000), "x": "V",
                             "p": orjson.Fragment(self.fmt_trade_price(si, tape.px[i])),
                             "s": tape.qty[i] // self.specs[si].lot_units, "c": _CONDITIONS[tid % 5],
                             "i": self.wire_id(tid), "z": "C"})
            i += 1
        return {"trades": rows, "symbol": self._vsym[si], "next_page_token": self._token(i) if i < hi else None}

    def _r_bars(self, request: web.Request) -> Any:
        si = self._sym(request)
        tf = request.query.get("timeframe")
        if tf not in ("1Min", "1T"):
            raise AlpacaError(42210000, f"invalid timeframe {tf!r} (the simulator serves 1Min)", 422)
        limit = self.query_limit(request, 1000, 10000)
        tape = self.tapes[si]
        start = self._time(request, "start")
        end = self._time(request, "end")
        page = self._page(request)
        lo = page if page is not None else (start if start is not None else 0)
        lo = lo if lo % US_PER_MINUTE == 0 else lo - lo % US_PER_MINUTE + US_PER_MINUTE
        ts = tape.ts
        i = bisect_left(ts, lo)
        hi = len(ts) if end is None else bisect_right(ts, end - end % US_PER_MINUTE + US_PER_MINUTE - 1)
        gone = self.cancelled[si]
        lot = self.specs[si].lot_units
        bars = []
        while i < hi and len(bars) < limit:
            b = ts[i] - ts[i] % US_PER_MINUTE
            j = bisect_left(ts, b + US_PER_MINUTE, i, hi)
            live = [k for k in range(i, j) if k not in gone]
            if live:
                px = [tape.px[k] for k in live]
                qs = [tape.qty[k] // lot for k in live]
                vol = sum(qs)
                vw = sum(p * q for p, q in zip(px, qs)) / vol / SCALE if vol else px[-1] / SCALE
                bars.append({"t": rfc3339_ns(b), "o": orjson.Fragment(self.fmt_trade_price(si, px[0])),
                             "h": orjson.Fragment(self.fmt_trade_price(si, max(px))),
                             "l": orjson.Fragment(self.fmt_trade_price(si, min(px))),
                             "c": orjson.Fragment(self.fmt_trade_price(si, px[-1])), "v": vol, "n": len(live),
                             "vw": round(vw, 6)})
            i = j
        nxt = ts[i] - ts[i] % US_PER_MINUTE if i < hi else None
        return {"bars": bars, "symbol": self._vsym[si], "next_page_token": self._token(nxt) if nxt is not None else None}

