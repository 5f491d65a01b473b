"""Build ``marketdata.bars_1m`` for a time range, idempotently, inside ClickHouse.

``build_bars(ch, start_us, end_us, symbols)`` rewrites every minute of [start_us, end_us) for
every pair of the universe with ONE ``INSERT INTO marketdata.bars_1m SELECT ...``. Each build
carries a new, increasing ``build_version`` (wall clock in µs, strictly increasing per process),
and bars_1m is a ReplacingMergeTree(build_version), so ``FINAL`` shows the latest build and a
rebuild replaces every row of its range: re-running an hour is always safe.

Rules, per (exchange, symbol, minute):

* minute with trades: open/close = first/last tick by (ts_us, trade_id numeric, trade_id text),
  high = max(high), low = min(low), volume = sum(volume), trade_count = sum(trade_count),
  vwap = sum(close * volume) / sum(volume) as Float64 (a tick aggregates fills at one price, so
  its close is its price), complete = the minute lies fully inside merged coverage;
* covered minute without trades: complete flat bar at the previous close, volume 0,
  trade_count 0, vwap = close;
* uncovered minute without trades: complete = 0, trade_count 0, prices at the previous close.

The previous close is the last trade before the minute: inside the range it is carried forward
in SQL (window function); before the range it is looked up in ticks, first in the hour before
``start_us`` and then back to ``lookback_us`` (7 days by default) for the pairs still without
one. A pair with no trade in that window gets prices 0 on trade-less minutes (trade_count = 0
tells a reader there is no price); its covered minutes are still complete, because completeness
is about the tape, and the tape is known to hold no trade.

Ticks are read with ``FINAL``: duplicates collapse, corrections (higher version) win, cancels
(is_deleted = 1) disappear. ``FINAL`` is applied per partition (``TICKS_FINAL``): ticks are
partitioned by the trade's day and every copy of a trade carries the trade's time, so copies never
span partitions -- and only so does a range read touch the days it needs instead of merging the
whole table by key (without it a one-day build on 30 days of ticks reads all 30).

Universe = the pairs passed in (the configured symbols) ∪ pairs with any tick or coverage in the
range ∪ pairs already having bars in the range (so a rebuild leaves no stale row of an older
build behind).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..clock import US_PER_HOUR, US_PER_MINUTE, now_us
from ..storage.clickhouse import ClickHouse
from .coverage import merged_coverage_sql
from .universe import Pair, normalize_pairs, pair_key, pairs_param

DEFAULT_LOOKBACK_US = 7 * 24 * US_PER_HOUR

# Trade order inside a minute: time, then the venue id as a number where it is one, then as text.
# Written as ONE byte string that sorts exactly like the tuple (ts_us, numeric id, id text):
# both integers big-endian and fixed-width (8 bytes each), then the text. argMin/argMax over a
# tuple key are ~3x slower in ClickHouse than over a scalar one, and this is the build's hot spot.
TRADE_ORDER = ("concat(reverse(toFixedString(reinterpretAsString(toUInt64(ts_us)), 8)), "
               "reverse(toFixedString(reinterpretAsString(toUInt64OrZero(trade_id)), 8)), trade_id)")

# Setting for every query that reads ticks FINAL (see the module doc).
TICKS_FINAL = "do_not_merge_across_partitions_select_final = 1"

_version_lock = threading.Lock()
_last_version = 0


def new_build_version() -> int:
    """A build version greater than every earlier one from this process (wall clock in µs)."""
    global _last_version
    with _version_lock:
        _last_version = max(now_us(), _last_version + 1)
        return _last_version


@dataclass
class BuildResult:
    start_us: int
    end_us: int
    build_version: int
    pairs: list[Pair]
    minutes: int                      # minutes in the range
    bars_written: int                 # rows inserted (pairs x minutes)
    complete_bars: int                # rows with complete = 1
    bars_with_trades: int
    trades: int                       # sum of trade_count
    ticks: int                        # tick rows (after FINAL) in the range
    incomplete: dict[str, int] = field(default_factory=dict)   # "exchange:symbol" -> incomplete minutes
    elapsed_s: float = 0.0

    # No completeness % here: rows are written for every minute (an equity's out-of-session minutes
    # too), so complete_bars / bars_written is not completeness. Completeness is expected (market
    # calendar) vs stored: completeness.audit_hours / totals, the one function everyone reports.

    @property
    def symbols(self) -> int:
        return len(self.pairs)


def _check_range(start_us: int, end_us: int) -> None:
    if start_us % US_PER_MINUTE or end_us % US_PER_MINUTE:
        raise ValueError(f"range [{start_us}, {end_us}) must be minute-aligned (hour-aligned from Dagster)")
    if end_us <= start_us:
        raise ValueError(f"empty range [{start_us}, {end_us})")


def universe(client, start_us: int, end_us: int, symbols: Any = None) -> list[Pair]:
    """Configured pairs ∪ pairs with ticks, coverage or bars in [start_us, end_us)."""
    rows = client.query(
        """
        SELECT DISTINCT exchange, symbol FROM (
            SELECT exchange, symbol FROM marketdata.ticks
            WHERE ts_us >= {start_us:Int64} AND ts_us < {end_us:Int64}
            UNION ALL
            SELECT exchange, symbol FROM marketdata.coverage
            WHERE to_us >= {start_us:Int64} AND from_us < {end_us:Int64} AND to_us >= from_us
            UNION ALL
            SELECT exchange, symbol FROM marketdata.bars_1m
            WHERE minute >= toDateTime(intDiv({start_us:Int64}, 1000000), 'UTC')
              AND minute < toDateTime(intDiv({end_us:Int64}, 1000000), 'UTC')
        )
        """,
        parameters={"start_us": start_us, "end_us": end_us}).result_rows
    return sorted(set(normalize_pairs(symbols)) | {(str(a), str(b)) for a, b in rows})


def _last_closes(client, pairs: list[Pair], from_us: int, to_us: int) -> dict[Pair, Decimal]:
    if not pairs or to_us <= from_us:
        return {}
    rows = client.query(
        f"""
        SELECT exchange, symbol, argMax(close, {TRADE_ORDER})
        FROM marketdata.ticks FINAL
        WHERE ts_us >= {{from_us:Int64}} AND ts_us < {{to_us:Int64}}
          AND (exchange, symbol) IN {{pairs:Array(Tuple(String, String))}}
        GROUP BY exchange, symbol
        SETTINGS {TICKS_FINAL}
        """,
        parameters={"from_us": from_us, "to_us": to_us, "pairs": pairs_param(pairs)}).result_rows
    return {(str(a), str(b)): c for a, b, c in rows}


def previous_closes(client, pairs: list[Pair], start_us: int,
                    lookback_us: int = DEFAULT_LOOKBACK_US) -> dict[Pair, Decimal]:
    """Last close before start_us per pair: the hour before first, then back to lookback_us."""
    near = max(start_us - US_PER_HOUR, start_us - lookback_us)
    found = _last_closes(client, pairs, near, start_us)
    missing = [p for p in pairs if p not in found]
    if missing and near > start_us - lookback_us:
        found.update(_last_closes(client, missing, start_us - lookback_us, near))
    return found


BUILD_SQL = """
INSERT INTO marketdata.bars_1m
    (exchange, symbol, minute, open, high, low, close, volume, trade_count, vwap, complete, build_version)
WITH
    universe AS (
        SELECT tupleElement(p, 1) AS exchange, tupleElement(p, 2) AS symbol
        FROM (SELECT arrayJoin({pairs:Array(Tuple(String, String))}) AS p)
    ),
    prev AS (
        SELECT tupleElement(p, 1) AS exchange, tupleElement(p, 2) AS symbol,
               toDecimal128(tupleElement(p, 3), 18) AS prev_close, 1 AS has_prev
        FROM (SELECT arrayJoin({prev:Array(Tuple(String, String, String))}) AS p)
    ),
    grid AS (
        SELECT u.exchange AS exchange, u.symbol AS symbol, {start_min:Int64} + toInt64(n.number) AS minute_idx
        FROM universe AS u CROSS JOIN numbers({n_minutes:UInt64}) AS n
    ),
    trades AS (
        SELECT exchange, symbol, intDiv(ts_us, 60000000) AS minute_idx,
               argMin(open, __ORDER__) AS t_open,
               max(high) AS t_high,
               min(low) AS t_low,
               argMax(close, __ORDER__) AS t_close,
               sum(volume) AS t_volume,
               sum(toUInt64(trade_count)) AS t_count,
               sum(toFloat64(close) * toFloat64(volume)) AS t_pv,
               sum(toFloat64(volume)) AS t_v,
               1 AS has_trades
        FROM marketdata.ticks FINAL
        WHERE ts_us >= {start_us:Int64} AND ts_us < {end_us:Int64}
          AND (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
        GROUP BY exchange, symbol, minute_idx
    ),
    coverage AS (
        -- merged coverage intervals per pair, as arrays: a minute is complete when one interval
        -- holds all of it (the same rule as coverage.complete_minutes_sql, without expanding
        -- every covered minute into a row and joining on it: ~15x cheaper)
        SELECT exchange, symbol, groupArray(from_us) AS froms, groupArray(to_us) AS tos
        FROM (__COVERAGE__)
        GROUP BY exchange, symbol
    ),
    joined AS (
        SELECT g.exchange AS exchange, g.symbol AS symbol, g.minute_idx AS minute_idx,
               t.has_trades AS has_trades, t.t_open AS t_open, t.t_high AS t_high, t.t_low AS t_low,
               t.t_close AS t_close, t.t_volume AS t_volume, t.t_count AS t_count,
               t.t_pv AS t_pv, t.t_v AS t_v,
               toUInt8(arrayExists((f, t) -> f <= g.minute_idx * __M__ AND t >= g.minute_idx * __M__ + __M1__,
                                   c.froms, c.tos)) AS is_covered,
               pv.prev_close AS prev_close, pv.has_prev AS has_prev
        FROM grid AS g
        LEFT JOIN trades AS t ON t.exchange = g.exchange AND t.symbol = g.symbol AND t.minute_idx = g.minute_idx
        LEFT JOIN coverage AS c ON c.exchange = g.exchange AND c.symbol = g.symbol
        LEFT JOIN prev AS pv ON pv.exchange = g.exchange AND pv.symbol = g.symbol
    ),
    filled AS (
        SELECT *,
               argMaxIf(t_close, minute_idx, has_trades = 1) OVER w AS carried_close,
               countIf(has_trades = 1) OVER w AS trades_so_far
        FROM joined
        WINDOW w AS (PARTITION BY exchange, symbol ORDER BY minute_idx
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    ),
    priced AS (
        SELECT *,
               if(trades_so_far > 0, carried_close,
                  if(has_prev = 1, prev_close, toDecimal128(0, 18))) AS ref_close
        FROM filled
    )
SELECT
    exchange, symbol, toDateTime(minute_idx * 60, 'UTC') AS minute,
    if(has_trades = 1, t_open, ref_close) AS open,
    if(has_trades = 1, t_high, ref_close) AS high,
    if(has_trades = 1, t_low, ref_close) AS low,
    if(has_trades = 1, t_close, ref_close) AS close,
    if(has_trades = 1, t_volume, toDecimal128(0, 18)) AS volume,
    if(has_trades = 1, t_count, toUInt64(0)) AS trade_count,
    if(has_trades = 1 AND t_v > 0, t_pv / t_v, toFloat64(ref_close)) AS vwap,
    toUInt8(is_covered = 1) AS complete,
    {build_version:UInt64} AS build_version
FROM priced
SETTINGS join_use_nulls = 0, __TICKS_FINAL__
"""


def build_sql() -> str:
    coverage = merged_coverage_sql("AND (exchange, symbol) IN {pairs:Array(Tuple(String, String))}")
    return (BUILD_SQL.replace("__ORDER__", TRADE_ORDER).replace("__COVERAGE__", coverage)
            .replace("__M1__", str(US_PER_MINUTE - 1)).replace("__M__", str(US_PER_MINUTE))
            .replace("__TICKS_FINAL__", TICKS_FINAL))


def build_bars(ch: ClickHouse, start_us: int, end_us: int, symbols: Any = None, *,
               lookback_us: int = DEFAULT_LOOKBACK_US) -> BuildResult:
    """Rewrite bars_1m for every pair of the universe over [start_us, end_us); see module doc."""
    _check_range(start_us, end_us)
    t0 = time.monotonic()
    version = new_build_version()
    n_minutes = (end_us - start_us) // US_PER_MINUTE
    with ch.session() as c:
        pairs = universe(c, start_us, end_us, symbols)
        if not pairs:
            return BuildResult(start_us, end_us, version, [], n_minutes, 0, 0, 0, 0, 0, {},
                               time.monotonic() - t0)
        prev = previous_closes(c, pairs, start_us, lookback_us)
        params = {
            "pairs": pairs_param(pairs),
            "prev": [(a, b, format(v, "f")) for (a, b), v in sorted(prev.items())],
            "start_us": start_us, "end_us": end_us,
            "start_min": start_us // US_PER_MINUTE, "n_minutes": n_minutes,
            "build_version": version,
        }
        c.command(build_sql(), parameters=params)
        rows = c.query(
            """
            SELECT exchange, symbol, count(), sum(complete), sum(trade_count > 0), sum(trade_count)
            FROM marketdata.bars_1m
            WHERE minute >= toDateTime(intDiv({start_us:Int64}, 1000000), 'UTC')
              AND minute < toDateTime(intDiv({end_us:Int64}, 1000000), 'UTC')
              AND build_version = {build_version:UInt64}
            GROUP BY exchange, symbol
            """, parameters={"start_us": start_us, "end_us": end_us, "build_version": version}).result_rows
        ticks = c.query(
            """
            SELECT count() FROM marketdata.ticks FINAL
            WHERE ts_us >= {start_us:Int64} AND ts_us < {end_us:Int64}
              AND (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
            SETTINGS __TICKS_FINAL__
            """.replace("__TICKS_FINAL__", TICKS_FINAL), parameters={"start_us": start_us, "end_us": end_us, "pairs": pairs_param(pairs)}
        ).result_rows[0][0]
    written = sum(int(r[2]) for r in rows)
    complete = sum(int(r[3]) for r in rows)
    incomplete = {pair_key((r[0], r[1])): int(r[2]) - int(r[3]) for r in rows if int(r[2]) > int(r[3])}
    return BuildResult(
        start_us=start_us, end_us=end_us, build_version=version, pairs=pairs, minutes=n_minutes,
        bars_written=written, complete_bars=complete,
        bars_with_trades=sum(int(r[4]) for r in rows), trades=sum(int(r[5]) for r in rows),
        ticks=int(ticks), incomplete=dict(sorted(incomplete.items())),
        elapsed_s=round(time.monotonic() - t0, 3))
