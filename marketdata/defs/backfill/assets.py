"""tick_backfills: the historical trade loads (ClickHouse marketdata.backfill_progress), observed by
each historical_backfill run so the UI plots trades loaded, pages and % complete over time."""

import dagster as dg

tick_backfills = dg.AssetSpec(
    "tick_backfills",
    description=("Historical trade loads from venue REST history into ClickHouse marketdata.ticks "
                 "(source 'backfill'), one cursor per venue, symbol and range in "
                 "marketdata.backfill_progress. Observed by every historical_backfill run: trades "
                 "loaded, pages, % complete, REST requests and rate-limit waits."),
    group_name="backfill",
    owners=["team:marketdata"],
    kinds={"clickhouse"},
    metadata={"dagster/table_name": "marketdata.backfill_progress"},
)
