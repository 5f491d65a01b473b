"""Historical backfill: load a venue's trades for symbols and a time range from its REST history
into ``ticks`` (source 'backfill'), page by page, resumably, and vouch for the loaded span in
``coverage``.

How a venue pages its history is its contract's ``BACKFILL_BY`` (``backfill_by``): "id" (Binance,
Coinbase), "time" (Kraken, Bitfinex, Gate.io, Alpaca, OKX); a venue whose REST keeps only its
latest trades (Bybit, KuCoin, Bitstamp) fails with its contract's ``NO_BACKFILL`` reason.

By id, per symbol:

1. where the range starts: the first trade id at or after ``start`` (``first_id_request`` +
   ``first_id_at``: Binance ``aggTrades?startTime`` gives its ``f``; a venue without such a
   request, Coinbase, is searched over pages by id, ``rest.pager.search_first_id``), and, for
   progress, the first id at or after ``end``;
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

By time, per symbol (``_TimeLoader``): the range an hour (``window_us``) at a time, each window's
pages in full (``TimePager``: the venue's own cursor), then its ticks, its coverage (or, where the
venue's history did not cover it, an unrepairable gap) and the cursor (loaded-to time) in one
session; a restarted load continues from the cursor. Windows end at our clock less the venue's
lateness; a range past it stops ``incomplete``.

Pages come from ``marketdata.rest.pager``, REST calls from ``marketdata.rest.client.VenueRest``
(429/418 Retry-After, backoff, weight budget). No Dagster: the ``historical_backfill`` job and
``marketdata backfill`` both call ``load_history``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .. import venues as venue_registry
from ..clock import format_us, now_us
from ..gap import Gap
from ..tick import Tick
from ..rest.client import RestError, VenueRest
from ..rest.pager import IdPager, TimePager, first_id, page_limit
from ..venues.base import Venue, VenueOptions
from . import store as S

log = logging.getLogger("marketdata.backfill")

ProgressCallback = Callable[[S.Progress], None]


DEFAULT_WINDOW_US = 3_600_000_000      # a venue paged by time: stored (and resumable) an hour at a time
MAX_WINDOW_PAGES = 10_000              # pages of one window before it is given up as not covered


class BackfillError(RuntimeError):
    pass




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

    def __init__(self, ch, rest: VenueRest, mod: type[Venue], options: VenueOptions, p: S.Progress,
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
        self.lateness = int(mod.LATENESS_US)

    def first_id(self, at_us: int) -> int | None:
        return first_id(self.rest.call, self.mod, self.vs, at_us, self.options)

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
        p, end = self.p, self.p.to_us
        pager = IdPager(self.mod, self.vs, p.symbol, self.options, int(p.next_id), self.page_size)
        head_clock: int | None = None           # venue clock read just before the last page
        since_flush = 0
        while True:
            if stop() or (max_pages is not None and self.pages_this_run >= max_pages):
                p.status = "running"
                p.detail = "stopped before the end; run again to continue"
                break
            page = pager.take(self.rest.call(pager.next_request()))
            p.pages += 1
            self.pages_this_run += 1
            since_flush += 1
            done = False
            for tid, t in page:
                if t.ts_us >= end:
                    done = True
                    break
                if tid > pager.next_id:
                    self.hole(pager.next_id, tid - 1, t.ts_us)
                pager.next_id = tid + 1
                self.last_ts = t.ts_us
                if t.ts_us >= p.from_us:
                    t.source = "backfill"
                    self.ticks.append(t)
                    p.trades += 1
                    self.trades_this_run += 1
            p.next_id = str(pager.next_id)
            if done:
                self.bound = end - 1
                p.status, p.detail = "done", ""
                break
            if not pager.short:
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
                 rest_url: str, options: Mapping[str, Any] | None = None, page_size: int | None = None,
                 weight_fraction: float = 0.5, restart: bool = False, flush_pages: int = 20,
                 max_pages: int | None = None, on_progress: ProgressCallback | None = None,
                 stop: Callable[[], bool] | None = None, rest: VenueRest | None = None,
                 window_us: int = DEFAULT_WINDOW_US) -> HistoryResult:
    """Load ``venue``'s trades of ``symbols`` with start_us <= ts < end_us into ticks; see module doc.
    A venue whose REST cannot page its history raises ``BackfillError`` naming why (``backfill_by``).

    ``max_pages`` (per symbol, per call) and ``stop`` end a load early, resumably (a venue paged by
    time stops between windows of ``window_us``). Errors of one
    symbol do not stop the others; they are raised together at the end as ``BackfillError``
    (after every symbol's progress is stored)."""
    if end_us <= start_us:
        raise ValueError(f"empty range: {format_us(start_us)} .. {format_us(end_us)}")
    mod = venue_registry.get(venue)
    by = backfill_by(mod)
    options = mod.validate_options(options)
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
                if by == "time":
                    loader = _TimeLoader(ch, rest, mod, options, venue, sym, vsyms[sym], start_us, end_us, p,
                                         window_us, on_progress)
                else:
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


def backfill_by(mod: type[Venue]) -> str:
    """How a historical backfill pages this venue's REST: "id" or "time" (its contract's
    ``BACKFILL_BY``); ``BackfillError`` with its ``NO_BACKFILL`` reason otherwise."""
    by = mod.BACKFILL_BY
    if by == "id":
        if mod.first_id_request is None and mod.head_request is None:
            raise BackfillError(f"venue {mod.NAME} has no way to find the trade id at a time "
                                "(first_id_request or head_request)")
        if not mod.SEQUENTIAL_IDS:
            raise BackfillError(f"venue {mod.NAME}: trade ids are not sequential; history by id cannot prove "
                                "a span complete")
        return by
    if by == "time" and mod.history_by_time_request is not None:
        return by
    raise BackfillError(f"venue {mod.NAME} cannot be backfilled from REST: {mod.NO_BACKFILL}")


def backfill_venues() -> dict[str, str]:
    """Venue -> "" where a historical backfill works, else the reason it cannot."""
    out = {}
    for name in venue_registry.names():
        try:
            backfill_by(venue_registry.get(name))
            out[name] = ""
        except BackfillError as e:
            out[name] = str(e)
    return out


class _TimeLoader:
    """One symbol's load from a venue that pages its history by time: the range in windows of
    ``window_us``, each window's pages (``TimePager``) read whole, then in one ClickHouse session
    its trades, its coverage -- or, when the venue's history did not cover the window, an
    unrepairable gap for it (its minutes stay incomplete) -- and the cursor (``loaded_to_us``, the
    window's end), from which a restarted load goes on. The load ends at the head of the tape: a
    window is read only once our clock, less the venue's lateness, is past its end (venues paged by
    time publish no clock); short of the range's end the load stops ``incomplete``."""

    def __init__(self, ch, rest: VenueRest, mod: type[Venue], options: VenueOptions, venue: str, sym: str, vs: str,
                 start_us: int, end_us: int, p: S.Progress | None, window_us: int,
                 on_progress: ProgressCallback | None):
        if p is None:
            p = S.Progress(venue, sym, start_us, end_us, loaded_to_us=start_us, started_us=now_us())
        p.status, p.detail = "running", ""
        self.ch, self.rest, self.mod, self.options, self.p, self.vs = ch, rest, mod, options, p, vs
        self.window_us = max(1, int(window_us))
        self.on_progress = on_progress
        self.lateness = int(mod.LATENESS_US)
        self.all_gaps: list[Gap] = []
        self.trades_this_run = 0
        self.pages_this_run = 0

    def window(self, w0: int, w1: int) -> None:
        """Trades with w0 <= ts < w1, stored with their coverage or gap and the cursor."""
        p = self.p
        pager = TimePager(self.mod, self.vs, p.symbol, self.options, w0, w1 - 1, max_pages=MAX_WINDOW_PAGES)
        while (req := pager.next_request()) is not None:
            pager.take(self.rest.call(req))
            p.pages += 1
            self.pages_this_run += 1
        ticks = [t for t in pager.ticks if w0 <= t.ts_us < w1]      # a page may reach past the window
        for t in ticks:
            t.source = "backfill"
        coverage, gaps = [], []
        if pager.complete:
            coverage.append((p.exchange, p.symbol, w0, w1 - 1, "backfill"))
        else:
            now = now_us()
            gaps.append(Gap(p.exchange, p.symbol, f"backfill:{w0}:{w1 - 1}", w0, w1 - 1, "", "", "backfill",
                            "unrepairable", "", len(ticks), now, now,
                            "venue history does not cover this span (historical backfill)"))
            log.warning("%s %s: venue history does not cover %s..%s; those minutes stay incomplete",
                        p.exchange, p.symbol, format_us(w0), format_us(w1))
        p.trades += len(ticks)
        self.trades_this_run += len(ticks)
        self.all_gaps.extend(gaps)
        p.loaded_to_us = w1
        S.write(self.ch, ticks=ticks, coverage=coverage, gaps=gaps, progress=[p])
        if self.on_progress:
            self.on_progress(p)

    def run(self, *, max_pages: int | None, stop: Callable[[], bool]) -> None:
        p = self.p
        head = now_us() - self.lateness
        last = min(p.to_us, head)
        while p.loaded_to_us < last:
            if stop() or (max_pages is not None and self.pages_this_run >= max_pages):
                p.status = "running"
                p.detail = "stopped before the end; run again to continue"
                break
            self.window(p.loaded_to_us, min(p.loaded_to_us + self.window_us, last))
        else:
            if p.loaded_to_us >= p.to_us:
                p.status, p.detail = "done", ""
            else:
                p.status = "incomplete"
                p.detail = (f"the venue's tape reaches only {format_us(head)}; "
                            "run again later to load the rest of the range")
        S.write(self.ch, progress=[p])
        if self.on_progress:
            self.on_progress(p)


def _start(ch, rest: VenueRest, mod: type[Venue], options: VenueOptions, venue: str, sym: str, vs: str,
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
