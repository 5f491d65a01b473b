"""gap_repair_job: repair recorded gaps from venue REST history, then rebuild the bars_1m hours
they touch. The repair is the library's (``marketdata.backfill.repair``); this wires it into
Dagster with typed config, logs, the tick_gaps observation and per-hour bars_1m records."""

import dagster as dg
from pydantic import Field

from ...backfill import find_repairable_gaps, gap_counts, repair_gaps
from ...backfill.repair import DEFAULT_MAX_ATTEMPTS
from ..backfill.rebuild import rebuild_and_record
from ..resources import ClickHouseResource, MarketdataConfigResource
from .assets import tick_gaps

OWNERS = ["team:marketdata"]
TAGS = {"marketdata/domain": "repair"}


class GapRepairConfig(dg.Config):
    """Which gaps to repair. Empty lists mean: every gap that is due (see the gap_repair sensor)."""

    gap_ids: list[str] = Field(default_factory=list, description="Repair these gap ids only (the sensor "
                                                                 "names the gaps it found).")
    exchanges: list[str] = Field(default_factory=list, description="Only gaps of these venues; empty = "
                                                                   "every configured venue.")
    max_gaps: int = Field(default=200, description="At most this many gaps per run, oldest first.")
    force: bool = Field(default=False, description="Retry the gaps even if they were attempted recently "
                                                   "or too often, and open gaps without the grace period.")
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS,
                              description="An unrepairable gap is retried at most this many times.")
    page_size: int = Field(default=0, description="Trades per REST page; 0 = the venue's maximum.")
    weight_fraction: float = Field(default=0.5, description="Share of the venue's REST weight budget to use.")


@dg.op(
    name="repair_recorded_gaps",
    description="Refetch the trades of open or unrepairable gaps from the venue's REST history (by id, "
                "else by time); store them; mark a gap repaired and cover its span only when every "
                "missing trade came back. Returns the hours whose bars changed.",
    tags=TAGS,
)
def repair_recorded_gaps(context: dg.OpExecutionContext, config: GapRepairConfig,
                         clickhouse: ClickHouseResource, marketdata_config: MarketdataConfigResource) -> list[int]:
    store = clickhouse.store()
    cfg = marketdata_config.config(resolve_endpoints=True)
    venues = dict(cfg.venues) if cfg else {}
    exchanges = config.exchanges or sorted(venues)
    kw = dict(exchanges=exchanges, gap_ids=config.gap_ids or None, limit=config.max_gaps)
    if config.force:
        kw.update(open_grace_us=0, retry_interval_us=0, max_attempts=1 << 30)
    else:
        kw.update(max_attempts=config.max_attempts)
    gaps = find_repairable_gaps(store, **kw)
    context.log.info(f"{len(gaps)} gap(s) to repair" + (f" of {len(config.gap_ids)} named" if config.gap_ids else "")
                     + f" (venues: {', '.join(exchanges) or 'none configured'})")
    report = repair_gaps(store, gaps, venues, page_size=config.page_size or None,
                         weight_fraction=config.weight_fraction)
    counts = gap_counts(store)
    metadata = {
        "gaps_attempted": dg.MetadataValue.int(len(report.outcomes)),
        "gaps_repaired": dg.MetadataValue.int(report.repaired),
        "gaps_unrepairable": dg.MetadataValue.int(report.unrepairable),
        "gaps_failed": dg.MetadataValue.int(report.failed),
        "gaps_skipped": dg.MetadataValue.int(report.count("skipped")),
        "trades_recovered": dg.MetadataValue.int(report.trades_recovered),
        "hours_affected": dg.MetadataValue.int(len(report.hours)),
        "open_gaps": dg.MetadataValue.int(counts.get("open", 0)),
        "unrepairable_gaps": dg.MetadataValue.int(counts.get("unrepairable", 0)),
        "repaired_gaps": dg.MetadataValue.int(counts.get("repaired", 0)),
        "elapsed_s": dg.MetadataValue.float(float(report.elapsed_s)),
        "outcomes": dg.MetadataValue.json([
            {"gap": f"{o.gap.exchange}:{o.gap.symbol}:{o.gap.gap_id}", "ids": f"{o.gap.from_id}..{o.gap.to_id}",
             "result": o.result, "recovered": o.recovered, "detail": o.detail} for o in report.outcomes[:50]]),
    }
    context.log_event(dg.AssetObservation(asset_key=tick_gaps.key, metadata=metadata))
    context.add_output_metadata(metadata)
    for o in report.outcomes:
        log = context.log.warning if o.result in ("unrepairable", "failed") else context.log.info
        log(f"{o.gap.exchange} {o.gap.symbol} gap {o.gap.gap_id} ids {o.gap.from_id}..{o.gap.to_id}: {o.result}"
            f" ({o.recovered} trades recovered){': ' + o.detail if o.detail else ''}")
    return report.hours


@dg.op(
    name="rebuild_repaired_hours",
    description="Rebuild bars_1m for the hours the repair changed and record each hour's "
                "materialization and completeness result.",
    tags=TAGS,
)
def rebuild_repaired_hours(context: dg.OpExecutionContext, hours: list[int], clickhouse: ClickHouseResource,
                           marketdata_config: MarketdataConfigResource):
    res = yield from rebuild_and_record(context, clickhouse.store(), hours, marketdata_config.pairs(), reason="gap repair")
    yield dg.Output(None, metadata={
        "hours_rebuilt": dg.MetadataValue.int(res.hours),
        "bars_written": dg.MetadataValue.int(res.bars_written),
        "complete_bars": dg.MetadataValue.int(sum(a.stored for a in res.audits)),
        "expected_bars": dg.MetadataValue.int(sum(a.expected for a in res.audits)),
        "build_seconds": dg.MetadataValue.float(float(res.build_seconds)),
    })


@dg.job(
    name="gap_repair_job",
    description="Repair recorded gaps (open ones a connector left behind, unrepairable ones the venue "
                "may now return) from venue REST history, then rebuild the bars_1m hours they touch. "
                "Launched by the gap_repair sensor; launchable by hand (empty config = every gap due).",
    tags=TAGS,
    owners=OWNERS,
    executor_def=dg.in_process_executor,
)
def gap_repair_job():
    rebuild_repaired_hours(repair_recorded_gaps())
