"""``bars()``: minute bars (or coarser, derived on read) as a polars DataFrame.

The 1m frame is ``bars_1m FINAL`` (the latest build of every minute) read as Arrow through the
clickhouse-connect ``Client`` of ``ClickHouse.session()`` and handed to polars without a detour
through Python rows; the same call works on the embedded engine and on a ClickHouse server.
Columns: exchange, symbol, time (minute start, UTC), open, high, low, close, volume (Decimal),
trade_count, vwap, complete (bool), expected (bool: the market calendar expects this minute),
build_version. Coarser intervals: ``marketdata.read.resample``.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ..bars.universe import Pair, pairs_param
from ..storage.clickhouse import ClickHouse
from .calendar_frames import to_datetime, with_expected
from .request import US_PER_MINUTE, interval_us, resolve_pairs, time_range
from .resample import resample

# bars_1m is partitioned by month and a rebuilt minute stays in its minute's month, so FINAL can
# collapse builds per partition (no merge across the whole table).
BARS_1M_SQL = """
SELECT exchange, symbol, toInt64(toUnixTimestamp(minute)) * 1000000 AS time_us,
       open, high, low, close, volume, trade_count, vwap, complete, build_version
FROM marketdata.bars_1m FINAL
WHERE (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
  AND minute >= toDateTime(intDiv({a:Int64}, 1000000), 'UTC')
  AND minute < toDateTime(intDiv({b:Int64}, 1000000), 'UTC')
  __COMPLETE__
ORDER BY exchange, symbol, minute
SETTINGS do_not_merge_across_partitions_select_final = 1
"""

SCHEMA_1M = ["exchange", "symbol", "time", "open", "high", "low", "close", "volume", "trade_count",
             "vwap", "complete", "expected", "build_version"]


def query_bars_1m(client, pairs: list[Pair], start_us: int, end_us: int, *, complete_only: bool = False) -> pl.DataFrame:
    """bars_1m FINAL of the pairs over [start_us, end_us) -> polars (via Arrow)."""
    sql = BARS_1M_SQL.replace("__COMPLETE__", "AND complete = 1" if complete_only else "")
    table = client.query_arrow(sql, parameters={"pairs": pairs_param(pairs), "a": start_us, "b": end_us},
                               use_strings=True)
    df = pl.from_arrow(table)
    df = df.with_columns(time=to_datetime(pl.col("time_us")), complete=pl.col("complete").cast(pl.Boolean)).drop("time_us")
    df = with_expected(df, pairs, start_us, end_us)
    return df.select(SCHEMA_1M)


def bars(venues: Any, symbols: Any, start: Any, end: Any, *, complete_only: bool = False,
         interval: str = "1m", store: ClickHouse | None = None, config_path: str | None = None) -> pl.DataFrame:
    """Bars of ``venues`` x ``symbols`` over [start, end) (UTC), one row per pair per interval.

    ``complete_only``: only bars whose every expected minute is complete. ``interval``: 1m, 5m,
    15m, 1h or 1d; start and end must be aligned to it. Raises ``ReadError`` for an unknown venue or
    symbol, a bad interval or a bad range."""
    every = interval_us(interval)
    start_us, end_us = time_range(start, end, every)
    ch = store or ClickHouse()
    with ch.session() as c:
        sel = resolve_pairs(c, venues, symbols, start_us, end_us, config_path=config_path)
        if every == US_PER_MINUTE:
            return query_bars_1m(c, sel.pairs, start_us, end_us, complete_only=complete_only)
        minutes = query_bars_1m(c, sel.pairs, start_us, end_us)
    out = resample(minutes, sel.pairs, start_us, end_us, interval)
    return out.filter(pl.col("complete")) if complete_only else out
