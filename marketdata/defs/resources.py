"""Resources: where ClickHouse is and which symbols are configured.

Only environment-variable *names* reach Dagster's storage (``dg.EnvVar``): a ClickHouse URL may
carry a password, and it must never be stored in run config or shown in the UI.

    clickhouse          ClickHouseResource: MARKETDATA_CLICKHOUSE_URL when set, else the local
                        ClickHouse server of the data dir (its URL file); the password, if any, from
                        MARKETDATA_CLICKHOUSE_PASSWORD, read by the client
    marketdata_config   MarketdataConfigResource: MARKETDATA_CONFIG (default ./marketdata.yaml);
                        a missing file means "no configured symbols" (builds then cover the pairs
                        present in the data)
    redis               RedisResource: MARKETDATA_REDIS_URL when set, else the embedded server of
                        the data dir (its URL file); MARKETDATA_REDIS_PASSWORD is read by the client
"""

import os
import threading
from pathlib import Path

import dagster as dg

from ..bars.universe import Pair, pairs_from_config
from ..config import Config, load_config
from ..errors import ConfigError
from ..settings import redis_url
from ..storage.clickhouse import ClickHouse
from ..storage.redis import client as redis_client
from ..storage.migrate import migrate

DEFAULT_CONFIG_PATH = "marketdata.yaml"

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class ClickHouseResource(dg.ConfigurableResource):
    """The ClickHouse store (the local server or any ClickHouse server), over HTTP. Work with
    ``store().session()`` (the process's one client: nothing is opened or locked per use)."""

    url: str | None = None            # None: settings.clickhouse_url() at run time (env, then data dir)
    migrate_on_start: bool = True     # apply sql/*.sql (idempotent) once per process before first use

    def store(self) -> ClickHouse:
        ch = ClickHouse(self.url or None)
        if self.migrate_on_start:
            with _migrate_lock:
                if ch.url not in _migrated:
                    migrate(ch)
                    _migrated.add(ch.url)
        return ch


class MarketdataConfigResource(dg.ConfigurableResource):
    """The platform config file, read for its venues and symbols only (endpoints unresolved)."""

    path: str | None = None           # None: $MARKETDATA_CONFIG at run time, else ./marketdata.yaml

    def config_path(self) -> Path:
        return Path(self.path or os.environ.get("MARKETDATA_CONFIG") or DEFAULT_CONFIG_PATH)

    def pairs(self) -> list[Pair]:
        """Configured (exchange, symbol) pairs; [] when the file does not exist. A file that exists
        but is invalid raises (a typo must not silently shrink the audited universe)."""
        p = self.config_path()
        if not p.exists():
            return []
        return pairs_from_config(load_config(p, resolve_endpoints=False))

    def config(self, *, resolve_endpoints: bool = False) -> Config | None:
        """The parsed config (None when the file does not exist). With ``resolve_endpoints`` a
        venue on the simulator gets the running simulator's URLs; if none is running, the venues
        come back with empty URLs rather than an error."""
        p = self.config_path()
        if not p.exists():
            return None
        if resolve_endpoints:
            try:
                return load_config(p, resolve_endpoints=True)
            except ConfigError:
                pass
        return load_config(p, resolve_endpoints=False)


class RedisResource(dg.ConfigurableResource):
    """The platform's Redis (streams, sequence state, health hashes of the running processes)."""

    url: str | None = None            # None: settings.redis_url() at run time (env, then data dir)

    def client(self):
        """A new redis.Redis client with short timeouts (sensors must not hang on a dead Redis);
        close it after use."""
        return redis_client(self.url or redis_url(), socket_timeout=5, socket_connect_timeout=3)


def _env(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def resource_defs() -> dict[str, dg.ConfigurableResource]:
    """The resources every definition in marketdata.defs is bound to (by key)."""
    return {
        "clickhouse": ClickHouseResource(url=_env("MARKETDATA_CLICKHOUSE_URL")),
        "marketdata_config": MarketdataConfigResource(path=_env("MARKETDATA_CONFIG")),
        "redis": RedisResource(url=_env("MARKETDATA_REDIS_URL")),
    }
