"""bars_1m: hourly minute bars in ClickHouse and their completeness check, job and schedule."""

import dagster as dg

from .assets import bars_1m
from .checks import bars_1m_complete
from .schedules import bars_1m_hourly, bars_1m_job

defs = dg.Definitions(
    assets=[bars_1m],
    asset_checks=[bars_1m_complete],
    jobs=[bars_1m_job],
    schedules=[bars_1m_hourly],
)

__all__ = ["bars_1m", "bars_1m_complete", "bars_1m_hourly", "bars_1m_job", "defs"]
