"""The market calendar as polars frames: which minutes of a range each pair is expected to have.

The rule is ``marketdata.bars.calendar.expected_minutes`` -- the very function the completeness
audit and the Dagster check use -- evaluated per UTC hour. A 24/7 venue expects every minute, so
only venues with a session calendar (equities) are expanded minute by minute; for the others
``session_minutes`` returns None and callers treat every minute as expected.
"""

from __future__ import annotations

from functools import lru_cache

import polars as pl

from ..bars.calendar import ALWAYS_OPEN, calendar_for, expected_minutes
from ..bars.universe import Pair
from ..clock import US_PER_HOUR, US_PER_MINUTE


def always_open(exchange: str, symbol: str) -> bool:
    return calendar_for(exchange, symbol) is ALWAYS_OPEN


@lru_cache(maxsize=64)
def _expected_us(exchange: str, symbol: str, start_us: int, end_us: int) -> tuple[int, ...]:
    out: list[int] = []
    h = start_us // US_PER_HOUR * US_PER_HOUR
    while h < end_us:
        for m in expected_minutes(exchange, symbol, h):
            t = h + m * US_PER_MINUTE
            if start_us <= t < end_us:
                out.append(t)
        h += US_PER_HOUR
    return tuple(out)


def session_minutes(pairs: list[Pair], start_us: int, end_us: int) -> pl.DataFrame | None:
    """Frame (exchange, symbol, time) of the expected minutes in [start_us, end_us) of the pairs
    whose venue trades in sessions; None when every pair is 24/7."""
    frames = []
    for ex, sym in pairs:
        if always_open(ex, sym):
            continue
        ts = _expected_us(ex, sym, start_us, end_us)
        frames.append(pl.DataFrame({"exchange": [ex] * len(ts), "symbol": [sym] * len(ts), "time_us": list(ts)},
                                   schema={"exchange": pl.String, "symbol": pl.String, "time_us": pl.Int64}))
    if not frames:
        return None
    return pl.concat(frames).with_columns(time=to_datetime(pl.col("time_us"))).drop("time_us")


def to_datetime(us: pl.Expr) -> pl.Expr:
    """Integer µs UTC -> Datetime(µs, UTC)."""
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def with_expected(df: pl.DataFrame, pairs: list[Pair], start_us: int, end_us: int) -> pl.DataFrame:
    """``df`` (exchange, symbol, time, ...) with a boolean ``expected`` column: the calendar
    expects a bar for that minute. Row order is kept."""
    sessions = session_minutes(pairs, start_us, end_us)
    if sessions is None:
        return df.with_columns(expected=pl.lit(True))
    session_keys = [f"{e}\x00{s}" for e, s in pairs if not always_open(e, s)]
    key = pl.col("exchange") + "\x00" + pl.col("symbol")
    return (df.join(sessions.with_columns(_s=pl.lit(True)), on=["exchange", "symbol", "time"], how="left",
                    maintain_order="left")
            .with_columns(expected=pl.when(key.is_in(session_keys)).then(pl.col("_s").fill_null(False))
                          .otherwise(pl.lit(True)))
            .drop("_s"))
