"""Which hours are closed: the watermark that triggers bars_1m (pure library, no Dagster).

An hour [h, h + 1h) is *closed* once every venue that is up has persisted coverage past
h + 1h + grace, and the wall clock has passed it too (an hour that has not ended is never built).
Coverage per venue is the minimum over its configured symbols of the end of persisted coverage in
ClickHouse (``max(to_us) + 1`` per symbol: the bars are built from ClickHouse, so what the
connector has merely published to Redis does not count; the Redis ``covered_to_us`` is reported
next to it so "waiting on persist" and "waiting on ingest" can be told apart).

A venue is *known down* when its ingest heartbeat is missing, its state is "stopped", or its
heartbeat is older than ``down_after_s``; it is *stalled* when its heartbeat is fresh but its
persisted coverage has not moved for ``stall_after_s``. Neither holds the other venues back: the
hour is built anyway (its bars are incomplete for that venue and the completeness check says so),
it is remembered as *partial*, and it is requested again once the missing venues' coverage has
passed it (e.g. after the connector restarted and repaired the hole from REST).

Catch-up: after an outage every closed hour since the last requested one is planned at once, as
contiguous ranges of at most ``max_hours_per_run`` hours (one run each), so a day of backlog is one
run, not 24.

Settings come from the environment (``WatermarkSettings.from_env``):

    MARKETDATA_HOUR_CLOSE_GRACE_S            coverage must pass the hour's end by this (default 120)
    MARKETDATA_HOUR_CLOSE_DOWN_S             heartbeat older than this = venue known down (default 300)
    MARKETDATA_HOUR_CLOSE_STALL_S            coverage older than this with a live heartbeat = stalled
                                             (default 3600)
    MARKETDATA_HOUR_CLOSE_LOOKBACK_H         first evaluation looks back this many hours (default 24)
    MARKETDATA_HOUR_CLOSE_MAX_HOURS_PER_RUN  hours per catch-up run (default 24)
    MARKETDATA_HOUR_CLOSE_MAX_HOURS          hours planned per evaluation at most (default 168)
    MARKETDATA_HOUR_CLOSE_PARTIAL_KEEP_H     how long a partial hour waits for its venues (default 48)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..settings import env_number
from ..clock import US_PER_HOUR, US_PER_SECOND, floor_hour, format_us
from ..storage.clickhouse import ClickHouse
from .calendar import next_expected_us
from .universe import Pair, normalize_pairs, pairs_param


ENV_GRACE_S = "MARKETDATA_HOUR_CLOSE_GRACE_S"
ENV_DOWN_S = "MARKETDATA_HOUR_CLOSE_DOWN_S"
ENV_STALL_S = "MARKETDATA_HOUR_CLOSE_STALL_S"
ENV_LOOKBACK_H = "MARKETDATA_HOUR_CLOSE_LOOKBACK_H"
ENV_MAX_PER_RUN = "MARKETDATA_HOUR_CLOSE_MAX_HOURS_PER_RUN"
ENV_MAX_HOURS = "MARKETDATA_HOUR_CLOSE_MAX_HOURS"
ENV_PARTIAL_KEEP_H = "MARKETDATA_HOUR_CLOSE_PARTIAL_KEEP_H"




@dataclass(frozen=True)
class WatermarkSettings:
    grace_s: float = 120.0
    down_after_s: float = 300.0
    stall_after_s: float = 3600.0
    lookback_hours: int = 24
    max_hours_per_run: int = 24
    max_hours: int = 168
    partial_keep_hours: int = 48

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "WatermarkSettings":
        env = os.environ if env is None else env
        d = cls()
        return cls(
            grace_s=env_number(env, ENV_GRACE_S, d.grace_s),
            down_after_s=env_number(env, ENV_DOWN_S, d.down_after_s, minimum=1),
            stall_after_s=env_number(env, ENV_STALL_S, d.stall_after_s, minimum=1),
            lookback_hours=int(env_number(env, ENV_LOOKBACK_H, d.lookback_hours, minimum=1, integer=True)),
            max_hours_per_run=int(env_number(env, ENV_MAX_PER_RUN, d.max_hours_per_run, minimum=1, integer=True)),
            max_hours=int(env_number(env, ENV_MAX_HOURS, d.max_hours, minimum=1, integer=True)),
            partial_keep_hours=int(env_number(env, ENV_PARTIAL_KEEP_H, d.partial_keep_hours, minimum=1,
                                            integer=True)))


def iso_us(ts_us: int) -> str:
    """µs -> '2026-03-01T10:01:00Z' ('never' for 0)."""
    if not ts_us:
        return "never"
    return format_us(ts_us)


# --- reading ------------------------------------------------------------------------------------

COVERAGE_SCAN_SLACK_US = 24 * US_PER_HOUR


def persisted_coverage_ends(ch: ClickHouse, pairs: Iterable, since_us: int = 0) -> dict[Pair, int]:
    """End of persisted coverage per pair (exclusive µs: max(to_us) + 1), counting only coverage
    rows that reach ``since_us`` or later (a pair with nothing since is absent). Rows starting
    more than a day before ``since_us`` are not read: coverage rows are short (one per persisted
    batch, or one repaired span), and the filter on from_us lets ClickHouse skip old partitions
    and granules of a table that grows by a row per batch."""
    plist = normalize_pairs(pairs)
    if not plist:
        return {}
    rows = ch.rows(
        """
        SELECT exchange, symbol, max(to_us) FROM marketdata.coverage
        WHERE (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
          AND to_us >= {since_us:Int64} AND to_us >= from_us AND from_us >= {scan_from:Int64}
        GROUP BY exchange, symbol
        """, parameters={"pairs": pairs_param(plist), "since_us": since_us,
                         "scan_from": since_us - COVERAGE_SCAN_SLACK_US})
    return {(str(ex), str(sym)): int(to) + 1 for ex, sym, to in rows}


def ticks_per_hour(ch: ClickHouse, start_us: int, end_us: int) -> dict[tuple[int, str], int]:
    """Tick rows per (hour start µs, exchange) in [start_us, end_us): a cheap count for metadata
    (not FINAL, so rows of a duplicate not yet merged away count twice)."""
    rows = ch.rows(
        """
        SELECT intDiv(ts_us, 3600000000) * 3600000000 AS h, exchange, count()
        FROM marketdata.ticks WHERE ts_us >= {a:Int64} AND ts_us < {b:Int64}
        GROUP BY h, exchange
        """, parameters={"a": start_us, "b": end_us})
    return {(int(h), str(ex)): int(n) for h, ex, n in rows}


# --- evaluation ---------------------------------------------------------------------------------

@dataclass
class VenueProgress:
    venue: str
    symbols: list[str]
    covered_to_us: int = 0           # persisted coverage end (exclusive), min over symbols; 0 = none
    behind_symbol: str = ""          # the symbol holding the minimum
    published_to_us: int = 0         # connector's own covered_to_us + 1 from Redis (0 = unknown)
    heartbeat_us: int = 0
    state: str = ""
    down: bool = False
    reason: str = ""                 # why it is down/stalled ("" when up)

    def covers(self, ts_us: int, grace_us: int) -> bool:
        return self.covered_to_us >= ts_us + grace_us


def _int(h: Mapping[str, str], k: str) -> int:
    try:
        return int(float(h.get(k, 0) or 0))
    except (TypeError, ValueError):
        return 0


def venue_progress(pairs: Iterable, persisted_ends: Mapping[Pair, int],
                   health: Mapping[str, Mapping[str, str]], now_us: int,
                   settings: WatermarkSettings, since_us: int | None = None) -> dict[str, VenueProgress]:
    """Per venue: persisted coverage (min over its symbols), and whether it is known down/stalled.

    Coverage is read through the market calendar (``calendar.next_expected_us``, the function the
    audit's expected bars come from): a symbol whose coverage ends where its market closed is
    "covered" on through the minutes its calendar expects nothing of, up to the next session or
    now -- so an equity venue that is connected and silent outside its session neither holds the
    hour back nor reads as stalled. ``since_us``: where a symbol without any persisted coverage
    (since then) starts being judged (None: it counts as uncovered)."""
    by_venue: dict[str, list[str]] = {}
    for ex, sym in normalize_pairs(pairs):
        by_venue.setdefault(ex, []).append(sym)
    out: dict[str, VenueProgress] = {}
    for venue, symbols in sorted(by_venue.items()):
        ends: dict[str, int] = {}
        for s in symbols:
            end = persisted_ends.get((venue, s), 0)
            if end:
                ends[s] = next_expected_us(venue, s, end, now_us)
            elif since_us:
                quiet_to = next_expected_us(venue, s, since_us, now_us)
                ends[s] = quiet_to if quiet_to > since_us else 0     # 0: expected, nothing covered
            else:
                ends[s] = 0
        behind = min(symbols, key=lambda s: (ends[s], s))
        h = health.get(venue) or {}
        p = VenueProgress(venue, symbols, covered_to_us=ends[behind], behind_symbol=behind,
                          published_to_us=(_int(h, "covered_to_us") + 1) if _int(h, "covered_to_us") else 0,
                          heartbeat_us=_int(h, "heartbeat_us"), state=h.get("state", ""))
        hb_age = (now_us - p.heartbeat_us) / US_PER_SECOND if p.heartbeat_us else None
        if not h:
            p.down, p.reason = True, "no ingest heartbeat in Redis"
        elif p.state == "stopped":
            p.down, p.reason = True, "ingest process stopped"
        elif hb_age is None or hb_age > settings.down_after_s:
            p.down = True
            p.reason = (f"ingest heartbeat {'missing' if hb_age is None else f'{hb_age:.0f}s old'} "
                        f"(> {settings.down_after_s:g}s, {ENV_DOWN_S})")
        else:
            cov_age = (now_us - p.covered_to_us) / US_PER_SECOND if p.covered_to_us else None
            if cov_age is None or cov_age > settings.stall_after_s:
                p.down = True
                p.reason = (f"stalled: persisted coverage of {venue}:{behind} "
                            f"{'absent' if cov_age is None else f'{cov_age:.0f}s old'} "
                            f"(> {settings.stall_after_s:g}s, {ENV_STALL_S}) while the heartbeat is fresh")
        out[venue] = p
    return out


@dataclass
class ClosePlan:
    hours: list[int]                                  # newly closed hour starts (µs), ascending
    ranges: list[tuple[int, int]]                     # (first hour start, last hour start), inclusive
    partial: dict[int, list[str]]                     # newly closed hours built without these venues
    rebuild: list[int]                                # earlier partial hours whose venues caught up
    pending_partial: dict[int, list[str]]             # partial hours still waiting (keep for next time)
    dropped_partial: dict[int, list[str]]             # partial hours given up on (older than the keep)
    closed_until_us: int                              # end (exclusive) of the last closed hour
    last_hour_us: int | None                          # the last hour planned (the new cursor), or None
    waiting_on: dict[str, str] = field(default_factory=dict)   # venue -> why the next hour waits
    down: dict[str, str] = field(default_factory=dict)         # venue -> why it is known down
    truncated: bool = False                           # more closed hours than max_hours: more next time


def contiguous_ranges(hours: Iterable[int], max_len: int) -> list[tuple[int, int]]:
    """Sorted hour starts -> [(first, last)] runs of consecutive hours, each at most max_len long."""
    out: list[tuple[int, int]] = []
    start = prev = None
    n = 0
    for h in sorted(set(hours)):
        if start is not None and h == prev + US_PER_HOUR and n < max_len:
            prev, n = h, n + 1
            continue
        if start is not None:
            out.append((start, prev))
        start = prev = h
        n = 1
    if start is not None:
        out.append((start, prev))
    return out


def plan_closed_hours(progress: Mapping[str, VenueProgress], *, now_us: int, settings: WatermarkSettings,
                      after_hour_us: int | None, first_hour_us: int,
                      prior_partial: Mapping[int, Iterable[str]] | None = None,
                      skip: Iterable[int] = ()) -> ClosePlan:
    """Plan which hours to build now.

    ``after_hour_us``: the last hour already requested (the cursor); None on the first evaluation,
    which starts at max(first_hour_us, this hour - lookback). ``first_hour_us``: the first valid
    partition. ``skip``: hours not to request (e.g. already materialized, first evaluation only).
    ``prior_partial``: hours built earlier without some venues (from the cursor).
    """
    grace = int(settings.grace_s * US_PER_SECOND)
    up = [p for p in progress.values() if not p.down]
    limit = now_us - grace
    waiting: dict[str, str] = {}
    for p in up:
        limit = min(limit, p.covered_to_us - grace)
    closed_until = floor_hour(limit)
    for p in up:
        if p.covered_to_us - grace < floor_hour(now_us - grace):
            why = "persist" if p.published_to_us > p.covered_to_us else "ingest"
            waiting[p.venue] = (f"persisted coverage of {p.venue}:{p.behind_symbol} ends at "
                                f"{iso_us(p.covered_to_us)}; waiting on {why}")
    if after_hour_us is None:
        start = max(first_hour_us, floor_hour(now_us) - settings.lookback_hours * US_PER_HOUR)
    else:
        start = max(first_hour_us, after_hour_us + US_PER_HOUR)
    skip_set = set(skip)
    candidates = list(range(start, max(start, closed_until), US_PER_HOUR))
    truncated = False
    last_hour = after_hour_us
    hours: list[int] = []
    for h in candidates:
        if len(hours) >= settings.max_hours:
            truncated = True
            break
        last_hour = h
        if h not in skip_set:
            hours.append(h)
    down_names = sorted(p.venue for p in progress.values() if p.down)
    partial = {h: down_names for h in hours} if down_names else {}

    # earlier partial hours: rebuild once every venue missing from them covers them, else keep
    rebuild: list[int] = []
    pending: dict[int, list[str]] = {}
    dropped: dict[int, list[str]] = {}
    keep_from = floor_hour(now_us) - settings.partial_keep_hours * US_PER_HOUR
    for h, venues in sorted((prior_partial or {}).items()):
        venues = sorted(set(venues))
        still = [v for v in venues if v in progress and (progress[v].down
                                                         or not progress[v].covers(h + US_PER_HOUR, grace))]
        if not still:
            rebuild.append(h)
        elif h < keep_from:
            dropped[h] = still
        else:
            pending[h] = still
    pending.update(partial)
    return ClosePlan(hours=hours, ranges=contiguous_ranges(hours, settings.max_hours_per_run),
                     partial=partial, rebuild=rebuild, pending_partial=pending, dropped_partial=dropped,
                     closed_until_us=closed_until, last_hour_us=last_hour, waiting_on=waiting,
                     down={p.venue: p.reason for p in progress.values() if p.down}, truncated=truncated)
