"""Resources: where ClickHouse is and which symbols are configured.

Only environment-variable *names* reach Dagster's storage (``dg.EnvVar``): a ClickHouse URL may
carry a password, and it must never be stored in run config or shown in the UI.

    clickhouse          ClickHouseResource: MARKETDATA_CLICKHOUSE_URL when set, else the embedded
                        engine of the data dir (chdb://$MARKETDATA_HOME/clickhouse)
    marketdata_config   MarketdataConfigResource: MARKETDATA_CONFIG (default ./marketdata.yaml);
                        a missing file means "no configured symbols" (builds then cover the pairs
                        present in the data)
"""

import os
import threading
from pathlib import Path

import dagster as dg

from ..bars.universe import Pair, pairs_from_config
from ..config import load_config
from ..storage.clickhouse import ClickHouse
from ..storage.migrate import migrate

DEFAULT_CONFIG_PATH = "marketdata.yaml"

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class ClickHouseResource(dg.ConfigurableResource):
    """The ClickHouse store (embedded chdb or a server). Open work with ``store().session()``;
    sessions on the embedded engine take an inter-process lock, so keep them to one unit of work."""

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


def _env(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def resource_defs() -> dict[str, dg.ConfigurableResource]:
    """The resources every definition in marketdata.defs is bound to (by key)."""
    return {
        "clickhouse": ClickHouseResource(url=_env("MARKETDATA_CLICKHOUSE_URL")),
        "marketdata_config": MarketdataConfigResource(path=_env("MARKETDATA_CONFIG")),
    }
