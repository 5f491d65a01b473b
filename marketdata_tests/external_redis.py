"""The Redis a test run was pointed at: ``MARKETDATA_TEST_REDIS_URL`` (its password, if any, only in
``MARKETDATA_REDIS_PASSWORD``, as every client of the platform reads it).

Set, the ``redis_server`` fixture (conftest.py) hands out this server, emptied with FLUSHALL before
each test, instead of starting the embedded redis-server; test_redis7.py runs the Redis-facing
tests this way against Debian's redis-server 7. Such a run must not use xdist: the tests share
the one server. The server's life is not the test's, so a test that stops and restarts its
server cannot run on it (test_redis7.py deselects those, naming each).
"""

from __future__ import annotations

import os

from marketdata.storage.redis import client

ENV = "MARKETDATA_TEST_REDIS_URL"


def external_url() -> str | None:
    return os.environ.get(ENV) or None


class ExternalRedis:
    """Duck-types EmbeddedRedis's ``url``; ``stop``/``start`` fail with why."""

    def __init__(self, url: str):
        self.url = url

    def flushall(self) -> None:
        r = client(self.url, socket_connect_timeout=3, socket_timeout=10)
        try:
            r.flushall()
        finally:
            r.close()

    def stop(self, *a, **kw) -> None:
        raise AssertionError(f"this test stops its redis-server, which {ENV} ({self.url}) is not "
                             "this test's to stop: deselect it in a run against an external Redis")

    start = stop
