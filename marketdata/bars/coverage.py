"""Coverage intervals and the minutes they make complete.

A coverage row says "every trade of (exchange, symbol) with from_us <= ts_us <= to_us is stored".
Bounds are inclusive microseconds, so [a, b] and [b + 1, c] are contiguous. Rows may overlap,
touch, repeat (the table is a ReplacingMergeTree without FINAL) and arrive in any order; readers
merge them first.

Minute m (start s = m * 60e6) is complete iff one merged interval has from_us <= s and
to_us >= s + 60e6 - 1.

The work is done in ClickHouse (gaps-and-islands with window functions) so it scales with the
coverage table; ``merge_intervals`` / ``complete_minutes`` are the small pure-Python reference
the tests hold the SQL to.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..clock import US_PER_HOUR, US_PER_MINUTE
from ..storage.clickhouse import ClickHouse
from .universe import Pair, pairs_param

# --- pure-Python reference ---------------------------------------------------------------------


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge inclusive [from, to] intervals that overlap or touch (b + 1 == next from)."""
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in intervals if int(b) >= int(a)):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def complete_minutes(intervals: Iterable[tuple[int, int]], start_us: int | None = None,
                     end_us: int | None = None) -> list[int]:
    """Minute indices (ts_us // 60e6) fully inside the merged intervals, optionally clipped to the
    minutes that start in [start_us, end_us)."""
    out: list[int] = []
    for a, b in merge_intervals(intervals):
        first = -(-a // US_PER_MINUTE)                  # ceil: the first minute starting at or after a
        last = (b + 1) // US_PER_MINUTE - 1             # the last minute ending at or before b
        if start_us is not None:
            first = max(first, -(-start_us // US_PER_MINUTE))
        if end_us is not None:
            last = min(last, -(-end_us // US_PER_MINUTE) - 1)
        out.extend(range(first, last + 1))
    return out


# --- ClickHouse -------------------------------------------------------------------------------
#
# SQL fragments take the server-side parameters {start_us:Int64} and {end_us:Int64}; the build
# and audit queries embed them as CTEs.

def merged_coverage_sql(pair_filter: str = "") -> str:
    """SELECT exchange, symbol, from_us, to_us: the merged coverage inside [start_us, end_us),
    clipped to [start_us, end_us - 1]. Only pieces that intersect the range are read: pieces
    outside it cannot change what is covered inside it (every piece covering part of an inside
    minute intersects the range), which keeps the scan bounded."""
    return f"""
    SELECT exchange, symbol, greatest(min(from_us), {{start_us:Int64}}) AS from_us,
           least(max(to_us), {{end_us:Int64}} - 1) AS to_us
    FROM (
        SELECT exchange, symbol, from_us, to_us,
               sum(is_new) OVER (PARTITION BY exchange, symbol ORDER BY from_us, to_us
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS island
        FROM (
            SELECT exchange, symbol, from_us, to_us,
                   if(ifNull(from_us > max(toNullable(to_us)) OVER (
                          PARTITION BY exchange, symbol ORDER BY from_us, to_us
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 1, 1), 1, 0) AS is_new
            FROM marketdata.coverage
            WHERE to_us >= {{start_us:Int64}} AND from_us < {{end_us:Int64}} AND to_us >= from_us
                  {pair_filter}
        )
    )
    GROUP BY exchange, symbol, island
    """


def complete_minutes_sql(pair_filter: str = "") -> str:
    """SELECT exchange, symbol, minute_idx (Int64, ts_us // 60e6): the complete minutes that start
    in [start_us, end_us), one row each."""
    m = US_PER_MINUTE
    return f"""
    SELECT exchange, symbol,
           arrayJoin(range(
               greatest(intDiv(from_us + {m - 1}, {m}), intDiv({{start_us:Int64}} + {m - 1}, {m})),
               least(intDiv(to_us + 1, {m}), intDiv({{end_us:Int64}} + {m - 1}, {m})))) AS minute_idx
    FROM ({merged_coverage_sql(pair_filter)})
    WHERE intDiv(to_us + 1, {m}) > intDiv(from_us + {m - 1}, {m})
    """


def _pair_filter(pairs: list[Pair] | None) -> tuple[str, dict]:
    if pairs is None:
        return "", {}
    return "AND (exchange, symbol) IN {pairs:Array(Tuple(String, String))}", {"pairs": pairs_param(pairs)}


def merged_intervals(ch: ClickHouse, start_us: int, end_us: int,
                     pairs: Iterable | None = None) -> dict[Pair, list[tuple[int, int]]]:
    """Merged coverage per (exchange, symbol), clipped to [start_us, end_us - 1]."""
    from .universe import normalize_pairs
    plist = normalize_pairs(pairs) if pairs is not None else None
    filt, params = _pair_filter(plist)
    sql = f"SELECT * FROM ({merged_coverage_sql(filt)}) ORDER BY exchange, symbol, from_us"
    out: dict[Pair, list[tuple[int, int]]] = {}
    with ch.session() as c:
        for ex, sym, a, b in c.query(sql, parameters={"start_us": start_us, "end_us": end_us, **params}).result_rows:
            out.setdefault((ex, sym), []).append((int(a), int(b)))
    return out


def covered_minutes(ch: ClickHouse, start_us: int, end_us: int,
                    pairs: Iterable | None = None) -> dict[Pair, list[int]]:
    """Complete minute indices in [start_us, end_us) per (exchange, symbol), sorted."""
    from .universe import normalize_pairs
    plist = normalize_pairs(pairs) if pairs is not None else None
    filt, params = _pair_filter(plist)
    sql = (f"SELECT exchange, symbol, arraySort(groupUniqArray(minute_idx)) "
           f"FROM ({complete_minutes_sql(filt)}) GROUP BY exchange, symbol")
    with ch.session() as c:
        rows = c.query(sql, parameters={"start_us": start_us, "end_us": end_us, **params}).result_rows
    return {(ex, sym): [int(x) for x in mins] for ex, sym, mins in rows}


def first_coverage_us(ch: ClickHouse) -> int | None:
    """When the platform's data begins: the start of the earliest coverage row of any pair (µs),
    or None while nothing is covered yet. Hours before it hold no data at all (nothing was ever
    subscribed or loaded for them): readers treat them as "no data", not as incomplete. A
    historical load records coverage for what it loaded, so it moves this earlier.

    No WHERE clause on purpose: min/count of the partition-key column over the whole table are
    answered from each part's minmax index (ClickHouse's implicit minmax_count projection) without
    reading the column -- 8x faster on 3 M rows, and the table grows by a row per persisted batch,
    while sensors and every bars_1m check ask."""
    rows = ch.rows("SELECT min(from_us), count() FROM marketdata.coverage")
    if not rows or not int(rows[0][1]):
        return None
    return int(rows[0][0])


def before_data(hour_start_us: int, first_us: int | None) -> bool:
    """True when the hour ends before the platform's data begins (``first_coverage_us``; None:
    nothing covered yet): an hour of "no data", not an incomplete one. The hour that holds the
    first coverage is a real hour (its minutes before the start are missing)."""
    return first_us is None or hour_start_us + US_PER_HOUR <= first_us
