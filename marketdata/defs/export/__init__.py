"""Daily Parquet export of bars (and optionally ticks) for data teams: asset, job and schedule."""

import dagster as dg

from .assets import bars_export_daily
from .schedules import bars_export_daily_job, bars_export_daily_schedule

defs = dg.Definitions(
    assets=[bars_export_daily],
    jobs=[bars_export_daily_job],
    schedules=[bars_export_daily_schedule],
)

__all__ = ["bars_export_daily", "bars_export_daily_job", "bars_export_daily_schedule", "defs"]
