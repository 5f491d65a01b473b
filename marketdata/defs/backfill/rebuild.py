"""Rebuilding bars_1m hours from a job that is not the asset's own run (gap repair, historical
backfill): the library rebuilds (``marketdata.backfill.rebuild_hours``: contiguous hours as one
INSERT ... SELECT, like a range run), and this records it in Dagster the way an asset run would --
one bars_1m materialization per hour and one bars_1m_complete result per hour -- so the asset's
partitions and per-hour check status in the UI reflect the rebuild."""

from typing import Generator

import dagster as dg

from ...backfill import RebuildResult, rebuild_hours
from ...bars import totals
from ...clock import US_PER_HOUR, format_us, hour_key
from ..bars.assets import bars_1m
from ..bars.checks import hourly_check_evaluations, latest_materializations
from ..partitions import partition_bounds_us

MAX_HOURS_PER_BUILD = 168           # like bars_1m's backfill policy: a week per INSERT ... SELECT


def rebuild_and_record(context: dg.OpExecutionContext, store, hours: list[int], pairs, *,
                       reason: str) -> Generator[dg.AssetMaterialization, None, RebuildResult]:
    """For a generator op (``res = yield from rebuild_and_record(...)``): rebuild, yield one
    bars_1m materialization per hour (stored as they are yielded), then log one
    bars_1m_complete result per hour pointing at that materialization. Needs an executor that
    stores events as they come (the in-process one), so the results can find their target."""
    if not hours:
        context.log.info("bars_1m: no hours to rebuild")
        return RebuildResult()
    res = rebuild_hours(store, hours, pairs, max_hours=MAX_HOURS_PER_BUILD)
    for (a, b), build in zip(res.ranges, res.builds):
        context.log.info(f"bars_1m [{format_us(a)}, {format_us(b)}) rebuilt ({reason}): {build.bars_written} "
                         f"bars for {build.symbols} pairs, {build.complete_bars} rows complete, "
                         f"{build.elapsed_s}s")
    first, closed = partition_bounds_us()
    by_hour: dict[int, list] = {}
    for a in res.audits:
        by_hour.setdefault(a.hour_start_us, []).append(a)
    version = {h: b.build_version for (s, e), b in zip(res.ranges, res.builds) for h in range(s, e, US_PER_HOUR)}
    for h in sorted(by_hour):
        if not first <= h < closed:
            continue
        rows = by_hour[h]
        t = totals(rows)
        yield dg.AssetMaterialization(
            asset_key=bars_1m.key, partition=hour_key(h),
            description=f"rebuilt by {context.job_name} ({reason})",
            metadata={
                "complete_bars": dg.MetadataValue.int(t.stored),
                "expected_bars": dg.MetadataValue.int(t.expected),
                "stored_bars": dg.MetadataValue.int(t.stored),
                "completeness_pct": dg.MetadataValue.float(float(t.completeness_pct)),
                "symbols": dg.MetadataValue.int(len(rows)),
                "hours": dg.MetadataValue.int(1),
                "build_version": dg.MetadataValue.text(str(version.get(h, ""))),
                "rebuilt_by": dg.MetadataValue.text(context.job_name),
            })
    targets = latest_materializations(context.instance, [hour_key(h) for h in sorted(by_hour)])
    for ev in hourly_check_evaluations(res.audits, targets):
        context.log_event(ev)
    return res
