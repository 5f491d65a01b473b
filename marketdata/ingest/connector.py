"""The runtime that drives one venue: REST instruments, WebSocket connection(s), keepalive and
silent-drop detection, reconnects with capped jittered backoff, gap repair from REST, coverage
marks, sequence state in Redis, and a heartbeat for Dagster's ingest-health sensor.

Venue knowledge comes from the venue module (``marketdata.venues.<name>``); nothing here knows a
venue's wire format.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from time import time_ns as _time_ns

import websockets

from .. import settings
from .. import venues as venue_registry
from ..clock import now_us
from ..config import VenueConfig
from ..errors import ConfigError
from ..gap import Gap
from ..storage.redis import async_client
from ..stream import health_key, sequence_key
from ..tick import Tick
from ..venues.base import (Ack, HttpRequest, Ignored, LastTradeId, MalformedFrame, Pause, Reconnect, Replay,
                           UnknownSymbol, Unrecognised, Unsequenced, Venue, VenueError)
from ..backoff import Backoff
from ..rest.client import AsyncVenueRest, RestError
from ..rest.pager import IdPager, TimePager
from .link import await_greeting, open_link, transport_for
from .publisher import Publisher
from .sequence import SymbolSequence
from .silence import SILENT_AFTER_S, SilenceWatch

log = logging.getLogger("marketdata.ingest")


class _Link:
    """One physical WebSocket connection's state, as the sequence trackers must know it."""
    __slots__ = ("open", "subscribed", "subscribed_event", "rotating", "rotate_now")

    def __init__(self) -> None:
        self.open = False
        self.subscribed = False
        self.subscribed_event = asyncio.Event()
        self.rotating = False
        self.rotate_now = asyncio.Event()     # the venue asked for a new link (Bitstamp)


class _Successor:
    __slots__ = ("link", "task")

    def __init__(self, link: _Link, task: asyncio.Task):
        self.link, self.task = link, task


class VenueConnector:
    def __init__(self, cfg: VenueConfig, redis_url: str | None = None, *,
                 coverage_interval: float = 0.2, health_interval: float = 1.0,
                 flush_ms: float = 5.0):
        self.cfg = cfg
        self.mod: type[Venue] = venue_registry.get(cfg.name)
        self.name = cfg.name
        self.redis_url = redis_url
        self.idle_timeout = float(cfg.idle_timeout or self.mod.IDLE_TIMEOUT)
        self.transport = transport_for(cfg.transport)     # a bad name fails the start
        # Sequence rules may depend on options (Kraken v2 ids vs v1 none).
        self.sequential, self.repair_by = self.mod.sequence_rules(cfg.options)
        self.coverage_interval = coverage_interval
        self.idle_coverage_interval = max(coverage_interval, 1.0)
        self.health_interval = health_interval
        self.flush_ms = flush_ms
        self.unpublished = 0            # ticks a stop abandoned because Redis stayed down
        self.seqs: dict[str, SymbolSequence] = {}
        self.by_venue_symbol: dict[str, str] = {}
        self.malformed = 0
        self.unrecognised = 0             # well-formed frames the parser does not read (counted, logged)
        self._unrecognised_kinds: dict[str, int] = {}
        self.unknown_symbols = 0
        self.instruments_checked = True      # False: offline start, symbols not checked (load_instruments)
        self.venue_errors = 0
        self.reconnects = 0
        self.rotations = 0
        self.connected = 0
        self.ticks_in = 0
        self.repair_requests = 0
        self.last_tick_recv_us = 0
        self.last_error = ""
        self._repair_wake = asyncio.Event()
        self._wires: dict[_Link, object] = {}                # open links and their WebSockets (ingest/link.py)
        self._successors: set[_Successor] = set()             # rotated-to links not yet adopted
        self.publisher: Publisher | None = None
        self.rest_client: AsyncVenueRest | None = None

    # --- REST -----------------------------------------------------------------------------

    async def rest(self, req: HttpRequest) -> object:
        return await self.rest_client.call(req)

    async def load_instruments(self) -> None:
        """Map configured canonical symbols to the venue's; an unknown symbol fails the start.

        Offline mode: when the instruments endpoint cannot be reached at all (network errors or
        5xx on every attempt), the connector says so and goes on with venue symbols derived from
        the canonical names (the venue module's `to_venue_symbol`), unchecked; health shows
        `instruments_checked: 0`. A venue that answers and does not list a symbol still fails."""
        try:
            body = await self.rest(self.mod.instruments_request())
        except RestError as e:
            if not e.unreachable:
                raise
            log.warning("%s: OFFLINE: cannot reach the venue's instruments list (%s); the configured symbols "
                        "%s are NOT checked against the venue and go on as %s", self.name, e,
                        ", ".join(self.cfg.symbols), ", ".join(self.mod.to_venue_symbol(s) for s in self.cfg.symbols))
            self.instruments_checked = False
            self.last_error = f"instruments not checked (offline): {e}"
            listed = {s: self.mod.to_venue_symbol(s) for s in self.cfg.symbols}
        else:
            listed = {i.symbol: i.venue_symbol for i in self.mod.parse_instruments(body)}
        missing = [s for s in self.cfg.symbols if s not in listed]
        if missing:
            sample = ", ".join(sorted(listed)[:12])
            raise ConfigError(
                f"{self.name}: symbol(s) {', '.join(missing)} not listed as trading by the venue "
                f"({self.cfg.rest_url}); fix venues.{self.name}.symbols in the config. "
                f"{len(listed)} symbols are listed, e.g. {sample}")
        for s in self.cfg.symbols:
            self.by_venue_symbol[listed[s]] = s
            self.seqs[s] = SymbolSequence(self.name, s, listed[s], lateness_us=self.mod.LATENESS_US,
                                          sequential=self.sequential)

    # --- main -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.rest_client = AsyncVenueRest(self.mod, self.cfg.rest_url)
        redis = async_client(self.redis_url)
        try:
            await self.load_instruments()
            await self._restore(redis, stop)
            self.publisher = Publisher(redis, flush_ms=self.flush_ms)
            self.publisher.state_provider = lambda ex, sym: self.seqs[sym].state() if sym in self.seqs else None
            pub_stop = asyncio.Event()
            pub_task = asyncio.create_task(self.publisher.run(pub_stop), name="publisher")
            tasks = [asyncio.create_task(self._connection(i, stop), name=f"conn{i}")
                     for i in range(self.cfg.connections)]
            if self.cfg.books:     # its own link: a book resync never disturbs the trade link
                from .books.feed import BookFeed
                self.book_feed = BookFeed(self.name, self.cfg.books, self.cfg.ws_url, self.cfg.rest_url,
                                          redis=redis, options=self.cfg.options, transport=self.transport)
                tasks.append(asyncio.create_task(self.book_feed.run(stop), name="books"))
            tasks += [asyncio.create_task(self._repair_loop(stop), name="repair"),
                      asyncio.create_task(self._coverage_loop(stop), name="coverage"),
                      asyncio.create_task(self._health_loop(redis, stop), name="health")]
            await stop.wait()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for succ in self._successors:      # stopped mid-rotation: the new link ends too
                succ.task.cancel()
            await asyncio.gather(*(s.task for s in self._successors), return_exceptions=True)
            for succ in self._successors:
                self._link_down(succ.link)
            self._advance_coverage()
            pub_stop.set()
            self.publisher.request_flush()
            await pub_task
            self.unpublished = self.publisher.abandoned
            await self._write_health(redis, state="stopped")
        finally:
            await self.rest_client.aclose()
            await redis.aclose()

    async def _restore(self, redis, stop: asyncio.Event) -> None:
        backoff = Backoff(base=0.2, cap=10.0)
        while not stop.is_set():
            try:
                for s, seq in self.seqs.items():
                    raw = await redis.hgetall(sequence_key(self.name, s))
                    if raw:
                        seq.restore(raw)
                        log.info("%s %s: resuming after trade id %s; %d hole(s) to repair",
                                 self.name, s, seq.last_id, len(seq.holes))
                return
            except (OSError, websockets.exceptions.WebSocketException, Exception) as e:  # redis down
                if isinstance(e, (asyncio.CancelledError, KeyboardInterrupt)):
                    raise
                delay = backoff.next_delay()
                log.warning("%s: cannot read sequence state from Redis (%s); retrying in %.1fs",
                            self.name, e, delay)
                await asyncio.sleep(delay)

    # --- connection -------------------------------------------------------------------------

    async def _connection(self, idx: int, stop: asyncio.Event) -> None:
        """One connection slot: keeps a link up, reconnecting with backoff. A link whose session
        expires (a venue token) hands over to a successor opened before it closes."""
        backoff = Backoff(base=0.5, cap=30.0)
        venue_symbols = list(self.by_venue_symbol)
        while not stop.is_set():
            started = time.monotonic()
            link = _Link()
            try:
                successor = await self._run_link(idx, venue_symbols, link)
                while successor is not None:          # rotated: follow the new link
                    link = successor.link
                    self._successors.discard(successor)
                    successor = await successor.task
            except asyncio.CancelledError:
                self._link_down(link)
                raise
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException,
                    RestError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("%s connection %d lost: %s", self.name, idx, self.last_error)
            self._link_down(link)
            self.reconnects += 1
            if time.monotonic() - started > 60:
                backoff.reset()
            delay = backoff.next_delay()
            log.info("%s connection %d: reconnecting in %.2fs", self.name, idx, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    def _link_down(self, link: "_Link") -> None:
        self._wires.pop(link, None)
        if link.open:
            link.open = False
            self.connected = max(0, self.connected - 1)
        if link.subscribed:
            link.subscribed = False
            for seq in self.seqs.values():
                seq.on_disconnect()

    async def _run_link(self, idx: int, venue_symbols: list[str], link: "_Link") -> "_Successor | None":
        """Open, subscribe and read one link until it ends. Returns the successor if the link was
        rotated (make-before-break), else None; raises when the link was lost."""
        mod, opts = self.mod, self.cfg.options
        session = None
        if mod.session_request is not None:
            session = mod.parse_session(await self.rest(mod.session_request(opts)))
        url = mod.connect_url(self.cfg.ws_url, venue_symbols, opts, session)
        parser = mod.Parser(dict(self.by_venue_symbol), opts)
        keepalive = mod.keepalive(opts, session)
        # A session that expires (venue token) or a link the venue cuts after a lifetime (Binance
        # 24 h) is rotated before its end, so no reconnect span ever opens.
        ttl = mod.session_ttl(session, opts) or self.cfg.max_lifetime or float(mod.MAX_LIFETIME) or None
        async with open_link(url, self.transport, max_queue=256, max_size=2 ** 23) as ws:
            self.connected += 1
            link.open = True
            self._wires[link] = ws
            log.info("%s connection %d open (%s): %s", self.name, idx, self.transport,
                     settings.redact(url.split("?")[0]))
            if mod.GREETING:
                await self._await_greeting(ws, parser)
            if mod.auth_messages is not None:
                await self._authenticate(ws, parser, mod.auth_messages(opts), idx)
            pending_acks = set()
            for rid, msg in mod.subscribe_messages(venue_symbols, opts):
                pending_acks.add(rid)
                await ws.send(msg)
            if not pending_acks:
                self._on_subscribed(link)
            helpers = [asyncio.create_task(self._watchdog(ws, idx))]
            if keepalive:
                helpers.append(asyncio.create_task(self._keepalive(ws, *keepalive)))
            rotation = asyncio.create_task(self._rotate(idx, venue_symbols, ws, link, ttl))
            try:
                await self._read(ws, parser, pending_acks, link)
            finally:
                for h in helpers:
                    h.cancel()
                if rotation is not None and not link.rotating:
                    rotation.cancel()
            if link.rotating:
                successor = await rotation     # closed on purpose: the successor is subscribed
                self._link_down(link)
                return successor
        raise websockets.exceptions.ConnectionClosedError(None, None)

    async def _await_greeting(self, ws, parser) -> None:
        await await_greeting(ws, parser, self, self.name)

    async def _authenticate(self, ws, parser, messages: list[str], idx: int) -> None:
        """A venue that wants credentials on the link before anything else (Alpaca): send them
        (never logged) and wait for the parser's Ack("auth") before subscribing. A refusal is
        logged with the venue module's advice and ends the link; the slot backs off."""
        for m in messages:
            await ws.send(m)
        async with asyncio.timeout(10):
            async for frame in ws:
                try:
                    events = parser.parse(frame, now_us())
                except MalformedFrame as e:
                    self.malformed += 1
                    log.warning("%s: malformed frame skipped (%s)", self.name, e)
                    continue
                for ev in events:
                    if type(ev) is Ack and ev.request_id == "auth":
                        log.info("%s connection %d: authenticated", self.name, idx)
                        return
                    if type(ev) is VenueError:
                        self.venue_errors += 1
                        self.last_error = f"venue error {ev.code}: {ev.message}"
                        log.error("%s connection %d: authentication refused: %s", self.name, idx, self.last_error)
                        raise ConnectionRefusedError(self.last_error)
        raise ConnectionRefusedError(f"{self.name} closed the link before authenticating")

    async def _keepalive(self, ws, interval: float, message) -> None:
        """Application-level keepalive the venue requires (OKX text ping, KuCoin JSON ping). A
        callable message is built anew each time (Gate.io pings carry the current time)."""
        while True:
            await asyncio.sleep(interval)
            await ws.send(message() if callable(message) else message)

    async def _rotate(self, idx: int, venue_symbols: list[str], old_ws, old_link: "_Link",
                      ttl: float | None) -> "_Successor":
        """Before the session expires, or when the venue asks for a new link (a rotating Reconnect):
        open the next link, wait until it is subscribed, then close this one. Both feed the same
        sequence trackers while they overlap (duplicates are dropped)."""
        try:
            await asyncio.wait_for(old_link.rotate_now.wait(), max(0.5, ttl * 0.8) if ttl else None)
        except asyncio.TimeoutError:
            pass
        nxt = _Link()
        task = asyncio.create_task(self._run_link(idx, venue_symbols, nxt))
        try:
            await nxt.subscribed_event.wait()
        except asyncio.CancelledError:
            task.cancel()       # this link died first: the slot reconnects the ordinary way
            raise
        self.rotations += 1
        log.info("%s connection %d: rotated to a new link before the old one expires", self.name, idx)
        old_link.rotating = True
        successor = _Successor(nxt, task)
        self._successors.add(successor)     # a stop before the slot adopts it must still end it
        await old_ws.close()
        return successor

    async def _watchdog(self, ws, idx: int) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout / 4))
            quiet = time.monotonic() - ws.last_rx
            if quiet > self.idle_timeout:
                log.warning("%s connection %d: nothing received for %.1fs (silent drop); reconnecting",
                            self.name, idx, quiet)
                ws.abort()
                return

    def _on_subscribed(self, link: "_Link") -> None:
        if link.subscribed:
            return
        link.subscribed = True
        link.subscribed_event.set()
        for seq in self.seqs.values():
            seq.on_subscribed()
        self._repair_wake.set()     # catch up the span we were away, from REST

    def _publish_gaps(self, publisher, gaps: list[Gap]) -> None:
        """Gaps the sequence checks just found: to the stream, to the log, and to the repairer."""
        for g in gaps:
            publisher.put_gap(g)
            log.warning("%s %s: gap in trade ids %s..%s (%s)", self.name, g.symbol, g.from_id, g.to_id,
                        g.found_by)
        gaps.clear()
        self._repair_wake.set()

    async def _read(self, ws, parser, pending_acks: set, link: "_Link") -> None:
        publisher = self.publisher
        seqs = self.seqs
        gaps: list[Gap] = []
        name = self.name
        sequential = self.sequential
        span_is_count = self.mod.ID_SPAN_IS_COUNT
        paused = False
        put_nowait = publisher.put_nowait
        while True:
            # Every frame already received, in one await (link.py recv_batch); [] after a close handshake.
            batch = await ws.recv_batch()
            if not batch:
                return
            for frame in batch:
                recv = _time_ns() // 1000
                try:
                    events = parser.parse(frame, recv)
                except MalformedFrame as e:
                    self.malformed += 1
                    log.warning("%s: malformed frame skipped (%s): %.200r", name, e, frame)
                    continue
                for ev in events:
                    if type(ev) is Tick:
                        self.ticks_in += 1
                        seq = seqs[ev.symbol]
                        if seq.fallback and ev.event == "trade":
                            log.info("%s %s: trade ids are back; id continuity resumes at %s", name, ev.symbol,
                                     ev.trade_id)
                        tid = int(ev.trade_id) if sequential else 0
                        # a correction/cancel (Alpaca) re-uses its trade's id: never a duplicate or a gap
                        if ev.event != "trade" or seq.accept(ev, tid, gaps,
                                                             tid - ev.trade_count + 1 if span_is_count else None):
                            if not put_nowait(ev):              # the queue is full: wait for room
                                await publisher.put(ev)
                        if gaps:
                            self._publish_gaps(publisher, gaps)
                    elif type(ev) is Ignored:
                        # Before the rarer kinds: Bitfinex sends each trade again as an ignored
                        # `tu`, so half its frames end here; checked last they cost ten type tests.
                        pass
                    elif type(ev) is Ack:
                        pending_acks.discard(ev.request_id)
                        if not pending_acks and not link.subscribed and not paused:   # venues may ack once per channel
                            log.info("%s: subscribed to %d symbols", name, len(seqs))
                            self._on_subscribed(link)
                    elif type(ev) is LastTradeId:
                        # The venue's last id (Coinbase heartbeat) reveals missed trades in a quiet market.
                        if seqs[ev.symbol].on_last_trade_id(ev.trade_id, ev.ts_us, gaps):
                            self._publish_gaps(publisher, gaps)
                    elif type(ev) is Unsequenced:
                        t = ev.tick
                        self.ticks_in += 1
                        seq = seqs[t.symbol]
                        was = seq.fallback
                        if seq.accept_unsequenced(t, ev.missing):
                            await publisher.put(t)
                        if not was:
                            log.warning("%s %s: trades arrive without %s; continuity falls back to time "
                                        "(holes are spans of time, repaired by time) until it is back",
                                        name, t.symbol, ev.missing)
                            if seq.holes:
                                self._repair_wake.set()     # an open span became a closed span of time
                    elif type(ev) is Unrecognised:
                        self._on_unrecognised(ev, frame)
                    elif type(ev) is Replay:
                        # The fresh part joins this frame's events (list iteration sees appended items).
                        fresh = seqs[ev.symbol].on_replay(ev.ticks, gaps)
                        events.extend(fresh)
                        if gaps:
                            for g in gaps:
                                publisher.put_gap(g)
                                log.info("%s %s: the span since %s closed from the venue's snapshot (%d trades)",
                                         name, g.symbol, g.from_us, g.recovered)
                            gaps.clear()
                    elif type(ev) is Pause:
                        log.warning("%s: venue paused the link (%s); a gap until it is replaced", name, ev.reason)
                        paused = True
                        if link.subscribed:
                            link.subscribed = False
                            for seq in seqs.values():
                                seq.on_disconnect("maintenance")
                    elif type(ev) is UnknownSymbol:
                        self.unknown_symbols += 1
                        log.warning("%s: trade for unknown symbol %r skipped", name, ev.venue_symbol)
                    elif type(ev) is VenueError:
                        self.venue_errors += 1
                        log.error("%s: venue error %s: %s (request %s)", name, ev.code, ev.message, ev.request_id)
                    elif type(ev) is Reconnect:
                        if ev.rotate:     # keep reading until the successor is subscribed
                            log.info("%s: venue asks for a new link (%s); rotating", name, ev.reason)
                            link.rotate_now.set()
                            continue
                        log.info("%s: venue asks to reconnect (%s)", name, ev.reason)
                        await ws.close()
                        return
                self.last_tick_recv_us = recv

    def _on_unrecognised(self, ev: Unrecognised, frame) -> None:
        """Count a frame the parser does not read and log it: the first of each kind, then every
        1000th (a venue that starts a new data stream must not flood the log, nor go unseen)."""
        self.unrecognised += 1
        n = self._unrecognised_kinds.get(ev.kind, 0) + 1
        if n == 1 and len(self._unrecognised_kinds) >= 1000:
            self._unrecognised_kinds.clear()      # bounded, even if kinds vary without end
        self._unrecognised_kinds[ev.kind] = n
        if n == 1 or n % 1000 == 0:
            log.warning("%s: frame not recognised (%s%s), %d of this kind: %.200r", self.name, ev.kind,
                        f": {ev.detail}" if ev.detail else "", n, frame)

    # --- repair, coverage, health -----------------------------------------------------------

    async def _repair_loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base=0.5, cap=30.0)
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._repair_wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            self._repair_wake.clear()
            try:
                for seq in self.seqs.values():
                    await self._repair_symbol(seq)
                backoff.reset()
            except (RestError, MalformedFrame) as e:
                delay = backoff.next_delay()
                log.warning("%s: repair failed (%s); retrying in %.1fs", self.name, e, delay)
                await asyncio.sleep(delay)
                self._repair_wake.set()

    async def _repair_symbol(self, seq: SymbolSequence) -> None:
        gaps: list[Gap] = []
        repair_by = self.repair_by
        while True:
            hole = seq.next_repair()
            if hole is None:
                break
            if not hole.closed and not seq.connected:
                break         # catch up only once subscribed, so nothing can fall between
            if not self.cfg.repair or repair_by is None:
                if not hole.closed:
                    break     # its end is known when the next trade arrives
                why = ("repair disabled in config" if not self.cfg.repair
                       else f"{self.name} REST cannot return past trades")
                seq.mark_unrepairable(hole, gaps, why)
                continue
            self.repair_requests += 1
            if hole.by_time:
                ticks, complete = await self._history_by_time(seq, hole.before_ts, hole.after_ts)
                out = seq.apply_time_repair(hole, ticks, complete, gaps)
            elif repair_by == "time":
                # Id hole, venue REST pages by time (Kraken v2): fetch from the trade before the
                # hole to the one after it (or now); apply_repair keeps the ids inside the hole.
                ticks, complete = await self._history_by_time(seq, hole.before_ts, hole.after_ts)
                ticks.sort(key=lambda t: int(t.trade_id))
                out = seq.apply_repair(hole, ticks, not complete, gaps, "rest_by_time")
            else:
                pager = IdPager(self.mod, seq.venue_symbol, seq.symbol, self.cfg.options, hole.lo)
                ticks = pager.parse(await self.rest(pager.next_request()))
                out = seq.apply_repair(hole, ticks, len(ticks) >= self.mod.REPAIR_PAGE, gaps)
            for t in out:
                await self.publisher.put(t)
            for g in gaps:
                self.publisher.put_gap(g)
                log.info("%s %s: gap %s..%s %s (%d trades recovered)", self.name, seq.symbol,
                         g.from_id or g.from_us, g.to_id or g.to_us, g.status, g.recovered)
            gaps.clear()
        for g in gaps:
            self.publisher.put_gap(g)

    async def _history_by_time(self, seq: SymbolSequence, start_us: int,
                               end_us: int | None) -> tuple[list[Tick], bool]:
        """All trades in [start_us, end_us] (or up to now) from REST, paging as the venue says.
        Complete unless the venue ran out of history before reaching the end."""
        pager = TimePager(self.mod, seq.venue_symbol, seq.symbol, self.cfg.options, start_us, end_us)
        await self.rest_client.drain(pager)
        return pager.ticks, pager.complete

    # A symbol the venue acknowledged and then never feeds (Bitstamp's unknown pair) looks exactly
    # like a quiet market from the link; only time tells. Created on first use from the config.
    _silence: "SilenceWatch | None" = None

    def _heard_at(self, now: int) -> int:
        """The last moment (wall µs) a subscribed link was heard from: bytes of any kind, pings and
        heartbeats included. A quiet market is vouched for only up to here, so a link that died
        silently is never covered for the seconds before its watchdog notices."""
        mono = time.monotonic()
        heard = [now - int((mono - ws.last_rx) * 1_000_000) for link, ws in self._wires.items() if link.subscribed]
        return min(now, max(heard)) if heard else now

    def _advance_coverage(self) -> None:
        now = now_us()
        heard = self._heard_at(now)
        if self._silence is None:
            self._silence = SilenceWatch(self.name, self.cfg.silent_after or SILENT_AFTER_S)
        for seq in self.seqs.values():
            for f, t in seq.advance_coverage(heard):
                self.publisher.put_coverage(self.name, seq.symbol, f, t)
            self._silence.observe(seq)

    async def _coverage_loop(self, stop: asyncio.Event) -> None:
        """Coverage marks every `coverage_interval` while trades flow, every `idle_coverage_interval`
        after a round in which none came: a quiet market costs one mark (one Redis round trip)
        per second, not five."""
        seen = -1
        while not stop.is_set():
            quiet = self.ticks_in == seen
            seen = self.ticks_in
            await asyncio.sleep(self.idle_coverage_interval if quiet else self.coverage_interval)
            self._advance_coverage()

    def health(self) -> dict:
        seqs = self.seqs.values()
        last_ts = max((s.last_ts for s in seqs), default=0)
        return {
            "heartbeat_us": now_us(), "pid": os.getpid(), "connections": self.connected,
            "subscribed_symbols": sum(1 for s in seqs if s.links > 0),
            "symbols": len(self.seqs), "ticks_in": self.ticks_in,
            "ticks_published": self.publisher.published_ticks if self.publisher else 0,
            "queued": self.publisher.queued if self.publisher else 0,
            "malformed": self.malformed, "unrecognised": self.unrecognised,
            "unknown_symbols": self.unknown_symbols,
            "unsequenced": sum(s.unsequenced for s in seqs),
            "sequence_fallback": ",".join(sorted(f"{s.symbol}:{s.fallback}" for s in seqs if s.fallback)),
            "venue_errors": self.venue_errors, "reconnects": self.reconnects, "rotations": self.rotations,
            "repair_requests": self.repair_requests,
            "gaps_found": sum(s.gaps_found for s in seqs),
            "gaps_repaired": sum(s.gaps_repaired for s in seqs),
            "gaps_unrepairable": sum(s.gaps_unrepairable for s in seqs),
            "open_holes": sum(len(s.holes) for s in seqs),
            "duplicates": sum(s.duplicates for s in seqs),
            "last_tick_recv_us": self.last_tick_recv_us, "last_trade_ts_us": last_ts,
            "lag_us": max(0, self.last_tick_recv_us - last_ts) if last_ts else 0,
            "covered_to_us": min((s.covered_to or 0 for s in seqs), default=0),
            "redis_failures": self.publisher.failures if self.publisher else 0,
            "redis_wait_shortfalls": (self.publisher.replica_wait.shortfalls
                                      if self.publisher and self.publisher.replica_wait else 0),
            "silent_symbols": ",".join(sorted(self._silence.silent)) if self._silence else "",
            "instruments_checked": int(self.instruments_checked),
            "last_error": self.last_error[:300],
        }

    async def _write_health(self, redis, state: str = "running") -> None:
        h = self.health()
        h["state"] = state
        await redis.hset(health_key(self.name), mapping={k: str(v) for k, v in h.items()})

    async def _health_loop(self, redis, stop: asyncio.Event) -> None:
        prev, prev_t = 0, time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(self.health_interval)
            try:
                await self._write_health(redis)
            except Exception as e:  # Redis down: the publisher reports it; health waits
                log.debug("%s: health write failed: %s", self.name, e)
            now = time.monotonic()
            rate = (self.ticks_in - prev) / max(1e-6, now - prev_t)
            prev, prev_t = self.ticks_in, now
            log.debug("%s: %.0f ticks/s", self.name, rate)
