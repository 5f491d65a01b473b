"""bars_1m_complete: expected bars (market calendar) == stored complete bars, per pair per hour.

Partitioned (preview in Dagster 1.13, reference notes §2.2): in a single-hour run the result is
recorded against that hour; in a range run (backfill) it runs once over the whole window and its
result carries no partition. Per-hour results for backfilled ranges are the job of the audit
sensor (one AssetCheckEvaluation per hour from the same library call, audit_hours).
"""

import warnings

import dagster as dg

from ...bars import audit_hours, missing_by_pair, totals
from ..partitions import hourly_partitions, time_window_us
from ..resources import ClickHouseResource, MarketdataConfigResource
from .assets import POOL, bars_1m

with warnings.catch_warnings():
    # partitions_def on a check is "preview" in 1.13 (reference notes §2.2): expected.
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(
        asset=bars_1m,
        name="bars_1m_complete",
        partitions_def=hourly_partitions,
        pool=POOL,
        blocking=False,
        description=(
            "Passes iff, for every pair of the hour(s), the bars_1m rows with complete = 1 equal "
            "the minutes the market calendar expects (60 per hour for 24/7 crypto venues). "
            "Metadata names the missing minutes per exchange:symbol."
        ),
    )
    def bars_1m_complete(context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource,
                         marketdata_config: MarketdataConfigResource) -> dg.AssetCheckResult:
        start_us, end_us = time_window_us(context.partition_time_window)
        audits = audit_hours(clickhouse.store(), start_us, end_us, marketdata_config.pairs())
        t = totals(audits)
        incomplete_pairs = sorted({a.key for a in audits if not a.passed})
        return dg.AssetCheckResult(
            passed=t.passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=(f"{t.stored}/{t.expected} bars complete ({t.completeness_pct}%) over "
                         f"{t.hours} hour(s) and {t.pairs} pair(s)"
                         + (f"; incomplete: {', '.join(incomplete_pairs[:10])}"
                            + (" ..." if len(incomplete_pairs) > 10 else "") if incomplete_pairs else "")),
            metadata={
                "expected_bars": dg.MetadataValue.int(t.expected),
                "stored_bars": dg.MetadataValue.int(t.stored),
                "missing_bars": dg.MetadataValue.int(t.missing),
                "completeness_pct": dg.MetadataValue.float(float(t.completeness_pct)),
                "incomplete_hours": dg.MetadataValue.int(t.incomplete_hours),   # (pair, hour) cells
                "hours": dg.MetadataValue.int(t.hours),
                "symbols": dg.MetadataValue.int(t.pairs),
                # {"exchange:symbol": ["2026-01-01T03:17Z", ...]}, worst pairs first, truncated
                "missing_minutes": dg.MetadataValue.json(missing_by_pair(audits)),
            },
        )
