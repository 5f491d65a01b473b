"""Trades from venue REST history, outside the live connectors (no Dagster here).

    history.load_history(ch, venue, symbols, start_us, end_us, rest_url=...)   historical backfill
    repair.find_repairable_gaps(ch, ...) / repair.repair_gaps(ch, gaps, venues) gap repair
    coverage_holes.record_coverage_holes(ch, ...)  unexplained coverage holes -> gap rows (repaired by the above)
    rebuild.rebuild_hours(ch, hours)                                           bars after either
    store                                ticks / coverage / gaps / progress / attempts writes
    cli.main(argv)                       `marketdata backfill` (progress bar)

The Dagster definitions that call these are in ``marketdata.defs.backfill`` (historical_backfill)
and ``marketdata.defs.repair`` (gap_repair sensor, gap_repair_job). REST calls and history pages: ``marketdata.rest``.
"""

from .coverage_holes import find_coverage_holes, record_coverage_holes
from .history import BackfillError, HistoryResult, load_history
from .rebuild import RebuildResult, hour_ranges, rebuild_hours, span_hours
from .repair import GapOutcome, RepairReport, find_repairable_gaps, gap_counts, repair_gap, repair_gaps
from .store import Progress, list_progress, read_progress

__all__ = [
    "BackfillError", "GapOutcome", "HistoryResult", "Progress", "RebuildResult", "RepairReport",
    "find_repairable_gaps", "gap_counts",
    "hour_ranges", "list_progress", "load_history", "read_progress", "rebuild_hours",
    "repair_gap", "repair_gaps", "span_hours", "find_coverage_holes", "record_coverage_holes",
]
