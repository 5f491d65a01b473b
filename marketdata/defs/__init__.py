"""Dagster definitions only, grouped by domain; all logic lives in the library (marketdata.bars,
marketdata.storage). Each domain package exposes ``defs`` (a ``dg.Definitions``) that
``marketdata.definitions`` merges; resources are bound there by key.

    resources.py    resource_defs(): "clickhouse" (ClickHouseResource), "marketdata_config"
                    (MarketdataConfigResource), "redis" (RedisResource)
    partitions.py   hourly_partitions (UTC, closed hours only), shared by hourly assets and checks
    bars/           bars_1m asset, bars_1m_complete check, bars_1m_job, bars_1m_hourly schedule
    ingest/         external assets ingest/<venue> and raw_ticks, ingest_healthy / persist_healthy
                    checks, ingest_health and bars_hour_closed sensors
    audit/          bars_completeness_audit sensor -> bars_completeness_audit_job, bars_1m_reconciled
                    check, completeness_daily asset + completeness_daily_job + schedule
    backfill/       historical_backfill job (REST history -> ticks -> bars_1m), tick_backfills
                    external asset; rebuild.py records rebuilt hours on bars_1m / bars_1m_complete
    repair/         gap_repair sensor -> gap_repair_job (repair recorded gaps, rebuild their
                    hours), tick_gaps external asset
    export/         bars_export_daily asset (a UTC day as Parquet + manifest), its job and
                    bars_export_daily_schedule
"""

import warnings as _warnings

import dagster as _dg

# Owners on jobs, sensors and schedules (`owners=["team:marketdata"]`) are beta in Dagster 1.13:
# every definition that takes them, and every job Dagster rebuilds from one (subsets, run
# workers), would warn on each load of the code location. The owners are meant; the warning says
# nothing an operator can act on, so exactly this warning is silenced, once, for every module
# under marketdata.defs (the package is imported before any of them). Other beta and preview
# warnings still show.
_warnings.filterwarnings("ignore", message=r"Parameter `owners` of .* is currently in beta",
                         category=_dg.BetaWarning)
