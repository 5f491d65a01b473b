"""Audits in Dagster: the bars_completeness_audit sensor and the run it launches
(bars_completeness_audit_job), against real sqlite instances: one result per hour with the right
pass/fail and metadata, the same hour judged again on every change, only changed and rebuilt
hours recorded, never hours before the data begins or never built, never hours a run is building,
and a range run's own per-hour results left as the latest; the audit library it calls; the daily
completeness report with its schedule."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
import pytest

from marketdata.bars.audit import (
    AuditSettings, audit_digest, audit_hour_set, minute_ranges, rebuilt_hours, window_hours,
)
from marketdata.bars.build import build_bars
from marketdata.definitions import defs
from marketdata.defs.audit import completeness_daily
from marketdata.defs.audit import sensors as audit_sensors
from marketdata.defs.resources import ClickHouseResource, MarketdataConfigResource

from .test_dagster_bars import load

S = 1_000_000
M = 60 * S
H = 3600 * S
T0 = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()) * S        # 2026-03-01 00:00 UTC
CHECK = dg.AssetCheckKey(dg.AssetKey("bars_1m"), "bars_1m_complete")
BTC = ("binance", "BTC-USDT")


class FixedPairs(MarketdataConfigResource):
    pairs_json: str = "[]"

    def pairs(self):
        return [tuple(p) for p in json.loads(self.pairs_json)]


def md(ev) -> dict:
    return {k: v.value for k, v in ev.metadata.items()}


@pytest.fixture
def store(clickhouse):
    """Four hours of binance:BTC-USDT, 00:00-04:00, with a coverage hole at 02:12-02:13, built."""
    load(clickhouse, pairs=[BTC], start_us=T0, end_us=T0 + 4 * H, holes=[(T0 + 2 * H + 12 * M, T0 + 2 * H + 14 * M)])
    build_bars(clickhouse, T0, T0 + 4 * H, [BTC])
    return clickhouse


def test_audit_library_window_rebuilt_hours_and_digest(store):
    s = AuditSettings(window_hours=3, settle_s=900)
    assert window_hours(T0 + 4 * H + 10 * M, s) == [T0, T0 + H, T0 + 2 * H]            # 03:00 not settled
    assert window_hours(T0 + 4 * H + 20 * M, s) == [T0 + H, T0 + 2 * H, T0 + 3 * H]
    assert window_hours(T0 + 4 * H + 20 * M, s, first_hour_us=T0 + 2 * H) == [T0 + 2 * H, T0 + 3 * H]
    hours, v1, truncated = rebuilt_hours(store, 0, limit=100)
    assert sorted(hours) == [T0 + i * H for i in range(4)] and not truncated and v1 == hours[T0]
    assert rebuilt_hours(store, v1, 100)[0] == {}
    build_bars(store, T0 + H, T0 + 2 * H, [BTC])
    hours2, v2, _ = rebuilt_hours(store, v1, 100)
    assert list(hours2) == [T0 + H] and v2 > v1
    # whole builds only: a limit below the first build still takes it, then stops
    hours3, v3, truncated = rebuilt_hours(store, 0, limit=2)
    assert len(hours3) == 4 and v3 == v1 and truncated
    audits = audit_hour_set(store, [T0, T0 + 2 * H, T0 + 3 * H, T0 - 5 * H], [BTC])
    assert [len(audits[h]) for h in (T0, T0 + 2 * H, T0 + 3 * H)] == [1, 1, 1]
    assert audits[T0 + 2 * H][0].missing_offsets == [12, 13] and audits[T0][0].passed
    assert audits[T0 - 5 * H][0].stored == 0                                  # configured, never built
    assert audit_digest(audits[T0]) == audit_digest(audit_hour_set(store, [T0], [BTC])[T0])
    assert audit_digest(audits[T0]) != audit_digest(audits[T0 + 2 * H])
    assert minute_ranges(T0 + 2 * H, [12, 13, 14, 40]) == "02:12-02:14, 02:40"


def evaluate(store, instance, cursor, pairs=(BTC,)):
    res = {"clickhouse": ClickHouseResource(url=store.url),
           "marketdata_config": FixedPairs(pairs_json=json.dumps(list(pairs)))}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res, definitions=defs) as ctx:
        return audit_sensors.bars_completeness_audit.evaluate_tick(ctx)


def requested_hours(result) -> list[str]:
    """The hours an audit tick asks its run to record ([] when it skipped)."""
    if not result.run_requests:
        return []
    (req,) = result.run_requests
    return req.run_config["ops"]["audit_bars_1m_hours"]["config"]["hours"]


def run_audit(store, instance, result, pairs=(BTC,)):
    """Run the audit job the way the daemon would launch the tick's request (same instance)."""
    (req,) = result.run_requests
    job = defs.get_job_def("bars_completeness_audit_job")
    out = job.execute_in_process(run_config=req.run_config, instance=instance, tags=req.tags, resources={
        "clickhouse": ClickHouseResource(url=store.url),
        "marketdata_config": FixedPairs(pairs_json=json.dumps(list(pairs)))})
    assert out.success
    return out


def latest(instance) -> dict:
    return {i.partition_key: i for i in instance.event_log_storage.get_asset_check_partition_info([CHECK])}


def history(instance, partition: str) -> list:
    from dagster._core.storage.event_log.base import PartitionKeyFilter
    return instance.event_log_storage.get_asset_check_execution_history(
        CHECK, limit=20, partition_filter=PartitionKeyFilter(key=partition))


@pytest.fixture
def audit_at(monkeypatch):
    monkeypatch.setenv("MARKETDATA_AUDIT_WINDOW_H", "4")
    monkeypatch.setenv("MARKETDATA_AUDIT_SETTLE_S", "900")
    monkeypatch.setattr(audit_sensors, "now_us", lambda: T0 + 4 * H + 20 * M)     # window 00:00-03:00


def test_dagster_keeps_one_runless_check_result_per_partition():
    """Why the audit records through a run: Dagster 1.13 stores a run-less result with run_id ""
    under a unique (asset, check, run_id, partition) index, so the same hour cannot get a second
    one. (If this starts passing, run-less reporting became possible again.)"""
    from sqlalchemy.exc import IntegrityError
    with dg.instance_for_test() as instance:
        ev = dict(asset_key=dg.AssetKey("bars_1m"), check_name="bars_1m_complete", partition="2026-03-01-02:00")
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(passed=False, **ev))
        with pytest.raises(IntegrityError, match="UNIQUE constraint failed: asset_check_executions"):
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(passed=True, **ev))


def test_audit_records_the_same_hour_again_on_every_change(store, audit_at, tmp_path):
    """Against a real sqlite instance: the hour 02:00 is judged, changes, and is judged again --
    each result is recorded (a run-less result could be recorded once per hour only: Dagster's
    unique index on check executions), and the newest is the one shown."""
    with dg.instance_for_test() as instance:
        r1 = evaluate(store, instance, None)
        assert requested_hours(r1) == [f"2026-03-01-0{h}:00" for h in range(4)]     # built outside Dagster
        out = run_audit(store, instance, r1)
        evs = {e.partition: e for e in out.get_asset_check_evaluations()}
        bad = evs["2026-03-01-02:00"]
        assert not bad.passed and bad.severity == dg.AssetCheckSeverity.WARN
        m = md(bad)
        assert m["expected_bars"] == 60 and m["stored_bars"] == 58 and m["missing_bars"] == 2
        assert m["completeness_pct"] == pytest.approx(100 * 58 / 60, abs=1e-3) and m["incomplete_symbols"] == 1
        assert m["missing_minutes"] == {"binance:BTC-USDT": ["2026-03-01T02:12Z", "2026-03-01T02:13Z"]}
        (row,) = m["missing_by_symbol"].records
        assert row.data == {"exchange": "binance", "symbol": "BTC-USDT", "expected": 60, "stored": 58, "missing": 2,
                            "missing_minutes": "02:12-02:13"}
        assert m["audited_by"] == "bars_completeness_audit" and "build_version" in m
        assert latest(instance)["2026-03-01-02:00"].latest_execution_status.value == "FAILED"
        assert latest(instance)["2026-03-01-01:00"].latest_execution_status.value == "SUCCEEDED"

        # nothing changed: nothing to record, the cursor stays small
        r2 = evaluate(store, instance, r1.cursor)
        assert requested_hours(r2) == [] and "nothing new" in r2.skip_message and len(r2.cursor) < 300

        # the hole is repaired outside Dagster (CLI backfill): 02:00 is judged again, alone
        with store.session() as c:
            c.command("INSERT INTO marketdata.coverage (exchange, symbol, from_us, to_us, source, recorded_us) "
                      f"VALUES ('binance', 'BTC-USDT', {T0 + 2 * H + 12 * M}, {T0 + 2 * H + 14 * M - 1}, 'rest', 2)")
        build_bars(store, T0 + 2 * H, T0 + 3 * H, [BTC])
        r3 = evaluate(store, instance, r2.cursor)
        assert requested_hours(r3) == ["2026-03-01-02:00"]
        run_audit(store, instance, r3)
        info = latest(instance)["2026-03-01-02:00"]
        assert info.latest_execution_status.value == "SUCCEEDED"
        assert [rec.status.value for rec in history(instance, "2026-03-01-02:00")] == ["SUCCEEDED", "FAILED"]

        # a newly configured symbol changes every hour's result without any rebuild: a third time
        r4 = evaluate(store, instance, r3.cursor, pairs=(BTC, ("binance", "ETH-USDT")))
        assert requested_hours(r4) == [f"2026-03-01-0{h}:00" for h in range(4)]
        run_audit(store, instance, r4, pairs=(BTC, ("binance", "ETH-USDT")))
        assert [rec.status.value for rec in history(instance, "2026-03-01-02:00")] == ["FAILED", "SUCCEEDED", "FAILED"]
        assert all(i.latest_execution_status.value == "FAILED" for i in latest(instance).values())

        # an old hour rebuilt by a backfill, far outside the window, is recorded too
        load(store, pairs=[BTC], start_us=T0 - 72 * H, end_us=T0 - 71 * H)
        build_bars(store, T0 - 72 * H, T0 - 71 * H, [BTC])
        r5 = evaluate(store, instance, r4.cursor, pairs=(BTC, ("binance", "ETH-USDT")))
        assert requested_hours(r5) == ["2026-02-26-00:00"]

        # while an audit run is queued or running, the sensor waits and keeps its cursor
        from dagster._core.test_utils import create_run_for_test
        create_run_for_test(instance, job_name="bars_completeness_audit_job", status=dg.DagsterRunStatus.STARTED)
        r6 = evaluate(store, instance, r5.cursor, pairs=(BTC, ("binance", "ETH-USDT")))
        assert requested_hours(r6) == [] and r6.cursor == r5.cursor and "audit run" in r6.skip_message


def test_audit_skips_hours_before_the_data_and_hours_never_built(clickhouse, monkeypatch, tmp_path):
    """The data begins at 01:30 (first coverage). 00:00 was built before that (no coverage: every
    bar incomplete) and 04:00-05:00 were never built: the audit judges 01:00-03:00 only; the
    01:00 hour is a real hour (its minutes before 01:30 are missing)."""
    monkeypatch.setenv("MARKETDATA_AUDIT_WINDOW_H", "48")
    monkeypatch.setattr(audit_sensors, "now_us", lambda: T0 + 6 * H + 20 * M)
    build_bars(clickhouse, T0 - 24 * H, T0 + H, [BTC])                     # the old sensor's 24 h of nothing
    load(clickhouse, pairs=[BTC], start_us=T0 + H + 30 * M, end_us=T0 + 4 * H)
    build_bars(clickhouse, T0 + H, T0 + 4 * H, [BTC])
    with dg.instance_for_test() as instance:
        r = evaluate(clickhouse, instance, None)
        assert requested_hours(r) == ["2026-03-01-01:00", "2026-03-01-02:00", "2026-03-01-03:00"]
        out = run_audit(clickhouse, instance, r)
        evs = {e.partition: e for e in out.get_asset_check_evaluations()}
        assert md(evs["2026-03-01-01:00"])["stored_bars"] == 30 and evs["2026-03-01-02:00"].passed
    # nothing covered at all: no data yet, nothing judged
    monkeypatch.setattr(audit_sensors, "first_coverage_us", lambda store: None)
    with dg.instance_for_test() as instance:
        r = evaluate(clickhouse, instance, None)
        assert requested_hours(r) == [] and "no data yet" in r.skip_message


def test_range_run_results_stay_current_and_the_audit_leaves_them_alone(store, audit_at, tmp_path):
    """A range run's per-hour results point at the run's own materialization of each hour and are
    the latest -- over an audit result recorded before the build -- and the audit neither repeats
    them nor records hours a run is building right now."""
    from marketdata.defs.bars.assets import bars_1m
    from marketdata.defs.bars.checks import bars_1m_complete
    from dagster._core.test_utils import create_run_for_test
    res = {"clickhouse": ClickHouseResource(url=store.url),
           "marketdata_config": FixedPairs(pairs_json=json.dumps([BTC]))}
    with dg.instance_for_test() as instance:
        r1 = evaluate(store, instance, None)
        run_audit(store, instance, r1)                                      # judged before any Dagster build
        assert latest(instance)["2026-03-01-01:00"].latest_target_materialization_storage_id is None

        run = dg.materialize([bars_1m, bars_1m_complete], resources=res, instance=instance,
                             tags={"dagster/asset_partition_range_start": "2026-03-01-00:00",
                                   "dagster/asset_partition_range_end": "2026-03-01-03:00"})
        assert run.success
        mats = {r.partition_key: r for r in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("bars_1m")), limit=10).records}
        info = latest(instance)
        for h in range(4):
            k = f"2026-03-01-0{h}:00"
            assert mats[k].run_id == run.run_id
            assert info[k].latest_planned_run_id == run.run_id                       # the run's own result
            assert info[k].latest_target_materialization_storage_id == mats[k].storage_id and info[k].is_current
        assert info["2026-03-01-02:00"].latest_execution_status.value == "FAILED"

        # the audit sees four rebuilt hours, all judged by the run: nothing to record
        r2 = evaluate(store, instance, r1.cursor)
        assert requested_hours(r2) == [] and "nothing new" in r2.skip_message

        # a range run over 00:00-01:00 is in flight while 00:00-02:00 are rebuilt: 02:00 is recorded,
        # 00:00 and 01:00 are left to the running run's check
        create_run_for_test(instance, job_name="bars_1m_job", status=dg.DagsterRunStatus.STARTED,
                            tags={"dagster/asset_partition_range_start": "2026-03-01-00:00",
                                  "dagster/asset_partition_range_end": "2026-03-01-01:00"})
        build_bars(store, T0, T0 + 3 * H, [BTC])
        r3 = evaluate(store, instance, r2.cursor)
        assert requested_hours(r3) == ["2026-03-01-02:00"]


def test_audit_report_plan():
    """plan_report: changed and unexplained hours only; busy hours keep their old digest."""
    from marketdata.bars.audit import plan_report
    from marketdata.bars.completeness import HourAudit
    hours = [T0, T0 + H, T0 + 2 * H, T0 + 3 * H]
    audits = {h: [HourAudit("binance", "BTC-USDT", h, 60, 60 - i)] for i, h in enumerate(hours)}
    audits[T0 + 3 * H] = []                                                  # no pair at all
    first = plan_report(hours, audits, window=hours, prior_digests={}, rebuilt=[])
    assert first.report == hours[:3] and set(first.digests) == set(hours[:3])
    # judged by a run and new to the window: not repeated; a busy hour is not looked at
    p = plan_report(hours, audits, window=hours, prior_digests={}, rebuilt=[], judged=[T0], busy=[T0 + H])
    assert p.report == [T0 + 2 * H] and T0 + H not in p.digests
    # unchanged: nothing; rebuilt and judged: nothing; rebuilt, not judged: reported
    assert plan_report(hours, audits, window=hours, prior_digests=first.digests, rebuilt=[]).report == []
    assert plan_report(hours, audits, window=hours, prior_digests=first.digests, rebuilt=[T0],
                       judged=[T0]).report == []
    assert plan_report(hours, audits, window=hours, prior_digests=first.digests, rebuilt=[T0]).report == [T0]
    # busy: the old digest is kept for next time
    assert plan_report(hours, audits, window=hours, prior_digests=first.digests, rebuilt=[],
                       busy=[T0]).digests[T0] == first.digests[T0]


def test_audit_sensor_definition():
    s = defs.get_repository_def().get_sensor_def("bars_completeness_audit")
    assert s.minimum_interval_seconds == 300 and s.default_status == dg.DefaultSensorStatus.RUNNING
    assert s.owners and "rebuilt" in s.description and s.job_name == "bars_completeness_audit_job"


def test_completeness_daily_report(store):
    result = dg.materialize([completeness_daily], partition_key="2026-03-01",
                            resources={"clickhouse": ClickHouseResource(url=store.url),
                                       "marketdata_config": FixedPairs(pairs_json=json.dumps([BTC]))},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (mat,) = result.asset_materializations_for_node("completeness_daily")
    m = md(mat)
    assert m["expected_bars"] == 24 * 60 and m["stored_bars"] == 4 * 60 - 2          # 4 built hours, 2 missing
    assert m["completeness_pct"] == pytest.approx(100 * 238 / 1440, abs=1e-3)
    assert m["completeness_pct_binance"] == m["completeness_pct"] and m["venues"] == 1 and m["symbols"] == 1
    assert m["incomplete_hours"] == 21
    (sym,) = m["by_symbol"].records
    assert sym.data["first_missing"] == "2026-03-01T02:12Z" and sym.data["incomplete_hours"] == 21
    (ven,) = m["by_venue"].records
    assert ven.data["exchange"] == "binance" and ven.data["missing"] == 1440 - 238


def test_daily_schedule_reports_the_previous_day():
    repo = defs.get_repository_def()
    sched = repo.get_schedule_def("completeness_daily_schedule")
    assert sched.cron_schedule == "30 0 * * *" and sched.job_name == "completeness_daily_job"
    assert repo.get_job("completeness_daily_job").description
    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_schedule_context(instance=instance,
                                        scheduled_execution_time=datetime(2026, 3, 2, 0, 30, tzinfo=timezone.utc))
        (req,) = sched.evaluate_tick(ctx).run_requests
    assert req.partition_key == "2026-03-01"
    node = repo.asset_graph.get(dg.AssetKey("completeness_daily"))
    assert node.owners and node.description and dg.AssetKey("bars_1m") in node.parent_keys
