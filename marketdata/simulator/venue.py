"""Venue-neutral server plumbing: generation pacing, WebSocket sessions, keepalive, faults,
REST middleware and the ``/_sim/*`` control API.

A venue module subclasses :class:`Venue` and supplies only its wire formats and quirks:
routes (WebSocket paths and REST endpoints), how a slice of new trades is encoded and sent to
its connections, how client messages are answered, its REST error shape and headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from aiohttp import WSMsgType, web

from .book import ASK, BID, OrderBook
from .clock import format_time_us
from .conn import WSConnection, close_frame
from .faults import CONNECTION_FAULTS, FAULT_KINDS, FaultError, FaultRegistry
from .generator import SCALE, SymbolSpec, TradeGenerator, split_canonical
from .sendlag import SendLag

if TYPE_CHECKING:  # pragma: no cover
    from .core import Simulator

log = logging.getLogger(__name__)


def decimals_of(units: int) -> int:
    """Decimal places of a power-of-ten step given in 1e-8 units (``1_000_000`` -> 2)."""
    d = 8
    while units >= 10 and units % 10 == 0 and d > 0:
        units //= 10
        d -= 1
    return d


def strip_zeros(s: str) -> str:
    """``"67523.500" -> "67523.5"``, ``"67523.000" -> "67523"``."""
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def fmt_units(units: int, decimals: int = 8) -> str:
    """Integer 1e-8 units -> fixed-point string with ``decimals`` digits (truncating)."""
    if decimals == 8:
        return f"{units // SCALE}.{units % SCALE:08d}"
    div = 10 ** (8 - decimals)
    u = units // div
    d = 10 ** decimals
    return f"{u // d}.{u % d:0{decimals}d}" if decimals else str(u)


class StrMemo(dict):
    """``units -> wire string`` memo: ``memo[units]`` is a dict hit for a value seen before and
    calls ``fmt(units)`` once otherwise. A tape repeats few distinct prices and quantities, so the
    encoders and the ground truth format each once instead of once per trade (formatting was the
    largest single cost of serving). Cleared when it reaches ``limit`` entries."""

    __slots__ = ("fmt", "limit")

    def __init__(self, fmt, limit: int = 1 << 16) -> None:
        super().__init__()
        self.fmt = fmt
        self.limit = limit

    def __missing__(self, units: int) -> str:
        if len(self) >= self.limit:
            self.clear()
        s = self[units] = self.fmt(units)
        return s


class VenueRestError(Exception):
    """An error a venue's REST answers with its own code and message (and HTTP status)."""

    def __init__(self, code, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


class SliceInfo:
    """The trades one generation step produced, for the venue to encode and send."""

    __slots__ = ("now_us", "ranges", "withheld")

    def __init__(self, now_us: int, ranges: dict[int, tuple[int, int, int, int]],
                 withheld: dict[int, list[tuple[int, int, int | None]]]) -> None:
        self.now_us = now_us
        self.ranges = ranges  # symbol index -> (i0, i1, o0, o1)
        self.withheld = withheld  # symbol index -> [(lo, hi, conn or None)]

    def withheld_for(self, si: int, conn_id: int | None) -> list[tuple[int, int]]:
        """Trade index ranges of symbol ``si`` that connection ``conn_id`` must not see."""
        w = self.withheld.get(si)
        if not w:
            return []
        return [(lo, hi) for lo, hi, c in w if c is None or c == conn_id]

    def conn_specific(self, si: int) -> bool:
        w = self.withheld.get(si)
        return bool(w) and any(c is not None for _, _, c in w)


class Venue:
    #: venue id (``binance``...)
    name: ClassVar[str] = ""
    #: timestamp resolution the venue reports (Binance: 1000 = milliseconds)
    ts_quantum_us: ClassVar[int] = 1
    #: range the seeded first trade id per symbol is drawn from
    id_range: ClassVar[tuple[int, int]] = (1_000_000_000, 5_000_000_000)
    #: the server sends WebSocket ping frames and drops clients that do not pong
    server_pings: ClassVar[bool] = False
    #: decimals of prices and quantities on the wire
    price_decimals: ClassVar[int] = 8
    qty_decimals: ClassVar[int] = 8
    #: the venue cannot run without order books (its trade ids come from the book sequence)
    books_required: ClassVar[bool] = False
    #: the venue's trade messages carry the book's update ids (``trade_seq``): books advance with
    #: every generation step
    books_feed_trades: ClassVar[bool] = False

    def __init__(self, sim: "Simulator", symbols: list[str], rate: float, options: dict[str, Any]) -> None:
        self.sim = sim
        self.config = sim.config
        self.options = dict(options)
        seed = f"{self.config.seed}:{self.name}"
        weights = self.config.symbol_weights or {}
        self.specs = [SymbolSpec.make(s, seed, self.id_range_for(canonical_ok(s)), float(weights.get(s, 1.0)))
                      for s in symbols]
        self.symbols = [s.canonical for s in self.specs]
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"{self.name}: duplicate symbols in {symbols}")
        ring = self.config.history_s is not None      # a bounded history (see simulator/history.py)
        self.gen = TradeGenerator(self.specs, seed, ring=ring)
        self.tapes = self.gen.tapes
        # one deterministic order book per symbol, advanced with every taker order
        self.books_enabled = bool(self.options.get("books", True)) or self.books_required
        self._books_ring = ring
        depth_ticks = int(self.options.get("book_depth_ticks", 400))
        self.books = [OrderBook(sp, seed, depth_ticks, float(self.options.get("book_density", 0.85)),
                                sim.clock.start_us, ring=ring) for sp in self.specs] if self.books_enabled else []
        self.rate = float(rate)
        # per symbol: fmt_trade_price / fmt_trade_qty memoized (the ground truth's strings, which
        # the venues' trade messages print too)
        self.px_str = [StrMemo(partial(self.fmt_trade_price, si)) for si in range(len(self.specs))]
        self.qty_str = [StrMemo(partial(self.fmt_trade_qty, si)) for si in range(len(self.specs))]
        self.faults = FaultRegistry()
        self.conns: dict[int, WSConnection] = {}
        self.closed_conns: deque[WSConnection] = deque(maxlen=200)
        self._next_conn_id = 0
        self.paused = bool(self.config.paused)
        self.ended = False
        self.rate_deficit = 0
        self.send_lag = SendLag()
        self.rest_calls = 0
        self._t_prev_us = 0
        self._base_wall = 0.0
        self._base_count = 0
        self._wall_end: float | None = None
        self._canon_index = {s: i for i, s in enumerate(self.symbols)}
        self._venue_index: dict[str, int] = {}
        self.port = 0
        self.host = self.config.host
        self.app = web.Application(middlewares=[self._make_middleware()], client_max_size=1 << 20)
        self.build_routes(self.app)
        self._add_control_routes(self.app)
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ venue hooks
    def id_range_for(self, symbol: str) -> tuple[int, int]:
        """The range symbol ``symbol``'s first trade id is drawn from (per pair where the venue's
        id magnitudes differ by market, e.g. Bitstamp)."""
        return self.id_range

    def venue_symbol(self, si: int) -> str:
        """The venue's own name for symbol ``si`` (REST/payload form)."""
        raise NotImplementedError

    def build_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def on_slice(self, sl: SliceInfo) -> None:
        """Encode and send the new trades to the connections."""
        raise NotImplementedError

    def on_ws_open(self, conn: WSConnection) -> None:
        pass

    def on_ws_text(self, conn: WSConnection, data: str) -> None:
        pass

    def on_ws_binary(self, conn: WSConnection, data: bytes) -> None:
        pass

    def on_ws_control(self, conn: WSConnection, kind: str) -> None:
        """Called for each client ping/pong (``kind`` = ``ping`` | ``pong`` | ``unsolicited_pong``)."""

    def on_ws_closed(self, conn: WSConnection) -> None:
        pass

    def venue_fault(self, kind: str, conn: WSConnection, params: dict[str, Any]) -> None:
        """``malformed``, ``unknown_symbol``, ``notice`` on one connection."""
        raise FaultError(f"{self.name} does not implement fault {kind!r}")

    # Query parameters as REST endpoints read them; a bad one is answered in the venue's own words.
    signed_query_ints = False
    nonpositive_limit_is_error = False     # OKX rejects limit <= 0; Binance falls back to the default

    def bad_param(self, name: str) -> Exception:
        """The venue's error for a malformed parameter (a VenueRestError subclass)."""
        return VenueRestError("400", f"Parameter {name} is invalid")

    def query_int(self, request: web.Request, name: str, default: int | None = None) -> int | None:
        v = request.query.get(name)
        if v is None or v == "":
            return default
        digits = v[1:] if self.signed_query_ints and v.startswith("-") else v
        if not digits.isdigit() or len(v) > 20:
            raise self.bad_param(name)
        return int(v)

    def query_limit(self, request: web.Request, default: int, maximum: int) -> int:
        limit = self.query_int(request, "limit", default)
        if limit is None:
            return default
        if limit <= 0:
            if self.nonpositive_limit_is_error:
                raise self.bad_param("limit")
            return default
        return min(limit, maximum)

    def rest_error(self, status: int, retry_after: float | None) -> web.Response:
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
        return web.json_response({"error": "simulated failure"}, status=status, headers=headers)

    def rest_before(self, request: web.Request) -> web.StreamResponse | None:
        """Venue-level admission (rate limits...); return a response to short-circuit."""
        return None

    def rest_after(self, request: web.Request, response: web.StreamResponse) -> None:
        pass

    def venue_stats(self) -> dict[str, Any]:
        return {}

    def not_found(self, request: web.Request, status: int = 404) -> web.Response:
        """An unknown path (404) or method (405), in the venue's own JSON error shape (venues
        override the body)."""
        return web.json_response(self.not_found_body(request), status=status)

    def not_found_body(self, request: web.Request) -> Any:
        return {"code": 404, "msg": "Not Found"}

    def currencies(self) -> list[str]:
        """Every currency of the simulated symbols (base and quote), sorted: the currency lists."""
        return sorted({c for sp in self.specs for c in (sp.base, sp.quote)})

    def drop_idle(self, mono: float, heard: str = "last_recv") -> None:
        """The venue's idle cut (OKX, Bybit, Gate.io, Bitstamp): abort, without a close frame, every
        open connection whose ``venue_state.<heard>`` (monotonic time of the last message that
        counts as activity) is ``idle_timeout`` old. Checked at most every tenth of the timeout."""
        if self.idle_timeout > 0 and mono >= self._idle_next:
            self._idle_next = mono + min(0.1, self.idle_timeout / 10)
            for conn in list(self.conns.values()):
                if conn.state == "open" and not conn.silent and \
                        mono - getattr(conn.venue_state, heard) >= self.idle_timeout:
                    self.idle_drops += 1
                    conn.abort("idle_timeout")

    def periodic(self, mono: float) -> None:
        """Called after every generation step, also while paused or after ``end`` (timers:
        book diff streams, heartbeats, idle and token checks)."""

    def books_wanted(self) -> bool:
        """Whether the books must advance with every generation step: the venue's trades read
        them, or a connection streams them (venues override). Otherwise they stay behind the tape
        and :meth:`ensure_books` catches them up where they are read (REST depth, ``/_sim/book``,
        a snapshot, the history trim). A book is a pure function of the order sequence, so when
        it is advanced does not change it; advancing costs ~2 µs per trade, a quarter of the
        simulator's serving CPU at ten venues (cProfile, bench/simulator_serve.py). With a bounded history
        (``history_s``) the books stay current: every trade must pass through its book before the
        ring drops it, and catching up a trim interval (up to 30 s of trades) at once would stall
        the loop."""
        return self.books_required or self.books_feed_trades or self._books_ring

    def ensure_books(self) -> None:
        """Advance every book over the orders the tape holds that it has not seen yet."""
        for si, book in enumerate(self.books):
            tape = self.tapes[si]
            n = len(tape.order_start)
            if book.orders_applied < n:
                book.apply_orders(tape, book.orders_applied, n)

    def fmt_book_price(self, si: int, units: int) -> str:
        return self.fmt_price(units)

    def fmt_book_qty(self, si: int, units: int) -> str:
        return self.fmt_qty(units)

    def book_view(self, si: int, depth: int | None = None) -> dict[str, Any]:
        """``/_sim/book``: the full current book of symbol ``si`` as wire strings, best first, and
        the update id it reflects (venues add their own names for it)."""
        self.ensure_books()
        book = self.books[si]
        fp, fq = self.fmt_book_price, self.fmt_book_qty
        return {
            "venue": self.name,
            "symbol": self.symbols[si],
            "venue_symbol": self.venue_symbol(si),
            "update_id": book.update_id,
            "sim_time_us": self.now_us(),
            "bids": [[fp(si, p), fq(si, q)] for p, q in book.top(BID, depth)],
            "asks": [[fp(si, p), fq(si, q)] for p, q in book.top(ASK, depth)],
        }

    def fmt_price(self, units: int) -> str:
        return fmt_units(units, self.price_decimals)

    def fmt_qty(self, units: int) -> str:
        return fmt_units(units, self.qty_decimals)

    def fmt_trade_id(self, si: int, trade_id: int) -> str:
        return str(trade_id)

    def fmt_trade_price(self, si: int, units: int) -> str:
        """A trade price as the venue prints it (what the ground truth holds)."""
        return self.fmt_price(units)

    def fmt_trade_qty(self, si: int, units: int) -> str:
        return self.fmt_qty(units)

    def ground_truth_lines(self, si: int, i0: int, i1: int) -> str:
        """Rows ``[i0, i1)`` of symbol ``si``. Price and quantity strings are memoized per symbol
        across flushes (a tape repeats few distinct values), and the trade id is ``str`` unless
        the venue overrides ``fmt_trade_id``: formatting was 15 % of serving CPU before."""
        tape = self.tapes[si]
        prefix = f"{self.name},{self.symbols[si]},"
        ft = self.fmt_trade_id
        ids, ts, px, qty, side = tape.ids[i0:i1], tape.ts[i0:i1], tape.px[i0:i1], tape.qty[i0:i1], tape.side[i0:i1]
        if type(self).fmt_trade_id is not Venue.fmt_trade_id:
            ids = [ft(si, t) for t in ids]
        pm, qm = self.px_str[si], self.qty_str[si]
        sides = (",sell\n", ",buy\n")
        return "".join([f"{prefix}{ids[k]},{ts[k]},{pm[px[k]]},{qm[qty[k]]}{sides[side[k]]}" for k in range(len(ts))])

    # ------------------------------------------------------------------ symbols
    def symbol_index(self, name: str | None) -> int | None:
        """Symbol index for a canonical (``BTC-USDT``) or venue (``BTCUSDT``) name."""
        if not name:
            return None
        si = self._canon_index.get(name.upper())
        if si is not None:
            return si
        if not self._venue_index:
            self._venue_index = {self.venue_symbol(i): i for i in range(len(self.symbols))}
        si = self._venue_index.get(name)
        return si if si is not None else self._venue_index.get(name.upper())

    # ------------------------------------------------------------------ lifecycle / pacing
    def start_clock(self, mono: float) -> None:
        clock = self.sim.clock
        self._base_wall = mono
        self._base_count = self.gen.generated
        self._t_prev_us = clock.now_us(mono)
        if self.sim.end_us is not None:
            self._wall_end = clock.wall_for(self.sim.end_us)
            if self._t_prev_us >= self.sim.end_us:
                self.ended = True

    def now_us(self) -> int:
        return self.sim.clock.now_us()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        if self.sim.clock.wall0 is None:        # held clock (--hold-clock): time starts now
            self.sim.start_clocks(time.monotonic())
        if self.paused:
            self.paused = False
            mono = time.monotonic()
            self._base_wall = mono
            self._base_count = self.gen.generated
            self._t_prev_us = max(self._t_prev_us, self.sim.clock.now_us(mono))

    def tick(self, mono: float) -> int:
        """Generate the trades due at wall time ``mono``, advance the books, hand the trades to
        the venue to send, then run the venue's timers."""
        produced = self._generate(mono)
        self.periodic(mono)
        return produced

    def _generate(self, mono: float) -> int:
        if self.paused or self.ended or self.rate <= 0:
            return 0
        wall = mono
        finishing = False
        if self._wall_end is not None and wall >= self._wall_end:
            wall = self._wall_end
            finishing = True
        due = self._base_count + int((wall - self._base_wall) * self.rate) - self.gen.generated
        if due > 0:
            cap = max(200, int(self.rate * 0.5))
            if due > cap:  # the loop stalled: do not burst, record the shortfall
                self.rate_deficit += due - cap
                self._base_count -= due - cap
                due = cap
            now_us = self.sim.clock.now_us(wall)
            if self.sim.end_us is not None and now_us > self.sim.end_us:
                now_us = self.sim.end_us
            if now_us < self._t_prev_us:
                now_us = self._t_prev_us
            before = self.gen.generated
            oldest_us = self._t_prev_us
            out = self.gen.generate(due, oldest_us, now_us, self.ts_quantum_us)
            self._t_prev_us = now_us
            ranges: dict[int, tuple[int, int, int, int]] = {}
            withheld: dict[int, list[tuple[int, int, int | None]]] = {}
            skips = self.faults.skips
            books = self.books if self.books and self.books_wanted() else None
            for si, i0, i1, o0, o1 in out:
                ranges[si] = (i0, i1, o0, o1)
                if books:
                    book = books[si]
                    book.apply_orders(self.tapes[si], book.orders_applied, o1)
                if skips and si in skips:
                    w = self.faults.take_skips(si, i0, i1, self.tapes[si].ids)
                    if w:
                        withheld[si] = w
                        self.tapes[si].withheld += sum(hi - lo for lo, hi, c in w if c is None)
            self.on_slice(SliceInfo(now_us, ranges, withheld))
            produced = self.gen.generated - before
            if produced and self.conns:
                clock = self.sim.clock
                self.send_lag.add((clock.now_us() - oldest_us) / (clock.speed or 1.0), produced)
        else:
            produced = 0
        if finishing:
            self.ended = True
        return produced

    # ------------------------------------------------------------------ WebSocket sessions
    async def ws_session(self, request: web.Request, venue_state: Any) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, autoclose=False, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = WSConnection(self, self._next_conn_id, request, ws, self.config.max_send_buffer)
        self._next_conn_id += 1
        conn.venue_state = venue_state
        self.conns[conn.id] = conn
        ka = None
        try:
            self.on_ws_open(conn)
            if self.server_pings and self.config.ping_interval > 0:
                ka = asyncio.ensure_future(self._keepalive(conn))
            while True:
                msg = await ws.receive()
                typ = msg.type
                if typ is WSMsgType.TEXT:
                    conn.msgs_received += 1
                    if conn.can_send:
                        self.on_ws_text(conn, msg.data)
                elif typ is WSMsgType.BINARY:
                    conn.msgs_received += 1
                    if conn.can_send:
                        self.on_ws_binary(conn, msg.data)
                elif typ is WSMsgType.PING:
                    conn.msgs_received += 1
                    if conn.can_send:
                        conn.send_pong(bytes(msg.data))
                        self.on_ws_control(conn, "ping")
                elif typ is WSMsgType.PONG:
                    if conn.can_send:
                        payload = bytes(msg.data)
                        solicited = payload in conn.outstanding_pings
                        conn.on_pong(payload)
                        self.on_ws_control(conn, "pong" if solicited else "unsolicited_pong")
                elif typ is WSMsgType.CLOSE:
                    if conn.state == "open" and conn.silent:
                        await self._linger(conn)
                    elif conn.state == "open":
                        conn.closed_reason = conn.closed_reason or f"client_close:{msg.data}"
                        conn.state = "closed"
                        try:
                            await asyncio.wait_for(ws.close(), 5)
                        except (asyncio.TimeoutError, ConnectionError):
                            pass
                    break
                else:  # CLOSING / CLOSED / ERROR
                    break
        finally:
            if ka is not None:
                ka.cancel()
            if conn.state != "closed":
                conn.state = "closed"
                conn.closed_reason = conn.closed_reason or "disconnected"
            self.conns.pop(conn.id, None)
            self.closed_conns.append(conn)
            try:
                self.on_ws_closed(conn)
            except Exception:  # pragma: no cover
                log.exception("on_ws_closed")
        return ws

    async def _linger(self, conn: WSConnection) -> None:
        """A silent connection ignores the client's close; wait until TCP goes away."""
        while conn.state == "open" and conn.transport is not None and not conn.transport.is_closing():
            await asyncio.sleep(0.1)

    async def _keepalive(self, conn: WSConnection) -> None:
        interval = float(self.config.ping_interval)
        timeout = float(self.config.pong_timeout)
        step = max(0.01, min(interval, timeout if timeout > 0 else interval, 4.0) / 4)
        next_ping = time.monotonic() + interval
        lifetime = self.options.get("max_lifetime")
        try:
            while conn.state == "open":
                await asyncio.sleep(step)
                if conn.state != "open":
                    return
                if conn.silent:
                    continue
                now = time.monotonic()
                if now >= next_ping:
                    payload = str(int(time.time() * 1000)).encode()
                    if payload in conn.outstanding_pings:
                        payload += b"." + str(conn.ping_seq).encode()
                    conn.ping_seq += 1
                    conn.outstanding_pings[payload] = now
                    conn.send_ping(payload)
                    next_ping = now + interval
                if timeout > 0 and conn.outstanding_pings:
                    oldest = min(conn.outstanding_pings.values())
                    if now - oldest >= timeout:
                        log.info("%s conn %d: no pong for %.1fs, dropping", self.name, conn.id, now - oldest)
                        conn.abort("pong_timeout")
                        return
                if lifetime and now - conn.opened_mono >= float(lifetime):
                    self.on_lifetime_end(conn)
                    return
        except asyncio.CancelledError:
            pass

    def on_lifetime_end(self, conn: WSConnection) -> None:
        self.spawn(conn.close(1000, "lifetime"))

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close_all(self, code: int = 1001, reason: str = "simulator stopping") -> None:
        """On shutdown: a close frame and FIN for normal connections, a reset for silent ones."""
        for t in list(self._tasks):
            t.cancel()
        for conn in list(self.conns.values()):
            if conn.can_send and conn.write(close_frame(code, reason)):
                conn.state = "closed"
                conn.closed_reason = "simulator_stopped"
                if conn.transport is not None:
                    conn.transport.close()
            else:
                conn.abort("simulator_stopped")

    # ------------------------------------------------------------------ faults
    def apply_fault(self, kind: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        params.pop("kind", None)
        params.pop("venue", None)
        if kind not in FAULT_KINDS:
            raise FaultError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        conn_id = params.get("conn")
        if conn_id is not None:
            try:
                conn_id = int(conn_id)
            except (TypeError, ValueError):
                raise FaultError(f"conn must be an integer, got {conn_id!r}") from None
            params["conn"] = conn_id
        count = params.get("count", 1)
        try:
            count = int(count)
        except (TypeError, ValueError):
            raise FaultError(f"count must be an integer, got {count!r}") from None
        if count < 0:
            raise FaultError("count must be >= 0")
        if kind in CONNECTION_FAULTS:
            if conn_id is None:
                targets = [c for c in self.conns.values() if c.state == "open"]
            else:
                c = self.conns.get(conn_id)
                if c is None or c.state != "open":
                    raise FaultError(f"{self.name}: no open connection {conn_id}")
                targets = [c]
            rec = self.faults.record(kind, params, self.now_us())
            for c in targets:
                if kind == "silent_drop":
                    c.go_silent()
                elif kind == "close":
                    self.spawn(c.close(int(params.get("code", 1000)), str(params.get("reason", ""))))
                elif kind == "abort":
                    c.abort("fault:abort")
                else:
                    self.venue_fault(kind, c, params)
                c.faults.append(kind)
                rec.applied_to.append(c.id)
            return rec.as_dict()
        if kind == "skip_ids":
            si = self.symbol_index(params.get("symbol"))
            if si is None:
                raise FaultError(f"{self.name}: skip_ids needs a listed symbol, got {params.get('symbol')!r}")
            rec = self.faults.record(kind, params, self.now_us())
            self.faults.add_skip(si, count, conn_id, rec)
            return rec.as_dict()
        if kind == "rest_fail":
            status = int(params.get("status", 500))
            if not 400 <= status <= 599:
                raise FaultError("rest_fail status must be 4xx/5xx")
            retry_after = params.get("retry_after")
            if retry_after is None and status in (429, 418, 503):
                retry_after = 1
            rec = self.faults.record(kind, params, self.now_us())
            self.faults.add_rest_fail(count, status, None if retry_after is None else float(retry_after), rec)
            return rec.as_dict()
        if kind == "rest_delay":
            delay = float(params.get("delay", 1.0))
            rec = self.faults.record(kind, params, self.now_us())
            self.faults.add_rest_delay(count, delay, rec)
            return rec.as_dict()
        raise FaultError(f"unhandled fault {kind!r}")  # pragma: no cover

    # ------------------------------------------------------------------ REST middleware
    def _make_middleware(self):
        venue = self

        @web.middleware
        async def middleware(request: web.Request, handler):
            if request.path.startswith("/_sim/") or request.headers.get("Upgrade", "").lower() == "websocket":
                return await handler(request)
            venue.rest_calls += 1
            delay = venue.faults.take_rest_delay()
            if delay > 0:
                await asyncio.sleep(delay)
            failed = venue.faults.take_rest_fail()
            if failed is not None:
                return venue.rest_error(*failed)
            early = venue.rest_before(request)
            if early is not None:
                return early
            try:
                response = await handler(request)
            except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as e:
                return venue.not_found(request, e.status)
            venue.rest_after(request, response)
            return response

        return middleware

    # ------------------------------------------------------------------ control API
    def _add_control_routes(self, app: web.Application) -> None:
        app.router.add_post("/_sim/fault", self._h_fault)
        app.router.add_get("/_sim/stats", self._h_stats)
        app.router.add_post("/_sim/flush", self._h_flush)
        app.router.add_post("/_sim/pause", self._h_pause)
        app.router.add_post("/_sim/resume", self._h_resume)
        app.router.add_get("/_sim/book", self._h_book)

    @staticmethod
    def _json(obj: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")

    async def _h_fault(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read() or b"{}")
            if not isinstance(body, dict) or not body.get("kind"):
                raise FaultError('body must be a JSON object with "kind"')
            rec = self.apply_fault(str(body["kind"]), body)
        except (FaultError, orjson.JSONDecodeError, ValueError, TypeError) as exc:
            return self._json({"ok": False, "error": str(exc)}, status=400)
        return self._json({"ok": True, "fault": rec})

    async def _h_book(self, request: web.Request) -> web.Response:
        if not self.books:
            return self._json({"ok": False, "error": f"{self.name}: books are disabled"}, status=400)
        si = self.symbol_index(request.query.get("symbol"))
        if si is None:
            return self._json({"ok": False, "error": f"unknown symbol {request.query.get('symbol')!r}"}, status=400)
        depth = request.query.get("depth")
        try:
            d = int(depth) if depth else None
        except ValueError:
            return self._json({"ok": False, "error": "depth must be an integer"}, status=400)
        return self._json(self.book_view(si, d))

    async def _h_stats(self, request: web.Request) -> web.Response:
        return self._json(self.stats())

    async def _h_flush(self, request: web.Request) -> web.Response:
        rows = self.sim._flush_ground_truth()
        return self._json({"ok": True, "rows_written": rows, "path": self.sim.ground_truth_path})

    async def _h_pause(self, request: web.Request) -> web.Response:
        self.pause()
        return self._json({"ok": True, "paused": True, "generated": self.gen.generated})

    async def _h_resume(self, request: web.Request) -> web.Response:
        self.resume()
        return self._json({"ok": True, "paused": False, "generated": self.gen.generated})

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        now = self.now_us()
        symbols = {}
        for si, tape in enumerate(self.tapes):
            n = len(tape)
            symbols[self.symbols[si]] = {
                "venue_symbol": self.venue_symbol(si),
                "generated": n,
                "orders": len(tape.order_start),
                "withheld": tape.withheld,
                "first_trade_id": tape.ids[tape.first] if n > tape.first else None,
                "history_from_index": tape.first,
                "last_trade_id": tape.ids[-1] if n else None,
                "next_trade_id": self.gen.states[si].next_id,
                "last_ts_us": tape.ts[-1] if n else None,
                "last_price": self.fmt_trade_price(si, tape.px[-1]) if n else None,
            }
        return {
            "venue": self.name,
            "endpoints": {"ws": f"ws://{self.host}:{self.port}", "rest": f"http://{self.host}:{self.port}"},
            "sim_time_us": now,
            "sim_time": format_time_us(now),
            "speed": self.sim.clock.speed,
            "rate": self.rate,
            "paused": self.paused,
            "ended": self.ended,
            "generated": self.gen.generated,
            "orders": self.gen.orders,
            "rate_deficit": self.rate_deficit,
            "send_lag_hist": self.send_lag.as_json(),
            "symbols": symbols,
            "connections": [c.stats() for c in self.conns.values()],
            "closed_connections": [c.stats() for c in self.closed_conns],
            "faults": [r.as_dict() for r in self.faults.records],
            "pending_faults": self.faults.pending(),
            "rest": {"calls": self.rest_calls, "failed": self.faults.rest_failed, "delayed": self.faults.rest_delayed},
            **self.venue_stats(),
        }

    # ------------------------------------------------------------------ tape access
    def trades(self, symbol: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        si = self.symbol_index(symbol)
        if si is None:
            raise KeyError(symbol)
        tape = self.tapes[si]
        stop = len(tape) if stop is None else min(stop, len(tape))
        start = max(start, tape.first)
        return [
            {
                "trade_id": self.fmt_trade_id(si, tape.ids[i]),
                "ts_us": tape.ts[i],
                "price": self.fmt_trade_price(si, tape.px[i]),
                "qty": self.fmt_trade_qty(si, tape.qty[i]),
                "side": "buy" if tape.side[i] else "sell",
            }
            for i in range(start, stop)
        ]


    def buckets(self, si: int, iv_us: int, lo_us: int | None = None, hi_us: int | None = None,
                limit: int = 1000, newest_first: bool = True) -> list[tuple[int, int, int]]:
        """Time buckets of ``iv_us`` with trades whose start lies in ``[lo_us, hi_us]`` (None =
        open): ``[(bucket_start_us, i, j)]`` with trade indices ``[i, j)``, at most ``limit``,
        the newest (``newest_first``) or the oldest ones first."""
        ts = self.tapes[si].ts
        n = len(ts)
        hi_idx = n if hi_us is None else bisect_left(ts, hi_us - hi_us % iv_us + iv_us)
        if lo_us is None:
            lo_idx = self.tapes[si].first
        else:
            lo_b = lo_us if lo_us % iv_us == 0 else lo_us - lo_us % iv_us + iv_us
            lo_idx = bisect_left(ts, lo_b)
        rows: list[tuple[int, int, int]] = []
        if newest_first:
            j = hi_idx
            while j > lo_idx and len(rows) < limit:
                b = ts[j - 1] - ts[j - 1] % iv_us
                i = max(lo_idx, bisect_left(ts, b, 0, j))
                rows.append((b, i, j))
                j = i
        else:
            i = lo_idx
            while i < hi_idx and len(rows) < limit:
                b = ts[i] - ts[i] % iv_us
                j = bisect_left(ts, b + iv_us, i, hi_idx)
                rows.append((b, i, j))
                i = j
        return rows


def canonical_ok(symbol: str) -> str:
    base, quote = split_canonical(symbol)
    return f"{base}-{quote}"
