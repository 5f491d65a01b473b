"""Time in integer microseconds since the Unix epoch, UTC: the unit of every timestamp in the
platform. The wall clock, the units, flooring to the hour, and the text forms a time takes on the
way in and out: ISO 8601 (parsed from users, printed in logs and reports) and the hourly partition
key ('2026-01-01-03:00', the key of Dagster's hourly partitions and of the sensors' cursors).

Pure functions on integers and strings: nothing here reads the configuration or imports dagster.
"""

import time
from datetime import datetime, timezone


def now_us() -> int:
    return time.time_ns() // 1000


US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60_000_000
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR

HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def floor_hour(ts_us: int) -> int:
    """The start of the UTC hour containing ``ts_us``."""
    return ts_us // US_PER_HOUR * US_PER_HOUR


def _utc(ts_us: int, unit_us: int = US_PER_SECOND) -> datetime:
    """``ts_us`` floored to ``unit_us`` as an aware UTC datetime (integer arithmetic: exact)."""
    return datetime.fromtimestamp(ts_us // unit_us * unit_us // US_PER_SECOND, tz=timezone.utc)


def hour_key(ts_us: int) -> str:
    """µs -> the key of the hourly partition containing it, e.g. '2026-01-01-03:00'."""
    return _utc(ts_us, US_PER_HOUR).strftime(HOUR_KEY_FORMAT)


def parse_hour_key(key: str) -> int:
    """'2026-01-01-03:00' -> the hour's start in µs."""
    return int(datetime.strptime(key, HOUR_KEY_FORMAT).replace(tzinfo=timezone.utc).timestamp()) * US_PER_SECOND


def hour_keys(first: str, last: str) -> list[str]:
    """The hourly partition keys from ``first`` to ``last``, both included."""
    return [hour_key(h) for h in range(parse_hour_key(first), parse_hour_key(last) + 1, US_PER_HOUR)]


def iso_minute(ts_us: int) -> str:
    """µs -> '2026-01-01T03:17Z' (the minute's start, UTC)."""
    return _utc(ts_us, US_PER_MINUTE).strftime("%Y-%m-%dT%H:%MZ")


def iso_hour(ts_us: int) -> str:
    """µs -> '2026-01-01T03:00Z' (the hour's start, UTC)."""
    return _utc(ts_us, US_PER_HOUR).strftime("%Y-%m-%dT%H:00Z")


def format_us(ts_us: int) -> str:
    """µs -> '2026-01-05T10:00:07Z' (to the second, UTC)."""
    return _utc(ts_us).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time_us(value: str | int | float | datetime) -> int:
    """'2026-01-05T10:00Z', '2026-01-05 10:00', '2026-01-05' (UTC unless an offset is given),
    a datetime, or epoch seconds/ms/µs -> integer µs UTC."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        v = float(value)
        return int(v * 1_000_000 if abs(v) < 1e11 else v * 1000 if abs(v) < 1e14 else v)
    else:
        s = value.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"time {value!r} is not ISO 8601, e.g. 2026-01-05T10:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1_000_000)
