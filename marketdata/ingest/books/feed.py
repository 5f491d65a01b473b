"""The book runtime of one venue: its own WebSocket link (a book resync never touches the trade
link), REST snapshots, one ``BookSync`` per symbol, quotes on every best bid/ask change, the
``md:{ex:sym}:book`` hash (last update id, resyncs) and book fields in the venue's health hash.

Venue knowledge comes from ``marketdata.venues.<venue>_book``; nothing here knows a wire format.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import httpx
import websockets

from ...clock import now_us
from ...backoff import Backoff
from ...rest.client import AsyncVenueRest
from ..link import await_greeting, open_link, transport_for
from ...stream import Quote, book_key, health_key
from ... import venues as venue_registry
from ...venues.base import Ack, BookVenue, MalformedFrame, Reconnect, UnknownSymbol, VenueError
from ...venues.book import BookDelta, BookSnapshot
from .quotes import QuotePublisher
from .sync import NEED_SNAPSHOT, NOTHING, RESUBSCRIBE, BookSync

log = logging.getLogger("marketdata.ingest.books")

RESYNC_RETRY_S = 5.0     # a resync that produced no snapshot by then is asked for again


class BookFeed:
    def __init__(self, venue: str, symbols: list[str], ws_url: str, rest_url: str, *, redis=None,
                 options: dict | None = None, flush_ms: float = 20.0, state_interval: float = 1.0,
                 transport: str | None = None):
        self.venue = venue
        self.transport = transport_for(transport)
        self.mod: type[BookVenue] = venue_registry.book(venue)
        self.symbols = list(symbols)
        self.ws_url, self.rest_url = ws_url, rest_url
        self.options = self.mod.validate_options(options)
        self.redis = redis
        self.state_interval = state_interval
        depth = self.mod.book_depth(self.options)
        self.syncs: dict[str, BookSync] = {}
        for s in self.symbols:
            sync = BookSync(s, self.mod)
            if depth:
                sync.depth = depth
            self.syncs[s] = sync
        self.venue_symbol: dict[str, str] = {}
        self.by_venue_symbol: dict[str, str] = {}
        self.publisher = QuotePublisher(redis, flush_ms=flush_ms) if redis is not None else None
        if self.publisher is not None:
            self.publisher.state_provider = lambda ex, sym: self.book_state(sym)
        self._last_quote: dict[str, tuple] = {}
        self._snapshot_tasks: dict[str, asyncio.Task] = {}
        self._requested: dict[str, float] = {}
        self._ws = None
        self.http: AsyncVenueRest | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.rotations = 0
        self.malformed = 0
        self.venue_errors = 0
        self.quotes = 0
        self.last_error = ""

    # ------------------------------------------------------------------ reading state
    def book_state(self, symbol: str) -> dict:
        s = self.syncs[symbol]
        nb, na = s.book.depth()
        return {"update_id": "" if s.update_id is None else s.update_id, "live": int(s.live),
                "resyncs": s.stats.resyncs, "last_resync_ms": round(s.stats.last_resync_ms, 1),
                "bids": nb, "asks": na, "updated_us": now_us()}

    def resyncs(self) -> int:
        return sum(s.stats.resyncs for s in self.syncs.values())

    def health(self) -> dict:
        last = max((s.history[-1] for s in self.syncs.values() if s.history), key=lambda r: r.detected,
                   default=None)
        return {"book_symbols": len(self.syncs), "book_live": sum(s.live for s in self.syncs.values()),
                "book_resyncs": self.resyncs(),
                "book_last_resync_ms": round(last.duration_ms, 1) if last else 0,
                "book_reconnects": self.reconnects, "book_rotations": self.rotations, "book_malformed": self.malformed,
                "book_quotes": self.quotes, "book_last_error": self.last_error[:300]}

    # ------------------------------------------------------------------ REST
    async def _rest(self, req, headers: dict | None = None):
        if headers:
            req = dataclasses.replace(req, headers=headers)
        return await self.http.call(req)

    async def _load_instruments(self) -> None:
        listed = self.mod.parse_instruments(await self._rest(self.mod.instruments_request()))
        missing = [s for s in self.symbols if s not in listed]
        if missing:
            raise RuntimeError(f"{self.venue} books: symbol(s) {missing} not listed by the venue")
        self.venue_symbol = {s: listed[s] for s in self.symbols}
        self.by_venue_symbol = {v: s for s, v in self.venue_symbol.items()}

    # ------------------------------------------------------------------ main
    async def run(self, stop: asyncio.Event) -> None:
        self.http = AsyncVenueRest(self.mod, self.rest_url, backoff=(0.1, 5.0), label="books REST")
        tasks: list[asyncio.Task] = []
        pub_stop = asyncio.Event()
        try:
            backoff = Backoff(base=0.5, cap=30.0)
            while not self.venue_symbol and not stop.is_set():
                try:
                    await self._load_instruments()
                except (RuntimeError, MalformedFrame, httpx.HTTPError) as e:
                    self.last_error = str(e)
                    log.warning("%s books: cannot load instruments (%s)", self.venue, e)
                    await _wait(stop, backoff.next_delay())
            if self.publisher is not None:
                tasks.append(asyncio.create_task(self.publisher.run(pub_stop), name="book-quotes"))
            tasks.append(asyncio.create_task(self._state_loop(stop), name="book-state"))
            await self._links(stop)
        finally:
            for t in self._snapshot_tasks.values():
                t.cancel()
            pub_stop.set()
            for t in tasks:
                if t.get_name() != "book-quotes":
                    t.cancel()
            # The last quotes get a few seconds to go out; a quote is only worth its moment, so
            # a stop is not held up by Redis being down.
            done, pending = await asyncio.wait(tasks, timeout=5.0) if tasks else (set(), set())
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.http.aclose()

    async def _links(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base=0.5, cap=30.0)
        while not stop.is_set():
            started = time.monotonic()
            link = asyncio.create_task(self._link(stop))
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({link, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if not link.done():
                link.cancel()
                await asyncio.gather(link, return_exceptions=True)
                return
            try:
                link.result()
            except _Renew:
                self._link_down()
                continue
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException, RuntimeError,
                    MalformedFrame, httpx.HTTPError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("%s books link lost: %s", self.venue, self.last_error)
            self._link_down()
            self.reconnects += 1
            if time.monotonic() - started > 60:
                backoff.reset()
            await _wait(stop, backoff.next_delay())

    def _link_down(self) -> None:
        self._ws = None
        self.connected.clear()
        for t in self._snapshot_tasks.values():
            t.cancel()
        self._snapshot_tasks.clear()
        for s in self.syncs.values():
            s.link_lost()

    async def _link(self, stop: asyncio.Event) -> None:
        mod, opts = self.mod, self.options
        session = None
        if mod.session_request is not None:
            session = mod.parse_session(await self._rest(mod.session_request(opts)))
        url = mod.connect_url(self.ws_url, list(self.by_venue_symbol), opts, session)
        parser = mod.Parser(dict(self.by_venue_symbol), opts)
        ka = mod.keepalive(opts, session)
        idle = float(mod.IDLE_TIMEOUT)
        # A session that expires (KuCoin's token) is replaced before its end: a planned reconnect
        # and resync now beats a 401 (or a silent cut) later.
        ttl = mod.session_ttl(session, opts) if session is not None else None
        renew_at = time.monotonic() + max(0.5, 0.8 * ttl) if ttl else None
        async with open_link(url, self.transport, max_queue=1024, max_size=2 ** 24) as ws:
            self._ws = ws
            for s in self.syncs.values():
                s.start()          # buffer from now on; snapshots once subscribed
            if mod.GREETING:
                await self._await_greeting(ws, parser)
            pending = set()
            for rid, msg in mod.subscribe_messages(list(self.by_venue_symbol), opts):
                pending.add(rid)
                await ws.send(msg)
            helpers = [asyncio.create_task(self._keepalive(ws, *ka))] if ka else []
            try:
                while not stop.is_set():
                    wait = idle
                    if renew_at is not None:
                        wait = renew_at - time.monotonic()
                        if wait <= 0:
                            self.rotations += 1
                            log.info("%s books: session ends soon; reconnecting with a new one", self.venue)
                            await ws.close()
                            raise _Renew()
                        wait = min(wait, idle)
                    # asyncio.timeout, not wait_for: wait_for can swallow a cancel that races a frame
                    try:
                        async with asyncio.timeout(wait):
                            frame = await ws.recv()
                    except TimeoutError:
                        if wait < idle:
                            continue       # the renewal is due, not the link idle
                        raise
                    recv = now_us()
                    try:
                        events = parser.parse(frame, recv)
                    except MalformedFrame as e:
                        self.malformed += 1
                        log.warning("%s books: malformed frame skipped (%s): %.200r", self.venue, e, frame)
                        continue
                    for ev in events:
                        t = type(ev)
                        if t is BookDelta:
                            sync = self.syncs[ev.symbol]
                            await self._act(sync, sync.on_delta(ev))
                        elif t is BookSnapshot:
                            sync = self.syncs[ev.symbol]
                            await self._act(sync, sync.on_snapshot(ev))
                        elif t is Ack:
                            if ev.request_id in pending:
                                pending.discard(ev.request_id)
                                if not pending:
                                    self._subscribed()
                        elif t is VenueError:
                            self.venue_errors += 1
                            log.error("%s books: venue error %s: %s", self.venue, ev.code, ev.message)
                        elif t is Reconnect:
                            log.info("%s books: venue asks to reconnect (%s)", self.venue, ev.reason)
                            await ws.close()
                            return
                        elif t is UnknownSymbol:
                            log.debug("%s books: unknown symbol %s", self.venue, ev.venue_symbol)
            finally:
                for h in helpers:
                    h.cancel()

    async def _await_greeting(self, ws, parser) -> None:
        await await_greeting(ws, parser, self, f"{self.venue} books")

    def _subscribed(self) -> None:
        log.info("%s books: subscribed to %d symbols", self.venue, len(self.syncs))
        self.connected.set()
        if self.mod.SNAPSHOT_FROM == "rest":
            for sym in self.syncs:
                self._want_snapshot(sym)

    async def _keepalive(self, ws, interval: float, message: str) -> None:
        while True:
            await asyncio.sleep(interval)
            await ws.send(message)

    async def _act(self, sync: BookSync, action: int) -> None:
        if action == NOTHING:
            await self._quote(sync)
            return
        p = sync.pending
        if p is not None and sync.symbol not in self._requested:
            log.warning("%s %s books: %s (%s); resyncing", self.venue, sync.symbol, p.reason, p.detail)
        if action == NEED_SNAPSHOT:
            self._want_snapshot(sync.symbol)
        elif action == RESUBSCRIBE:
            await self._resubscribe(sync.symbol)

    async def _resubscribe(self, symbol: str) -> None:
        self._requested[symbol] = time.monotonic()
        if self._ws is not None:
            for m in self.mod.resubscribe_messages(self.venue_symbol[symbol], self.options):
                await self._ws.send(m)

    def _want_snapshot(self, symbol: str) -> None:
        self._requested[symbol] = time.monotonic()
        t = self._snapshot_tasks.get(symbol)
        if t is None or t.done():
            self._snapshot_tasks[symbol] = asyncio.create_task(self._fetch_snapshot(symbol))

    async def _fetch_snapshot(self, symbol: str) -> None:
        mod, sync = self.mod, self.syncs[symbol]
        headers = mod.snapshot_headers(self.options)
        backoff = Backoff(base=0.05, cap=5.0)
        while True:
            try:
                body = await self._rest(mod.snapshot_request(self.venue_symbol[symbol], self.options), headers)
                snap = mod.parse_snapshot(body, symbol, now_us())
            except (RuntimeError, MalformedFrame) as e:
                self.last_error = str(e)
                log.warning("%s %s books: snapshot failed (%s)", self.venue, symbol, e)
                await asyncio.sleep(backoff.next_delay())
                continue
            action = sync.on_snapshot(snap)
            if action == NOTHING:
                await self._quote(sync)
                return
            if action == RESUBSCRIBE:
                await self._resubscribe(symbol)
                return
            await asyncio.sleep(backoff.next_delay())     # snapshot older than the stream: again

    async def _quote(self, sync: BookSync) -> None:
        if sync.live and sync.pending is None:
            self._requested.pop(sync.symbol, None)
        q = sync.quote()
        if q is None or self._last_quote.get(sync.symbol) == q:
            return
        self._last_quote[sync.symbol] = q
        self.quotes += 1
        if self.publisher is not None:
            quote = Quote(self.venue, sync.symbol, sync.last_ts_us, sync.last_recv_us, *q,
                          update_id=sync.update_id or 0)
            if not self.publisher.put_nowait(quote):
                await self.publisher.put(quote)

    async def _state_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.state_interval)
            now = time.monotonic()
            for sym, t0 in list(self._requested.items()):
                sync = self.syncs[sym]
                if not sync.live and now - t0 > RESYNC_RETRY_S and self._ws is not None:
                    log.warning("%s %s books: no snapshot %.0fs after asking; asking again", self.venue, sym, now - t0)
                    if self.mod.SNAPSHOT_FROM == "rest":
                        self._want_snapshot(sym)
                    else:
                        await self._resubscribe(sym)
            if self.redis is None:
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for sym in self.syncs:
                    pipe.hset(book_key(self.venue, sym), mapping=self.book_state(sym))
                pipe.hset(health_key(self.venue), mapping={k: str(v) for k, v in self.health().items()})
                await pipe.execute()
            except Exception as e:   # Redis down: the quote publisher reports and retries
                log.debug("%s books: state write failed: %s", self.venue, e)


class _Renew(Exception):
    """The link was closed on purpose because its session is about to expire."""


async def _wait(stop: asyncio.Event, delay: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except asyncio.TimeoutError:
        pass
