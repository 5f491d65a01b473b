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
from typing import Any

import dagster as dg
# not exported at the top level in 1.13: the pointer from a check result to the materialization
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from ...bars import HourAudit, audit_hours, missing_by_pair, totals
from ...bars.audit import missing_table_rows
from ...bars.coverage import before_data, first_coverage_us
from ...clock import hour_key, iso_minute
from ..partitions import hourly_partitions, partition_bounds_us, time_window_us
from ..resources import ClickHouseResource, MarketdataConfigResource
from .assets import POOL, bars_1m

CHECK_NAME = "bars_1m_complete"

with warnings.catch_warnings():
    # partitions_def on a check is "preview" in 1.13 (reference notes §2.2): expected.
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(
        asset=bars_1m,
        name=CHECK_NAME,
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
        store = clickhouse.store()
        first_us = first_coverage_us(store)
        all_audits = audit_hours(store, start_us, end_us, marketdata_config.pairs())
        audits = [a for a in all_audits if not before_data(a.hour_start_us, first_us)]
        no_data_hours = sorted({a.hour_start_us for a in all_audits} - {a.hour_start_us for a in audits})
        if not context.op_execution_context.has_partition_key:
            # A range run: one result per hour, recorded against the hour's partition (and the
            # hour's materialization of this run, so the UI counts it as current).
            ops = context.op_execution_context
            for ev in hourly_check_evaluations(audits, latest_materializations(ops.instance, ops.partition_keys)):
                ops.log_event(ev)
        if not audits and no_data_hours:
            return dg.AssetCheckResult(
                passed=True, severity=dg.AssetCheckSeverity.WARN,
                description=no_data_description(first_us),
                metadata={"no_data": dg.MetadataValue.bool(True),
                          "no_data_hours": dg.MetadataValue.int(len(no_data_hours))})
        t = totals(audits)
        incomplete_pairs = sorted({a.key for a in audits if not a.passed})
        md = summary_metadata(audits)
        if no_data_hours:
            md["no_data_hours"] = dg.MetadataValue.int(len(no_data_hours))
        return dg.AssetCheckResult(
            passed=t.passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=(f"{t.stored}/{t.expected} bars complete ({t.completeness_pct}%) over "
                         f"{t.hours} hour(s) and {t.pairs} pair(s)"
                         + (f"; incomplete: {', '.join(incomplete_pairs[:10])}"
                            + (" ..." if len(incomplete_pairs) > 10 else "") if incomplete_pairs else "")
                         + (f"; {len(no_data_hours)} hour(s) before the data begins" if no_data_hours else "")),
            metadata=md,
        )


def no_data_description(first_us: int | None) -> str:
    if first_us is None:
        return "no data: nothing is covered yet (no coverage in marketdata.coverage)"
    return (f"no data: the hour ends before the platform's data begins ({iso_minute(first_us)}, the first "
            "coverage); backfill it (historical_backfill) to audit it")


def summary_metadata(audits: list[HourAudit]) -> dict[str, Any]:
    """The completeness numbers of a set of pair-hours, as check (and materialization) metadata."""
    t = totals(audits)
    return {
        "expected_bars": dg.MetadataValue.int(t.expected),
        "stored_bars": dg.MetadataValue.int(t.stored),
        "missing_bars": dg.MetadataValue.int(t.missing),
        "completeness_pct": dg.MetadataValue.float(float(t.completeness_pct)),
        "incomplete_hours": dg.MetadataValue.int(t.incomplete_hours),   # (pair, hour) cells
        "hours": dg.MetadataValue.int(t.hours),
        "symbols": dg.MetadataValue.int(t.pairs),
        # {"exchange:symbol": ["2026-01-01T03:17Z", ...]}, worst pairs first, truncated
        "missing_minutes": dg.MetadataValue.json(missing_by_pair(audits)),
    }


def latest_materialization_records(instance: dg.DagsterInstance, partition_keys: list[str]) -> dict[str, Any]:
    """The latest bars_1m materialization record (EventLogRecord) of each partition that has one."""
    from dagster._core.storage.event_log.base import AssetRecordsFilter

    keys = sorted(set(partition_keys))
    if not keys:
        return {}
    ids = instance.get_latest_storage_id_by_partition(bars_1m.key, dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                      set(keys))
    if not ids:
        return {}
    recs = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=bars_1m.key, storage_ids=list(ids.values())), limit=len(ids)).records
    by_id = {r.storage_id: r for r in recs}
    return {k: by_id[sid] for k, sid in ids.items() if sid in by_id}


def latest_materializations(instance: dg.DagsterInstance,
                            partition_keys: list[str]) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest bars_1m materialization of each partition, as the target a check result points
    at: a per-partition check status counts only when it targets the partition's latest
    materialization ("current"), as the check's own result does in a single-hour run."""
    return {k: AssetCheckEvaluationTargetMaterializationData(storage_id=r.storage_id, run_id=r.run_id,
                                                             timestamp=r.timestamp)
            for k, r in latest_materialization_records(instance, partition_keys).items()}


MISSING_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("exchange"), dg.TableColumn("symbol"),
    dg.TableColumn("expected", "int"), dg.TableColumn("stored", "int"), dg.TableColumn("missing", "int"),
    dg.TableColumn("missing_minutes", description="UTC minutes without a complete bar, as ranges")])


def hour_evaluation(hour_us: int, audits: list[HourAudit], *, build_version: int | None = None,
                    target: AssetCheckEvaluationTargetMaterializationData | None = None,
                    reported_by: str | None = None) -> dg.AssetCheckEvaluation:
    """One hour's audit as a bars_1m_complete result for that partition, pointing at ``target``
    (the hour's latest materialization): the same numbers and metadata whoever reports it."""
    t = totals(audits)
    bad = sorted({a.key for a in audits if not a.passed})
    md = summary_metadata(audits)
    md["incomplete_symbols"] = dg.MetadataValue.int(len(bad))
    rows = missing_table_rows(audits)
    if rows:
        md["missing_by_symbol"] = dg.MetadataValue.table([dg.TableRecord(r) for r in rows], schema=MISSING_SCHEMA)
    if build_version is not None:
        md["build_version"] = dg.MetadataValue.text(str(build_version))      # an id, not a series
    if reported_by:
        md["audited_by"] = dg.MetadataValue.text(reported_by)
    desc = (f"{t.stored}/{t.expected} bars complete ({t.completeness_pct}%) for {t.pairs} pair(s)"
            + (f"; incomplete: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}" if bad else ""))
    return dg.AssetCheckEvaluation(asset_key=bars_1m.key, check_name=CHECK_NAME, passed=t.passed,
                                   severity=dg.AssetCheckSeverity.WARN, description=desc,
                                   partition=hour_key(hour_us), metadata=md,
                                   target_materialization_data=target)


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
    return [hour_evaluation(h, rows, target=(targets or {}).get(hour_key(h)))
            for h, rows in sorted(by_hour.items()) if first <= h < closed]
