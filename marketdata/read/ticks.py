"""``ticks()``: canonical ticks as a polars DataFrame, each carrying its minute's completeness.

``ticks FINAL`` (duplicates collapsed, corrections applied, cancels gone), read as Arrow. Columns:
exchange, symbol, time (event time, µs UTC), ts_us, trade_id, open, high, low, close, volume
(Decimal), trade_count, side, source, event, version, and ``minute_complete``: the tick's minute
has a complete bar in bars_1m (false when the minute is not, or not yet, complete) -- so a user
of raw ticks can tell a quiet tape from a hole in it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ..bars.build import TICKS_FINAL
from ..bars.universe import Pair, pairs_param
from ..storage.clickhouse import ClickHouse
from .bars import query_bars_1m
from .calendar_frames import to_datetime
from .request import US_PER_MINUTE, resolve_pairs, time_range

TICKS_SQL = f"""
SELECT exchange, symbol, ts_us, trade_id, open, high, low, close, volume, trade_count, side,
       source, event, version
FROM marketdata.ticks FINAL
WHERE (exchange, symbol) IN {{pairs:Array(Tuple(String, String))}}
  AND ts_us >= {{a:Int64}} AND ts_us < {{b:Int64}}
ORDER BY exchange, symbol, ts_us, toUInt64OrZero(trade_id), trade_id
SETTINGS {TICKS_FINAL}
"""

SCHEMA = ["exchange", "symbol", "time", "ts_us", "trade_id", "open", "high", "low", "close", "volume",
          "trade_count", "side", "source", "event", "version", "minute_complete"]


def query_ticks(client, pairs: list[Pair], start_us: int, end_us: int) -> pl.DataFrame:
    df = pl.from_arrow(client.query_arrow(TICKS_SQL, parameters={"pairs": pairs_param(pairs), "a": start_us,
                                                                  "b": end_us}, use_strings=True))
    lo = start_us // US_PER_MINUTE * US_PER_MINUTE
    hi = -(-end_us // US_PER_MINUTE) * US_PER_MINUTE
    done = (query_bars_1m(client, pairs, lo, hi, complete_only=True)
            .select("exchange", "symbol", minute="time").with_columns(minute_complete=pl.lit(True)))
    df = (df.with_columns(time=to_datetime(pl.col("ts_us")))
          .with_columns(minute=pl.col("time").dt.truncate("1m"))
          .join(done, on=["exchange", "symbol", "minute"], how="left", maintain_order="left")
          .with_columns(minute_complete=pl.col("minute_complete").fill_null(False))
          .drop("minute"))
    return df.select(SCHEMA)


def ticks(venues: Any, symbols: Any, start: Any, end: Any, *, complete_only: bool = False,
          store: ClickHouse | None = None, config_path: str | None = None) -> pl.DataFrame:
    """Ticks of ``venues`` x ``symbols`` with start <= time < end (UTC). ``complete_only``: only
    ticks whose minute is complete. Raises ``ReadError`` for an unknown venue or symbol."""
    start_us, end_us = time_range(start, end, 1)
    ch = store or ClickHouse()
    with ch.session() as c:
        sel = resolve_pairs(c, venues, symbols, start_us, end_us, config_path=config_path)
        df = query_ticks(c, sel.pairs, start_us, end_us)
    return df.filter(pl.col("minute_complete")) if complete_only else df
