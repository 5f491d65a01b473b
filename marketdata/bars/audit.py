"""The completeness audit over many hours, and the daily summary (pure library, no Dagster).

``audit_hour_set`` audits a *set* of hours (the recent window plus hours rebuilt anywhere in the
past) in one store session: the hours are grouped into contiguous spans and each span is one
``audit_hours`` query, so a backfill of last March plus the last 48 hours is two queries, not a
year. ``rebuilt_hours`` finds the hours whose bars were (re)written since a build version, from
``bars_1m.build_version`` (every writer goes through ``build_bars``, whether a Dagster run, a
backfill or a script, so nothing is missed). ``audit_digest`` fingerprints an hour's result so an
audit only re-reports hours whose status or content changed.

``daily_summary`` rolls a UTC day up per venue and per symbol.

Settings (``AuditSettings.from_env``):

    MARKETDATA_AUDIT_WINDOW_H     hours re-audited on every evaluation (default 48)
    MARKETDATA_AUDIT_SETTLE_S     an hour is audited only this long after it ended (default 900),
                                  so the audit does not report an hour the build has not reached yet
    MARKETDATA_AUDIT_MAX_REBUILT  rebuilt hours audited per evaluation at most (default 720; the
                                  rest next time, oldest builds first)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from ..clock import US_PER_HOUR, floor_hour
from ..storage.clickhouse import ClickHouse
from .completeness import HourAudit, Tally, audit_hours, missing_by_pair, totals
from ..settings import env_number
from .watermark import contiguous_ranges

ENV_WINDOW_H = "MARKETDATA_AUDIT_WINDOW_H"
ENV_SETTLE_S = "MARKETDATA_AUDIT_SETTLE_S"
ENV_MAX_REBUILT = "MARKETDATA_AUDIT_MAX_REBUILT"


@dataclass(frozen=True)
class AuditSettings:
    window_hours: int = 48
    settle_s: float = 900.0
    max_rebuilt: int = 720

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AuditSettings":
        env = os.environ if env is None else env
        d = cls()
        return cls(window_hours=int(env_number(env, ENV_WINDOW_H, d.window_hours, minimum=1, integer=True)),
                   settle_s=env_number(env, ENV_SETTLE_S, d.settle_s),
                   max_rebuilt=int(env_number(env, ENV_MAX_REBUILT, d.max_rebuilt, minimum=1, integer=True)))


def window_hours(now_us: int, settings: AuditSettings, first_hour_us: int = 0) -> list[int]:
    """The recent hours to re-audit: the last ``window_hours`` hours that ended at least
    ``settle_s`` ago, not before ``first_hour_us``."""
    end = floor_hour(now_us - int(settings.settle_s * 1_000_000))     # exclusive
    start = max(first_hour_us, end - settings.window_hours * US_PER_HOUR)
    return list(range(start, end, US_PER_HOUR))


def max_build_version(ch: ClickHouse) -> int:
    return int(ch.rows("SELECT max(build_version) FROM marketdata.bars_1m")[0][0] or 0)


def rebuilt_hours(ch: ClickHouse, since_version: int, limit: int) -> tuple[dict[int, int], int, bool]:
    """Hours with bars written by a build newer than ``since_version``.

    Returns ({hour start µs: its newest build_version}, the version to resume from next time,
    truncated). Whole builds are taken oldest first until ``limit`` hours (a build larger than the
    limit is taken whole), so resuming from the returned version loses nothing."""
    rows = ch.rows(
        """
        SELECT build_version, groupUniqArray(intDiv(toInt64(toUnixTimestamp(minute)), 3600))
        FROM marketdata.bars_1m WHERE build_version > {v:UInt64}
        GROUP BY build_version ORDER BY build_version
        """, parameters={"v": since_version})
    out: dict[int, int] = {}
    resume = since_version
    truncated = False
    for version, hours in rows:
        if out and len(out) + len(hours) > limit:
            truncated = True
            break
        for h in hours:
            out[int(h) * US_PER_HOUR] = int(version)
        resume = int(version)
    return out, resume, truncated


def built_hours(ch: ClickHouse, hours: Iterable[int]) -> dict[int, int]:
    """{hour start µs: the newest build_version of its bars} for the given hours that have any
    bars at all; an hour absent from the result was never built (by anything)."""
    hs = sorted(set(int(h) for h in hours))
    if not hs:
        return {}
    rows = ch.rows(
        """
        SELECT intDiv(toInt64(toUnixTimestamp(minute)), 3600) AS h, max(build_version)
        FROM marketdata.bars_1m
        WHERE minute >= toDateTime(intDiv({a:Int64}, 1000000), 'UTC')
          AND minute < toDateTime(intDiv({b:Int64}, 1000000), 'UTC')
        GROUP BY h
        """, parameters={"a": hs[0], "b": hs[-1] + US_PER_HOUR})
    want = set(hs)
    return {int(h) * US_PER_HOUR: int(v) for h, v in rows if int(h) * US_PER_HOUR in want}


@dataclass
class ReportPlan:
    """What one audit evaluation reports: the hours whose result nobody has reported yet, and the
    digests to remember for the recent window."""
    report: list[int]
    digests: dict[int, str]


def plan_report(hours: Iterable[int], audits: Mapping[int, list[HourAudit]], *, window: Iterable[int],
                prior_digests: Mapping[int, str], rebuilt: Iterable[int], judged: Iterable[int] = (),
                busy: Iterable[int] = ()) -> ReportPlan:
    """Decide which hours an audit reports.

    An hour is reported when something changed that no result shows yet: it was rebuilt since the
    last evaluation, its audit differs from the digest remembered, or it is new to the window --
    unless a run already judged exactly its current build (``judged``: the latest check result
    targets the hour's latest materialization of the current build) and nothing else changed, or
    a run is building it right now (``busy``: its own check is about to report; its digest is left
    as it was so it is looked at again next time). Hours without any pair are never reported."""
    rebuilt_set, judged_set, busy_set, window_set = set(rebuilt), set(judged), set(busy), set(window)
    report: list[int] = []
    digests: dict[int, str] = {h: d for h, d in prior_digests.items() if h in window_set and h in busy_set}
    for h in sorted(set(hours)):
        if h in busy_set or not audits.get(h):
            continue
        d = audit_digest(audits[h])
        if h in window_set:
            digests[h] = d
        prior = prior_digests.get(h)
        changed = h in rebuilt_set or prior != d
        explained = h in judged_set and (h in rebuilt_set or prior is None)
        if changed and not explained:
            report.append(h)
    return ReportPlan(report=report, digests=digests)


def audit_hour_set(ch: ClickHouse, hours: Iterable[int], symbols: Any = None) -> dict[int, list[HourAudit]]:
    """Audit the given hours (hour starts, µs) in one store session: one ``audit_hours`` query per
    contiguous span. Returns {hour start: its HourAudits} for every hour asked (possibly [] when
    the hour has no pair at all)."""
    hours = sorted(set(int(h) for h in hours))
    out: dict[int, list[HourAudit]] = {h: [] for h in hours}
    if not hours:
        return out
    with ch.session():
        for first, last in contiguous_ranges(hours, max_len=len(hours)):
            for a in audit_hours(ch, first, last + US_PER_HOUR, symbols):
                out.setdefault(a.hour_start_us, []).append(a)
    return out


def audit_digest(audits: list[HourAudit]) -> str:
    """Fingerprint of an hour's audit: changes iff the pairs, counts or missing minutes change."""
    h = hashlib.blake2b(digest_size=6)
    for a in sorted(audits, key=lambda a: a.key):
        h.update(f"{a.key}|{a.expected}|{a.stored}|{','.join(map(str, a.missing_offsets))};".encode())
    return h.hexdigest()


def missing_table_rows(audits: list[HourAudit], max_rows: int = 100) -> list[dict[str, Any]]:
    """One row per pair with missing minutes: exchange, symbol, missing count, the minutes (ranges
    like '09:12-09:14, 09:40'), worst first."""
    rows = []
    for a in audits:
        if a.missing_offsets:
            rows.append({"exchange": a.exchange, "symbol": a.symbol, "expected": a.expected,
                         "stored": a.stored, "missing": len(a.missing_offsets),
                         "missing_minutes": minute_ranges(a.hour_start_us, a.missing_offsets)})
    rows.sort(key=lambda r: (-r["missing"], r["exchange"], r["symbol"]))
    return rows[:max_rows]


def minute_ranges(hour_start_us: int, offsets: list[int]) -> str:
    """[12, 13, 14, 40] in the 09:00 hour -> '09:12-09:14, 09:40'."""
    hh = datetime.fromtimestamp(hour_start_us // 1_000_000, tz=timezone.utc).strftime("%H")
    runs: list[list[int]] = []
    for o in sorted(set(offsets)):
        if runs and o == runs[-1][1] + 1:
            runs[-1][1] = o
        else:
            runs.append([o, o])
    return ", ".join(f"{hh}:{a:02d}" if a == b else f"{hh}:{a:02d}-{hh}:{b:02d}" for a, b in runs)


# --- daily summary ------------------------------------------------------------------------------

@dataclass
class SymbolDay(Tally):
    exchange: str
    symbol: str
    expected: int = 0
    stored: int = 0
    incomplete_hours: int = 0
    first_missing: str = ""


@dataclass
class VenueDay(Tally):
    exchange: str
    symbols: int = 0
    expected: int = 0
    stored: int = 0
    incomplete_hours: int = 0


@dataclass
class DailySummary(Tally):
    day_start_us: int
    hours: int
    expected: int
    stored: int
    incomplete_hours: int
    by_symbol: list[SymbolDay] = field(default_factory=list)
    by_venue: list[VenueDay] = field(default_factory=list)
    missing_minutes: dict[str, Any] = field(default_factory=dict)


def daily_summary(ch: ClickHouse, start_us: int, end_us: int, symbols: Any = None) -> DailySummary:
    """Completeness of [start_us, end_us) (normally one UTC day) per venue and per symbol."""
    audits = audit_hours(ch, start_us, end_us, symbols)
    t = totals(audits)
    per_sym: dict[tuple[str, str], SymbolDay] = {}
    for a in sorted(audits, key=lambda a: (a.hour_start_us, a.key)):
        s = per_sym.setdefault(a.pair, SymbolDay(a.exchange, a.symbol))
        s.expected += a.expected
        s.stored += a.stored
        if not a.passed:
            s.incomplete_hours += 1
            if not s.first_missing and a.missing_minutes:
                s.first_missing = a.missing_minutes[0]
    per_venue: dict[str, VenueDay] = {}
    for s in per_sym.values():
        v = per_venue.setdefault(s.exchange, VenueDay(s.exchange))
        v.symbols += 1
        v.expected += s.expected
        v.stored += s.stored
        v.incomplete_hours += s.incomplete_hours
    return DailySummary(
        day_start_us=start_us, hours=(end_us - start_us) // US_PER_HOUR, expected=t.expected,
        stored=t.stored, incomplete_hours=t.incomplete_hours,
        by_symbol=sorted(per_sym.values(), key=lambda s: (s.exchange, s.symbol)),
        by_venue=sorted(per_venue.values(), key=lambda v: v.exchange),
        missing_minutes=missing_by_pair(audits, max_pairs=20, max_minutes=60))
