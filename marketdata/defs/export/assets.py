"""bars_export_daily: a UTC day of bars_1m (and, if asked, ticks) written as Parquet by venue,
symbol and day with its manifest (``marketdata.export``), its completeness as metadata.

Pairs = configured pairs ∪ pairs with data in the day (the build's universe). The directory is
the run config's ``out_dir``, else $MARKETDATA_EXPORT_DIR, else <data dir>/exports; re-running a
day rewrites only the files whose content changed (a rebuild after a gap repair, say)."""

from typing import Any

import dagster as dg

from ...bars.build import universe
from ...export.parquet import default_export_dir, export
from ..audit.assets import daily_partitions
from ..bars.assets import OWNERS, POOL, bars_1m
from ..partitions import time_window_us
from ..resources import ClickHouseResource, MarketdataConfigResource


class ExportConfig(dg.Config):
    out_dir: str = ""                 # "" -> $MARKETDATA_EXPORT_DIR, else <data dir>/exports
    datasets: list[str] = ["bars"]    # bars and/or ticks


@dg.asset(
    partitions_def=daily_partitions,
    deps=[bars_1m],
    group_name="export",
    owners=OWNERS,
    kinds={"parquet"},
    pool=POOL,
    description=(
        "The UTC day's 1-minute bars (optionally ticks) as Parquet files partitioned "
        "exchange=/symbol=/date=, with manifest.json: completeness per symbol and hour, the gaps "
        "found and whether each was repaired, build versions and the exact query range. Only "
        "days whose content changed are rewritten. Built at 00:45 UTC for the previous day."),
)
def bars_export_daily(context: dg.AssetExecutionContext, config: ExportConfig, clickhouse: ClickHouseResource,
                      marketdata_config: MarketdataConfigResource) -> dg.MaterializeResult:
    start_us, end_us = time_window_us(context.partition_time_window)
    store = clickhouse.store()
    with store.session() as c:
        pairs = universe(c, start_us, end_us, marketdata_config.pairs())
    out = config.out_dir or str(default_export_dir())
    md: dict[str, Any] = {"path": dg.MetadataValue.path(out), "symbols": dg.MetadataValue.int(len(pairs))}
    for kind in config.datasets:
        r = export(store, kind, pairs, start_us, end_us, out, progress=False)
        context.log.info(f"export {kind} {context.partition_time_window.start:%Y-%m-%d}: {len(r.written)} file(s) "
                         f"written, {len(r.unchanged)} unchanged, {r.stored}/{r.expected} minutes complete")
        md.update({
            f"{kind}_files_written": dg.MetadataValue.int(len(r.written)),
            f"{kind}_files_unchanged": dg.MetadataValue.int(len(r.unchanged)),
            f"{kind}_rows_written": dg.MetadataValue.int(r.rows_written),
            f"{kind}_manifest": dg.MetadataValue.path(str(r.manifest_path)),
        })
        if kind == "bars" or "completeness_pct" not in md:
            md.update({
                "completeness_pct": dg.MetadataValue.float(float(r.completeness_pct)),
                "expected_bars": dg.MetadataValue.int(r.expected),
                "stored_bars": dg.MetadataValue.int(r.stored),
                "missing_bars": dg.MetadataValue.int(r.expected - r.stored),
                "missing_minutes": dg.MetadataValue.json(
                    {k: v[:120] for k, v in sorted(r.missing_minutes.items())[:50]}),
            })
    return dg.MaterializeResult(metadata=md)
