"""Audits of bars_1m: the per-hour completeness audit sensor and the job it launches, the
reconciliation check against venue candles, and the daily completeness report (asset, job,
schedule)."""

import dagster as dg

from .assets import completeness_daily, daily_partitions
from .checks import bars_1m_reconciled
from .jobs import bars_completeness_audit_job
from .schedules import completeness_daily_job, completeness_daily_schedule
from .sensors import bars_completeness_audit

defs = dg.Definitions(
    assets=[completeness_daily],
    asset_checks=[bars_1m_reconciled],
    jobs=[completeness_daily_job, bars_completeness_audit_job],
    schedules=[completeness_daily_schedule],
    sensors=[bars_completeness_audit],
)

__all__ = ["bars_1m_reconciled", "bars_completeness_audit", "bars_completeness_audit_job", "completeness_daily", "completeness_daily_job",
           "completeness_daily_schedule", "daily_partitions", "defs"]
