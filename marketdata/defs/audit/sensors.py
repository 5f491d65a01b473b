"""bars_completeness_audit: keeps every hour's bars_1m_complete status true to what ClickHouse holds.

Each evaluation looks at the recent window (MARKETDATA_AUDIT_WINDOW_H closed hours) plus every hour
rebuilt since the last evaluation (from bars_1m.build_version, whoever wrote it: a Dagster run, the
CLI, a script), audits them with one library call, and decides with ``bars.audit.plan_report``
which results nobody has recorded yet. Those hours go to one bars_completeness_audit_job run,
which records one result per hour (a run, because Dagster 1.13 keeps only one run-less result per
partition: see marketdata.defs.audit.jobs).

Left out on purpose:
* hours before the platform's data begins (the first coverage row) and hours never built: "no
  data", not failures;
* hours a run is building right now (queued or running bars_1m runs, single hours and ranges):
  the run's own check reports them, and a result recorded meanwhile would outrank it;
* hours whose latest result already judges their current build (a bars_1m run, gap repair or
  backfill checked exactly that build) and nothing else changed.

While an audit run is queued or running, the sensor waits (its cursor does not move), so no hour
is lost between runs.
"""

import json
import warnings
from typing import Any

import dagster as dg

from ...bars.audit import (
    AuditSettings, audit_hour_set, built_hours, plan_report, rebuilt_hours, window_hours,
)
from ...bars.coverage import before_data, first_coverage_us
from ...clock import US_PER_HOUR, floor_hour, hour_key, now_us, parse_hour_key
from ..bars.assets import OWNERS, bars_1m
from ..bars.checks import CHECK_NAME, latest_materialization_records
from ..partitions import first_hour_us
from ..resources import ClickHouseResource, MarketdataConfigResource
from .jobs import AUDIT_JOB, AUDIT_OP, bars_completeness_audit_job

CHECK_KEY = dg.AssetCheckKey(bars_1m.key, CHECK_NAME)
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _hour(key: str | None) -> int | None:
    try:
        return parse_hour_key(key) if key else None
    except ValueError:            # another partitioning (e.g. completeness_daily's days)
        return None


def busy_hours(instance: dg.DagsterInstance) -> set[int]:
    """Hours that a queued or running run targets (hourly partition tags: one hour or a range)."""
    out: set[int] = set()
    for rec in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE)):
        if rec.dagster_run.job_name == AUDIT_JOB:
            continue
        tags = rec.dagster_run.tags
        one = _hour(tags.get("dagster/partition"))
        if one is not None:
            out.add(one)
        a, b = _hour(tags.get(RANGE_START)), _hour(tags.get(RANGE_END))
        if a is not None and b is not None:
            out.update(range(a, b + US_PER_HOUR, US_PER_HOUR))
    return out


def judged_hours(instance: dg.DagsterInstance, versions: dict[int, int]) -> set[int]:
    """Hours whose latest bars_1m_complete result targets the hour's latest materialization and
    that materialization is of the hour's current build (its build_version metadata)."""
    if not versions:
        return set()
    keys = {hour_key(h): h for h in versions}
    mats = latest_materialization_records(instance, list(keys))
    infos = instance.event_log_storage.get_asset_check_partition_info([CHECK_KEY], partition_keys=list(mats))
    out = set()
    for info in infos:
        rec = mats.get(info.partition_key)
        if rec is None or info.latest_target_materialization_storage_id != rec.storage_id:
            continue
        md = rec.asset_materialization.metadata if rec.asset_materialization else {}
        bv = md.get("build_version")
        h = keys[info.partition_key]
        if bv is not None and str(bv.value) == str(versions[h]):
            out.add(h)
    return out


def _load_cursor(raw: str | None) -> dict[str, Any]:
    try:
        v = json.loads(raw) if raw else {}
        return v if isinstance(v, dict) else {}
    except ValueError:
        return {}


def _bars_completeness_audit(context: dg.SensorEvaluationContext, clickhouse: ClickHouseResource,
                            marketdata_config: MarketdataConfigResource) -> dg.SensorResult:
    if context.instance.get_run_records(dg.RunsFilter(job_name=AUDIT_JOB, statuses=ACTIVE), limit=1):
        return dg.SensorResult(skip_reason="an audit run is queued or running; waiting for it",
                               cursor=context.cursor)
    settings = AuditSettings.from_env()
    cursor = _load_cursor(context.cursor)
    now = now_us()
    store = clickhouse.store()
    data_start = first_coverage_us(store)
    if data_start is None:
        return dg.SensorResult(skip_reason="no data yet: nothing is covered in marketdata.coverage",
                               cursor=context.cursor)
    # hours before the data begins are "no data"; the hour holding the first coverage is real
    first_hour = max(first_hour_us(), floor_hour(data_start))
    current_hour = floor_hour(now)

    window = window_hours(now, settings, first_hour)
    since_version = int(cursor.get("v", 0))
    rebuilt, resume_version, truncated = rebuilt_hours(store, since_version, settings.max_rebuilt)
    rebuilt = {h: v for h, v in rebuilt.items() if first_hour <= h < current_hour and not before_data(h, data_start)}
    versions = built_hours(store, set(window) | set(rebuilt))          # hours never built are left out
    hours = sorted(versions)
    busy = busy_hours(context.instance) & set(hours)
    audits = audit_hour_set(store, [h for h in hours if h not in busy], marketdata_config.pairs())
    prior = {}
    for k, d in (cursor.get("d") or {}).items():
        if (h := _hour(k)) is not None:
            prior[h] = d
    judged = judged_hours(context.instance, {h: versions[h] for h in hours if h not in busy})
    plan = plan_report(hours, audits, window=window, prior_digests=prior, rebuilt=rebuilt, judged=judged,
                       busy=busy)
    new_cursor = json.dumps({"v": resume_version, "d": {hour_key(h): d for h, d in sorted(plan.digests.items())}},
                            separators=(",", ":"))
    if truncated:
        context.log.info(f"more rebuilt hours than MARKETDATA_AUDIT_MAX_REBUILT ({settings.max_rebuilt}); "
                         "the rest on the next evaluation")
    if busy:
        context.log.info(f"{len(busy)} hour(s) being built by a run right now: left to that run's check")
    if not plan.report:
        return dg.SensorResult(cursor=new_cursor, skip_reason=(
            f"{len(hours)} built hour(s) audited, nothing new to report"
            + (f" ({len(busy)} being built)" if busy else "")))
    keys = [hour_key(h) for h in plan.report]
    return dg.SensorResult(cursor=new_cursor, run_requests=[dg.RunRequest(
        run_key=f"bars_completeness_audit:{now}",
        run_config={"ops": {AUDIT_OP: {"config": {"hours": keys}}}},
        tags={"marketdata/hours": str(len(keys)), "marketdata/first_hour": keys[0], "marketdata/last_hour": keys[-1]},
    )])


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)    # owners= is beta in 1.13
    bars_completeness_audit = dg.sensor(
        name="bars_completeness_audit",
        job=bars_completeness_audit_job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        owners=OWNERS,
        description=(
            "Every 5 min: re-audits the last MARKETDATA_AUDIT_WINDOW_H (48) closed hours plus every hour "
            "rebuilt since its last evaluation (bars_1m build_version, whoever wrote it), from the "
            "hour the data begins (first coverage) and only hours that were built, and launches one "
            "bars_completeness_audit_job run recording bars_1m_complete for the hours whose result "
            "changed and is not already recorded (a run's own check, gap repair, backfill). Hours "
            "a run is building right now are left to that run."),
    )(_bars_completeness_audit)
