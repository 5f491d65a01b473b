"""The simulator: configuration, event loop, pacing, ground truth, in-process control API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from .clock import SimClock, parse_time_us
from .groundtruth import GroundTruthWriter
from .history import trim_venue
from .venue import Venue, canonical_ok

log = logging.getLogger(__name__)


# venue -> (module under marketdata.simulator, class), imported when first needed
_VENUES = {
    "binance": ("binance", "BinanceVenue"),
    "okx": ("okx", "OkxVenue"),
    "kucoin": ("kucoin", "KucoinVenue"),
    "kraken": ("kraken", "KrakenVenue"),
    "coinbase": ("coinbase", "CoinbaseVenue"),
    "bybit": ("bybit", "BybitVenue"),
    "bitfinex": ("bitfinex", "BitfinexVenue"),
    "gateio": ("gateio", "GateioVenue"),
    "bitstamp": ("bitstamp", "BitstampVenue"),
    "alpaca": ("alpaca", "AlpacaVenue"),
}


def _venue_classes() -> dict[str, type[Venue]]:
    import importlib

    return {name: getattr(importlib.import_module(f"{__package__}.{mod}"), cls)
            for name, (mod, cls) in _VENUES.items()}


#: venues this simulator can serve
def available_venues() -> list[str]:
    return sorted(_venue_classes())


@dataclass
class SimulatorConfig:
    """Everything that defines a simulator run.

    ``symbols`` is either one list of canonical symbols for every venue or a mapping
    ``{venue: [symbols]}``.  ``rate`` is trades per wall second per venue (across its symbols);
    ``rates`` overrides it per venue.  ``start``/``end`` accept ISO 8601 strings, datetimes or
    epoch numbers (s/ms/us); ``start`` defaults to now.  ``port`` 0 picks free ports; a non-zero
    port is used by the first venue and the next ones get ``port + i`` unless ``ports`` names them.
    """

    venues: list[str] = field(default_factory=lambda: ["binance"])
    symbols: list[str] | dict[str, list[str]] = field(default_factory=lambda: ["BTC-USDT", "ETH-USDT"])
    rate: float = 1000.0
    rates: dict[str, float] = field(default_factory=dict)
    seed: int | str = 7
    start: str | int | float | datetime | None = None
    speed: float = 1.0
    end: str | int | float | datetime | None = None
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    ground_truth: str | os.PathLike[str] | None = None
    history_s: float | None = None   # simulated seconds of trades kept (None: all; see history.py)
    host: str = "127.0.0.1"
    port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    slice_ms: float = 5.0
    ground_truth_flush_ms: float = 100.0
    max_send_buffer: int = 32 * 1024 * 1024
    symbol_weights: dict[str, float] = field(default_factory=dict)
    venue_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    paused: bool = False
    hold_clock: bool = False     # with paused: simulated time starts at the first resume
    use_uvloop: bool = True

    def symbols_for(self, venue: str) -> list[str]:
        if isinstance(self.symbols, dict):
            syms = self.symbols.get(venue)
            if syms is None:
                raise ValueError(f"no symbols configured for venue {venue!r}")
        else:
            syms = self.symbols
        return [canonical_ok(s) for s in syms]

    def rate_for(self, venue: str) -> float:
        return float(self.rates.get(venue, self.rate))

    def validate(self) -> None:
        known = _venue_classes()
        if not self.venues:
            raise ValueError("no venues configured")
        for v in self.venues:
            if v not in known:
                raise ValueError(f"unknown venue {v!r}; the simulator serves {sorted(known)}")
            if not self.symbols_for(v):
                raise ValueError(f"no symbols for venue {v!r}")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if self.rate < 0 or any(r < 0 for r in self.rates.values()):
            raise ValueError("rate must be >= 0")
        if self.history_s is not None and not self.history_s > 0:
            raise ValueError("history_s must be > 0 (or None to keep every trade)")


class Simulator:
    """A running local exchange per configured venue.

    Use it either in a background thread (``start()`` / ``stop()``, or as a context manager),
    on an existing event loop (``await start_async()`` / ``await stop_async()``), or blocking on
    the current thread (``run()``, as the CLI does).  Control methods (``fault``, ``stats``,
    ``flush``, ``pause``, ``resume``, ``trades``, ``wait_generated``) are thread-safe.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        config.validate()
        self.config = config
        self.clock = SimClock(parse_time_us(config.start), config.speed)
        self.end_us = parse_time_us(config.end)
        classes = _venue_classes()
        self.venues: dict[str, Venue] = {}
        for name in config.venues:
            opts = dict(config.venue_options.get(name, {}))
            self.venues[name] = classes[name](self, config.symbols_for(name), config.rate_for(name), opts)
        self.ground_truth_path = str(config.ground_truth) if config.ground_truth else None
        self._gt: GroundTruthWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task] = []
        self._stopped: asyncio.Event | None = None  # created on the loop
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._cond = threading.Condition()
        self._waiters = 0
        self.running = False

    # ------------------------------------------------------------------ properties
    @property
    def endpoints(self) -> dict[str, dict[str, str]]:
        return {
            name: {"ws": f"ws://{v.host}:{v.port}", "rest": f"http://{v.host}:{v.port}"}
            for name, v in self.venues.items()
        }

    def venue(self, name: str | None = None) -> Venue:
        if name is None:
            if len(self.venues) != 1:
                raise ValueError("several venues configured: name one")
            return next(iter(self.venues.values()))
        try:
            return self.venues[name]
        except KeyError:
            raise KeyError(f"venue {name!r} not configured") from None

    def sim_now_us(self) -> int:
        return self.clock.now_us()

    # ------------------------------------------------------------------ lifecycle (async)
    async def start_async(self) -> None:
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        venues = list(self.venues.values())
        base_port = int(self.config.port)
        try:
            for i, (name, v) in enumerate(self.venues.items()):
                port = int(self.config.ports.get(name, (base_port + i) if base_port else 0))
                sock = socket.socket(socket.AF_INET6 if ":" in self.config.host else socket.AF_INET,
                                     socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.config.host, port))
                sock.listen(512)
                sock.setblocking(False)
                v.port = sock.getsockname()[1]
                runner = web.AppRunner(v.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
                await runner.setup()
                site = web.SockSite(runner, sock)
                await site.start()
                self._runners.append(runner)
            if self.ground_truth_path:
                self._gt = GroundTruthWriter(self.ground_truth_path, venues)
        except BaseException:
            for r in self._runners:
                await r.cleanup()
            self._runners.clear()
            raise
        if not (self.config.paused and self.config.hold_clock):
            self.start_clocks(time.monotonic())
        self.running = True
        self._tasks = [asyncio.ensure_future(self._ticker())]
        if self._gt is not None:
            self._tasks.append(asyncio.ensure_future(self._gt_flusher()))
        if self.config.history_s is not None:
            self._tasks.append(asyncio.ensure_future(self._history_trimmer()))
        log.info("simulator up: %s", self.endpoints)

    def start_clocks(self, mono: float) -> None:
        """Simulated time starts now (at start-up, or at the first resume with hold_clock)."""
        self.clock.start(mono)
        for v in self.venues.values():
            v.start_clock(mono)

    async def stop_async(self) -> None:
        if not self.running:
            return
        self.running = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        for v in self.venues.values():
            await v.close_all()
        for r in self._runners:
            try:
                await r.cleanup()
            except Exception:  # pragma: no cover
                log.exception("runner cleanup")
        self._runners = []
        if self._gt is not None:
            self._gt.close()
        with self._cond:
            self._cond.notify_all()
        if self._stopped is not None:
            self._stopped.set()

    async def serve_forever(self) -> None:
        """Start (if needed) and run until ``stop()``/``request_stop()``."""
        await self.start_async()
        assert self._stopped is not None
        await self._stopped.wait()

    def request_stop(self) -> None:
        """Ask a ``run()``/``serve_forever()`` loop to stop (thread-safe, signal-safe)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.stop_async()))

    # ------------------------------------------------------------------ lifecycle (threads)
    def _new_loop(self) -> asyncio.AbstractEventLoop:
        if self.config.use_uvloop:
            try:
                import uvloop  # type: ignore[import-not-found]

                return uvloop.new_event_loop()
            except ImportError:
                pass
        return asyncio.new_event_loop()

    def run(self) -> None:
        """Serve on the current thread until stopped (blocking)."""
        loop = self._new_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.serve_forever())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, timeout: float = 30.0) -> "Simulator":
        """Run in a background daemon thread; returns once the servers listen."""
        if self._thread is not None:
            return self

        def target() -> None:
            loop = self._new_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # noqa: BLE001
                self._start_error = exc
                self._started.set()
                loop.close()
                return
            self._started.set()
            try:
                loop.run_until_complete(self._stopped.wait())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=target, name="marketdata-simulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("simulator did not start")
        if self._start_error is not None:
            self._thread = None
            raise self._start_error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving, flush and close the ground truth; joins the background thread."""
        if self._thread is None:
            if self.running and self._loop is not None:
                raise RuntimeError("simulator runs on a foreign loop: use await stop_async()")
            return
        if self.running:
            self._call_async(self.stop_async(), timeout)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ thread marshalling
    def _in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        if self._loop is None or not self.running or self._in_loop():
            return fn()
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def _call_async(self, coro, timeout: float = 30.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ control API
    def fault(self, venue: str | None, kind: str, **params: Any) -> dict[str, Any]:
        """Inject a fault (see :mod:`marketdata.simulator.faults`); returns the fault record."""
        v = self.venue(venue)
        return self._call(lambda: v.apply_fault(kind, params))

    def stats(self, venue: str | None = None) -> dict[str, Any]:
        """``{venue: stats}``, or one venue's stats when ``venue`` is given."""
        if venue is not None:
            v = self.venue(venue)
            return self._call(v.stats)
        return self._call(lambda: {n: v.stats() for n, v in self.venues.items()})

    def flush(self) -> int:
        """Flush the ground truth to disk now; returns rows written by this call."""
        return self._call(self._flush_ground_truth)

    def pause(self, venue: str | None = None) -> None:
        targets = [self.venue(venue)] if venue else list(self.venues.values())
        self._call(lambda: [v.pause() for v in targets])

    def resume(self, venue: str | None = None) -> None:
        targets = [self.venue(venue)] if venue else list(self.venues.values())
        self._call(lambda: [v.resume() for v in targets])

    def trades(self, venue: str | None, symbol: str, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Tape rows ``[start, stop)`` of one symbol as wire strings (what the ground truth holds)."""
        v = self.venue(venue)
        return self._call(lambda: v.trades(symbol, start, stop))

    def book(self, venue: str | None, symbol: str, depth: int | None = None) -> dict[str, Any]:
        """The venue's current order book of ``symbol`` (what ``GET /_sim/book`` returns)."""
        v = self.venue(venue)
        si = v.symbol_index(symbol)
        if si is None or not v.books:
            raise KeyError(symbol)
        return self._call(lambda: v.book_view(si, depth))

    def generated(self, venue: str | None = None, symbol: str | None = None) -> int:
        """Trades generated so far (all venues, one venue, or one symbol of a venue)."""
        if symbol is not None:
            v = self.venue(venue)
            si = v.symbol_index(symbol)
            if si is None:
                raise KeyError(symbol)
            return len(v.tapes[si])
        if venue is not None:
            return self.venue(venue).gen.generated
        return sum(v.gen.generated for v in self.venues.values())

    def ended(self) -> bool:
        return all(v.ended for v in self.venues.values())

    def wait_generated(self, count: int, venue: str | None = None, symbol: str | None = None,
                       timeout: float = 30.0) -> bool:
        """Block (not on the simulator's loop) until ``generated(venue, symbol) >= count``."""
        return self.wait_for(lambda: self.generated(venue, symbol) >= count, timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Block until ``predicate()`` holds; re-evaluated after every generation step (and at
        least every 50 ms).  ``predicate`` may call the control methods (``stats()``...)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            left = deadline - time.monotonic()
            if left <= 0 or not self.running:
                return bool(predicate())
            with self._cond:
                self._waiters += 1
                try:
                    self._cond.wait(min(left, 0.05))
                finally:
                    self._waiters -= 1

    # ------------------------------------------------------------------ internals
    def _flush_ground_truth(self) -> int:
        return self._gt.flush() if self._gt is not None else 0

    async def _ticker(self) -> None:
        slice_s = max(0.001, self.config.slice_ms / 1000.0)
        venues = list(self.venues.values())
        cond = self._cond
        while True:
            t = time.monotonic()
            produced = 0
            for v in venues:
                try:
                    produced += v.tick(t)
                except Exception:  # pragma: no cover - a bug must not stop the exchange
                    log.exception("%s: generation step failed", v.name)
            if self._waiters:
                with cond:
                    cond.notify_all()
            await asyncio.sleep(max(0.0, slice_s - (time.monotonic() - t)))

    async def _gt_flusher(self) -> None:
        interval = max(0.01, self.config.ground_truth_flush_ms / 1000.0)
        while True:
            await asyncio.sleep(interval)
            try:
                self._flush_ground_truth()
            except Exception:  # pragma: no cover
                log.exception("ground truth flush failed")


    def trim_history(self) -> int:
        """Drop trades older than ``history_s`` from every tape now (the trimmer does it every few
        seconds); returns trades dropped. Thread-safe."""
        if self.config.history_s is None:
            return 0

        def run() -> int:
            self._flush_ground_truth()       # what is dropped must be in the ground truth first
            written = self._gt._written if self._gt is not None else None
            now = self.sim_now_us()
            return sum(trim_venue(v, now, self.config.history_s, written) for v in self.venues.values())
        return self._call(run)

    async def _history_trimmer(self) -> None:
        # Every ~tenth of the history in wall time (at least 1 s, at most 30 s).
        interval = min(30.0, max(1.0, self.config.history_s / max(self.config.speed, 1e-9) / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                self.trim_history()
            except Exception:  # pragma: no cover - trimming must not stop the exchange
                log.exception("history trim failed")


def write_endpoints_file(path: str | os.PathLike[str], text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, p)
