"""Observed ingest: external assets for each venue's ingest process and for raw_ticks, the
ingest_healthy / persist_healthy checks, the ingest_health sensor, and the bars_hour_closed
sensor that turns persisted coverage into bars_1m runs."""

import dagster as dg

from .assets import VENUES, ingest_health_checks, ingest_specs, raw_ticks
from .sensors import bars_hour_closed, ingest_health

defs = dg.Definitions(
    assets=[*ingest_specs, raw_ticks],
    asset_checks=[ingest_health_checks],
    sensors=[ingest_health, bars_hour_closed],
)

__all__ = ["VENUES", "bars_hour_closed", "defs", "ingest_health", "ingest_health_checks", "ingest_specs",
           "raw_ticks"]
