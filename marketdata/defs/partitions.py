"""Partitions shared by every hourly asset and check.

``MARKETDATA_BARS_START`` (default 2026-01-01-00:00, format YYYY-MM-DD-HH:MM, UTC) is the first
hour; ``end_offset=0`` exposes closed hours only (the hour in progress is never a partition).
"""

from __future__ import annotations

import os

import dagster as dg

from ..clock import US_PER_HOUR, floor_hour, now_us

DEFAULT_BARS_START = "2026-01-01-00:00"

hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=os.environ.get("MARKETDATA_BARS_START") or DEFAULT_BARS_START,
    timezone="UTC",
    end_offset=0,
)


def time_window_us(window: dg.TimeWindow) -> tuple[int, int]:
    """A partition time window as [start_us, end_us) integer microseconds UTC."""
    start = int(window.start.timestamp()) * 1_000_000
    end = int(window.end.timestamp()) * 1_000_000
    if start % US_PER_HOUR or end % US_PER_HOUR:
        raise ValueError(f"partition window {window} is not hour-aligned")
    return start, end


def first_hour_us() -> int:
    """The start of the first hourly partition, in µs. From the definition's start, not from
    ``get_first_partition_key()``: that is None until the first hour has closed, which is the
    case for the whole first hour of a fresh `marketdata up` (its partitions begin at the hour
    the data begins)."""
    return int(hourly_partitions.start.timestamp()) * 1_000_000


def partition_bounds_us(now: int | None = None) -> tuple[int, int]:
    """[first hour, end of the last closed hour) of hourly_partitions, in µs: the hours that are
    partitions now."""
    first = first_hour_us()
    now = now_us() if now is None else now
    return first, floor_hour(now)
