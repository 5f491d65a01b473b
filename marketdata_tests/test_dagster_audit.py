"""Audits in Dagster: the bars_completeness_audit sensor (one evaluation per hour, right pass/fail
and metadata, only changes and rebuilt hours re-reported, linked to each hour's materialization),
the audit library it calls, and the daily completeness report with its schedule."""

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
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res) as ctx:
        return audit_sensors.bars_completeness_audit(ctx)


def by_partition(result) -> dict:
    assert all(isinstance(e, dg.AssetCheckEvaluation) and e.asset_check_key == CHECK for e in result.asset_events)
    return {e.partition: e for e in result.asset_events}


def test_audit_sensor_one_evaluation_per_hour_then_only_changes(store, monkeypatch):
    monkeypatch.setenv("MARKETDATA_AUDIT_WINDOW_H", "4")
    monkeypatch.setenv("MARKETDATA_AUDIT_SETTLE_S", "900")
    monkeypatch.setattr(audit_sensors, "now_us", lambda: T0 + 4 * H + 20 * M)     # window 00:00-03:00
    instance = dg.DagsterInstance.ephemeral()
    # hour 01:00 and 02:00 were materialized by a (range) run: evaluations link to them
    for h in ("2026-03-01-01:00", "2026-03-01-02:00"):
        instance.report_runless_asset_event(dg.AssetMaterialization("bars_1m", partition=h))

    r1 = evaluate(store, instance, None)
    evs = by_partition(r1)
    assert sorted(evs) == [f"2026-03-01-0{h}:00" for h in range(4)]
    bad = evs["2026-03-01-02:00"]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.WARN
    m = md(bad)
    assert m["expected_bars"] == 60 and m["stored_bars"] == 58 and m["missing_bars"] == 2
    assert m["completeness_pct"] == pytest.approx(100 * 58 / 60, abs=1e-3) and m["incomplete_symbols"] == 1
    assert m["missing_minutes"] == {"binance:BTC-USDT": ["2026-03-01T02:12Z", "2026-03-01T02:13Z"]}
    (row,) = m["missing_by_symbol"].records
    assert row.data == {"exchange": "binance", "symbol": "BTC-USDT", "expected": 60, "stored": 58, "missing": 2,
                        "missing_minutes": "02:12-02:13"}
    assert "build_version" in m                                       # first look: every built hour is new
    good = evs["2026-03-01-00:00"]
    assert good.passed and md(good)["stored_bars"] == 60 and "missing_by_symbol" not in md(good)

    # reported into the instance, each hour has its own status, current for its materialization
    for e in r1.asset_events:
        instance.report_runless_asset_event(e)
    info = {i.partition_key: i for i in instance.event_log_storage.get_asset_check_partition_info([CHECK])}
    assert info["2026-03-01-02:00"].latest_execution_status.value == "FAILED"
    assert info["2026-03-01-01:00"].latest_execution_status.value == "SUCCEEDED"
    assert info["2026-03-01-02:00"].is_current and info["2026-03-01-01:00"].is_current

    # nothing changed: nothing reported, the cursor stays small
    r2 = evaluate(store, instance, r1.cursor)
    assert not r2.asset_events and "no change" in r2.skip_reason.skip_message
    assert len(r2.cursor) < 200

    # 01:00 rebuilt (same content): reported again, alone
    build_bars(store, T0 + H, T0 + 2 * H, [BTC])
    r3 = evaluate(store, instance, r2.cursor)
    assert list(by_partition(r3)) == ["2026-03-01-01:00"] and by_partition(r3)["2026-03-01-01:00"].passed

    # a newly configured symbol changes every hour's status without any rebuild
    r4 = evaluate(store, instance, r3.cursor, pairs=(BTC, ("binance", "ETH-USDT")))
    evs = by_partition(r4)
    assert len(evs) == 4 and not any(e.passed for e in evs.values())
    assert md(evs["2026-03-01-00:00"])["missing_minutes"]["binance:ETH-USDT"][0] == "2026-03-01T00:00Z"

    # an old hour rebuilt by a backfill, far outside the window, is reported too
    load(store, pairs=[BTC], start_us=T0 - 72 * H, end_us=T0 - 71 * H)
    build_bars(store, T0 - 72 * H, T0 - 71 * H, [BTC])
    r5 = evaluate(store, instance, r4.cursor, pairs=(BTC, ("binance", "ETH-USDT")))
    assert list(by_partition(r5)) == ["2026-02-26-00:00"]
    instance.dispose()


def test_audit_sensor_definition():
    s = defs.get_repository_def().get_sensor_def("bars_completeness_audit")
    assert s.minimum_interval_seconds == 300 and s.default_status == dg.DefaultSensorStatus.RUNNING
    assert s.owners and "rebuilt" in s.description


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
