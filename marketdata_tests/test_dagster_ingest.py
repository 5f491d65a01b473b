"""Observed ingest in Dagster: external assets and checks, the ingest_health sensor (against a
real redis-server, and against a real `marketdata ingest` process that is stopped and restarted),
and the bars_hour_closed sensor (closed hours, known-down venues, one range run after an outage,
nothing twice) against real Redis and the embedded ClickHouse."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dagster as dg
import pytest

from marketdata.clock import now_us
from marketdata.definitions import defs
from marketdata.defs.ingest import sensors as ingest_sensors
from marketdata.defs.ingest.assets import VENUES
from marketdata.defs.resources import ClickHouseResource, MarketdataConfigResource, RedisResource
from marketdata.storage.redis import client
from marketdata.stream import health_key

from .harness import Proc, SimProc, platform_env, wait_for, write_config

S = 1_000_000
M = 60 * S
H = 3600 * S
T0 = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()) * S        # 2026-03-01 00:00 UTC
INGEST_CHECK = dg.AssetCheckKey(dg.AssetKey(["ingest", "binance"]), "ingest_healthy")
PERSIST_CHECK = dg.AssetCheckKey(dg.AssetKey("raw_ticks"), "persist_healthy")


def md(ev) -> dict:
    return {k: v.value for k, v in ev.metadata.items()}


def checks(result) -> dict:
    return {dg.AssetCheckKey(e.asset_key, e.check_name): e for e in result.asset_events
            if isinstance(e, dg.AssetCheckEvaluation)}


def observations(result) -> dict:
    return {e.asset_key: e for e in result.asset_events if isinstance(e, dg.AssetObservation)}


def test_ingest_definitions():
    repo = defs.get_repository_def()
    assert VENUES and "binance" in VENUES
    graph = repo.asset_graph
    for v in VENUES:
        node = graph.get(dg.AssetKey(["ingest", v]))
        assert not node.is_materializable and node.kinds == {"redis"} and node.owners and node.description
    raw = graph.get(dg.AssetKey("raw_ticks"))
    assert raw.partitions_def == repo.get_job("bars_1m_job").partitions_def and not raw.is_materializable
    assert raw.parent_keys == {dg.AssetKey(["ingest", v]) for v in VENUES}
    assert dg.AssetKey("raw_ticks") in graph.get(dg.AssetKey("bars_1m")).parent_keys
    assert {INGEST_CHECK, PERSIST_CHECK} <= graph.get_check_keys_for_assets(
        {dg.AssetKey("raw_ticks"), dg.AssetKey(["ingest", "binance"])})
    for name, interval in (("ingest_health", 30), ("bars_hour_closed", 60)):
        s = repo.get_sensor_def(name)
        assert s.minimum_interval_seconds == interval and s.description and s.owners
        assert s.default_status == dg.DefaultSensorStatus.RUNNING
    assert repo.get_sensor_def("bars_hour_closed").job_name == "bars_1m_job"


# --- ingest_health ------------------------------------------------------------------------------

def health_hash(now: int, **kw) -> dict:
    h = {"heartbeat_us": now - S, "pid": 77, "connections": 2, "symbols": 2, "ticks_in": 1_000,
         "ticks_published": 990, "queued": 10, "malformed": 1, "reconnects": 3, "open_holes": 0,
         "gaps_found": 1, "gaps_repaired": 1, "gaps_unrepairable": 0, "last_tick_recv_us": now - 2 * S,
         "last_trade_ts_us": now - 2 * S - 50_000, "lag_us": 50_000, "covered_to_us": now - 3 * S,
         "state": "running", "last_error": ""}
    h.update(kw)
    return {k: str(v) for k, v in h.items()}


def evaluate_health(redis_url: str, cursor: str | None = None):
    with dg.build_sensor_context(cursor=cursor, resources={"redis": RedisResource(url=redis_url)}) as ctx:
        return ingest_sensors.ingest_health(ctx)


def test_health_check_passes_fresh_fails_stale_and_stopped(redis_server, redis_client, monkeypatch):
    monkeypatch.delenv("MARKETDATA_HEALTH_STALE_S", raising=False)
    now = now_us()
    redis_client.hset(health_key("binance"), mapping=health_hash(now))
    redis_client.hset("md:health:{persist:w1}", mapping={"heartbeat_us": now, "pid": 5, "phase": "idle",
                                                          "pending": 2, "group_pending": 4, "lag_ms": 150,
                                                          "ticks_persisted": 700})
    r1 = evaluate_health(redis_server.url)
    ev = checks(r1)[INGEST_CHECK]
    assert ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR and "healthy" in ev.description
    obs = md(observations(r1)[dg.AssetKey(["ingest", "binance"])])
    assert obs["lag_ms"] == 50.0 and obs["connections"] == 2 and obs["reconnects"] == 3
    assert obs["malformed"] == 1 and obs["open_holes"] == 0 and 0.5 < obs["heartbeat_age_s"] < 30
    assert "ticks_per_s" not in obs                                   # needs a previous reading
    assert checks(r1)[PERSIST_CHECK].passed
    pobs = md(observations(r1)[dg.AssetKey("raw_ticks")])
    assert pobs["persist_pending"] == 4 and pobs["persist_lag_ms"] == 150 and pobs["persist_workers_live"] == 1

    # 10 s of the process's time later: 500 more ticks -> 50 ticks/s; status unchanged -> no check event
    redis_client.hset(health_key("binance"), mapping={"ticks_in": 1_500, "heartbeat_us": now + 9 * S})
    r2 = evaluate_health(redis_server.url, r1.cursor)
    assert md(observations(r2)[dg.AssetKey(["ingest", "binance"])])["ticks_per_s"] == 50.0
    assert INGEST_CHECK not in checks(r2)

    # stale heartbeat (older than the 30 s default): red, naming why
    redis_client.hset(health_key("binance"), mapping={"heartbeat_us": now - 45 * S})
    r3 = evaluate_health(redis_server.url, r2.cursor)
    ev = checks(r3)[INGEST_CHECK]
    assert not ev.passed and "heartbeat stale" in ev.description and md(ev)["status"] == "stale"

    # a tighter bound from the environment
    redis_client.hset(health_key("binance"), mapping={"heartbeat_us": now - 5 * S})
    r3b = evaluate_health(redis_server.url, r3.cursor)
    assert checks(r3b)[INGEST_CHECK].passed
    monkeypatch.setenv("MARKETDATA_HEALTH_STALE_S", "2")
    assert not checks(evaluate_health(redis_server.url, r3b.cursor))[INGEST_CHECK].passed
    monkeypatch.delenv("MARKETDATA_HEALTH_STALE_S")

    # stopped: red even with a fresh heartbeat; back to running: green again
    redis_client.hset(health_key("binance"), mapping={"heartbeat_us": now_us(), "state": "stopped"})
    r4 = evaluate_health(redis_server.url, r3.cursor)
    assert not checks(r4)[INGEST_CHECK].passed and md(checks(r4)[INGEST_CHECK])["status"] == "stopped"
    redis_client.hset(health_key("binance"), mapping={"heartbeat_us": now_us(), "state": "running"})
    r5 = evaluate_health(redis_server.url, r4.cursor)
    assert checks(r5)[INGEST_CHECK].passed


def test_health_fails_when_absent_or_redis_is_unreachable(redis_server, redis_client):
    r = evaluate_health(redis_server.url)
    assert not checks(r)[INGEST_CHECK].passed and "absent" in checks(r)[INGEST_CHECK].description
    assert not checks(r)[PERSIST_CHECK].passed and not observations(r)
    r = evaluate_health("redis://127.0.0.1:1/0")
    assert not checks(r)[INGEST_CHECK].passed and "Redis unreachable" in checks(r)[INGEST_CHECK].description
    # the same outage is not re-reported on the next tick; recovery is reported at once
    again = evaluate_health("redis://127.0.0.1:1/0", r.cursor)
    assert not checks(again) and "Redis unreachable" in again.skip_reason.skip_message
    redis_client.hset(health_key("binance"), mapping=health_hash(now_us()))
    back = evaluate_health(redis_server.url, again.cursor)
    assert checks(back)[INGEST_CHECK].passed


def test_stopping_a_real_ingest_process_turns_its_check_red_and_restarting_green(tmp_path, redis_server,
                                                                               clickhouse):
    logs = tmp_path / "logs"
    logs.mkdir()
    env = platform_env(tmp_path, redis_server.url, clickhouse.url)
    sim = SimProc(["simulate", "--venues", "binance", "--symbols", "BTC-USDT", "--rate", "50", "--seed", "3"],
                  env, logs)
    eps = sim.endpoints["binance"]
    cfg = write_config(tmp_path / "marketdata.yaml", {"binance": {"symbols": ["BTC-USDT"], "ws_url": eps["ws"],
                                                                  "rest_url": eps["rest"]}})
    env["MARKETDATA_CONFIG"] = str(cfg)
    r = client(redis_server.url)
    procs = [sim]

    def health() -> dict:
        return {k.decode(): v.decode() for k, v in r.hgetall(health_key("binance")).items()}

    try:
        ingest = Proc("ingest", ["ingest", "--venue", "binance"], env, logs)
        procs.append(ingest)
        wait_for(lambda: health().get("connections") == "1" and int(health().get("ticks_in", 0)) > 0, 30,
                 "the connector to connect and receive trades", on_timeout=ingest.log)
        first = evaluate_health(redis_server.url)
        assert checks(first)[INGEST_CHECK].passed, checks(first)[INGEST_CHECK].description

        ingest.stop()
        assert health()["state"] == "stopped"
        down = evaluate_health(redis_server.url, first.cursor)
        ev = checks(down)[INGEST_CHECK]
        assert not ev.passed and md(ev)["status"] == "stopped", ev.description

        old_pid = health()["pid"]
        ingest2 = Proc("ingest2", ["ingest", "--venue", "binance"], env, logs)
        procs.append(ingest2)
        wait_for(lambda: health().get("pid") != old_pid and health().get("state") == "running"
                 and health().get("connections") == "1", 30, "the restarted connector", on_timeout=ingest2.log)
        back = evaluate_health(redis_server.url, down.cursor)
        assert checks(back)[INGEST_CHECK].passed, checks(back)[INGEST_CHECK].description
    finally:
        for p in reversed(procs):
            p.stop()
        r.close()


# --- bars_hour_closed ---------------------------------------------------------------------------

class FixedPairs(MarketdataConfigResource):
    """The configured pairs, given directly (lets a test configure venues without their modules)."""
    pairs_json: str = "[]"

    def pairs(self):
        return [tuple(p) for p in json.loads(self.pairs_json)]


PAIRS = [("binance", "BTC-USDT"), ("binance", "ETH-USDT"), ("okx", "BTC-USDT")]


@pytest.fixture
def hour_closed(tmp_path, redis_server, redis_client, clickhouse, monkeypatch):
    """Evaluate bars_hour_closed at a chosen 'now' against real Redis heartbeats and ClickHouse
    coverage; returns helpers."""
    for k in ("MARKETDATA_HOUR_CLOSE_GRACE_S", "MARKETDATA_HOUR_CLOSE_DOWN_S", "MARKETDATA_HOUR_CLOSE_STALL_S"):
        monkeypatch.delenv(k, raising=False)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"clickhouse": ClickHouseResource(url=clickhouse.url),
                 "redis": RedisResource(url=redis_server.url),
                 "marketdata_config": FixedPairs(pairs_json=json.dumps(PAIRS))}

    class Ctx:
        ch = clickhouse

        @staticmethod
        def at(now: int):
            monkeypatch.setattr(ingest_sensors, "now_us", lambda: now)

        @staticmethod
        def heartbeat(venue: str, at: int, **kw):
            redis_client.hset(health_key(venue), mapping={"heartbeat_us": str(at), "state": "running",
                                                          **{k: str(v) for k, v in kw.items()}})

        @staticmethod
        def cover(venue: str, to_us: int, symbols=None):
            rows = [{"exchange": ex, "symbol": sym, "from_us": T0 - H, "to_us": to_us - 1, "source": "ws",
                     "recorded_us": to_us} for ex, sym in PAIRS if ex == venue and (symbols is None or sym in symbols)]
            with clickhouse.session() as c:
                c.raw_insert("marketdata.coverage", list(rows[0]), fmt="JSONEachRow",
                             insert_block="\n".join(json.dumps(r) for r in rows).encode())

        @staticmethod
        def evaluate(cursor: str | None):
            sensor = defs.get_repository_def().get_sensor_def("bars_hour_closed")
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                         definitions=defs) as ctx:
                return sensor.evaluate_tick(ctx)

        instance_ = instance

    yield Ctx
    instance.dispose()


def cursor_of(last: str, **partial) -> str:
    return json.dumps({"last": last, "partial": partial})


def test_hour_closed_requests_exactly_the_closed_hours_and_nothing_twice(hour_closed):
    now = T0 + 10 * H + 5 * M                                      # 10:05
    hour_closed.at(now)
    hour_closed.heartbeat("binance", now - S)
    hour_closed.heartbeat("okx", now - S)
    hour_closed.cover("binance", T0 + 10 * H + 3 * M)              # both binance symbols to 10:03
    hour_closed.cover("okx", T0 + 10 * H + M)                      # okx only to 10:01: 09:00 not closed yet
    res = hour_closed.evaluate(cursor_of("2026-03-01-08:00"))
    assert res.run_requests == [] and "okx" in res.skip_message and "waiting on ingest" in res.skip_message
    assert json.loads(res.cursor)["last"] == "2026-03-01-08:00"

    hour_closed.cover("okx", T0 + 10 * H + 2 * M)                  # okx passes 10:00 + 2 min grace
    res = hour_closed.evaluate(cursor_of("2026-03-01-08:00"))
    (req,) = res.run_requests
    assert req.partition_key == "2026-03-01-09:00" and req.run_key == "bars_1m:2026-03-01-09:00"
    assert req.tags["marketdata/trigger"] == "bars_hour_closed" and "marketdata/venues_down" not in req.tags
    (mat,) = res.asset_events
    assert mat.asset_key == dg.AssetKey("raw_ticks") and mat.partition == "2026-03-01-09:00"
    assert md(mat)["venues"] == 2 and md(mat)["venues_down"] == 0 and md(mat)["ticks"] == 0
    assert json.loads(res.cursor) == {"last": "2026-03-01-09:00", "partial": {}}

    again = hour_closed.evaluate(res.cursor)                        # next tick: nothing new
    assert again.run_requests == [] and json.loads(again.cursor)["last"] == "2026-03-01-09:00"
    # a tick whose cursor was not saved re-plans the same request under the same run_key
    replay = hour_closed.evaluate(cursor_of("2026-03-01-08:00"))
    assert [r.run_key for r in replay.run_requests] == ["bars_1m:2026-03-01-09:00"]


def test_hour_closed_builds_without_a_known_down_venue_and_again_when_it_is_back(hour_closed):
    now = T0 + 10 * H + 5 * M
    hour_closed.at(now)
    hour_closed.heartbeat("binance", now - S)
    hour_closed.heartbeat("okx", now - 400 * S)                    # stale beyond the 300 s default
    hour_closed.cover("binance", T0 + 10 * H + 3 * M)
    hour_closed.cover("okx", T0 + 9 * H + 20 * M)
    res = hour_closed.evaluate(cursor_of("2026-03-01-08:00"))
    (req,) = res.run_requests
    assert req.partition_key == "2026-03-01-09:00" and req.tags["marketdata/venues_down"] == "okx"
    (mat,) = res.asset_events
    assert md(mat)["venues_down"] == 1 and md(mat)["venues_down_names"] == "okx"
    assert "400s old" in md(mat)["down_reasons"]
    assert json.loads(res.cursor)["partial"] == {"2026-03-01-09:00": ["okx"]}

    # okx restarts and repairs past the hour: 09:00 is requested once more, then forgotten
    later = T0 + 10 * H + 20 * M
    hour_closed.at(later)
    hour_closed.heartbeat("okx", later - S)
    hour_closed.heartbeat("binance", later - S)
    hour_closed.cover("okx", T0 + 10 * H + 15 * M)
    res2 = hour_closed.evaluate(res.cursor)
    (req2,) = res2.run_requests
    assert req2.partition_key == "2026-03-01-09:00" and req2.run_key == "bars_1m:2026-03-01-09:00:after:okx"
    assert json.loads(res2.cursor) == {"last": "2026-03-01-09:00", "partial": {}}
    assert hour_closed.evaluate(res2.cursor).run_requests == []


def test_hour_closed_catches_up_an_outage_in_one_range_run(hour_closed, monkeypatch, tmp_path):
    now = T0 + 10 * H + 5 * M
    hour_closed.at(now)
    for v in ("binance", "okx"):
        hour_closed.heartbeat(v, now - S)
        hour_closed.cover(v, T0 + 10 * H + 3 * M)
    res = hour_closed.evaluate(cursor_of("2026-03-01-00:00"))
    (req,) = res.run_requests                                       # 01:00 .. 09:00, one run
    assert req.run_key == "bars_1m:2026-03-01-01:00..2026-03-01-09:00" and req.partition_key is None
    assert req.tags["dagster/asset_partition_range_start"] == "2026-03-01-01:00"
    assert req.tags["dagster/asset_partition_range_end"] == "2026-03-01-09:00"
    assert sorted(e.partition for e in res.asset_events) == [f"2026-03-01-{h:02d}:00" for h in range(1, 10)]
    assert json.loads(res.cursor)["last"] == "2026-03-01-09:00"
    assert hour_closed.evaluate(res.cursor).run_requests == []

    # the request runs as ONE run of bars_1m_job that materializes every hour of the range
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", hour_closed.ch.url)
    monkeypatch.setenv("MARKETDATA_CONFIG", str(write_config(tmp_path / "md.yaml", {"binance": {
        "symbols": ["BTC-USDT"], "ws_url": "ws://127.0.0.1:9", "rest_url": "http://127.0.0.1:9"}})))
    job = defs.get_repository_def().get_job("bars_1m_job")
    result = job.execute_in_process(instance=hour_closed.instance_, tags=req.tags)
    assert result.success
    mats = result.asset_materializations_for_node("bars_1m")
    assert sorted(m.partition for m in mats) == [f"2026-03-01-{h:02d}:00" for h in range(1, 10)]
    assert hour_closed.ch.rows("SELECT uniqExact(build_version), count() FROM marketdata.bars_1m FINAL") == [
        (1, 9 * 60 * 3)]
    # completeness is reported per hour too (not only once for the range) ...
    complete = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "bars_1m_complete"]
    assert sorted(e.partition or "" for e in complete) == [""] + [f"2026-03-01-{h:02d}:00" for h in range(1, 10)]
    # ... while reconciliation is for single hours only: a range run fetches no candles
    (recon,) = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "bars_1m_reconciled"]
    assert recon.partition is None and "range run (9 hours)" in recon.description
    assert recon.metadata["minutes_compared"].value == 0


def test_hour_closed_first_evaluation_skips_hours_already_built(hour_closed, monkeypatch):
    monkeypatch.setenv("MARKETDATA_HOUR_CLOSE_LOOKBACK_H", "10")      # from 00:00
    now = T0 + 10 * H + 5 * M
    hour_closed.at(now)
    for v in ("binance", "okx"):
        hour_closed.heartbeat(v, now - S)
        hour_closed.cover(v, T0 + 10 * H + 3 * M)
    for h in range(0, 8):
        hour_closed.instance_.report_runless_asset_event(
            dg.AssetMaterialization("bars_1m", partition=f"2026-03-01-{h:02d}:00"))
    res = hour_closed.evaluate(None)
    (req,) = res.run_requests
    assert req.tags["dagster/asset_partition_range_start"] == "2026-03-01-08:00"
    assert req.tags["dagster/asset_partition_range_end"] == "2026-03-01-09:00"
    assert json.loads(res.cursor)["last"] == "2026-03-01-09:00"


def test_hour_closed_first_evaluation_starts_where_the_data_begins(hour_closed):
    """A platform started at 07:30 (its first coverage): the first evaluation builds 07:00-09:00,
    not the 24 hours before it existed; with nothing covered yet it builds nothing."""
    now = T0 + 10 * H + 5 * M
    hour_closed.at(now)
    for v in ("binance", "okx"):
        hour_closed.heartbeat(v, now - S)
    none_yet = hour_closed.evaluate(None)
    assert none_yet.run_requests == [] and "no data yet" in none_yet.skip_message
    assert none_yet.cursor is None                          # the next evaluation is a first one again
    rows = [{"exchange": ex, "symbol": sym, "from_us": T0 + 7 * H + 30 * M, "to_us": T0 + 10 * H + 3 * M - 1,
             "source": "ws", "recorded_us": 1} for ex, sym in PAIRS]
    with hour_closed.ch.session() as c:
        c.raw_insert("marketdata.coverage", list(rows[0]), fmt="JSONEachRow",
                     insert_block="\n".join(json.dumps(r) for r in rows).encode())
    res = hour_closed.evaluate(None)
    (req,) = res.run_requests
    assert req.tags["dagster/asset_partition_range_start"] == "2026-03-01-07:00"
    assert req.tags["dagster/asset_partition_range_end"] == "2026-03-01-09:00"
    assert sorted(e.partition for e in res.asset_events) == ["2026-03-01-07:00", "2026-03-01-08:00",
                                                             "2026-03-01-09:00"]


def test_hour_closed_skips_when_redis_is_unreachable(hour_closed, clickhouse):
    hour_closed.at(T0 + 10 * H + 5 * M)
    sensor = defs.get_repository_def().get_sensor_def("bars_hour_closed")
    resources = {"clickhouse": ClickHouseResource(url=clickhouse.url), "redis": RedisResource(url="redis://127.0.0.1:1/0"),
                 "marketdata_config": FixedPairs(pairs_json=json.dumps(PAIRS))}
    with dg.build_sensor_context(cursor=cursor_of("2026-03-01-08:00"), resources=resources) as ctx:
        res = sensor.evaluate_tick(ctx)
    assert res.run_requests == [] and "Redis unreachable" in res.skip_message
    assert json.loads(res.cursor)["last"] == "2026-03-01-08:00"


def test_health_checks_can_run_on_demand(redis_server, redis_client):
    from marketdata.defs.ingest import ingest_health_checks, ingest_specs, raw_ticks
    redis_client.hset(health_key("binance"), mapping=health_hash(now_us()))

    def run(url):
        result = dg.materialize([*ingest_specs, raw_ticks, ingest_health_checks],
                                selection=dg.AssetSelection.all_asset_checks(),
                                resources={"redis": RedisResource(url=url)}, instance=dg.DagsterInstance.ephemeral())
        assert result.success
        return {e.asset_check_key: e for e in result.get_asset_check_evaluations()}
    evs = run(redis_server.url)
    assert evs[INGEST_CHECK].passed and not evs[PERSIST_CHECK].passed      # no persist worker running
    assert "no live persist worker" in evs[PERSIST_CHECK].description
    evs = run("redis://127.0.0.1:1/0")
    assert not evs[INGEST_CHECK].passed and "Redis unreachable" in evs[INGEST_CHECK].description
