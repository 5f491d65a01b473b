"""Past trades from a venue's REST history, page by page: the one pager behind the connector's
repair (``ingest/connector.py``), gap repair (``backfill/repair.py``) and historical backfill
(``backfill/history.py``).

* ``TimePager``: trades in [start_us, end_us] through the venue's pages by time
  (``history_by_time_request`` / ``parse_history_page``), the venue's cursor carried between
  pages, trades de-duplicated by id (a page may repeat its boundary);
* ``IdPager``: trades by id from ``next_id`` on (``history_by_id_request`` / ``parse_history``),
  ``page_size`` a page; ``ids_between`` and ``ids_over_time`` walk it over a range of ids or of
  time, ``first_id`` finds where a time starts (``first_id_request`` / ``first_id_at``; where the
  venue has no such request, ``search_first_id`` searches pages by id from its latest trades,
  ``head_request``: Coinbase).

Pagers do no I/O: ``next_request()`` is the next request (None: finished) and ``take(body)`` reads
its answer, so the same pager runs under the async client (connector) and the sync one (backfill):
a client's ``drain(pager)`` runs it to the end; a caller that stores between pages steps it itself.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from ..clock import now_us
from ..tick import Tick
from ..venues.base import HttpRequest, Venue, VenueOptions

Call = Callable[[HttpRequest], Any]


class TimePager:
    """Trades with start_us <= ts <= end_us (end None: up to now). After the last page:
    ``complete`` unless the venue's history ran out before the end (or ``max_pages`` ran out);
    ``ticks`` every trade, in the order the pages gave them."""

    def __init__(self, mod: type[Venue], venue_symbol: str, symbol: str, options: VenueOptions, start_us: int,
                 end_us: int | None, *, max_pages: int = 1000):
        self.mod, self.venue_symbol, self.symbol, self.options = mod, venue_symbol, symbol, options
        self.start_us, self.end_us, self.max_pages = start_us, end_us, max_pages
        self.cursor: Any = None
        self.pages = 0
        self.done = False
        self.complete = False
        self.ticks: list[Tick] = []
        self._seen: set[str] = set()

    def next_request(self) -> HttpRequest | None:
        if self.done:
            return None
        if self.pages >= self.max_pages:
            self.done, self.complete = True, False
            return None
        return self.mod.history_by_time_request(self.venue_symbol, self.start_us, self.end_us, self.options,
                                                self.cursor)

    def take(self, body: Any) -> list[Tick]:
        """One page's answer; the trades it adds."""
        ticks, self.cursor, complete = self.mod.parse_history_page(body, self.symbol, now_us(), self.options,
                                                                   self.start_us, self.end_us)
        self.pages += 1
        fresh = []
        for t in ticks:
            if t.trade_id not in self._seen:
                self._seen.add(t.trade_id)
                fresh.append(t)
        self.ticks.extend(fresh)
        if not complete:
            self.done, self.complete = True, False
        elif self.cursor is None:
            self.done, self.complete = True, True
        return fresh


def page_limit(mod: type[Venue], page_size: int | None) -> int:
    """Trades per by-id page: ``page_size`` where the venue lets the caller choose
    (``BY_ID_TAKES_LIMIT``: ``history_by_id_request(..., limit=)``), else the venue's REPAIR_PAGE."""
    if page_size and mod.BY_ID_TAKES_LIMIT:
        return max(1, min(int(page_size), int(mod.REPAIR_PAGE)))
    return int(mod.REPAIR_PAGE)


class IdPager:
    """Trades by id from ``next_id`` on. ``take(body)`` yields the page's trades whose ids are at
    or after ``next_id`` as (id, tick), in the venue's order, checked as the caller goes: the
    caller moves ``next_id`` past each trade it takes, and decides where to stop."""

    def __init__(self, mod: type[Venue], venue_symbol: str, symbol: str, options: VenueOptions, next_id: int,
                 page_size: int | None = None):
        self.mod, self.venue_symbol, self.symbol, self.options = mod, venue_symbol, symbol, options
        self.next_id = next_id
        self.page_size = page_limit(mod, page_size)
        self.limit = self.page_size       # this page's size (a walk near its end asks for fewer)
        self.rows = 0                     # rows in the last answer
        self.pages = 0

    def next_request(self) -> HttpRequest:
        if self.mod.BY_ID_TAKES_LIMIT:
            return self.mod.history_by_id_request(self.venue_symbol, self.next_id, self.options, limit=self.limit)
        return self.mod.history_by_id_request(self.venue_symbol, self.next_id, self.options)

    def parse(self, body: Any) -> list[Tick]:
        """One page's trades as the venue returned them."""
        self.rows = len(body)
        self.pages += 1
        return self.mod.parse_history(body, self.symbol, now_us(), self.options)

    def take(self, body: Any) -> Iterator[tuple[int, Tick]]:
        return self.fresh(self.parse(body))

    def fresh(self, ticks: list[Tick]) -> Iterator[tuple[int, Tick]]:
        """(id, tick) of the trades at or after next_id, checked one at a time as the caller goes."""
        for t in ticks:
            tid = self.mod.trade_id_int(t.trade_id)
            if tid >= self.next_id:
                yield tid, t

    @property
    def short(self) -> bool:
        """The last page held fewer rows than asked: the head of the venue's tape."""
        return self.rows < self.limit


def first_id(call: Call, mod: type[Venue], venue_symbol: str, at_us: int, options: VenueOptions) -> int | None:
    """The id of the first trade at or after ``at_us`` (None: none yet): the venue's own answer
    (``first_id_request``), else ``search_first_id``."""
    if mod.first_id_request is None:
        return search_first_id(call, mod, venue_symbol, at_us, options)
    return mod.first_id_at(call(mod.first_id_request(venue_symbol, at_us, options)), options)


def search_first_id(call: Call, mod: type[Venue], venue_symbol: str, at_us: int,
                    options: VenueOptions) -> int | None:
    """The id of the first trade at or after ``at_us``, for a venue that pages only by id
    (``head_request`` + ``history_by_id_request``): from the latest trades, pages further back at
    doubling distances until one starts before ``at_us``, then halving between the two. Each probe
    is one page by id whose rows' times place it: two hours back on the simulator took 3-4
    requests. Assumes trade times do not decrease with ids, and that a page with no rows below the
    newest known id lies before the venue's oldest trade."""
    def probe(lo: int, hi: int) -> list[Tick]:
        """The trades with lo <= id < hi on the page from lo, by id."""
        ticks = mod.parse_history(call(mod.history_by_id_request(venue_symbol, lo, options)), "", 0, options)
        return [t for t in ticks if lo <= mod.trade_id_int(t.trade_id) < hi]

    def first_at(ticks: list[Tick]) -> int:
        return next(mod.trade_id_int(t.trade_id) for t in ticks if t.ts_us >= at_us)

    head = mod.parse_history(call(mod.head_request(venue_symbol, options)), "", 0, options)
    if not head or head[-1].ts_us < at_us:
        return None                         # no trade at or after at_us yet
    if head[0].ts_us < at_us:
        return first_at(head)
    # The answer is `best` or an id in [lo, hi); every id >= hi is at or after at_us.
    best = hi = mod.trade_id_int(head[0].trade_id)
    lo, step, bracketed = 0, len(head), False
    while lo < hi:
        mid = (lo + hi) // 2 if bracketed else max(lo, hi - step)
        ticks = probe(mid, hi)
        if not ticks:       # no trade on the page from mid (REPAIR_PAGE ids) below hi: before the oldest
            lo, bracketed = min(hi, mid + int(mod.REPAIR_PAGE)), True
        elif ticks[0].ts_us >= at_us:
            best, hi = mod.trade_id_int(ticks[0].trade_id), mid
            step *= 2
        elif ticks[-1].ts_us < at_us:
            lo, bracketed = mod.trade_id_int(ticks[-1].trade_id) + 1, True
        else:
            return first_at(ticks)
        if mid == 0:
            bracketed = True
    return best


def ids_between(call: Call, pager: IdPager, hi: int) -> tuple[list[Tick], int]:
    """Trades with ids pager.next_id..hi as the venue returns them; (ticks, ids missing)."""
    lo = pager.next_id
    got: list[Tick] = []
    seen: set[int] = set()
    while pager.next_id <= hi:
        pager.limit = min(pager.page_size, hi - pager.next_id + 1)
        progressed = False
        for tid, t in pager.take(call(pager.next_request())):
            if tid > hi:
                pager.next_id = hi + 1
                break
            if tid not in seen:
                seen.add(tid)
                got.append(t)
            pager.next_id = tid + 1
            progressed = True
        if not progressed:
            break                      # nothing (more) at or after next_id within the range
    return got, (hi - lo + 1) - len(seen)


def ids_over_time(call: Call, pager: IdPager, to_us: int) -> tuple[list[Tick], int, bool]:
    """Trades from pager.next_id on with ts <= to_us; (ticks, ids skipped inside, reached past to_us)."""
    got: list[Tick] = []
    skipped = 0
    while True:
        ticks = pager.parse(call(pager.next_request()))
        if not ticks:
            return got, skipped, False
        for tid, t in pager.fresh(ticks):
            if t.ts_us > to_us:
                return got, skipped, True
            skipped += tid - pager.next_id
            got.append(t)
            pager.next_id = tid + 1
        if pager.short:
            return got, skipped, False
