"""``completeness()``: expected, stored and missing minutes per pair and UTC hour, as a frame.

It is ``marketdata.bars.completeness.audit_hours`` -- the function behind the ``bars_1m_complete``
Dagster check and the audits -- restricted to the pairs asked for, so a backtest sees exactly what
the platform's checks see.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import polars as pl

from ..bars.completeness import HourAudit, audit_hours
from ..bars.universe import Pair
from ..clock import US_PER_HOUR, US_PER_MINUTE
from ..storage.clickhouse import ClickHouse
from .request import resolve_pairs, time_range

SCHEMA = {"exchange": pl.String, "symbol": pl.String, "hour": pl.Datetime("us", "UTC"),
          "expected": pl.UInt32, "stored": pl.UInt32, "missing": pl.UInt32, "complete": pl.Boolean,
          "missing_minutes": pl.List(pl.Datetime("us", "UTC"))}


def hour_range(start_us: int, end_us: int) -> tuple[int, int]:
    """[start, end) widened to whole UTC hours."""
    return start_us // US_PER_HOUR * US_PER_HOUR, -(-end_us // US_PER_HOUR) * US_PER_HOUR


def audits_for(client_or_store, pairs: list[Pair], start_us: int, end_us: int) -> list[HourAudit]:
    """audit_hours over the hours of [start_us, end_us), only for ``pairs``."""
    a, b = hour_range(start_us, end_us)
    want = set(pairs)
    return [x for x in audit_hours(client_or_store, a, b, pairs) if x.pair in want]


def audits_frame(audits: list[HourAudit]) -> pl.DataFrame:
    def dt(us: int) -> datetime:
        return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    rows = [{"exchange": x.exchange, "symbol": x.symbol, "hour": dt(x.hour_start_us), "expected": x.expected,
             "stored": x.stored, "missing": x.missing, "complete": x.passed,
             "missing_minutes": [dt(x.hour_start_us + m * US_PER_MINUTE) for m in x.missing_offsets]}
            for x in audits]
    return pl.DataFrame(rows, schema=SCHEMA).sort("exchange", "symbol", "hour")


def completeness(venues: Any, symbols: Any, start: Any, end: Any, *, store: ClickHouse | None = None,
                 config_path: str | None = None) -> pl.DataFrame:
    """One row per pair per UTC hour touching [start, end): expected minutes (market calendar),
    stored complete minutes, missing count, complete flag and the missing minutes themselves."""
    start_us, end_us = time_range(start, end, 1)
    ch = store or ClickHouse()
    with ch.session() as c:
        sel = resolve_pairs(c, venues, symbols, start_us, end_us, config_path=config_path)
    return audits_frame(audits_for(ch, sel.pairs, start_us, end_us))
