"""Simulated time.

``sim_now = start + (wall_now - wall_at_start) * speed``; wall time is measured with the monotonic
clock so the simulated clock never jumps when the system clock is adjusted.  Everything the
simulator reports as a venue time (trade timestamps, REST ``serverTime``, klines windows) is
simulated time, in integer microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


def parse_time_us(value: str | int | float | datetime | None) -> int | None:
    """Parse a point in time to integer microseconds UTC.

    Accepts ISO 8601 (``2026-01-05T10:00:00Z``, offsets allowed, naive means UTC), a
    :class:`datetime`, or a number: seconds (< 1e11), milliseconds (< 1e14) or microseconds.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond
    if isinstance(value, (int, float)):
        v = float(value)
        if abs(v) < 1e11:
            return int(round(v * 1_000_000))
        if abs(v) < 1e14:
            return int(round(v * 1000))
        return int(v)
    text = str(value).strip()
    if not text:
        return None
    try:
        return parse_time_us(float(text))
    except ValueError:
        pass
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return parse_time_us(datetime.fromisoformat(text))


def format_time_us(ts_us: int) -> str:
    dt = datetime.fromtimestamp(ts_us / 1_000_000, tz=timezone.utc)
    return dt.isoformat().replace("+00:00", "Z")


class SimClock:
    """Maps monotonic wall time to simulated time.

    ``start()`` pins the wall origin; before it is called the clock reads ``start_us``.
    """

    def __init__(self, start_us: int | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.start_us = int(start_us if start_us is not None else time.time() * 1_000_000)
        self.speed = float(speed)
        self.wall0: float | None = None
        # No start given: simulated time is wall time from the moment the clock starts. (Pinned at
        # construction instead, it ran behind the wall by the start-up time, ~1.4 s with ten venues,
        # which every connector then reported as lag.)
        self._now_at_start = start_us is None

    def start(self, wall0: float | None = None) -> None:
        mono = time.monotonic()
        self.wall0 = mono if wall0 is None else wall0
        if self._now_at_start:
            self.start_us = int((time.time() - (mono - self.wall0)) * 1_000_000)

    def now_us(self, mono: float | None = None) -> int:
        if self.wall0 is None:
            return self.start_us
        if mono is None:
            mono = time.monotonic()
        return self.start_us + int((mono - self.wall0) * self.speed * 1_000_000)

    def wall_for(self, sim_us: int) -> float:
        """The monotonic wall time at which the simulated clock reads ``sim_us``."""
        wall0 = self.wall0 if self.wall0 is not None else time.monotonic()
        return wall0 + (sim_us - self.start_us) / 1_000_000 / self.speed
