"""`marketdata up`, the README's first command: the whole platform on the embedded default.

It must start Redis, the simulator, the connector, persist and Dagster; get ticks into
ClickHouse; restart a connector killed with SIGKILL; and stop every process on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import orjson
import psutil
import yaml

from marketdata.storage.clickhouse import ClickHouse
from marketdata.storage.redis import client, free_port
from marketdata.procs import default_signals
from marketdata.stream import health_key

from .harness import REPO, wait_for


def test_up_runs_supervises_and_stops_the_platform(tmp_path):
    home = tmp_path / "home"
    cfg = tmp_path / "marketdata.yaml"
    cfg.write_text(yaml.safe_dump({
        "endpoints": "simulator",
        "venues": {"binance": {"symbols": ["BTC-USDT", "ETH-USDT"], "idle_timeout": 5}},
        "simulator": {"rate": 200, "seed": 3, "ping_interval": 2},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETDATA_", "DAGSTER_"))}
    env.update(MARKETDATA_HOME=str(home), MARKETDATA_CONFIG=str(cfg), PYTHONUNBUFFERED="1")
    port = free_port()
    out = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "marketdata.cli", "up", "--dagster-port", str(port)],
                          env=env, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=default_signals)
    procs_file = home / "run" / "processes.json"
    log = lambda: (tmp_path / "up.log").read_text(errors="replace")[-4000:]  # noqa: E731
    children: dict = {}
    try:
        state = wait_for(lambda: procs_file.exists() and orjson.loads(procs_file.read_bytes()), 120,
                         "up to start its processes", on_timeout=log)
        children = {n: c["pid"] for n, c in state["children"].items()}
        redis_pid = int((home / "redis" / "redis.pid").read_text())
        assert {"simulator", "persist-0", "ingest-binance", "dagster-webserver", "dagster-daemon"} <= set(children)
        r = client((home / "redis" / "url").read_text())
        wait_for(lambda: int(r.hget(health_key("binance"), "ticks_published") or 0) > 100, 60,
                 "ticks published to Redis", on_timeout=log)
        ch = ClickHouse((home / "clickhouse-server" / "url").read_text())
        wait_for(lambda: ch.rows("SELECT count() FROM marketdata.ticks")[0][0] > 100, 60,
                 "ticks in ClickHouse", interval=0.5, on_timeout=log)

        def ui_up():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        # The address is printed once the webserver answers, not when its process starts.
        announced = f"Dagster UI: http://127.0.0.1:{port}"
        wait_for(lambda: announced in log(), 180, "the UI address to be printed", interval=0.2, on_timeout=log)
        assert ui_up(), "the UI address was printed before the webserver answered"
        shown = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{ shouldShowNux }"}, timeout=10)
        assert shown.json()["data"]["shouldShowNux"] is False     # no "Join the Dagster community" pop-up

        # A crashed connector is restarted with backoff, and ticks keep coming.
        old = children["ingest-binance"]
        os.kill(old, signal.SIGKILL)

        def restarted():
            s = orjson.loads(procs_file.read_bytes())["children"]["ingest-binance"]
            return s["pid"] not in (None, old) and s["restarts"] >= 1 and s["pid"]
        new_pid = wait_for(restarted, 60, "the connector to be restarted", on_timeout=log)
        children = {n: c["pid"] for n, c in orjson.loads(procs_file.read_bytes())["children"].items()}
        children["redis-server"] = redis_pid
        wait_for(lambda: int(r.hget(health_key("binance"), "pid") or 0) == new_pid, 30,
                 "the new connector's heartbeat", on_timeout=log)
        r.close()
    finally:
        up.send_signal(signal.SIGTERM)
        rc = up.wait(90)
        out.close()
    assert rc == 0, log()
    for name, pid in children.items():
        if pid:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, \
                f"{name} (pid {pid}) still running after up stopped"
    assert not procs_file.exists()


def test_partitions_begin_where_the_data_begins():
    from marketdata.supervisor import bars_start_key
    now = 1_795_000_000_000_000                       # 2026-11-18 11:06:40 UTC
    assert bars_start_key(None, None, now) == "2026-11-18-11:00"          # a fresh data dir: now
    # the simulator's clock starting in the past: its start hour
    assert bars_start_key(None, "2026-01-05T10:04:00Z", now) == "2026-01-05-10:00"
    # data already stored (e.g. a historical backfill): its first coverage, even before the simulator's
    first = 1_767_225_600_000_000 + 5 * 3_600_000_000 + 7   # 2026-01-01 05:00:00.000007
    assert bars_start_key(first, "2026-01-05T10:04:00Z", now) == "2026-01-01-05:00"
    assert bars_start_key(first, None, now) == "2026-01-01-05:00"
