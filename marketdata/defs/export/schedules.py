"""The daily export's job and schedule."""

from __future__ import annotations

import warnings

import dagster as dg

from ..bars.assets import OWNERS
from .assets import bars_export_daily

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)    # owners= is beta in 1.13
    bars_export_daily_job = dg.define_asset_job(
        name="bars_export_daily_job",
        selection=dg.AssetSelection.assets(bars_export_daily),
        owners=OWNERS,
        description="Write a UTC day's bars as Parquet with its completeness manifest (bars_export_daily).",
    )

    bars_export_daily_schedule = dg.build_schedule_from_partitioned_job(
        bars_export_daily_job,
        name="bars_export_daily_schedule",
        hour_of_day=0,
        minute_of_hour=45,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        owners=OWNERS,
        description="At 00:45 UTC, export the previous day (after the 00:30 completeness report).",
    )
