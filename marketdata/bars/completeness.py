"""Completeness audit: expected bars (market calendar) vs stored complete bars, per pair per hour.

Stored = rows of ``bars_1m FINAL`` with complete = 1 whose minute the calendar expects. An hour of
a pair passes when stored == expected; the missing minutes are named. One query covers the whole
range: it returns, per (exchange, symbol, hour), a 60-bit mask of the complete minutes.

The pairs audited are the same universe a build uses (the pairs passed in ∪ pairs with ticks,
coverage or bars in the range), so a configured pair whose hour was never built shows as missing
every minute rather than being skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..clock import US_PER_HOUR, US_PER_MINUTE, iso_hour, iso_minute
from ..storage.clickhouse import ClickHouse
from .build import universe
from .calendar import expected_minutes
from .universe import Pair, pair_key, pairs_param


class Tally:
    """Expected vs stored complete bars, and what follows from them (a mixin for the audits)."""
    expected: int
    stored: int

    @property
    def missing(self) -> int:
        return self.expected - self.stored

    @property
    def completeness_pct(self) -> float:
        return round(100.0 * self.stored / self.expected, 4) if self.expected else 100.0

    @property
    def passed(self) -> bool:
        return self.stored == self.expected


@dataclass
class HourAudit(Tally):
    exchange: str
    symbol: str
    hour_start_us: int
    expected: int
    stored: int
    missing_offsets: list[int] = field(default_factory=list)   # minute offsets 0..59 in the hour

    @property
    def pair(self) -> Pair:
        return (self.exchange, self.symbol)

    @property
    def key(self) -> str:
        return pair_key(self.pair)

    @property
    def hour(self) -> str:
        return iso_hour(self.hour_start_us)

    @property
    def missing_minutes(self) -> list[str]:
        return [iso_minute(self.hour_start_us + m * US_PER_MINUTE) for m in self.missing_offsets]



@dataclass
class AuditTotals(Tally):
    hours: int
    pairs: int
    expected: int
    stored: int
    incomplete_hours: int                 # (pair, hour) cells with stored < expected



AUDIT_SQL = """
SELECT exchange, symbol,
       intDiv(toInt64(toUnixTimestamp(minute)), 3600) AS hour_idx,
       groupBitOrIf(bitShiftLeft(toUInt64(1), toMinute(minute)), complete = 1) AS mask
FROM marketdata.bars_1m FINAL
WHERE minute >= toDateTime(intDiv({start_us:Int64}, 1000000), 'UTC')
  AND minute < toDateTime(intDiv({end_us:Int64}, 1000000), 'UTC')
  AND (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
GROUP BY exchange, symbol, hour_idx
"""


def audit_hours(ch: ClickHouse, start_us: int, end_us: int, symbols: Any = None) -> list[HourAudit]:
    """Expected vs stored complete bars per (exchange, symbol, hour) over the hours of
    [start_us, end_us) (hour-aligned), sorted by hour then pair."""
    if start_us % US_PER_HOUR or end_us % US_PER_HOUR:
        raise ValueError(f"audit range [{start_us}, {end_us}) must be hour-aligned")
    with ch.session() as c:
        pairs = universe(c, start_us, end_us, symbols)
        rows = c.query(AUDIT_SQL, parameters={"start_us": start_us, "end_us": end_us,
                                              "pairs": pairs_param(pairs)}).result_rows if pairs else []
    masks = {(str(ex), str(sym), int(h)): int(mask) for ex, sym, h, mask in rows}
    out: list[HourAudit] = []
    for h in range(start_us // US_PER_HOUR, end_us // US_PER_HOUR):
        hour_start = h * US_PER_HOUR
        for ex, sym in pairs:
            want = expected_minutes(ex, sym, hour_start)
            mask = masks.get((ex, sym, h), 0)
            missing = [m for m in want if not (mask >> m) & 1]
            out.append(HourAudit(ex, sym, hour_start, expected=len(want), stored=len(want) - len(missing),
                                 missing_offsets=missing))
    return out


def totals(audits: list[HourAudit]) -> AuditTotals:
    return AuditTotals(
        hours=len({a.hour_start_us for a in audits}), pairs=len({a.pair for a in audits}),
        expected=sum(a.expected for a in audits), stored=sum(a.stored for a in audits),
        incomplete_hours=sum(1 for a in audits if not a.passed))


def missing_by_pair(audits: list[HourAudit], max_pairs: int = 50,
                    max_minutes: int = 120) -> dict[str, Any]:
    """{"exchange:symbol": ["2026-01-01T03:17Z", ...]} for pairs with missing minutes, worst
    first, small enough for event metadata. Cut lists are summarised under "_truncated"."""
    per: dict[str, list[str]] = {}
    for a in sorted(audits, key=lambda a: (a.hour_start_us, a.key)):
        if a.missing_offsets:
            per.setdefault(a.key, []).extend(a.missing_minutes)
    ranked = sorted(per.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    out: dict[str, Any] = {}
    minutes_omitted = 0
    for k, mins in ranked[:max_pairs]:
        out[k] = mins[:max_minutes]
        minutes_omitted += max(0, len(mins) - max_minutes)
    pairs_omitted = ranked[max_pairs:]
    if pairs_omitted or minutes_omitted:
        out["_truncated"] = {"pairs_omitted": len(pairs_omitted),
                             "minutes_omitted": minutes_omitted + sum(len(m) for _, m in pairs_omitted),
                             "max_minutes_per_pair": max_minutes}
    return out
