"""bars_1m_job and its hourly schedule: the safety net that builds each hour once it has closed
(at minute 5), whatever the data-driven triggers did. Re-running an hour is always safe."""

from __future__ import annotations

import dagster as dg

from .assets import bars_1m

# Targets the asset and, by default, its checks (bars_1m_complete runs after each build);
# partitioned like the asset (hourly_partitions, inferred from the selection).
bars_1m_job = dg.define_asset_job(
    name="bars_1m_job",
    selection=dg.AssetSelection.assets(bars_1m),
    description="Build bars_1m for an hour (or a range via backfill) and check its completeness.",
)

bars_1m_hourly = dg.build_schedule_from_partitioned_job(
    bars_1m_job,
    name="bars_1m_hourly",
    minute_of_hour=5,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At HH:05 UTC, build the hour that just closed.",
)
