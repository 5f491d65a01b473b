"""bars_1m_complete: expected bars (market calendar) == stored complete bars, per pair per hour.

Partitioned (preview in Dagster 1.13, reference notes §2.2): in a single-hour run the result is
recorded against that hour. In a range run (a backfill under the asset's BackfillPolicy) the check
runs once over the whole window: it logs one AssetCheckEvaluation per hour of the window (from
the same audit_hours call), which records each hour's result against its partition -- so the UI
shows per-hour status for backfilled ranges too instead of "skipped" -- and returns the summary
over the window (stored without a partition). ``hourly_check_evaluations`` is shared with the
jobs that rebuild hours outside the asset (gap repair, historical backfill).
"""

import warnings

import dagster as dg
# not exported at the top level in 1.13: the pointer from a check result to the materialization
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from ...bars import HourAudit, audit_hours, missing_by_pair, totals
from ..partitions import hour_key, hourly_partitions, partition_bounds_us, time_window_us
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
        if not context.op_execution_context.has_partition_key:
            # A range run: one result per hour, recorded against the hour's partition (and the
            # hour's materialization of this run, so the UI counts it as current).
            ops = context.op_execution_context
            for ev in hourly_check_evaluations(audits, latest_materializations(ops.instance, ops.partition_keys)):
                ops.log_event(ev)
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


def latest_materializations(instance: dg.DagsterInstance,
                            partition_keys: list[str]) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest bars_1m materialization of each partition, as the target a check result points
    at: a per-partition check status counts only when it targets the partition's latest
    materialization ("current"), as the check's own result does in a single-hour run."""
    from dagster._core.storage.event_log.base import AssetRecordsFilter

    out: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    keys = list(partition_keys)
    if not keys:
        return out
    recs = instance.fetch_materializations(AssetRecordsFilter(asset_key=bars_1m.key, asset_partitions=keys),
                                           limit=len(keys)).records
    for r in recs:                                  # newest first
        pk = r.partition_key
        if pk is not None and pk not in out:
            out[pk] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=r.storage_id, run_id=r.event_log_entry.run_id, timestamp=r.timestamp)
    for pk in keys:                                 # older ones, if a partition was not in the batch
        if pk not in out:
            one = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=bars_1m.key, asset_partitions=[pk]), limit=1).records
            if one:
                out[pk] = AssetCheckEvaluationTargetMaterializationData(
                    storage_id=one[0].storage_id, run_id=one[0].event_log_entry.run_id,
                    timestamp=one[0].timestamp)
    return out


def hourly_check_evaluations(
        audits: list[HourAudit],
        targets: dict[str, AssetCheckEvaluationTargetMaterializationData] | None = None,
) -> list[dg.AssetCheckEvaluation]:
    """bars_1m_complete results per hour (partition = the hour) from ``audit_hours`` rows, each
    pointing at its hour's materialization in ``targets`` (``latest_materializations``); hours
    outside the partitions (before the first, or not closed yet) are left out."""
    by_hour: dict[int, list[HourAudit]] = {}
    for a in audits:
        by_hour.setdefault(a.hour_start_us, []).append(a)
    first, closed = partition_bounds_us()
    out = []
    for h, rows in sorted(by_hour.items()):
        if h < first or h >= closed:
            continue
        t = totals(rows)
        bad = sorted(a.key for a in rows if not a.passed)
        out.append(dg.AssetCheckEvaluation(
            asset_key=bars_1m.key, check_name="bars_1m_complete", partition=hour_key(h),
            target_materialization_data=(targets or {}).get(hour_key(h)),
            passed=t.passed, severity=dg.AssetCheckSeverity.WARN,
            description=(f"{t.stored}/{t.expected} bars complete ({t.completeness_pct}%) over "
                         f"{t.pairs} pair(s)" + (f"; incomplete: {', '.join(bad[:10])}"
                                                 + (" ..." if len(bad) > 10 else "") if bad else "")),
            metadata={
                "expected_bars": dg.MetadataValue.int(t.expected),
                "stored_bars": dg.MetadataValue.int(t.stored),
                "missing_bars": dg.MetadataValue.int(t.missing),
                "completeness_pct": dg.MetadataValue.float(float(t.completeness_pct)),
                "incomplete_hours": dg.MetadataValue.int(t.incomplete_hours),
                "hours": dg.MetadataValue.int(1),
                "symbols": dg.MetadataValue.int(t.pairs),
                "missing_minutes": dg.MetadataValue.json(missing_by_pair(rows)),
            }))
    return out
