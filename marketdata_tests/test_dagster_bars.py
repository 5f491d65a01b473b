"""Dagster definitions for bars_1m: they load, a partition materializes against a temporary
embedded ClickHouse, the completeness check passes or names the missing minutes, a range run
builds every hour in one run, and the schedule asks for the hour that just closed."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
import pytest

from marketdata.definitions import defs
from marketdata.defs.bars.assets import bars_1m
from marketdata.defs.bars.checks import bars_1m_complete
from marketdata.clock import hour_key
from marketdata.defs.partitions import hourly_partitions

M = 60_000_000
H_US = 3_600_000_000
H0 = int(datetime(2026, 3, 1, 9, tzinfo=timezone.utc).timestamp()) * 1_000_000
TICK_COLS = ["exchange", "symbol", "trade_id", "ts_us", "open", "high", "low", "close", "volume",
             "trade_count", "side", "recv_us", "source", "event", "version", "is_deleted"]
COV_COLS = ["exchange", "symbol", "from_us", "to_us", "source", "recorded_us"]
CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("bars_1m"), "bars_1m_complete")


@pytest.fixture
def store(tmp_path, monkeypatch, clickhouse):
    """A fresh store, pointed at by the same env vars a deployment uses."""
    url = clickhouse.url
    monkeypatch.setenv("MARKETDATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", url)
    monkeypatch.setenv("MARKETDATA_CONFIG", str(tmp_path / "marketdata.yaml"))   # absent unless written
    return clickhouse


def load(ch, *, pairs, start_us, end_us, holes=()):
    """A trade every 20 s for each pair, and coverage over [start, end) minus the holes."""
    ticks, cov = [], []
    for i, (ex, sym) in enumerate(pairs):
        for n, ts in enumerate(range(start_us + 1, end_us, 20_000_000)):
            px = str(100 + i * 1000 + n % 17)
            ticks.append({"exchange": ex, "symbol": sym, "trade_id": str(n + 1), "ts_us": ts,
                          "open": px, "high": px, "low": px, "close": px, "volume": "0.5",
                          "trade_count": 1, "side": "sell", "recv_us": ts, "source": "ws",
                          "event": "trade", "version": 1, "is_deleted": 0})
        edges = [start_us] + [x for h in holes for x in h] + [end_us]
        for a, b in zip(edges[::2], edges[1::2]):
            if b > a:
                cov.append({"exchange": ex, "symbol": sym, "from_us": a, "to_us": b - 1,
                            "source": "ws", "recorded_us": 1})
    with ch.session() as c:
        c.raw_insert("marketdata.ticks", TICK_COLS, fmt="JSONEachRow",
                     insert_block="\n".join(json.dumps(t) for t in ticks).encode())
        c.raw_insert("marketdata.coverage", COV_COLS, fmt="JSONEachRow",
                     insert_block="\n".join(json.dumps(r) for r in cov).encode())


def run(**kwargs):
    return dg.materialize([bars_1m, bars_1m_complete], resources=defs.resources,
                          instance=dg.DagsterInstance.ephemeral(), **kwargs)


def check_eval(result):
    """The check's own result (in a range run: the summary over the range, without a partition;
    the per-hour results it logs besides carry their hour)."""
    evs = result.get_asset_check_evaluations()
    (ev,) = [e for e in evs if e.partition is None] or evs
    assert ev.asset_check_key == CHECK_KEY
    return ev, {k: v.value for k, v in ev.metadata.items()}


def test_definitions_load_while_the_first_hour_is_still_open():
    """A fresh `marketdata up` starts the partitions at the current hour: until it closes there is
    no partition at all, and the code location must load anyway (it once failed with
    "'NoneType' object is not subscriptable")."""
    import os
    import subprocess
    import sys
    hour = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H:00")
    code = ("from marketdata.definitions import defs; from marketdata.defs.partitions import hourly_partitions; "
            "import dagster as dg; dg.Definitions.validate_loadable(defs); defs.get_repository_def(); "
            "print(hourly_partitions.get_first_partition_key())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, MARKETDATA_BARS_START=hour))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1] in ("None", hour)    # None, unless the hour closed meanwhile


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert dg.AssetKey("bars_1m") in {a.key for a in defs.assets}
    assert CHECK_KEY in repo.asset_graph.get_check_keys_for_assets({dg.AssetKey("bars_1m")})
    assert set(defs.resources) == {"clickhouse", "marketdata_config", "redis"}
    job = repo.get_job("bars_1m_job")
    assert job.partitions_def == hourly_partitions
    sched = repo.get_schedule_def("bars_1m_hourly")
    assert sched.cron_schedule == "5 * * * *" and sched.job_name == "bars_1m_job"
    spec = bars_1m.specs_by_key[dg.AssetKey("bars_1m")]
    assert spec.kinds == {"clickhouse"} and spec.group_name == "bars" and spec.description
    assert bars_1m.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=168)
    assert hourly_partitions.timezone == "UTC" and hourly_partitions.end_offset == 0
    # closed hours only: at 10:20 the last partition is 09:00
    with dg.partition_loading_context(effective_dt=datetime(2026, 3, 1, 10, 20, tzinfo=timezone.utc)):
        assert hourly_partitions.get_last_partition_key() == "2026-03-01-09:00"


def test_partition_materializes_and_check_passes(store):
    pairs = [("binance", "BTC-USDT"), ("okx", "ETH-USDT")]
    load(store, pairs=pairs, start_us=H0, end_us=H0 + H_US)
    result = run(partition_key=hour_key(H0))
    assert result.success
    (mat,) = result.asset_materializations_for_node("bars_1m")
    assert mat.partition == "2026-03-01-09:00"
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["bars_written"] == 120 and md["complete_bars"] == 120 and md["completeness_pct"] == 100.0
    assert md["ticks"] == 2 * 180 and md["symbols"] == 2 and md["incomplete_symbols"] == {}
    ev, cm = check_eval(result)
    assert ev.passed and ev.partition == "2026-03-01-09:00"
    assert cm["expected_bars"] == 120 and cm["stored_bars"] == 120
    assert cm["completeness_pct"] == 100.0 and cm["missing_minutes"] == {}
    assert store.rows("SELECT count(), sum(complete) FROM marketdata.bars_1m FINAL") == [(120, 120)]


def test_check_fails_and_names_the_missing_minutes(store, tmp_path):
    # configured: BTC-USDT (data with a hole) and ETH-USDT (no data at all)
    (tmp_path / "marketdata.yaml").write_text(
        "endpoints: live\nvenues:\n  binance:\n    symbols: [BTC-USDT, ETH-USDT]\n")
    load(store, pairs=[("binance", "BTC-USDT")], start_us=H0, end_us=H0 + H_US,
         holes=[(H0 + 12 * M + 30_000_000, H0 + 14 * M)])          # 12:30..13:59 -> 12 and 13
    result = run(partition_key=hour_key(H0))
    assert result.success                                            # a failed check is data, not an error
    ev, cm = check_eval(result)
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN
    assert cm["expected_bars"] == 120 and cm["stored_bars"] == 58 and cm["missing_bars"] == 62
    assert cm["completeness_pct"] == pytest.approx(100 * 58 / 120, abs=1e-3)
    mm = cm["missing_minutes"]
    assert mm["binance:BTC-USDT"] == ["2026-03-01T09:12Z", "2026-03-01T09:13Z"]
    assert mm["binance:ETH-USDT"] == [f"2026-03-01T09:{m:02d}Z" for m in range(60)]
    assert set(mm) == {"binance:BTC-USDT", "binance:ETH-USDT"}
    (mat,) = result.asset_materializations_for_node("bars_1m")
    assert mat.metadata["incomplete_symbols"].value == {"binance:ETH-USDT": 60, "binance:BTC-USDT": 2}


def test_range_run_builds_every_hour_in_one_run(store):
    pairs = [("kraken", "BTC-USD")]
    load(store, pairs=pairs, start_us=H0, end_us=H0 + 3 * H_US)
    result = run(tags={"dagster/asset_partition_range_start": hour_key(H0),
                       "dagster/asset_partition_range_end": hour_key(H0 + 2 * H_US)})
    assert result.success
    mats = result.asset_materializations_for_node("bars_1m")
    assert sorted(m.partition for m in mats) == ["2026-03-01-09:00", "2026-03-01-10:00", "2026-03-01-11:00"]
    md = {k: v.value for k, v in mats[0].metadata.items()}
    assert md["bars_written"] == 180 and md["complete_bars"] == 180 and md["hours"] == 3
    # one build (one build_version) wrote all three hours
    assert store.rows("SELECT count(), uniqExact(build_version), toStartOfHour(min(minute)), "
                      "toStartOfHour(max(minute)) FROM marketdata.bars_1m FINAL") == [
        (180, 1, datetime(2026, 3, 1, 9), datetime(2026, 3, 1, 11))]
    ev, cm = check_eval(result)                      # in a range run the check covers the range
    assert ev.passed and cm["expected_bars"] == 180 and cm["hours"] == 3
    hourly = sorted((e.partition, e.passed, e.metadata["expected_bars"].value)
                    for e in result.get_asset_check_evaluations() if e.partition is not None)
    assert hourly == [("2026-03-01-09:00", True, 60), ("2026-03-01-10:00", True, 60),
                      ("2026-03-01-11:00", True, 60)]             # and records each hour's result


def schedule_tick(instance, at: datetime):
    sched = defs.get_repository_def().get_schedule_def("bars_1m_hourly")
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at, resources=defs.resources,
                                   repository_def=defs.get_repository_def()) as ctx:
        return sched.evaluate_tick(ctx)


def test_schedule_requests_the_hour_that_just_closed_unless_it_is_built(store):
    assert defs.get_repository_def().get_schedule_def("bars_1m_hourly").cron_schedule == "5 * * * *"
    load(store, pairs=[("binance", "BTC-USDT")], start_us=H0 - H_US, end_us=H0 + 2 * H_US)
    at = datetime(2026, 3, 1, 10, 5, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        (req,) = schedule_tick(instance, at).run_requests
        assert req.partition_key == "2026-03-01-09:00"
        # the sensor built it three minutes ago: the safety net skips it
        result = run_on(instance, partition_key="2026-03-01-09:00")
        assert result.success
        tick = schedule_tick(instance, at)
        assert not tick.run_requests and "already built" in tick.skip_message
        # an hour a queued or running run is building (alone or in a range) is skipped too
        from dagster._core.test_utils import create_run_for_test
        create_run_for_test(instance, job_name="bars_1m_job", status=dg.DagsterRunStatus.STARTED,
                            tags={"dagster/asset_partition_range_start": "2026-03-01-08:00",
                                  "dagster/asset_partition_range_end": "2026-03-01-10:00"})
        tick = schedule_tick(instance, datetime(2026, 3, 1, 11, 5, tzinfo=timezone.utc))
        assert not tick.run_requests and "being built" in tick.skip_message
        # an hour before the data begins (the first coverage, 08:00) has nothing to build
        tick = schedule_tick(instance, datetime(2026, 3, 1, 8, 5, tzinfo=timezone.utc))
        assert not tick.run_requests and "before the platform's data begins" in tick.skip_message


def run_on(instance, **kwargs):
    return dg.materialize([bars_1m, bars_1m_complete], resources=defs.resources, instance=instance, **kwargs)


ALPACA = ("alpaca", "AAPL-USD")
SESSION_HOUR = int(datetime(2026, 3, 2, 14, tzinfo=timezone.utc).timestamp()) * 1_000_000   # NYSE opens 14:30


def test_materialization_and_check_report_one_completeness_for_an_equity_outside_its_session(store):
    """The hour 14:00 UTC: NYSE opens at 14:30, so the calendar expects 30 AAPL bars and 60 BTC
    bars. Coverage starts at 14:10 for both: 50 BTC bars and the 30 AAPL session bars are complete
    (AAPL's 14:10-14:29 rows are complete too, but not expected). Materialization and check say
    the same: 80 / 90."""
    pairs = [("binance", "BTC-USDT"), ALPACA]
    load(store, pairs=pairs, start_us=SESSION_HOUR, end_us=SESSION_HOUR + H_US,
         holes=[(SESSION_HOUR, SESSION_HOUR + 10 * M)])
    result = run(partition_key=hour_key(SESSION_HOUR))
    assert result.success
    (mat,) = result.asset_materializations_for_node("bars_1m")
    md = {k: v.value for k, v in mat.metadata.items()}
    ev, cm = check_eval(result)
    assert (cm["expected_bars"], cm["stored_bars"]) == (90, 80)
    assert (md["expected_bars"], md["stored_bars"]) == (cm["expected_bars"], cm["stored_bars"])
    assert md["completeness_pct"] == cm["completeness_pct"] == pytest.approx(100 * 80 / 90, abs=1e-3)
    assert md["bars_written"] == 120 and md["complete_bars"] == 100          # rows, not completeness
    assert md["incomplete_symbols"] == {"binance:BTC-USDT": 10}               # AAPL misses no session bar


def test_gap_repair_job_with_nothing_to_rebuild_succeeds(store):
    """No gap due, so no hour to rebuild: every float metadata entry gets a float, not the int 0
    an empty rebuild sums to (MetadataValue.float(0) fails the run)."""
    job = defs.get_job_def("gap_repair_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, resources=defs.resources)
    assert result.success
    (out,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"
              and e.step_key == "rebuild_repaired_hours"]
    md = {k: v.value for k, v in out.event_specific_data.metadata.items()}
    assert md["hours_rebuilt"] == 0 and md["build_seconds"] == 0.0
    assert isinstance(md["build_seconds"], float)


def test_an_hour_before_the_data_begins_is_no_data_not_a_failure(store, tmp_path):
    (tmp_path / "marketdata.yaml").write_text("endpoints: live\nvenues:\n  binance:\n    symbols: [BTC-USDT]\n")
    load(store, pairs=[("binance", "BTC-USDT")], start_us=H0, end_us=H0 + H_US)       # data begins 09:00
    result = run(partition_key=hour_key(H0 - H_US))                                     # 08:00
    assert result.success
    ev, cm = check_eval(result)
    assert ev.passed and cm["no_data"] is True and "before the platform's data begins" in ev.description
    result = run(partition_key=hour_key(H0))                                            # 09:00 is a real hour
    ev, cm = check_eval(result)
    assert ev.passed and cm["stored_bars"] == 60 and "no_data" not in cm
