"""Coverage holes: uncovered spans between a symbol's covered spans that no gap row explains,
recorded as gaps so the gap repair brings them back.

A connector covers a symbol's tape contiguously and leaves a span uncovered only where it records
a gap (``marketdata.gaps``). An uncovered span between two covered spans WITHOUT a gap row means
stream entries were lost after the connector counted them published -- ticks and coverage marks
together (a Redis failover that promoted a replica that was behind, an AOF lost with a crashed
Redis), or a connector whose sequence state was lost restarted later. The audit names those
minutes incomplete; this module gives them a gap row, so ``repair.find_repairable_gaps`` /
``repair_gaps`` refetch them from REST history by time like any other gap.

Per (exchange, symbol), over the window [now - horizon_us, now - settle_us):

* the merged coverage intervals inside the window (``bars.coverage.merged_coverage_sql``);
* a hole is the span between two consecutive intervals, ``[prev_to + 1, next_from - 1]``; its gap
  record spans ``[prev_to + 1, end of the first coverage mark after it + 1]`` (clipped to the
  covered span after it): the lost entries also held trades queued after their last mark, whose
  timestamps lie up to there (see ``find_coverage_holes``). repair_gap's by-time path refetches
  the trades with from_us <= ts <= to_us and covers that span, so a repaired hole closes;
* nothing before the first interval (where data begins, or older than the horizon), nothing after
  the last, nothing whose following coverage starts inside the settle window (marks still on
  their way; persist already holds a mark back while an older entry of its stream is pending
  with another consumer, so a hole is never just out of order);
* a hole overlapped by any gap row (any status) is explained and left alone -- including a hole
  recorded here earlier, which makes recording idempotent (its gap_id is also derived from its
  bounds, so a concurrent second record replaces the first).

Each hole is recorded ``open`` with found_by ``coverage_hole`` and no ids. For a venue whose REST
history cannot be read by time (``can_repair_by_time`` is False: okx, coinbase, gateio, bitstamp)
it is recorded ``unrepairable`` at once, with the reason: its minutes stay incomplete, never
filled, and the repair does not keep offering it.

Connectors keep covering a quiet market while subscribed (Alpaca outside NYSE sessions included:
coverage advances to the venue clock estimated from the last trade, ``ingest.sequence``), and a
reconnect or restart span is a recorded gap, so legitimate spans are not flagged.

The set work is SQL (window functions over the bounded window); ``find_holes`` is the small
pure-Python reference the tests hold the SQL to. No Dagster here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from .. import venues as venue_registry
from ..bars.coverage import merge_intervals, merged_coverage_sql
from ..clock import US_PER_HOUR, US_PER_MINUTE, now_us
from ..gap import Gap
from . import store as S
from .repair import can_repair_by_time

FOUND_BY = "coverage_hole"
DEFAULT_HORIZON_US = 6 * US_PER_HOUR
DEFAULT_SETTLE_US = 10 * US_PER_MINUTE
MAX_HOLES = 1000


@dataclass(frozen=True)
class Hole:
    exchange: str
    symbol: str
    from_us: int          # the last covered µs before it + 1
    to_us: int            # the next covered µs after it - 1
    next_to_us: int = 0   # the end of the covered span after it (clipped to the window)
    repair_to_us: int = 0  # where its gap record ends: see ``find_coverage_holes``

    @property
    def gap_id(self) -> str:
        return f"{FOUND_BY}:{self.from_us}:{self.to_us}"


# --- pure-Python reference ---------------------------------------------------------------------

def find_holes(intervals: Iterable[tuple[int, int]], gaps: Iterable[tuple[int, int]],
               start_us: int, end_us: int) -> list[tuple[int, int]]:
    """One symbol: the uncovered spans between the merged ``intervals`` that intersect
    [start_us, end_us), not overlapped by any of ``gaps`` ([from_us, to_us], inclusive)."""
    merged = merge_intervals((a, b) for a, b in intervals if b >= start_us and a < end_us)
    gaps = list(gaps)
    out = []
    for (_, prev_to), (next_from, _) in zip(merged, merged[1:]):
        f, t = prev_to + 1, next_from - 1
        if not any(gf <= t and gt >= f for gf, gt in gaps):
            out.append((f, t))
    return out


# --- ClickHouse --------------------------------------------------------------------------------

def _holes_sql(filt: str) -> str:
    return f"""
    SELECT exchange, symbol, assumeNotNull(prev_to) + 1 AS hole_from, next_from - 1 AS hole_to, next_to
    FROM (
        SELECT exchange, symbol, from_us AS next_from, to_us AS next_to,
               lagInFrame(toNullable(to_us)) OVER (PARTITION BY exchange, symbol ORDER BY from_us
                                                   ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev_to
        FROM ({merged_coverage_sql(filt)})
    )
    WHERE prev_to IS NOT NULL
    ORDER BY exchange, symbol, hole_from
    LIMIT {{limit:UInt32}}
    """


def uncovered_between(ch, start_us: int, end_us: int, exchanges: Iterable[str] | None = None,
                      limit: int = MAX_HOLES) -> list[Hole]:
    """Spans between covered spans inside [start_us, end_us), explained or not."""
    filt, params = "", {"start_us": start_us, "end_us": end_us, "limit": limit}
    if exchanges is not None:
        filt = "AND exchange IN {exchanges:Array(String)}"
        params["exchanges"] = list(exchanges)
    return [Hole(str(ex), str(sym), int(f), int(t), int(n)) for ex, sym, f, t, n in ch.rows(_holes_sql(filt), params)]


def find_coverage_holes(ch, *, now: int | None = None, horizon_us: int = DEFAULT_HORIZON_US,
                        settle_us: int = DEFAULT_SETTLE_US, exchanges: Iterable[str] | None = None,
                        limit: int = MAX_HOLES) -> list[Hole]:
    """The unexplained holes (see module doc), oldest first per pair."""
    now = now_us() if now is None else now
    start, end = now - horizon_us, now - settle_us
    exchanges = list(exchanges) if exchanges is not None else None
    if end <= start or exchanges == []:
        return []
    holes = uncovered_between(ch, start, end, exchanges, limit)
    if not holes:
        return []
    gaps: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for ex, sym, f, t in ch.rows(
            "SELECT exchange, symbol, from_us, to_us FROM marketdata.gaps FINAL "
            "WHERE (exchange, symbol) IN {pairs:Array(Tuple(String, String))} "
            "AND from_us <= {hi:Int64} AND to_us >= {lo:Int64}",
            {"pairs": sorted({(h.exchange, h.symbol) for h in holes}),
             "lo": min(h.from_us for h in holes), "hi": max(h.to_us for h in holes)}):
        gaps.setdefault((str(ex), str(sym)), []).append((int(f), int(t)))
    holes = [h for h in holes
             if not any(gf <= h.to_us and gt >= h.from_us for gf, gt in gaps.get((h.exchange, h.symbol), ()))]
    if not holes:
        return []
    # The entries lost with the hole's marks also held the trades queued after their last mark
    # (a mark vouches up to the newest trade - 1 when it is made; trades that arrive before the
    # flush share its entry). Their timestamps are at most the newest trade when the first mark
    # after the hole was made: that mark's end + 1. So the gap record reaches to there (clipped to
    # the covered span, never into the next hole): the repair refetches those trades too -- one
    # persisted mark's worth, already stored ones collapse -- and covers what it refetched.
    first_mark = {(str(ex), str(sym), int(f)): int(t) for ex, sym, f, t in ch.rows(
        "SELECT exchange, symbol, from_us, max(to_us) FROM marketdata.coverage "
        "WHERE (exchange, symbol, from_us) IN {keys:Array(Tuple(String, String, Int64))} "
        "GROUP BY exchange, symbol, from_us",
        {"keys": [(h.exchange, h.symbol, h.to_us + 1) for h in holes]})}
    return [replace(h, repair_to_us=min(first_mark.get((h.exchange, h.symbol, h.to_us + 1), h.to_us) + 1,
                                        max(h.next_to_us, h.to_us + 1)))
            for h in holes]


def _repairable(exchange: str) -> bool:
    try:
        mod = venue_registry.get(exchange)
    except KeyError:
        return True          # an unknown venue: the repair says why it skips it
    # no config here: the venue's default options (no venue's option changes how it pages by time)
    return can_repair_by_time(mod, mod.Options())


def record_coverage_holes(ch, **kw) -> list[Gap]:
    """Find the unexplained holes (``find_coverage_holes`` arguments) and record each as a gap:
    ``open`` for the gap repair, or ``unrepairable`` where the venue cannot be read by time.
    Returns the records written (none on a second run)."""
    holes = find_coverage_holes(ch, **kw)
    if not holes:
        return []
    t = S.version_us()
    recs = []
    for h in holes:
        ok = _repairable(h.exchange)
        recs.append(Gap(h.exchange, h.symbol, h.gap_id, h.from_us, h.repair_to_us, "", "", FOUND_BY,
                        "open" if ok else "unrepairable", "", 0, t, t,
                        "uncovered span between covered spans with no gap row (stream entries lost "
                        "after publish?)" + ("" if ok else f"; {h.exchange} REST history cannot be "
                                                           "read by time, so it cannot be refetched")))
    S.write(ch, gaps=recs)
    return recs
