"""The platform on a real Redis Cluster (``EmbeddedRedisCluster``: 3 masters + 1 replica each, from
the shipped redis-server), as real processes: simulator -> `marketdata ingest` -> cluster ->
two `marketdata persist` workers -> ClickHouse, checked against the simulator's ground truth.

- end to end: Binance (with the standard faults) and OKX at once, their streams spread over the
  masters, two persist workers sharing the group; ClickHouse equals the ground truth exactly, the
  hour is covered, bars equal the truth's bars; `marketdata status` and `tail`, and Dagster's
  ingest_health sensor (through its RedisResource), work against the cluster.
- failover: the master serving BTC-USDT's stream is killed with SIGKILL mid-hour; its replica is
  promoted by the cluster (cluster-node-timeout 1 s). Afterwards ClickHouse still equals the ground
  truth: nothing lost, nothing stored twice. The figures (kill -> promoted, kill -> connector
  publishing again, kill -> ClickHouse covered past the kill instant, replayed rows) are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import dagster as dg
import orjson
import redis

from marketdata.clock import US_PER_MINUTE
from marketdata.ingest.health import read_persist_health, read_venue_health
from marketdata.storage.redis import client
from marketdata.storage.redis_cluster import EmbeddedRedisCluster
from marketdata.stream import health_key, stream_key

from .harness import REPO, Proc, wait_for
from .pipeline import HOUR, Pipeline, check_bars, check_ticks, standard_faults
from .test_dagster_ingest import INGEST_CHECK, PERSIST_CHECK, checks, evaluate_health, md, observations


def _cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marketdata.cli", *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)


def _persisted(r, consumer: str) -> int:
    return int(r.hget(health_key(f"persist:{consumer}"), "ticks_persisted") or 0)


def test_cluster_end_to_end_two_venues_two_persist_workers(tmp_path, clickhouse):
    with EmbeddedRedisCluster(tmp_path / "cluster", cluster_node_timeout_ms=3000) as cl:
        keys = [stream_key(v, s) for v in ("binance", "okx") for s in ("BTC-USDT", "ETH-USDT")]
        assert len({cl.master_of_key(k).port for k in keys}) >= 2, "the streams must span masters"
        made: list[Pipeline] = []
        try:
            for venue in ("binance", "okx"):
                (tmp_path / venue).mkdir()
                made.append(Pipeline(tmp_path / venue, cl.url, clickhouse, venue=venue,
                                     consumer=f"e2e-{venue}"))
            b, o = made
            wait_for(lambda: b.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")
            standard_faults(b)
            # `tail` on the cluster while ticks flow (the stream's slot is on one of the masters).
            tl = _cli(b.env, "tail", "binance:ETH-USDT", "-n", "5")
            assert tl.returncode == 0, tl.stderr
            ticks = [orjson.loads(line) for line in tl.stdout.splitlines()]
            assert len([t for t in ticks if "trade_id" in t]) >= 5, tl.stdout   # whole entries
            # Dagster's ingest_health sensor (RedisResource -> the health readers) on the cluster.
            res = evaluate_health(cl.url)
            # (read, not unreachable; "lagging" only because the simulated hour lies in the past)
            assert md(checks(res)[INGEST_CHECK])["status"] in ("ok", "lagging"), md(checks(res)[INGEST_CHECK])
            assert checks(res)[PERSIST_CHECK].passed, md(checks(res)[PERSIST_CHECK])
            assert md(observations(res)[dg.AssetKey("raw_ticks")])["persist_workers_live"] == 2
            b.wait_hour_persisted()
            o.wait_hour_persisted()

            for p in made:
                got = check_ticks(p, clickhouse)
                check_bars(p, clickhouse, got["truth"])
                assert p.persist.alive() and p.ingest.alive(), p.diagnostics()
            # Both workers took part, each on streams of several masters.
            r = b.r
            assert _persisted(r, "e2e-binance") > 0 and _persisted(r, "e2e-okx") > 0
            assert set(read_persist_health(r)) >= {"e2e-binance", "e2e-okx"}
            venues = read_venue_health(r, ["binance", "okx"])
            assert [int(venues[v]["pid"]) for v in ("binance", "okx")] == [b.ingest.pid, o.ingest.pid], venues

            # The operator's commands against the cluster.
            # (exit 1 here: no `marketdata up`, so no Dagster webserver answers; Redis is the point)
            st = _cli(b.env, "status", "--json")
            assert st.returncode in (0, 1) and st.stdout, st.stderr
            report = json.loads(st.stdout)
            assert report["redis"]["up"] and not report["redis"]["error"], report["redis"]
            assert {"binance", "okx"} <= set(report["redis"]["venues"])
            assert report["redis"]["persist"]["live_workers"] == 2, report["redis"]["persist"]
        finally:
            for p in made:
                p.stop()


def _role(node) -> str:
    try:
        role = node.conn().execute_command("ROLE")[0]
        return role.decode() if isinstance(role, bytes) else role
    except redis.RedisError:
        return ""


def test_cluster_failover_master_killed_mid_run_loses_and_duplicates_nothing(tmp_path, clickhouse):
    with EmbeddedRedisCluster(tmp_path / "cluster", cluster_node_timeout_ms=1000) as cl:
        (tmp_path / "binance").mkdir()
        p = Pipeline(tmp_path / "binance", cl.url, clickhouse, consumer="e2e-1")
        persist2 = Proc("persist-2", ["persist", "--consumer", "e2e-2"], p.env, p.logs)
        try:
            wait_for(lambda: p.sim_now() >= HOUR + 20 * US_PER_MINUTE, 90, "sim time 10:20",
                     on_timeout=p.diagnostics)
            btc = stream_key("binance", "BTC-USDT")
            victim = cl.master_of_key(btc)
            replica = cl.replica_of(victim)
            assert _role(replica) == "slave"
            watcher = replica.conn()
            len_before = p.r.xlen(btc)
            sim_at_kill = p.sim_now()
            t_kill = cl.kill9(victim)

            wait_for(lambda: _role(replica) == "master", 30, "the replica promoted", interval=0.05,
                     on_timeout=p.diagnostics)
            t_promoted = time.monotonic()
            # The promoted replica serves the stream: the connector's new entries arrive on it.
            wait_for(lambda: watcher.xlen(btc) > len_before + 5, 60, "the connector publishing again",
                     interval=0.05, on_timeout=p.diagnostics)
            t_serving = time.monotonic()

            def covered_past_kill() -> bool:
                rows = clickhouse.rows("SELECT symbol, max(to_us) FROM marketdata.coverage WHERE exchange = 'binance'"
                                       " GROUP BY symbol")
                return len(rows) == 2 and all(t >= sim_at_kill for _, t in rows)
            wait_for(covered_past_kill, 90, "ClickHouse covered past the kill instant", interval=0.2,
                     on_timeout=p.diagnostics)
            t_caught_up = time.monotonic()

            # The old master comes back as a replica of the promoted one.
            cl.restart(victim)
            wait_for(lambda: _role(victim) == "slave", 30, "the old master rejoining as a replica")

            p.wait_hour_persisted(timeout=180)
            assert p.ingest.alive() and p.persist.alive() and persist2.alive(), p.diagnostics()
            got = check_ticks(p, clickhouse)
            check_bars(p, clickhouse, got["truth"])
            offered = sum(len(v) for v in got["truth"].values())
            with clickhouse.session() as c:
                raw, final = c.query(
                    "SELECT (SELECT count() FROM marketdata.ticks WHERE exchange = 'binance'),"
                    " (SELECT count() FROM marketdata.ticks FINAL WHERE exchange = 'binance')").result_rows[0]
            figures = {
                "ticks_offered_in_hour": offered, "lost": len(got["missing"]), "duplicated": 0,
                "rows_replayed_and_collapsed": raw - final,
                "kill_to_promoted_s": round(t_promoted - t_kill, 2),
                "kill_to_publishing_again_s": round(t_serving - t_kill, 2),
                "kill_to_clickhouse_covered_past_kill_s": round(t_caught_up - t_kill, 2),
                "gaps": [g[1:3] for g in got["gaps"]],
                "publisher_wait_shortfalls": p.health("redis_wait_shortfalls"),
                "redis_failures": p.health("redis_failures"),
                "persist_ticks": {c: _persisted(p.r, c) for c in ("e2e-1", "e2e-2")},
            }
            print("FAILOVER FIGURES", json.dumps(figures))
            assert figures["lost"] == 0
            assert all(g[2] != "unrepairable" for g in got["gaps"])
        finally:
            p.stop()
            persist2.stop()
