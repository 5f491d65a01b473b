"""Historical backfill: load a venue's trades for symbols and a time range from its REST history
into ``ticks`` (source 'backfill'), page by page, resumably, and vouch for the loaded span in
``coverage``.

Per symbol (Binance today; any venue module with the same functions works):

1. where the range starts: the first trade id at or after ``start`` (``first_id_request`` +
   ``first_id_at``: Binance ``aggTrades?startTime`` gives its ``f``), and, for progress, the
   first id at or after ``end``;
2. pages by id (``history_by_id_request``, Binance ``historicalTrades?fromId``) until a trade at
   or after ``end``. Ids are consecutive, so a page that skips ids means the venue cannot give
   those trades back: the hole is recorded in ``gaps`` as unrepairable (found_by 'backfill') and
   its span [trade before, trade after] is left out of coverage, so its minutes stay incomplete;
3. every ``flush_pages`` pages, in one ClickHouse session: the ticks, any gap records, the coverage
   of what is now loaded (up to 1 µs before the last trade's time, as a trade with the same time
   may be on the next page), and the progress cursor (``marketdata.backfill_progress``: next id,
   loaded-to time, trades, pages, status). A restarted load reads the cursor and continues from
   its next id; a load already ``done`` is skipped (``restart=True`` starts over);
4. at the head of the tape (a short page before ``end``): complete to ``end`` when the venue's
   clock, read before the last page, is past ``end`` (less the venue's lateness); otherwise the
   load stops ``incomplete`` with coverage up to the venue clock, and a later run continues.

REST calls go through ``VenueRest`` (429/418 Retry-After, backoff, weight budget). No Dagster:
the ``historical_backfill`` job and ``marketdata backfill`` both call ``load_history``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

from .. import venues as venue_registry
from ..clock import format_us, now_us
from ..gap import Gap
from ..tick import Tick
from . import store as S
from .rest import RestError, VenueRest

log = logging.getLogger("marketdata.backfill")

ProgressCallback = Callable[[S.Progress], None]


class BackfillError(RuntimeError):
    pass


def _takes_limit(mod: ModuleType) -> bool:
    import inspect
    return "limit" in inspect.signature(mod.history_by_id_request).parameters


def page_limit(mod: ModuleType, page_size: int | None) -> int:
    """Trades per by-id page: ``page_size`` where the venue module lets the caller choose
    (``history_by_id_request(..., limit=)``), else the module's REPAIR_PAGE."""
    if page_size and _takes_limit(mod):
        return max(1, min(int(page_size), int(mod.REPAIR_PAGE)))
    return int(mod.REPAIR_PAGE)


def by_id_request(mod: ModuleType, venue_symbol: str, from_id: int, options: dict, limit: int):
    if _takes_limit(mod):
        return mod.history_by_id_request(venue_symbol, from_id, options, limit=limit)
    return mod.history_by_id_request(venue_symbol, from_id, options)


@dataclass
class HistoryResult:
    venue: str
    from_us: int
    to_us: int
    symbols: list[S.Progress] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)       # holes the venue's history has
    skipped: list[str] = field(default_factory=list)    # symbols already done (not reloaded)
    errors: dict[str, str] = field(default_factory=dict)
    rest: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    trades_this_run: int = 0
    pages_this_run: int = 0

    @property
    def trades(self) -> int:
        return sum(p.trades for p in self.symbols)

    @property
    def pages(self) -> int:
        return sum(p.pages for p in self.symbols)

    @property
    def done(self) -> bool:
        return not self.errors and all(p.status == "done" for p in self.symbols)

    @property
    def pct(self) -> float:
        return round(sum(p.pct for p in self.symbols) / len(self.symbols), 2) if self.symbols else 100.0


class _Loader:
    """One symbol's load; state between pages."""

    def __init__(self, ch, rest: VenueRest, mod: ModuleType, options: dict, p: S.Progress,
                 venue_symbol: str, page_size: int, flush_pages: int,
                 on_progress: ProgressCallback | None):
        self.ch, self.rest, self.mod, self.options, self.p = ch, rest, mod, options, p
        self.vs, self.page_size, self.flush_pages = venue_symbol, page_size, flush_pages
        self.on_progress = on_progress
        self.ticks: list[Tick] = []
        self.spans: list[tuple[int, int]] = []
        self.gaps: list[Gap] = []
        self.all_gaps: list[Gap] = []
        self.cov_from = p.loaded_to_us            # first µs not yet vouched for
        self.bound = p.loaded_to_us - 1           # vouched up to here once flushed
        self.last_ts = p.loaded_to_us             # time of the trade before the next one
        self.trades_this_run = 0
        self.pages_this_run = 0
        self.lateness = int(getattr(mod, "LATENESS_US", 2_000_000))

    def first_id(self, at_us: int) -> int | None:
        return self.mod.first_id_at(self.rest.call(self.mod.first_id_request(self.vs, at_us, self.options)),
                                    self.options)

    def flush(self) -> None:
        p = self.p
        if self.bound >= self.cov_from:
            self.spans.append((self.cov_from, self.bound))
            self.cov_from = self.bound + 1
        p.loaded_to_us = max(p.loaded_to_us, self.bound + 1)
        S.write(self.ch, ticks=self.ticks,
                coverage=[(p.exchange, p.symbol, f, t, "backfill") for f, t in self.spans],
                gaps=self.gaps, progress=[p])
        self.ticks, self.spans, self.gaps = [], [], []

    def hole(self, lo: int, hi: int, after_ts: int) -> None:
        """The venue's history lacks ids lo..hi (between the trade at last_ts and one at after_ts)."""
        p, now = self.p, now_us()
        g = Gap(p.exchange, p.symbol, f"backfill:{lo}:{hi}", self.last_ts, after_ts, str(lo), str(hi),
                "backfill", "unrepairable", "", 0, now, now,
                "venue history skips these ids (historical backfill)")
        self.gaps.append(g)
        self.all_gaps.append(g)
        if self.last_ts - 1 >= self.cov_from:
            self.spans.append((self.cov_from, self.last_ts - 1))
        self.cov_from = after_ts + 1
        self.bound = max(self.bound, after_ts)
        log.warning("%s %s: venue history lacks trade ids %d..%d (%s..%s); those minutes stay incomplete",
                    p.exchange, p.symbol, lo, hi, format_us(self.last_ts), format_us(after_ts))

    def run(self, *, max_pages: int | None, stop: Callable[[], bool]) -> None:
        p, mod, end = self.p, self.mod, self.p.to_us
        expected = int(p.next_id)
        head_clock: int | None = None           # venue clock read just before the last page
        since_flush = 0
        while True:
            if stop() or (max_pages is not None and self.pages_this_run >= max_pages):
                p.status = "running"
                p.detail = "stopped before the end; run again to continue"
                break
            body = self.rest.call(by_id_request(mod, self.vs, expected, self.options, self.page_size))
            ticks = mod.parse_history(body, p.symbol, now_us(), self.options)
            p.pages += 1
            self.pages_this_run += 1
            since_flush += 1
            done = False
            for t in ticks:
                tid = mod.trade_id_int(t.trade_id)
                if tid < expected:
                    continue
                if t.ts_us >= end:
                    done = True
                    break
                if tid > expected:
                    self.hole(expected, tid - 1, t.ts_us)
                expected = tid + 1
                self.last_ts = t.ts_us
                if t.ts_us >= p.from_us:
                    t.source = "backfill"
                    self.ticks.append(t)
                    p.trades += 1
                    self.trades_this_run += 1
            p.next_id = str(expected)
            if done:
                self.bound = end - 1
                p.status, p.detail = "done", ""
                break
            if len(body) >= self.page_size:
                self.bound = max(self.bound, self.last_ts - 1)
                head_clock = None
            elif head_clock is None:
                # Short page: the head of the tape. Read the venue clock, then page once more:
                # that page holds every trade up to the clock.
                head_clock = self.rest.server_time_us()
                if head_clock is None:
                    self.bound = max(self.bound, self.last_ts - 1)
                    p.status = "incomplete"
                    p.detail = "reached the head of the venue's tape before the end of the range"
                    break
                self.bound = max(self.bound, self.last_ts - 1)
            else:
                vouch = head_clock - self.lateness
                if vouch >= end - 1:
                    self.bound = end - 1
                    p.status, p.detail = "done", ""
                else:
                    self.bound = max(self.bound, min(vouch, end - 1), self.last_ts - 1)
                    p.status = "incomplete"
                    p.detail = (f"the venue's tape reaches only {format_us(head_clock)}; "
                                "run again later to load the rest of the range")
                break
            if since_flush >= self.flush_pages:
                self.flush()
                since_flush = 0
                if self.on_progress:
                    self.on_progress(p)
        self.flush()
        if self.on_progress:
            self.on_progress(p)


def load_history(ch, venue: str, symbols: list[str], start_us: int, end_us: int, *,
                 rest_url: str, options: dict | None = None, page_size: int | None = None,
                 weight_fraction: float = 0.5, restart: bool = False, flush_pages: int = 20,
                 max_pages: int | None = None, on_progress: ProgressCallback | None = None,
                 stop: Callable[[], bool] | None = None, rest: VenueRest | None = None) -> HistoryResult:
    """Load ``venue``'s trades of ``symbols`` with start_us <= ts < end_us into ticks; see module doc.

    ``max_pages`` (per symbol, per call) and ``stop`` end a load early, resumably. Errors of one
    symbol do not stop the others; they are raised together at the end as ``BackfillError``
    (after every symbol's progress is stored)."""
    if end_us <= start_us:
        raise ValueError(f"empty range: {format_us(start_us)} .. {format_us(end_us)}")
    mod = venue_registry.get(venue)
    for fn in ("first_id_request", "first_id_at", "history_by_id_request", "parse_history"):
        if not hasattr(mod, fn):
            raise BackfillError(f"venue {venue} has no REST trade history by time and id ({fn})")
    if not getattr(mod, "SEQUENTIAL_IDS", False):
        raise BackfillError(f"venue {venue}: trade ids are not sequential; history by id cannot prove a span complete")
    options = dict(options or {})
    page_size = page_limit(mod, page_size)
    stop = stop or (lambda: False)
    t0 = time.monotonic()
    own = rest is None
    rest = rest or VenueRest(venue, rest_url, weight_fraction=weight_fraction, stop=stop)
    res = HistoryResult(venue, start_us, end_us)
    try:
        vsyms = rest.venue_symbols(list(symbols))
        for sym in symbols:
            p = None if restart else S.read_progress(ch, venue, sym, start_us, end_us)
            if p is not None and p.status == "done":
                log.info("%s %s: %s..%s already loaded (%d trades); skipping (restart to reload)",
                         venue, sym, format_us(start_us), format_us(end_us), p.trades)
                res.symbols.append(p)
                res.skipped.append(sym)
                continue
            try:
                loader = _start(ch, rest, mod, options, venue, sym, vsyms[sym], start_us, end_us, p,
                                page_size, flush_pages, on_progress)
                if loader is not None:
                    loader.run(max_pages=max_pages, stop=stop)
                    res.gaps.extend(loader.all_gaps)
                    res.trades_this_run += loader.trades_this_run
                    res.pages_this_run += loader.pages_this_run
                    p = loader.p
                else:
                    p = S.read_progress(ch, venue, sym, start_us, end_us)
                log.info("%s %s: %s, %d trades in %d pages (%.1f%%)", venue, sym, p.status, p.trades, p.pages, p.pct)
                res.symbols.append(p)
            except (RestError, ValueError, KeyError) as e:
                res.errors[sym] = f"{type(e).__name__}: {e}"
                log.error("%s %s: backfill failed: %s (progress is kept; run again to continue)", venue, sym, e)
                failed = S.read_progress(ch, venue, sym, start_us, end_us)
                if failed is not None:
                    failed.status, failed.detail = "failed", str(e)[:500]
                    S.write(ch, progress=[failed])
                    res.symbols.append(failed)
    finally:
        res.rest = rest.stats.as_dict()
        res.elapsed_s = round(time.monotonic() - t0, 3)
        if own:
            rest.close()
    if res.errors:
        raise BackfillError("; ".join(f"{venue} {s}: {e}" for s, e in res.errors.items()))
    return res


def _start(ch, rest: VenueRest, mod: ModuleType, options: dict, venue: str, sym: str, vs: str,
           start_us: int, end_us: int, p: S.Progress | None, page_size: int, flush_pages: int,
           on_progress: ProgressCallback | None) -> _Loader | None:
    """A loader positioned at the cursor (or at the range start); None when there is nothing to
    page through (no trade at or after start yet: coverage by the venue clock)."""
    fresh = p is None or not p.next_id
    if fresh:
        p = S.Progress(venue, sym, start_us, end_us, loaded_to_us=start_us, started_us=now_us())
    loader = _Loader(ch, rest, mod, options, p, vs, page_size, flush_pages, on_progress)
    if fresh:
        first = loader.first_id(start_us)
        if first is None:
            clock = rest.server_time_us()
            vouch = min(end_us - 1, clock - loader.lateness) if clock else start_us - 1
            p.status = "done" if vouch >= end_us - 1 else "incomplete"
            p.detail = "no trades in the range" if p.status == "done" else "the venue's tape has not reached the range"
            p.loaded_to_us = max(start_us, vouch + 1)
            cov = [(venue, sym, start_us, vouch, "backfill")] if vouch >= start_us else []
            S.write(ch, coverage=cov, progress=[p])
            if on_progress:
                on_progress(p)
            return None
        p.first_id = p.next_id = str(first)
    if not p.end_id:
        end_first = loader.first_id(end_us)
        p.end_id = str(end_first) if end_first is not None else ""
    p.status, p.detail = "running", ""
    S.write(ch, progress=[p])
    if on_progress:
        on_progress(p)
    return loader
