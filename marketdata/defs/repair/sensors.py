"""gap_repair sensor: records unexplained coverage holes as gaps (at most every 10 minutes), finds
recorded gaps that are due for a repair attempt and launches gap_repair_job for them (one run at a
time)."""

import hashlib

import dagster as dg

from ...backfill import find_repairable_gaps, record_coverage_holes
from ...backfill.repair import attempts_of
from ...clock import US_PER_MINUTE, now_us
from ..resources import ClickHouseResource, MarketdataConfigResource
from .jobs import gap_repair_job

OWNERS = ["team:marketdata"]
MAX_GAPS_PER_RUN = 200
# The hole scan reads the last hours of coverage (backfill.coverage_holes): every 10 minutes, not
# at every 2-minute evaluation; the cursor holds when it last ran.
HOLE_SCAN_INTERVAL_US = 10 * US_PER_MINUTE
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


@dg.sensor(
    name="gap_repair",
    job=gap_repair_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    owners=OWNERS,
    description=("Every 2 minutes: gaps of configured venues that are open for longer than the "
                 "connector's grace period (5 min; its process died before repairing them) or "
                 "unrepairable and not yet retried 3 times (an hour apart) -> one gap_repair_job run "
                 "for them, unless a repair run is already queued or running. Every 10 minutes it "
                 "first records as gaps (found_by coverage_hole, due at once) the uncovered spans "
                 "between covered spans of the last 6 hours that no gap row explains: stream "
                 "entries lost after publish."),
)
def gap_repair(context: dg.SensorEvaluationContext, clickhouse: ClickHouseResource,
               marketdata_config: MarketdataConfigResource):
    if context.instance.get_run_records(dg.RunsFilter(job_name=gap_repair_job.name, statuses=ACTIVE), limit=1):
        return dg.SkipReason("a gap_repair_job run is queued or running")
    exchanges = sorted({ex for ex, _ in marketdata_config.pairs()})
    if not exchanges:
        return dg.SkipReason(f"no venues configured ({marketdata_config.config_path()})")
    store = clickhouse.store()
    now = now_us()
    if now - int(context.cursor or 0) >= HOLE_SCAN_INTERVAL_US:
        holes = record_coverage_holes(store, now=now, exchanges=exchanges)
        context.update_cursor(str(now))
        for g in holes:
            context.log.warning(f"{g.exchange} {g.symbol}: coverage hole {g.from_us}..{g.to_us} with no gap row "
                                f"recorded as gap {g.gap_id} ({g.status})")
    gaps = find_repairable_gaps(store, exchanges=exchanges, limit=MAX_GAPS_PER_RUN)
    if not gaps:
        return dg.SkipReason("no gaps due for repair")
    tries = attempts_of(store, gaps)
    ident = "\n".join(f"{g.exchange}:{g.symbol}:{g.gap_id}:{g.updated_us}:"
                      f"{tries.get((g.exchange, g.symbol, g.gap_id), 0)}" for g in gaps)
    digest = hashlib.blake2b(ident.encode(), digest_size=10).hexdigest()
    by_status = {s: sum(1 for g in gaps if g.status == s) for s in ("open", "unrepairable")}
    return dg.RunRequest(
        run_key=f"gap_repair:{digest}",
        run_config=dg.RunConfig(ops={"repair_recorded_gaps": {"config": {"gap_ids": [g.gap_id for g in gaps],
                                                                           "exchanges": exchanges}}}),
        tags={"marketdata/gaps": str(len(gaps)), "marketdata/gaps_open": str(by_status["open"]),
              "marketdata/gaps_unrepairable": str(by_status["unrepairable"])},
    )
