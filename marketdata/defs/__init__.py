"""Dagster definitions only, grouped by domain; all logic lives in the library (marketdata.bars,
marketdata.storage). Each domain package exposes ``defs`` (a ``dg.Definitions``) that
``marketdata.definitions`` merges; resources are bound there by key.

    resources.py    resource_defs(): "clickhouse" (ClickHouseResource), "marketdata_config"
                    (MarketdataConfigResource)
    partitions.py   hourly_partitions (UTC, closed hours only), shared by hourly assets and checks
    bars/           bars_1m asset, bars_1m_complete check, bars_1m_job, bars_1m_hourly schedule
"""
