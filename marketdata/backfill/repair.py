"""Gap repair from REST history, outside the connectors: for gaps recorded in ``marketdata.gaps``
that are still ``open`` (a connector died before repairing them) or ``unrepairable`` (repair was
off, or the venue could not give the trades back at the time) -- refetch the missing trades,
store them, and record what became of each gap.

Per gap (``repair_gap``):

* by id where the gap names its ids (Binance: ``historicalTrades?fromId``): pages from ``from_id``
  until ``to_id``; every id in [from_id, to_id] must come back;
* by time otherwise: for a venue with sequential ids, the first trade id at ``from_us``
  (``first_id_request``; Binance ``aggTrades?startTime``), then by id until a trade after
  ``to_us`` -- the span must come back without a skipped id; for a venue that repairs by time
  (``REPAIR_BY = "time"``: ``history_by_time_request`` / ``parse_history_page``, the connector's
  protocol), its pages over [from_us, to_us] -- the venue must not run out of history;
* the trades that came back go into ``ticks`` (source 'rest'; a trade stored before collapses
  with it);
* only when every missing trade came back: coverage for the gap's span [from_us, to_us] (the
  trade before the hole .. the trade after it: exactly what the connector left uncovered) and the
  gap record ``repaired`` (repaired_by rest_by_id | rest_by_time, recovered = trades);
* otherwise: no coverage -- the gap stays ``unrepairable``, its minutes incomplete -- and the
  record says how many ids the venue did not return.

Each attempt is counted in ``marketdata.gap_repair_attempts``; ``find_repairable_gaps`` offers an
open gap once the live connector had its chance (``open_grace_us``; at once for a
``coverage_hole``, which no connector will repair: ``coverage_holes``) and retries an unrepairable
gap at most ``max_attempts`` times, ``retry_interval_us`` apart -- so a gap the venue will never
give back does not keep the repair busy.

``repair_gaps`` returns the hours whose bars changed, for the caller to rebuild (the Dagster job
``gap_repair_job`` does, with ``rebuild_hours``). No Dagster here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .. import venues as venue_registry
from ..clock import US_PER_HOUR, US_PER_MINUTE, now_us
from ..config import VenueConfig
from ..gap import Gap
from ..persist.rows import GAP_COLUMNS
from ..rest.client import RestError, VenueRest
from ..rest.pager import IdPager, TimePager, first_id, ids_between, ids_over_time
from ..venues.base import Venue, VenueOptions
from . import store as S

log = logging.getLogger("marketdata.repair")

DEFAULT_OPEN_GRACE_US = 5 * US_PER_MINUTE
DEFAULT_RETRY_INTERVAL_US = US_PER_HOUR
DEFAULT_MAX_ATTEMPTS = 3
MAX_IDS_PER_GAP = 5_000_000          # a "gap" wider than this is a backfill, not a repair


@dataclass
class GapOutcome:
    gap: Gap                          # the record as written (or as found, when skipped)
    result: str                       # repaired | unrepairable | failed | skipped
    recovered: int = 0
    missing: int = 0                  # ids the venue did not return
    detail: str = ""

    @property
    def changed_hours(self) -> list[int]:
        """Hour starts (µs) whose bars may change: the gap's span, when trades came back."""
        if self.result not in ("repaired", "unrepairable") or (self.result == "unrepairable" and not self.recovered):
            return []
        g = self.gap
        return list(range(g.from_us // US_PER_HOUR * US_PER_HOUR, max(g.from_us, g.to_us) + 1, US_PER_HOUR))


@dataclass
class RepairReport:
    outcomes: list[GapOutcome] = field(default_factory=list)
    rest: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def repaired(self) -> int:
        return self.count("repaired")

    @property
    def unrepairable(self) -> int:
        return self.count("unrepairable")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def trades_recovered(self) -> int:
        return sum(o.recovered for o in self.outcomes)

    @property
    def hours(self) -> list[int]:
        return sorted({h for o in self.outcomes for h in o.changed_hours})


# --- which gaps ------------------------------------------------------------------------------

FIND_SQL = f"""
SELECT {', '.join('g.' + c for c in GAP_COLUMNS)}, a.attempts
FROM (SELECT * FROM marketdata.gaps FINAL
      WHERE status IN ('open', 'unrepairable') __FILTER__) AS g
LEFT JOIN (SELECT exchange, symbol, gap_id, attempts, last_attempt_us
           FROM marketdata.gap_repair_attempts FINAL) AS a
  ON a.exchange = g.exchange AND a.symbol = g.symbol AND a.gap_id = g.gap_id
WHERE (g.status = 'unrepairable' OR g.found_by = 'coverage_hole' OR g.detected_us <= {{open_before:Int64}})
  AND a.attempts < {{max_attempts:UInt32}}
  AND a.last_attempt_us <= {{retry_before:Int64}}
ORDER BY g.detected_us, g.exchange, g.symbol, g.gap_id
LIMIT {{limit:UInt32}}
SETTINGS join_use_nulls = 0
"""


def find_repairable_gaps(ch, *, now: int | None = None, exchanges: Iterable[str] | None = None,
                         open_grace_us: int = DEFAULT_OPEN_GRACE_US,
                         retry_interval_us: int = DEFAULT_RETRY_INTERVAL_US,
                         max_attempts: int = DEFAULT_MAX_ATTEMPTS, gap_ids: Iterable[str] | None = None,
                         limit: int = 1000) -> list[Gap]:
    """Gaps worth a repair attempt now, oldest first (see module doc). ``gap_ids`` narrows to
    those gaps (still subject to status, grace and attempts)."""
    now = now_us() if now is None else now
    filt, params = "", {}
    exchanges = list(exchanges) if exchanges is not None else None
    if exchanges is not None:
        if not exchanges:
            return []
        filt += " AND exchange IN {exchanges:Array(String)}"
        params["exchanges"] = exchanges
    if gap_ids is not None:
        gap_ids = list(gap_ids)
        if not gap_ids:
            return []
        filt += " AND gap_id IN {gap_ids:Array(String)}"
        params["gap_ids"] = gap_ids
    params.update({"open_before": now - open_grace_us, "max_attempts": max_attempts,
                   "retry_before": now - retry_interval_us, "limit": limit})
    rows = ch.rows(FIND_SQL.replace("__FILTER__", filt), params)
    return [S.gap_from_row(r[:len(GAP_COLUMNS)]) for r in rows]


def gap_counts(ch) -> dict[str, int]:
    """Gaps per status (latest record of each), for metadata and status displays."""
    return {str(s): int(n) for s, n in ch.rows(
        "SELECT status, count() FROM marketdata.gaps FINAL GROUP BY status")}


def attempts_of(ch, gaps: list[Gap]) -> dict[tuple[str, str, str], int]:
    if not gaps:
        return {}
    rows = ch.rows("SELECT exchange, symbol, gap_id, attempts FROM marketdata.gap_repair_attempts FINAL "
                   "WHERE (exchange, symbol, gap_id) IN {keys:Array(Tuple(String, String, String))}",
                   {"keys": [(g.exchange, g.symbol, g.gap_id) for g in gaps]})
    return {(str(a), str(b), str(c)): int(n) for a, b, c, n in rows}


# --- one gap ----------------------------------------------------------------------------------

def repair_rules(mod: type[Venue], options: VenueOptions) -> tuple[bool, str | None]:
    """(sequential ids, repair by) under the venue's configured options, as the connector reads
    them (``Venue.sequence_rules``): Kraken v1 has no sequential ids, v2 has."""
    return mod.sequence_rules(options)


def can_repair_by_time(mod: type[Venue], options: VenueOptions) -> bool:
    """Whether ``repair_gap`` can refetch a span named only by time (a gap without ids) from this
    venue's REST history: by id from the first trade at a time, or by time pages."""
    repair_by = repair_rules(mod, options)[1]
    return ((repair_by == "id" and mod.first_id_request is not None)
            or (repair_by == "time" and mod.history_by_time_request is not None))


def repair_gap(ch, rest: VenueRest, vs: str, options: VenueOptions, gap: Gap, *, page_size: int | None = None,
               attempts_before: int = 0) -> GapOutcome:
    mod = rest.mod
    now = now_us()
    sequential, repair_by = repair_rules(mod, options)
    # ids name a gap only where they are sequential (the connector opens id holes only then)
    by_id = bool(sequential and gap.from_id and gap.to_id and repair_by == "id")
    if by_id:
        lo, hi = mod.trade_id_int(gap.from_id), mod.trade_id_int(gap.to_id)
        if hi < lo:
            return GapOutcome(gap, "skipped", detail=f"gap ids {gap.from_id}..{gap.to_id} are empty")
        if hi - lo + 1 > MAX_IDS_PER_GAP:
            return GapOutcome(gap, "skipped", detail=f"{hi - lo + 1} ids: too wide for a repair; use a backfill")
        ticks, missing = ids_between(rest.call, IdPager(mod, vs, gap.symbol, options, lo, page_size), hi)
        complete, how = missing == 0, "rest_by_id"
        why = (f"venue history does not return {missing} of {hi - lo + 1} missing ids" if missing else "")
    elif repair_by == "id" and mod.first_id_request is not None:
        first = first_id(rest.call, mod, vs, gap.from_us, options)
        ticks, skipped, passed = ([], 0, False) if first is None else ids_over_time(
            rest.call, IdPager(mod, vs, gap.symbol, options, first, page_size), gap.to_us)
        complete, how, missing = skipped == 0 and passed, "rest_by_time", skipped
        why = ("" if complete else f"venue history skips {skipped} ids in the span" if skipped
               else "venue history does not reach past the end of the gap")
    elif repair_by == "time" and mod.history_by_time_request is not None:
        pager = rest.drain(TimePager(mod, vs, gap.symbol, options, gap.from_us, gap.to_us))
        ticks, complete = pager.ticks, pager.complete
        how, missing = "rest_by_time", 0
        why = "" if complete else "venue history ran out before the end of the gap"
    else:
        return GapOutcome(gap, "skipped", detail=f"venue {gap.exchange} cannot give these trades back from REST")
    for t in ticks:
        t.source = "rest"
    n = len(ticks)
    tries = attempts_before + 1
    if complete:
        rec = Gap(gap.exchange, gap.symbol, gap.gap_id, gap.from_us, gap.to_us, gap.from_id, gap.to_id,
                  gap.found_by, "repaired", how, n, gap.detected_us, S.version_us(),
                  f"repaired by gap_repair ({how}, {n} trades, attempt {tries})")
        S.write(ch, ticks=ticks, coverage=[(gap.exchange, gap.symbol, gap.from_us, gap.to_us, "rest")],
                gaps=[rec], attempts=[S.RepairAttempt(gap.exchange, gap.symbol, gap.gap_id, tries, now,
                                                      "repaired", rec.detail)])
        return GapOutcome(rec, "repaired", n, 0, rec.detail)
    rec = Gap(gap.exchange, gap.symbol, gap.gap_id, gap.from_us, gap.to_us, gap.from_id, gap.to_id,
              gap.found_by, "unrepairable", "", n, gap.detected_us, S.version_us(),
              f"{why} (gap_repair attempt {tries}; {n} trades recovered); "
              f"earlier: {gap.detail}"[:1000])
    S.write(ch, ticks=ticks, gaps=[rec], attempts=[S.RepairAttempt(gap.exchange, gap.symbol, gap.gap_id,
                                                                   tries, now, "unrepairable", why)])
    return GapOutcome(rec, "unrepairable", n, missing, why)


# --- many gaps --------------------------------------------------------------------------------

def repair_gaps(ch, gaps: list[Gap], venues: dict[str, VenueConfig], *, page_size: int | None = None,
                weight_fraction: float = 0.5, on_outcome: Callable[[GapOutcome], None] | None = None,
                stop: Callable[[], bool] | None = None) -> RepairReport:
    """Repair ``gaps`` (as from ``find_repairable_gaps``) with each venue's REST at its configured
    ``rest_url``. A gap of a venue without config, or of a symbol the venue does not list, is
    skipped; a REST failure fails that gap (counted as an attempt) and the others go on."""
    t0 = time.monotonic()
    report = RepairReport()
    stats: dict[str, dict] = {}
    by_venue: dict[str, list[Gap]] = {}
    for g in gaps:
        by_venue.setdefault(g.exchange, []).append(g)
    tries = attempts_of(ch, gaps)
    stop = stop or (lambda: False)

    def emit(o: GapOutcome) -> None:
        report.outcomes.append(o)
        log.info("%s %s gap %s (%s..%s): %s%s", o.gap.exchange, o.gap.symbol, o.gap.gap_id, o.gap.from_id,
                 o.gap.to_id, o.result, f" ({o.detail})" if o.detail else "")
        if on_outcome:
            on_outcome(o)

    for venue, vgaps in by_venue.items():
        cfg = venues.get(venue)
        if cfg is None or not cfg.rest_url:
            for g in vgaps:
                emit(GapOutcome(g, "skipped", detail=f"venue {venue} is not configured (no REST endpoint)"))
            continue
        try:
            venue_registry.get(venue)
        except KeyError as e:
            for g in vgaps:
                emit(GapOutcome(g, "skipped", detail=str(e)))
            continue
        with VenueRest(venue, cfg.rest_url, weight_fraction=weight_fraction, stop=stop) as rest:
            try:
                listed = rest.instruments()
            except RestError as e:
                for g in vgaps:
                    emit(_failed(ch, g, tries, str(e)))
                stats[venue] = rest.stats.as_dict()
                continue
            for g in vgaps:
                if stop():
                    break
                vs = listed.get(g.symbol)
                if vs is None:
                    emit(GapOutcome(g, "skipped", detail=f"{venue} does not list {g.symbol} as trading"))
                    continue
                try:
                    emit(repair_gap(ch, rest, vs, cfg.options, g, page_size=page_size,
                                    attempts_before=tries.get((g.exchange, g.symbol, g.gap_id), 0)))
                except (RestError, ValueError, KeyError) as e:
                    emit(_failed(ch, g, tries, f"{type(e).__name__}: {e}"))
            stats[venue] = rest.stats.as_dict()
    report.rest = stats
    report.elapsed_s = round(time.monotonic() - t0, 3)
    return report


def _failed(ch, g: Gap, tries: dict, why: str) -> GapOutcome:
    n = tries.get((g.exchange, g.symbol, g.gap_id), 0) + 1
    S.write(ch, attempts=[S.RepairAttempt(g.exchange, g.symbol, g.gap_id, n, now_us(), "failed", why[:500])])
    return GapOutcome(g, "failed", detail=why)
