"""historical_backfill job (REST history -> ticks -> bars_1m) and its tick_backfills observation.

bars_1m's own partition backfills (the UI's "Materialize" over a range) are governed by its
BackfillPolicy in marketdata.defs.bars.assets."""

import dagster as dg

from .assets import tick_backfills
from .jobs import HistoricalBackfillConfig, historical_backfill

defs = dg.Definitions(assets=[tick_backfills], jobs=[historical_backfill])

__all__ = ["HistoricalBackfillConfig", "defs", "historical_backfill", "tick_backfills"]
