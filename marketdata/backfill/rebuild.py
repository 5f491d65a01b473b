"""Rebuild bars_1m for a set of hours after their ticks or coverage changed (a gap repair, a
history load): contiguous hours become one range, cut at ``max_hours`` (one INSERT ... SELECT per
range, like a range run of the asset), then the completeness audit over the same hours."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ..bars import BuildResult, HourAudit, audit_hours, build_bars
from ..clock import US_PER_HOUR

DEFAULT_MAX_HOURS = 168


def hour_ranges(hours_us: Iterable[int], max_hours: int = DEFAULT_MAX_HOURS) -> list[tuple[int, int]]:
    """Hour starts (µs, any order, duplicates allowed) -> sorted [start, end) ranges of at most
    ``max_hours`` contiguous hours."""
    hs = sorted({h // US_PER_HOUR * US_PER_HOUR for h in hours_us})
    out: list[tuple[int, int]] = []
    for h in hs:
        if out and out[-1][1] == h and (out[-1][1] - out[-1][0]) // US_PER_HOUR < max_hours:
            out[-1] = (out[-1][0], h + US_PER_HOUR)
        else:
            out.append((h, h + US_PER_HOUR))
    return out


def span_hours(start_us: int, end_us: int) -> list[int]:
    """The hour starts of every hour that [start_us, end_us) touches."""
    first = start_us // US_PER_HOUR * US_PER_HOUR
    return list(range(first, end_us, US_PER_HOUR)) if end_us > start_us else []


@dataclass
class RebuildResult:
    ranges: list[tuple[int, int]] = field(default_factory=list)
    builds: list[BuildResult] = field(default_factory=list)
    audits: list[HourAudit] = field(default_factory=list)

    @property
    def hours(self) -> int:
        return sum((b - a) // US_PER_HOUR for a, b in self.ranges)

    @property
    def bars_written(self) -> int:
        return sum(b.bars_written for b in self.builds)

    @property
    def complete_bars(self) -> int:
        return sum(b.complete_bars for b in self.builds)

    @property
    def build_seconds(self) -> float:
        return float(round(sum(b.elapsed_s for b in self.builds), 3))


def rebuild_hours(ch, hours_us: Iterable[int], symbols: Any = None, *,
                  max_hours: int = DEFAULT_MAX_HOURS, audit: bool = True) -> RebuildResult:
    res = RebuildResult(ranges=hour_ranges(hours_us, max_hours))
    for a, b in res.ranges:
        res.builds.append(build_bars(ch, a, b, symbols))
        if audit:
            res.audits.extend(audit_hours(ch, a, b, symbols))
    return res
