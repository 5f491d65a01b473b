"""bars_1m_job and its hourly schedule: the safety net behind the bars_hour_closed sensor. At
HH:05 it requests the hour that just closed -- unless that hour is already built (materialized),
is being built by a queued or running run, or ends before the platform's data begins (the first
coverage): it then skips, saying why. Re-running an hour is always safe, but rebuilding an hour
the sensor built minutes ago is wasted work."""

from __future__ import annotations

from datetime import timedelta, timezone

import dagster as dg

from ...bars.coverage import before_data, first_coverage_us
from ...clock import HOUR_KEY_FORMAT, parse_hour_key
from ..resources import ClickHouseResource
from .assets import bars_1m

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]

# Targets the asset and, by default, its checks (bars_1m_complete runs after each build);
# partitioned like the asset (hourly_partitions, inferred from the selection).
bars_1m_job = dg.define_asset_job(
    name="bars_1m_job",
    selection=dg.AssetSelection.assets(bars_1m),
    description="Build bars_1m for an hour (or a range via backfill) and check its completeness.",
)


def _in_flight(instance: dg.DagsterInstance, key: str) -> bool:
    """A queued or running run already targets the hour (alone, or inside a range)."""
    h = parse_hour_key(key)
    for rec in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE)):
        tags = rec.dagster_run.tags
        if tags.get("dagster/partition") == key:
            return True
        a, b = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
        try:
            if a and b and parse_hour_key(a) <= h <= parse_hour_key(b):
                return True
        except ValueError:
            continue
    return False


@dg.schedule(
    name="bars_1m_hourly",
    job=bars_1m_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At HH:05 UTC, build the hour that just closed if nothing built it yet (a safety net "
                "behind the bars_hour_closed sensor: skips hours already materialized or being "
                "built, and hours before the data begins).",
)
def bars_1m_hourly(context: dg.ScheduleEvaluationContext, clickhouse: ClickHouseResource):
    at = context.scheduled_execution_time.astimezone(timezone.utc)
    hour = (at - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    key = hour.strftime(HOUR_KEY_FORMAT)
    if context.instance.get_materialized_partitions(bars_1m.key) & {key}:
        return dg.SkipReason(f"{key} is already built (materialized); the safety net has nothing to do")
    if _in_flight(context.instance, key):
        return dg.SkipReason(f"{key} is being built by a queued or running run")
    if before_data(parse_hour_key(key), first_coverage_us(clickhouse.store())):
        return dg.SkipReason(f"{key} ends before the platform's data begins (no coverage): nothing to build")
    return dg.RunRequest(run_key=f"bars_1m_hourly:{key}", partition_key=key,
                         tags={"marketdata/trigger": "bars_1m_hourly"})


__all__ = ["bars_1m_hourly", "bars_1m_job"]
