"""bars_1m and completeness: pure library over ClickHouse (no Dagster here).

    build_bars(ch, start_us, end_us, symbols=None) -> BuildResult      rewrite bars_1m over a range
    audit_hours(ch, start_us, end_us, symbols=None) -> list[HourAudit] expected vs stored per pair-hour
    merge_intervals / complete_minutes                                 pure-Python coverage reference
    merged_intervals / covered_minutes                                 the same, computed in ClickHouse
    calendar_for / expected_minutes / register_calendar                market calendars
"""

from .build import BuildResult, build_bars, universe
from .calendar import MarketCalendar, calendar_for, expected_count, expected_minutes, register_calendar
from .completeness import AuditTotals, HourAudit, audit_hours, missing_by_pair, totals
from .coverage import complete_minutes, covered_minutes, merge_intervals, merged_intervals
from .universe import Pair, normalize_pairs, pair_key

__all__ = [
    "AuditTotals", "BuildResult", "HourAudit", "MarketCalendar", "Pair",
    "audit_hours", "build_bars", "calendar_for", "complete_minutes", "covered_minutes",
    "expected_count", "expected_minutes", "merge_intervals", "merged_intervals", "missing_by_pair",
    "normalize_pairs", "pair_key", "register_calendar", "totals", "universe",
]
