"""The daily completeness report's job and schedule."""

from __future__ import annotations

import warnings

import dagster as dg

from ..bars.assets import OWNERS
from .assets import completeness_daily

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)    # owners= is beta in 1.13
    completeness_daily_job = dg.define_asset_job(
        name="completeness_daily_job",
        selection=dg.AssetSelection.assets(completeness_daily),
        owners=OWNERS,
        description="Summarise a UTC day's bars_1m completeness per venue and symbol (completeness_daily).",
    )

    completeness_daily_schedule = dg.build_schedule_from_partitioned_job(
        completeness_daily_job,
        name="completeness_daily_schedule",
        hour_of_day=0,
        minute_of_hour=30,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        owners=OWNERS,
        description="At 00:30 UTC, report the previous day's completeness (its last hour closed ~00:02).",
    )
