"""bars_1m_reconciled: our bars against the venue's own 1-minute candles (library:
marketdata.bars.reconcile). Runs with every single-hour bars_1m run (bars_1m_job selects the
asset's checks).

Single hours only: in a range run (a backfill or catch-up over many hours) the check does not
fetch candles -- that was most of a 30-day backfill's time (51 s of 148 s), one REST round per
pair and hour, for a comparison nobody looks at range by range. It records one result saying so;
reconcile an older hour by materializing that hour alone (its run reconciles it). Venues whose
candles cannot be fetched are listed (``errors``), not failed."""

import warnings
from typing import Any

import dagster as dg

from ...bars.reconcile import ReconcileResult, reconcile
from ..bars.assets import POOL, bars_1m
from ..partitions import hourly_partitions, time_window_us
from ..resources import ClickHouseResource, MarketdataConfigResource

CHECK_NAME = "bars_1m_reconciled"
CHECK_OWNER = {"owners": "team:marketdata"}      # asset checks take no owners= in Dagster 1.13
MISMATCH_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("exchange"), dg.TableColumn("symbol"), dg.TableColumn("minute"),
    dg.TableColumn("measure", description="trade_count | volume | high | low"),
    dg.TableColumn("ours", description="our bar"), dg.TableColumn("venue", description="the venue's candle")])


def describe(res: ReconcileResult) -> tuple[str, dict[str, Any]]:
    """Description and metadata of a reconciliation result (whole run or one hour)."""
    bad = res.mismatches_by_pair()
    if bad:
        desc = (f"{res.mismatched_minutes} minute(s) differ from the venue's candles: "
                + "; ".join(f"{k} {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}"
                            for k, v in list(bad.items())[:5]))
    elif res.compared:
        ok = sum(1 for p in res.pairs if not p.error)
        desc = f"{res.compared} complete minute(s) of {ok} pair(s) match the venue's candles"
    else:
        desc = "nothing to reconcile" + (
            f" ({'; '.join(f'{v}: {why}' for v, why in res.unsupported.items())})" if res.unsupported else "")
    if res.errors:
        desc += ("; not reconciled (candles unavailable): "
                 + "; ".join(f"{k}: {v}" for k, v in list(res.errors.items())[:3])
                 + (" ..." if len(res.errors) > 3 else ""))
    md: dict[str, Any] = {
        "minutes_compared": dg.MetadataValue.int(res.compared),
        "mismatched_minutes": dg.MetadataValue.int(res.mismatched_minutes),
        "pairs_reconciled": dg.MetadataValue.int(sum(1 for p in res.pairs if not p.error)),
        "pairs_unavailable": dg.MetadataValue.int(len(res.errors)),
        "skipped_incomplete": dg.MetadataValue.int(sum(p.skipped_incomplete for p in res.pairs)),
        # {"exchange:symbol": ["2026-01-01T03:17Z", ...]}
        "mismatches_by_pair": dg.MetadataValue.json(bad),
        "mismatches": dg.MetadataValue.table(
            [dg.TableRecord({"exchange": m.exchange, "symbol": m.symbol, "minute": m.minute,
                             "measure": m.measure, "ours": m.ours, "venue": m.venue})
             for m in res.mismatch_rows(100)], schema=MISMATCH_SCHEMA),
    }
    if res.errors:
        md["errors"] = dg.MetadataValue.json(res.errors)
    if res.unsupported:
        md["not_reconciled_venues"] = dg.MetadataValue.json(res.unsupported)
    return desc, md


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)     # partitioned checks: preview (notes §2.2)

    @dg.asset_check(
        asset=bars_1m,
        name=CHECK_NAME,
        partitions_def=hourly_partitions,
        pool=POOL,
        blocking=False,
        metadata=CHECK_OWNER,
        description=(
            "Compares every complete bar with the venue's own 1-minute candle, fetched from the "
            "venue's configured REST endpoint: trade count where the venue reports one (Binance), "
            "volume always, high/low where both traded. Fails naming the mismatching minutes. "
            "Venues without candles, and pairs whose candles could not be fetched, are listed "
            "(not_reconciled_venues, errors), not failed. Single-hour runs only: a range run "
            "(backfill) records 'not reconciled'. HTTP timeout: MARKETDATA_RECONCILE_TIMEOUT_S "
            "(default 10)."),
    )
    def bars_1m_reconciled(context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource,
                           marketdata_config: MarketdataConfigResource) -> dg.AssetCheckResult:
        if not context.op_execution_context.has_partition_key:
            hours = len(context.op_execution_context.partition_keys)
            return dg.AssetCheckResult(
                passed=True, severity=dg.AssetCheckSeverity.WARN,
                description=(f"not reconciled: a range run ({hours} hours); reconciliation runs for "
                             "single-hour runs only (materialize one hour to reconcile it)"),
                metadata={"range_hours": dg.MetadataValue.int(hours),
                          "minutes_compared": dg.MetadataValue.int(0)})
        start_us, end_us = time_window_us(context.partition_time_window)
        cfg = marketdata_config.config(resolve_endpoints=True)
        res = reconcile(clickhouse.store(), start_us, end_us, cfg.venues if cfg else {})
        desc, md = describe(res)
        return dg.AssetCheckResult(passed=res.passed, severity=dg.AssetCheckSeverity.WARN,
                                   description=desc, metadata=md)
