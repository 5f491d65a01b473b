"""The bars_1m asset: one hourly partition = every configured or observed pair, all venues.

Range-aware: a run covering many hours rebuilds its whole time window with one INSERT ... SELECT.
Always uses ``partition_time_window``, never ``partition_key``, so single-hour runs and range runs
share one code path.

Backfill policy: multi_run(168) -- a backfill launched from the asset graph runs as one run per
week of hours (30 days = 5 runs, not 720). Measured with ``marketdata bench --bars`` (30 days x
200 pairs, 2 cores, embedded ClickHouse, sqlite Dagster): a week per run 48 s, a day per run
(30 runs) 74 s, single_run (one 720-hour INSERT) 62 s -- per-run overhead falls with fewer runs
until one huge query gets slower per hour than several week-sized ones. A failed run costs at most
a week of hours to retry. (Policies apply only to backfills launched from the asset graph or asset
page, not from a job's page: reference notes §1.3.)
"""

import warnings

import dagster as dg

from ...bars import audit_hours, build_bars, totals
from ...clock import US_PER_HOUR
from ..partitions import hourly_partitions, time_window_us
from ..resources import ClickHouseResource, MarketdataConfigResource

GROUP = "bars"
OWNERS = ["team:marketdata"]
POOL = "clickhouse"          # dagster.yaml caps concurrent steps on the (embedded) store
HOURS_PER_BACKFILL_RUN = 168  # a week of hourly partitions per backfill run (see the module doc)

with warnings.catch_warnings():
    # backfill_policy is "beta" in 1.13 (see reference notes §1.3); it is the documented way to get
    # range runs, so the warning is expected, not news.
    warnings.simplefilter("ignore", dg.BetaWarning)

    @dg.asset(
        partitions_def=hourly_partitions,
        deps=[dg.AssetKey("raw_ticks")],   # lineage: ingest/<venue> -> raw_ticks -> bars_1m (defs/ingest)
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=HOURS_PER_BACKFILL_RUN),
        group_name=GROUP,
        owners=OWNERS,
        kinds={"clickhouse"},
        pool=POOL,
        metadata={"dagster/table_name": "marketdata.bars_1m"},
        description=(
            "One-minute OHLCV bars per exchange and symbol (ClickHouse marketdata.bars_1m), rebuilt "
            "idempotently per hourly partition from ticks FINAL: every minute of every pair gets a "
            "row; complete = 1 iff the minute lies fully inside the pair's coverage; covered "
            "minutes without trades are flat bars at the previous close. Pairs = configured "
            "symbols ∪ pairs with ticks, coverage or bars in the hour."
        ),
    )
    def bars_1m(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource,
                marketdata_config: MarketdataConfigResource) -> dg.MaterializeResult:
        start_us, end_us = time_window_us(context.partition_time_window)
        store = clickhouse.store()
        pairs = marketdata_config.pairs()
        result = build_bars(store, start_us, end_us, pairs)
        # Completeness = expected bars (the market calendar) vs stored complete bars: the same
        # audit_hours the bars_1m_complete check reports, so the materialization and its check
        # show one number (rows outside an equity session are written but not expected).
        audits = audit_hours(store, start_us, end_us, pairs)
        t = totals(audits)
        context.log.info(
            f"bars_1m [{context.partition_time_window.start:%Y-%m-%d %H:%M}, "
            f"{context.partition_time_window.end:%Y-%m-%d %H:%M}) UTC: {result.bars_written} bars for "
            f"{result.symbols} pairs, {t.stored}/{t.expected} expected bars complete ({t.completeness_pct}%), "
            f"{result.ticks} ticks, build_version {result.build_version}, {result.elapsed_s}s")
        missing: dict[str, int] = {}
        for a in audits:
            if a.missing:
                missing[a.key] = missing.get(a.key, 0) + a.missing
        incomplete = dict(sorted(missing.items(), key=lambda kv: (-kv[1], kv[0]))[:50])
        return dg.MaterializeResult(metadata={
            "bars_written": dg.MetadataValue.int(result.bars_written),
            "complete_bars": dg.MetadataValue.int(result.complete_bars),   # rows with complete = 1
            "expected_bars": dg.MetadataValue.int(t.expected),
            "stored_bars": dg.MetadataValue.int(t.stored),                 # complete bars the calendar expects
            "completeness_pct": dg.MetadataValue.float(float(t.completeness_pct)),
            "ticks": dg.MetadataValue.int(result.ticks),
            "trades": dg.MetadataValue.int(result.trades),
            "symbols": dg.MetadataValue.int(result.symbols),
            "hours": dg.MetadataValue.int((end_us - start_us) // US_PER_HOUR),
            "build_version": dg.MetadataValue.text(str(result.build_version)),   # an id, not a series
            "build_seconds": dg.MetadataValue.float(float(result.elapsed_s)),
            # {"exchange:symbol": expected minutes without a complete bar}, worst 50
            "incomplete_symbols": dg.MetadataValue.json(incomplete),
        })
