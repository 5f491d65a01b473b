"""Coarser bars from 1-minute bars (pure polars, no store): 5m, 15m, 1h and 1d.

Rules, per (exchange, symbol, bucket):

* only the minutes the market calendar expects count (24/7 venues: every minute; equities: the
  NYSE session minutes, so a "1d" bar is the session, early closes included, and a bucket with no
  session minute does not exist);
* open / close = the first / last traded minute's open / close, high / low = max / min over the
  traded minutes; a bucket without any trade is flat at the last minute's close (the price carried
  forward by the 1m build);
* volume and trade_count are sums, vwap = sum(vwap * volume) / sum(volume) (the close when the
  volume is 0), build_version = the newest build among its minutes;
* ``expected_minutes`` = minutes the calendar expects in the bucket, ``complete_minutes`` = of
  those, the minutes with a complete 1m bar; the bar is ``complete`` only if the two are equal.
  A bucket whose minutes were never built still appears (prices null, complete false).
"""

from __future__ import annotations

import polars as pl

from ..bars.universe import Pair
from .calendar_frames import always_open, session_minutes, to_datetime, with_expected
from .request import interval_us

PRICE_COLS = ("open", "high", "low", "close")


def bucket_grid(pairs: list[Pair], start_us: int, end_us: int, every_us: int) -> pl.DataFrame:
    """Every (exchange, symbol, bucket) of the 24/7 pairs with expected = the bucket length."""
    starts = pl.Series("time_us", range(start_us, end_us, every_us), dtype=pl.Int64)
    crypto = [p for p in pairs if always_open(*p)]
    if not crypto:
        return pl.DataFrame(schema={"exchange": pl.String, "symbol": pl.String,
                                    "time": pl.Datetime("us", "UTC"), "expected_minutes": pl.UInt32})
    pf = pl.DataFrame({"exchange": [e for e, _ in crypto], "symbol": [s for _, s in crypto]})
    return (pf.join(pl.DataFrame(starts), how="cross")
            .with_columns(time=to_datetime(pl.col("time_us")),
                          expected_minutes=pl.lit(every_us // 60_000_000, dtype=pl.UInt32))
            .drop("time_us"))


def resample(minutes: pl.DataFrame, pairs: list[Pair], start_us: int, end_us: int, interval: str) -> pl.DataFrame:
    """1m bars (the frame ``bars(..., interval="1m")`` returns) -> bars of ``interval``."""
    every = interval_us(interval)
    if start_us % every or end_us % every:
        raise ValueError(f"range must be aligned to {interval}")
    every_str = interval
    sessions = session_minutes(pairs, start_us, end_us)
    m = minutes if "expected" in minutes.columns else with_expected(minutes, pairs, start_us, end_us)
    m = m.filter(pl.col("expected")).with_columns(bucket=pl.col("time").dt.truncate(every_str))
    traded = pl.col("trade_count") > 0
    agg = (m.sort("exchange", "symbol", "time")
           .group_by("exchange", "symbol", "bucket", maintain_order=True)
           .agg(open=pl.col("open").filter(traded).first(),
                high=pl.col("high").filter(traded).max(),
                low=pl.col("low").filter(traded).min(),
                close=pl.col("close").filter(traded).last(),
                last_close=pl.col("close").last(),
                volume=pl.col("volume").sum(),
                trade_count=pl.col("trade_count").sum(),
                pv=(pl.col("vwap") * pl.col("volume").cast(pl.Float64)).sum(),
                v=pl.col("volume").cast(pl.Float64).sum(),
                complete_minutes=pl.col("complete").cast(pl.UInt32).sum(),
                build_version=pl.col("build_version").max())
           .with_columns([pl.coalesce(pl.col(c), pl.col("last_close")).alias(c) for c in PRICE_COLS])
           .with_columns(vwap=pl.when(pl.col("v") > 0).then(pl.col("pv") / pl.col("v"))
                         .otherwise(pl.col("close").cast(pl.Float64)))
           .drop("last_close", "pv", "v")
           .rename({"bucket": "time"}))
    grids = [bucket_grid(pairs, start_us, end_us, every)]
    if sessions is not None:
        grids.append(sessions.group_by("exchange", "symbol", time=pl.col("time").dt.truncate(every_str))
                     .agg(expected_minutes=pl.len().cast(pl.UInt32)))
    grid = pl.concat(grids)
    out = (grid.join(agg, on=["exchange", "symbol", "time"], how="left")
           .with_columns(complete_minutes=pl.col("complete_minutes").fill_null(0))
           .with_columns(complete=(pl.col("complete_minutes") == pl.col("expected_minutes"))
                         & (pl.col("expected_minutes") > 0))
           .sort("exchange", "symbol", "time"))
    return out.select("exchange", "symbol", "time", *PRICE_COLS, "volume", "trade_count", "vwap",
                      "complete", "expected_minutes", "complete_minutes", "build_version")
