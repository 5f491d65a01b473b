"""marketdata.clock, the one module of time helpers: flooring, hourly partition keys (checked
against Dagster's own hourly partitions, the keys they must match), ISO forms, and parsing what
users type."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from marketdata.clock import (US_PER_DAY, US_PER_HOUR, US_PER_MINUTE, US_PER_SECOND, floor_hour, format_us,
                              hour_key, hour_keys, iso_hour, iso_minute, now_us, parse_hour_key, parse_time_us)
from marketdata.defs.partitions import time_window_us

H0 = 1_767_225_600_000_000                     # 2026-01-01T00:00:00Z
T = H0 + 3 * US_PER_HOUR + 17 * US_PER_MINUTE + 42 * US_PER_SECOND + 123_456   # 03:17:42.123456


def test_units_and_now():
    assert (US_PER_SECOND, US_PER_MINUTE, US_PER_HOUR, US_PER_DAY) == (
        10**6, 60 * 10**6, 3600 * 10**6, 86400 * 10**6)
    before = time.time_ns() // 1000
    n = now_us()
    assert before <= n <= time.time_ns() // 1000


def test_floor_hour():
    assert floor_hour(T) == H0 + 3 * US_PER_HOUR
    assert floor_hour(H0 + 3 * US_PER_HOUR) == H0 + 3 * US_PER_HOUR
    assert floor_hour(H0 + 4 * US_PER_HOUR - 1) == H0 + 3 * US_PER_HOUR


def test_hour_key_floors_and_parses_back():
    assert hour_key(T) == "2026-01-01-03:00"
    assert hour_key(H0 + 4 * US_PER_HOUR - 1) == "2026-01-01-03:00"
    assert parse_hour_key("2026-01-01-03:00") == H0 + 3 * US_PER_HOUR
    for h in range(H0 - 48 * US_PER_HOUR, H0 + 48 * US_PER_HOUR, US_PER_HOUR):
        assert parse_hour_key(hour_key(h)) == h
    with pytest.raises(ValueError):
        parse_hour_key("2026-01-01T03:00Z")


def test_hour_keys_are_dagsters_hourly_partition_keys():
    parts = dg.HourlyPartitionsDefinition(start_date="2025-12-30-00:00", timezone="UTC", end_offset=0)
    first, last = "2025-12-31-20:00", "2026-01-01-05:00"          # across a year boundary
    theirs = parts.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    assert hour_keys(first, last) == theirs and len(theirs) == 10
    assert hour_keys(first, first) == [first]
    assert hour_keys(last, first) == []
    for key in theirs:
        start, end = time_window_us(parts.time_window_for_partition_key(key))
        assert (start, end) == (parse_hour_key(key), parse_hour_key(key) + US_PER_HOUR)
        assert hour_key(start) == hour_key(end - 1) == key


def test_iso_forms():
    assert iso_minute(T) == "2026-01-01T03:17Z"
    assert iso_hour(T) == "2026-01-01T03:00Z"
    assert format_us(T) == "2026-01-01T03:17:42Z"
    assert format_us(H0 + US_PER_SECOND - 1) == "2026-01-01T00:00:00Z"      # truncated, never rounded up
    assert format_us(H0 - 1) == "2025-12-31T23:59:59Z"


@pytest.mark.parametrize("text", [
    "2026-01-01T03:17:42.123456Z", "2026-01-01T03:17:42.123456z", "2026-01-01T03:17:42.123456+00:00",
    "2026-01-01T04:17:42.123456+01:00", "2026-01-01 03:17:42.123456", " 2026-01-01T03:17:42.123456 ",
])
def test_parse_time_us_iso(text):
    assert parse_time_us(text) == T


def test_parse_time_us_dates_datetimes_and_epochs():
    assert parse_time_us("2026-01-05") == H0 + 4 * US_PER_DAY
    assert parse_time_us("2026-01-05T10:00Z") == H0 + 4 * US_PER_DAY + 10 * US_PER_HOUR
    assert parse_time_us(datetime(2026, 1, 1, 3, tzinfo=timezone.utc)) == H0 + 3 * US_PER_HOUR
    assert parse_time_us(datetime(2026, 1, 1, 3)) == H0 + 3 * US_PER_HOUR                  # naive means UTC
    assert parse_time_us(datetime(2026, 1, 1, 4, tzinfo=timezone(timedelta(hours=1)))) == H0 + 3 * US_PER_HOUR
    s = H0 // US_PER_SECOND
    assert parse_time_us(s) == parse_time_us(str(s)) == H0                     # seconds
    assert parse_time_us(s * 1000) == parse_time_us(str(s * 1000)) == H0       # milliseconds
    assert parse_time_us(H0) == parse_time_us(str(H0)) == H0                   # microseconds
    assert parse_time_us(s + 0.5) == H0 + 500_000


def test_parse_time_us_says_what_it_wants():
    with pytest.raises(ValueError, match="not ISO 8601, e.g. 2026-01-05T10:00Z"):
        parse_time_us("yesterday")
