"""Several hosts, one platform: two `marketdata up --only` groups on one machine.

A real redis-server and the local ClickHouse server (started by the fixtures), the venue simulator
with its ground truth (pipeline.py's), then `up --only connectors` in one data dir and `up --only
persist,dagster` in another, sharing only MARKETDATA_REDIS_URL, MARKETDATA_CLICKHOUSE_URL and the
config file. After the simulated hour with the standard faults, ClickHouse must hold exactly the
ground truth (nothing lost, nothing stored twice), coverage must span the hour and bars must equal
bars from the ground truth: the oracle the single-process end-to-end test uses. Each `up` runs
only its own groups, and Dagster in the second group loads its definitions and observes the
connector of the first through Redis. Below, the argument and environment checks that refuse a
split before it starts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
import yaml

from marketdata.clock import US_PER_MINUTE
from marketdata.config import load_config
from marketdata.errors import ConfigError
from marketdata.bench.dagster_service import DagsterService
from marketdata.procs import default_signals
from marketdata.storage.redis import free_port
from marketdata.stream import health_key
from marketdata.up_groups import GROUPS, persist_consumer, select_groups, select_venues

from .harness import REPO, Proc, wait_for, write_config
from .pipeline import HOUR, LEAD_MINUTES, Pipeline, _iso, check_bars, check_ticks, standard_faults

STORES = {"MARKETDATA_REDIS_URL": "redis://127.0.0.1:1/0", "MARKETDATA_CLICKHOUSE_URL": "http://127.0.0.1:1"}


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETDATA_", "DAGSTER_", "APCA_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _processes(home: Path) -> dict:
    f = home / "run" / "processes.json"
    try:
        return orjson.loads(f.read_bytes()) if f.exists() else {}
    except orjson.JSONDecodeError:      # being replaced right now
        return {}


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


class SplitPipeline(Pipeline):
    """pipeline.py's simulator, config and checks; behind the simulator, instead of one persist
    and one ingest process, two `marketdata up --only` groups, each in its own data dir."""

    def start_platform(self, env: dict) -> tuple[Proc, Proc]:
        cfg = Path(env["MARKETDATA_CONFIG"])
        raw = yaml.safe_load(cfg.read_text())
        # Two persist workers; and where the simulator's clock starts, so the Dagster group lists
        # the simulated hours (bars_start_key) from the config alone.
        raw.update(persist={"workers": 2}, simulator={"start": _iso(self.hour - LEAD_MINUTES * US_PER_MINUTE)})
        cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
        shared = {k: env[k] for k in ("MARKETDATA_REDIS_URL", "MARKETDATA_CLICKHOUSE_URL", "MARKETDATA_CONFIG")}
        self.homes = {"connectors": self.tmp / "host-connectors", "persist": self.tmp / "host-persist"}
        # A GraphQL client of the persist group's Dagster webserver; it starts nothing (its home is
        # only where it would keep a dagster.yaml of its own).
        self.dagster = DagsterService(self.tmp / "dagster-client", port=free_port(), log_dir=self.logs)
        self.persist = Proc("up-persist-dagster", ["up", "--only", "persist,dagster", "--dagster-port",
                                                   str(self.dagster.port)],
                            _clean_env(**shared, MARKETDATA_HOME=str(self.homes["persist"])), self.logs)
        self.ingest = self.persist          # diagnostics while waiting
        # Dagster loads its definitions before the connectors start (and with them the simulated
        # hour: the simulator holds its clock until they subscribed), so its start-up does not
        # compete with the hour for the machine's two cores, and a connector is not left waiting
        # on a paused simulator (which sends nothing: its idle timeout would fire).
        wait_for(self.location_loaded, 240, "the persist group's Dagster to load its definitions",
                 interval=1, on_timeout=self.diagnostics)
        self.ingest = Proc("up-connectors", ["up", "--only", "connectors"],
                           _clean_env(**shared, MARKETDATA_HOME=str(self.homes["connectors"])), self.logs)
        return self.persist, self.ingest

    def location_loaded(self) -> bool:
        try:
            return self.dagster.location_loaded()        # raises if the definitions failed to load
        except httpx.HTTPError:
            return False

    def diagnostics(self) -> str:
        homes = getattr(self, "homes", {})
        logs = [f"--- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-30:])
                for h in homes.values() for f in sorted((h / "logs").glob("*.log"))]
        return super().diagnostics() + "\n" + "\n".join(logs)

    def stop(self) -> None:
        # Each `up` stops its own children (SIGTERM, in order); Dagster's two processes take a while.
        self.ingest.stop(timeout=90)
        self.persist.stop(timeout=120)
        self.sim.stop()
        self.r.close()
        self.dagster.http.close()


def test_two_up_groups_share_only_the_store_urls_and_equal_the_ground_truth(tmp_path, redis_server, clickhouse):
    p = SplitPipeline(tmp_path, redis_server.url, clickhouse)
    try:
        # Each up runs its own groups and nothing else: no store of its own, no simulator.
        conn, pers = (wait_for(lambda h=h: _processes(h).get("children") and _processes(h), 30, f"{h.name} up")
                      for h in (p.homes["connectors"], p.homes["persist"]))
        assert conn["groups"] == ["connectors"] and set(conn["children"]) == {"ingest-binance"}
        assert pers["groups"] == ["persist", "dagster"]
        assert set(pers["children"]) == {"persist-0", "persist-1", "dagster-webserver", "dagster-daemon"}
        for h in p.homes.values():
            assert not (h / "redis").exists() and not (h / "clickhouse").exists(), sorted(os.listdir(h))
        children = [c["pid"] for s in (conn, pers) for c in s["children"].values()]

        p.wait_health("connections", 1)
        assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
        wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")
        standard_faults(p)
        p.wait_hour_persisted()
        p.sim.control("binance", "/_sim/flush", {})
        assert p.ingest.alive() and p.persist.alive(), p.diagnostics()
        assert p.health("reconnects") == 2, p.diagnostics()

        # The two persist workers of the split group, named by host and data dir, both at work.
        data = str(p.homes["persist"].resolve())
        for n in range(2):
            consumer = persist_consumer(n, True, socket.gethostname(), data)
            assert p.r.exists(health_key(f"persist:{consumer}")), consumer

        # The oracle of the single-process run: the ground truth, exactly.
        got = check_ticks(p, clickhouse)
        assert {"id_jump", "reconnect"} <= {g[1] for g in got["gaps"] if g[2] == "repaired"}
        check_bars(p, clickhouse, got["truth"])

        # Dagster in the persist group sees the connector in the other group through Redis ...
        def observed():
            d = p.dagster.gql('{ assetOrError(assetKey: {path: ["ingest", "binance"]}) { ... on Asset { '
                              'assetObservations(limit: 1) { description } } } }')
            return (d["assetOrError"] or {}).get("assetObservations")
        obs = wait_for(observed, 90, "Dagster's ingest_health observation of binance", interval=2,
                       on_timeout=p.diagnostics)
        assert "binance" in obs[0]["description"], obs
        # ... and builds the hour's bars from what the persist workers stored, its completeness check
        # passing (the single-process test's check_dagster, here through the group's own daemon).
        hour = datetime.fromtimestamp(HOUR / 1e6, tz=timezone.utc).strftime("%Y-%m-%d-%H:%M")
        run = p.dagster.launch_run("bars_1m_job", tags={"dagster/partition": hour})
        assert p.dagster.wait_run(run, 180) == "SUCCESS", p.diagnostics()
        assert p.dagster.check_partition_statuses("bars_1m", "bars_1m_complete").get(hour) == "SUCCEEDED"
    finally:
        p.stop()
    assert p.ingest.proc.returncode == 0 and p.persist.proc.returncode == 0, p.diagnostics()
    left = [pid for pid in children if not _gone(pid)]
    assert not left, f"still running after both ups stopped: {left}"


# --- the checks that refuse a split before anything starts ---------------------------------------


def test_groups_are_checked_against_the_environment():
    assert select_groups(None, {}) == frozenset(GROUPS)
    # Without --only a store whose URL is set is someone else's: not started, as before.
    assert select_groups(None, STORES, dagster=False) == {"simulator", "connectors", "persist"}
    assert select_groups("connectors", {"MARKETDATA_REDIS_URL": "redis://h:6379/0"}) == {"connectors"}
    assert select_groups("redis,clickhouse,simulator", {}) == {"redis", "clickhouse", "simulator"}
    assert select_groups(" persist , dagster ", STORES) == {"persist", "dagster"}
    with pytest.raises(ConfigError, match="unknown group.*'conectors'.*valid groups: redis, clickhouse, "
                                          "simulator, connectors, persist, dagster"):
        select_groups("conectors,persist", STORES)
    with pytest.raises(ConfigError, match="at least one group"):
        select_groups(" , ", STORES)
    with pytest.raises(ConfigError, match="persist and dagster need clickhouse.*set MARKETDATA_CLICKHOUSE_URL"):
        select_groups("persist,dagster", {"MARKETDATA_REDIS_URL": "redis://h:6379/0"})
    with pytest.raises(ConfigError, match="connectors needs redis.*set MARKETDATA_REDIS_URL"):
        select_groups("simulator,connectors", {})
    # persist with its own ClickHouse still needs the shared Redis
    with pytest.raises(ConfigError, match="persist needs redis"):
        select_groups("clickhouse,persist", {})
    with pytest.raises(ConfigError, match="--only redis: MARKETDATA_REDIS_URL is set"):
        select_groups("redis,connectors", STORES)
    with pytest.raises(ConfigError, match="--no-dagster"):
        select_groups("dagster", STORES, dagster=False)


def test_venues_and_persist_consumers(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", {
        "binance": {"symbols": ["BTC-USDT"]}, "okx": {"symbols": ["BTC-USDT"]},
        "kraken": {"symbols": ["BTC-USD"], "enabled": False}}), resolve_endpoints=False)
    everything = frozenset(GROUPS)
    assert select_venues(cfg, None, everything) == ["binance", "okx"]
    assert select_venues(cfg, "okx", frozenset({"connectors"})) == ["okx"]
    with pytest.raises(ConfigError, match="'kraken' not enabled.*configured venues: binance, okx"):
        select_venues(cfg, "okx,kraken", everything)
    with pytest.raises(ConfigError, match="--venues narrows the simulator and connectors groups"):
        select_venues(cfg, "okx", frozenset({"persist", "dagster"}))
    # One whole platform keeps its names; split groups on several hosts (or data dirs) never share one.
    assert persist_consumer(0, False, "h1", "/d") == "up-0"
    names = {persist_consumer(n, True, h, d) for n in (0, 1) for h in ("h1", "h2") for d in ("/d1", "/d2")}
    assert len(names) == 8 and persist_consumer(1, True, "h1", "/d1") in names
    assert persist_consumer(1, True, "h1", "/d1") == persist_consumer(1, True, "h1", "/d1")   # stable


def test_a_connector_resolves_only_its_own_venues_simulator_endpoints(tmp_path, monkeypatch):
    # Venues split across hosts, each with its simulator: this host's endpoints file serves binance only.
    eps = tmp_path / "endpoints.json"
    eps.write_bytes(orjson.dumps({"binance": {"ws": "ws://127.0.0.1:9/ws", "rest": "http://127.0.0.1:9"}}))
    monkeypatch.setenv("MARKETDATA_SIM_ENDPOINTS", str(eps))
    path = write_config(tmp_path / "c.yaml", {"binance": {"symbols": ["BTC-USDT"]}, "okx": {"symbols": ["BTC-USDT"]}})
    cfg = load_config(path, resolve_only=["binance"])
    assert cfg.venues["binance"].ws_url == "ws://127.0.0.1:9/ws" and cfg.venues["okx"].ws_url == ""
    with pytest.raises(ConfigError, match="does not serve okx"):
        load_config(path)


def _up(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marketdata.cli", "up", *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=120, preexec_fn=default_signals)


def test_up_refuses_a_split_it_cannot_run_and_says_what_to_set(tmp_path):
    home = tmp_path / "home"
    cfg = write_config(tmp_path / "c.yaml", {"binance": {"symbols": ["BTC-USDT"]}})
    # A missing store URL: refused before the data dir is touched.
    r = _up(_clean_env(MARKETDATA_HOME=str(home), MARKETDATA_CONFIG=str(cfg)), "--only", "persist")
    assert r.returncode == 2 and "set MARKETDATA_REDIS_URL" in r.stderr, r.stderr
    assert not (home / "run").exists()
    r = _up(_clean_env(MARKETDATA_HOME=str(home), MARKETDATA_CONFIG=str(cfg)), "--only", "persist,dagstr")
    assert r.returncode == 2 and "unknown group(s) 'dagstr'" in r.stderr and "valid groups: redis," in r.stderr
    # Dagster without the simulator its venues run on: it must be told where the endpoints are
    # (before it starts anything, so the unreachable store URLs are never contacted).
    env = _clean_env(MARKETDATA_HOME=str(home), MARKETDATA_CONFIG=str(cfg), **STORES)
    r = _up(env, "--only", "dagster")
    assert r.returncode == 2 and "MARKETDATA_SIM_ENDPOINTS" in r.stderr and "ws_url" in r.stderr, r.stderr
    r = _up(env, "--only", "connectors", "--venues", "okx")
    assert r.returncode == 2 and "configured venues: binance" in r.stderr, r.stderr
    assert not (home / "logs").exists(), "nothing was started"
