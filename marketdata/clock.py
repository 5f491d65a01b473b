"""Wall-clock time in integer microseconds, the unit of every timestamp in the platform."""

import time


def now_us() -> int:
    return time.time_ns() // 1000


US_PER_MINUTE = 60_000_000
US_PER_HOUR = 3_600_000_000
