"""Gap repair: the gap_repair sensor launches gap_repair_job (REST history -> ticks, gap records,
coverage -> bars_1m rebuild of the touched hours); tick_gaps is observed by each run."""

import dagster as dg

from .assets import tick_gaps
from .jobs import GapRepairConfig, gap_repair_job
from .sensors import gap_repair

defs = dg.Definitions(assets=[tick_gaps], jobs=[gap_repair_job], sensors=[gap_repair])

__all__ = ["GapRepairConfig", "defs", "gap_repair", "gap_repair_job", "tick_gaps"]
