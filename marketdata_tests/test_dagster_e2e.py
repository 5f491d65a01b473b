"""Dagster as deployed: the real dagster-webserver and dagster-daemon (subprocesses, a temp
DAGSTER_HOME with the repo's dagster.yaml, the embedded ClickHouse in a temp dir), driven over
GraphQL the way the UI drives them.

Four hours of ticks and coverage (two pairs, a coverage hole at 12:30) are in ClickHouse first.
Then: one partition of bars_1m_job is launched (10:00), and a partition backfill of bars_1m over
11:00..13:00 is launched the way the asset graph launches it. Both must succeed; the backfill must
run as few runs as bars_1m's BackfillPolicy says (3 hours, a week per run: one run, carrying the
range tags); bars_1m_complete must have a status per hour -- SUCCEEDED for every hour but 12:00,
FAILED for 12:00 (the hole) -- and ClickHouse must hold the bars.

Sensors and schedules are stopped first, so nothing but these runs touches the store.

The test runs on both of Dagster's storages: sqlite (the repo's dagster.yaml, the local profile)
and PostgreSQL (the repo's dagster.yaml with the `storage:` block of dagster.production.yaml,
dagster-postgres against a real PostgreSQL server in a temp dir: local_postgres.py). Credentials
reach Dagster only through the DAGSTER_PG_* variables the block names (`env:`); afterwards no table
of the run/event/schedule storage holds the Postgres password or the Redis password of the
environment.
"""

from __future__ import annotations

import copy
import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from marketdata.clock import US_PER_HOUR, US_PER_MINUTE
from marketdata.bench.dagster_service import DagsterService
from marketdata.persist.rows import COVERAGE_COLUMNS, TICK_COLUMNS
from marketdata.storage.clickhouse import ClickHouse

from .harness import REPO, platform_env, write_config
from .local_postgres import LocalPostgres

H10 = int(datetime(2026, 1, 5, 10, tzinfo=timezone.utc).timestamp()) * 1_000_000
PAIRS = [("binance", "BTC-USDT"), ("binance", "ETH-USDT")]
HOLE = (H10 + 2 * US_PER_HOUR + 30 * US_PER_MINUTE, H10 + 2 * US_PER_HOUR + 31 * US_PER_MINUTE)
POLICY_HOURS = 168


def seed(ch: ClickHouse) -> None:
    ticks, cov = [], []
    for i, (ex, sym) in enumerate(PAIRS):
        for n, ts in enumerate(range(H10 + 1, H10 + 4 * US_PER_HOUR, 15_000_000)):
            px = str(100 + 10 * i + n % 7)
            ticks.append({"exchange": ex, "symbol": sym, "trade_id": str(n + 1), "ts_us": ts, "open": px,
                          "high": px, "low": px, "close": px, "volume": "1", "trade_count": 1, "side": "buy",
                          "recv_us": ts, "source": "ws", "event": "trade", "version": 0, "is_deleted": 0})
        spans = [(H10, H10 + 4 * US_PER_HOUR - 1)] if i else [(H10, HOLE[0] - 1), (HOLE[1], H10 + 4 * US_PER_HOUR - 1)]
        cov += [{"exchange": ex, "symbol": sym, "from_us": a, "to_us": b, "source": "ws", "recorded_us": 1}
                for a, b in spans]
    with ch.session() as c:
        c.raw_insert("marketdata.ticks", TICK_COLUMNS, fmt="JSONEachRow",
                     insert_block="\n".join(json.dumps(t) for t in ticks).encode())
        c.raw_insert("marketdata.coverage", COVERAGE_COLUMNS, fmt="JSONEachRow",
                     insert_block="\n".join(json.dumps(r) for r in cov).encode())


def postgres_instance_yaml(path: Path) -> Path:
    """The repo's dagster.yaml with the production profile's `storage:` (Postgres). Its port is a
    literal 5432 there; a test server listens on a free port, so here it is read from DAGSTER_PG_PORT."""
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    storage = copy.deepcopy(yaml.safe_load((REPO / "dagster.production.yaml").read_text())["storage"])
    db = storage["postgres"]["postgres_db"]
    assert {k: v for k, v in db.items() if k not in ("port", "scheme")} == {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"}, "db_name": {"env": "DAGSTER_PG_DB"}}, db
    db["port"] = {"env": "DAGSTER_PG_PORT"}
    local["storage"] = storage
    path.write_text(yaml.safe_dump(local, sort_keys=False))
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dagster(request, tmp_path, clickhouse):
    ch = clickhouse
    seed(ch)
    cfg = write_config(tmp_path / "marketdata.yaml", {"binance": {
        "symbols": [s for _, s in PAIRS], "endpoints": "live", "rest_url": "http://127.0.0.1:9",
        "ws_url": "ws://127.0.0.1:9"}})
    env = platform_env(tmp_path / "home", "redis://127.0.0.1:9/0", ch.url, cfg)
    # a secret of the environment that nothing may write to Dagster's storage
    env["MARKETDATA_REDIS_PASSWORD"] = "redis-" + secrets.token_hex(16)
    pg = instance_yaml = None
    if request.param == "postgres":
        pg = LocalPostgres().start()
        env.update(pg.env())
        instance_yaml = postgres_instance_yaml(tmp_path / "dagster.postgres.yaml")
    svc = DagsterService(tmp_path / "dagster_home", env, log_dir=tmp_path / "logs", instance_yaml=instance_yaml)
    try:
        svc.start(timeout=150)
        svc.ch, svc.pg, svc.storage = ch, pg, request.param
        yield svc
    finally:
        svc.stop()
        if pg is not None:
            pg.stop()


def storage_hits(svc: DagsterService, text: str):
    """Where Dagster's storage holds ``text``: rows per table (Postgres) or files (sqlite, under
    DAGSTER_HOME)."""
    if svc.pg is not None:
        return svc.pg.rows_holding(text)
    return [str(p) for p in svc.home.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def secrets_in_storage(svc: DagsterService) -> dict:
    """The secrets of the environment that Dagster's storage holds, and where."""
    assert storage_hits(svc, "bars_1m_complete"), "the search finds nothing, not even a check's name"
    return {name: hits for name in ("DAGSTER_PG_PASSWORD", "MARKETDATA_REDIS_PASSWORD")
            if svc.env.get(name) and (hits := storage_hits(svc, svc.env[name]))}


# Three Dagster processes plus a step process per asset and check: minutes on a loaded 2-core box.
@pytest.mark.timeout(900)
def test_partition_run_and_range_backfill_through_webserver_and_daemon(dagster, monkeypatch):
    stopped = dagster.set_automation(False)
    assert "gap_repair" in stopped and "bars_1m_hourly" in stopped

    # One partition, as "Materialize" of one hour (or a schedule tick) launches it.
    run_id = dagster.launch_run("bars_1m_job", tags={"dagster/partition": "2026-01-05-10:00"})
    assert dagster.wait_run(run_id, timeout=300) == "SUCCESS", dagster.log_tail()

    # A range, as the asset graph's backfill dialog launches it (BackfillPolicy applies).
    bid = dagster.launch_asset_backfill("bars_1m", "2026-01-05-11:00", "2026-01-05-13:00",
                                        tags={"marketdata/test": "e2e"})
    b = dagster.wait_backfill(bid, timeout=150)
    assert b["status"] == "COMPLETED_SUCCESS", (b, dagster.log_tail())
    assert b["numPartitions"] == 3
    runs = b["runs"]
    assert len(runs) == -(-3 // POLICY_HOURS) == 1, runs
    (r,) = runs
    assert r["status"] == "SUCCESS"
    assert r["tags"]["dagster/asset_partition_range_start"] == "2026-01-05-11:00"
    assert r["tags"]["dagster/asset_partition_range_end"] == "2026-01-05-13:00"

    statuses = dagster.check_partition_statuses("bars_1m", "bars_1m_complete")
    want = {"2026-01-05-10:00": "SUCCEEDED", "2026-01-05-11:00": "SUCCEEDED",
            "2026-01-05-12:00": "FAILED", "2026-01-05-13:00": "SUCCEEDED"}
    assert {k: statuses.get(k) for k in want} == want, statuses

    # each backfilled hour's latest result is the range run's own, targeting that run's
    # materialization of the hour (what the partition page shows as current)
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef
    monkeypatch.setenv("DAGSTER_HOME", str(dagster.home))          # its dagster.yaml reads it
    for k, v in dagster.env.items():
        if k.startswith("DAGSTER_PG_"):
            monkeypatch.setenv(k, v)                               # and, on Postgres, these
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster.home))) as instance:
        check = dg.AssetCheckKey(dg.AssetKey("bars_1m"), "bars_1m_complete")
        infos = {i.partition_key: i for i in instance.event_log_storage.get_asset_check_partition_info([check])}
        mats = {m.partition_key: m for m in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("bars_1m")), limit=20).records}
        for k in ("2026-01-05-11:00", "2026-01-05-12:00", "2026-01-05-13:00"):
            assert mats[k].run_id == r["runId"] and infos[k].latest_planned_run_id == r["runId"], (k, infos[k])
            assert infos[k].latest_target_materialization_storage_id == mats[k].storage_id and infos[k].is_current
        # reconciliation is for single hours: the range run recorded "not reconciled", fetched nothing
        recon = dg.AssetCheckKey(dg.AssetKey("bars_1m"), "bars_1m_reconciled")
        (summary,) = [e for e in instance.event_log_storage.get_asset_check_execution_history(recon, limit=20)
                      if e.run_id == r["runId"] and e.partition is None]
        assert "range run" in summary.event.dagster_event.event_specific_data.description

    rows = dagster.ch.rows("SELECT toHour(minute), count(), sum(complete) FROM marketdata.bars_1m FINAL "
                           "GROUP BY 1 ORDER BY 1")
    assert rows == [(10, 120, 120), (11, 120, 120), (12, 120, 119), (13, 120, 120)]   # 12:30 uncovered

    # The runs were stored where the instance says, and no secret went with them.
    if dagster.pg is not None:
        assert {"runs", "event_logs", "asset_check_executions"} <= set(dagster.pg.tables())
        assert not list(dagster.home.rglob("*.db")), list(dagster.home.rglob("*.db"))   # no sqlite beside it
        print(f"Dagster storage: PostgreSQL {dagster.pg.version}", flush=True)
    else:
        assert (dagster.home / "history" / "runs.db").exists()
    assert secrets_in_storage(dagster) == {}
