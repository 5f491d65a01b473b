"""completeness_daily: the previous UTC day's completeness per venue and symbol, as metadata
(a table per symbol and per venue, numeric completeness % overall and per venue). It stores
nothing; the report is the materialization."""


from typing import Any

import dagster as dg

from ...bars.audit import daily_summary
from ..bars.assets import OWNERS, POOL, bars_1m
from ..partitions import hourly_partitions, time_window_us
from ..resources import ClickHouseResource, MarketdataConfigResource

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=hourly_partitions.start.strftime("%Y-%m-%d"),          # the day of the first hour
    timezone="UTC",
    end_offset=0,                                                    # closed days only
)

SYMBOL_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("exchange"), dg.TableColumn("symbol"),
    dg.TableColumn("expected", "int"), dg.TableColumn("stored", "int"), dg.TableColumn("missing", "int"),
    dg.TableColumn("completeness_pct", "float"),
    dg.TableColumn("incomplete_hours", "int"),
    dg.TableColumn("first_missing", description="first UTC minute without a complete bar")])
VENUE_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("exchange"), dg.TableColumn("symbols", "int"),
    dg.TableColumn("expected", "int"), dg.TableColumn("stored", "int"), dg.TableColumn("missing", "int"),
    dg.TableColumn("completeness_pct", "float"), dg.TableColumn("incomplete_hours", "int")])


@dg.asset(
    partitions_def=daily_partitions,
    deps=[bars_1m],
    group_name="audit",
    owners=OWNERS,
    kinds={"clickhouse"},
    pool=POOL,
    description=(
        "Daily completeness report of bars_1m (UTC day): expected bars (market calendar) vs "
        "stored complete bars per venue and per symbol, incomplete hours and the first missing "
        "minute, as tables; completeness % overall and per venue as numbers (plotted over days). "
        "Built by completeness_daily_schedule at 00:30 UTC for the previous day."),
)
def completeness_daily(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource,
                       marketdata_config: MarketdataConfigResource) -> dg.MaterializeResult:
    start_us, end_us = time_window_us(context.partition_time_window)
    s = daily_summary(clickhouse.store(), start_us, end_us, marketdata_config.pairs())
    md: dict[str, Any] = {
        "completeness_pct": dg.MetadataValue.float(float(s.completeness_pct)),
        "expected_bars": dg.MetadataValue.int(s.expected),
        "stored_bars": dg.MetadataValue.int(s.stored),
        "missing_bars": dg.MetadataValue.int(s.missing),
        "incomplete_hours": dg.MetadataValue.int(s.incomplete_hours),   # (pair, hour) cells
        "symbols": dg.MetadataValue.int(len(s.by_symbol)),
        "venues": dg.MetadataValue.int(len(s.by_venue)),
    }
    for v in s.by_venue:
        md[f"completeness_pct_{v.exchange}"] = dg.MetadataValue.float(float(v.completeness_pct))
    md["by_venue"] = dg.MetadataValue.table(
        [dg.TableRecord({"exchange": v.exchange, "symbols": v.symbols, "expected": v.expected,
                         "stored": v.stored, "missing": v.missing,
                         "completeness_pct": float(v.completeness_pct),
                         "incomplete_hours": v.incomplete_hours}) for v in s.by_venue], schema=VENUE_SCHEMA)
    worst = sorted(s.by_symbol, key=lambda x: (x.completeness_pct, x.exchange, x.symbol))[:200]
    md["by_symbol"] = dg.MetadataValue.table(
        [dg.TableRecord({"exchange": x.exchange, "symbol": x.symbol, "expected": x.expected,
                         "stored": x.stored, "missing": x.missing,
                         "completeness_pct": float(x.completeness_pct),
                         "incomplete_hours": x.incomplete_hours, "first_missing": x.first_missing})
         for x in worst], schema=SYMBOL_SCHEMA)
    md["missing_minutes"] = dg.MetadataValue.json(s.missing_minutes)
    context.log.info(f"completeness {context.partition_time_window.start:%Y-%m-%d}: {s.stored}/{s.expected} "
                     f"bars ({s.completeness_pct}%), {s.incomplete_hours} incomplete pair-hours")
    return dg.MaterializeResult(metadata=md)
