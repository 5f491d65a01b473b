"""Which parts of the platform one `marketdata up` runs (`--only GROUPS`, `--venues NAMES`), and
what each part needs from the environment.

The platform splits into groups, each a set of processes `up` supervises:

    redis        the embedded redis-server        (owned only if MARKETDATA_REDIS_URL is unset)
    clickhouse   the local ClickHouse server      (owned only if MARKETDATA_CLICKHOUSE_URL is unset)
    simulator    the venue simulator, for venues on simulator endpoints
    connectors   one `marketdata ingest` per venue
    persist      `persist.workers` persist workers
    dagster      the Dagster webserver and daemon

Without `--only`, `up` runs every group (a store whose URL is set is someone else's and is not
started). With `--only`, it runs exactly the groups named; a group that needs a store this `up`
does not run gets that store's URL from the environment, or the start fails saying which variable
to set. Groups on different hosts (or data dirs) share only those URLs and the config file.
Everything is decided here, from the arguments and the environment, before anything starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from .config import Config
from .errors import ConfigError

GROUPS: dict[str, str] = {
    "redis": "the embedded redis-server",
    "clickhouse": "the local ClickHouse server",
    "simulator": "the venue simulator (venues on simulator endpoints)",
    "connectors": "one connector (`marketdata ingest`) per venue",
    "persist": "the persist workers (persist.workers in the config)",
    "dagster": "the Dagster webserver and daemon",
}
# store group -> the variable that points every other group at it
STORE_URLS: dict[str, str] = {"redis": "MARKETDATA_REDIS_URL", "clickhouse": "MARKETDATA_CLICKHOUSE_URL"}
# group -> the stores its processes talk to (the simulator talks to neither)
NEEDS: dict[str, tuple[str, ...]] = {
    "simulator": (),
    "connectors": ("redis",),
    "persist": ("redis", "clickhouse"),
    "dagster": ("redis", "clickhouse"),
}
# groups whose processes run per venue, so --venues can narrow them
PER_VENUE = ("simulator", "connectors")


def valid_groups() -> str:
    return ", ".join(GROUPS)


def select_groups(only: str | None, env: Mapping[str, str], *, dagster: bool = True) -> frozenset[str]:
    """The groups this `up` runs. Raises ConfigError (which says what to fix) for an unknown
    group, a store named in --only whose URL is set (it would not be this up's), a store a group
    needs that neither runs here nor has its URL set, and --only dagster with --no-dagster."""
    if only is None:
        chosen = {g for g in GROUPS if g not in STORE_URLS or not env.get(STORE_URLS[g])}
        if not dagster:
            chosen.discard("dagster")
        return frozenset(chosen)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise ConfigError(f"--only: unknown group(s) {', '.join(repr(n) for n in unknown)}; "
                          f"valid groups: {valid_groups()}")
    if not names:
        raise ConfigError(f"--only needs at least one group; valid groups: {valid_groups()}")
    chosen = set(names)
    if "dagster" in chosen and not dagster:
        raise ConfigError("--only names dagster but --no-dagster drops it; use one or the other")
    for store, var in STORE_URLS.items():
        if store in chosen and env.get(var):
            raise ConfigError(f"--only {store}: {var} is set, so this up would not own its {store}; "
                              f"unset {var}, or drop {store} from --only")
        users = [g for g in names if store in NEEDS.get(g, ())]
        if users and store not in chosen and not env.get(var):
            verb = "needs" if len(users) == 1 else "need"
            raise ConfigError(f"{' and '.join(users)} {verb} {store}, which this up does not run: set {var} "
                              f"to the {store} the other groups share, or add {store} to --only")
    return frozenset(chosen)


def select_venues(cfg: Config, venues: str | None, groups: frozenset[str]) -> list[str]:
    """The configured venues this `up`'s simulator and connectors serve: all of them, or those
    named by --venues (a comma-separated subset of the config's venues)."""
    if venues is None:
        return list(cfg.venues)
    names = [n.strip() for n in venues.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--venues needs at least one venue; configured: {', '.join(cfg.venues)}")
    unknown = [n for n in names if n not in cfg.venues]
    if unknown:
        raise ConfigError(f"--venues: {', '.join(repr(n) for n in unknown)} not enabled in {cfg.path}; "
                          f"configured venues: {', '.join(cfg.venues)}")
    if not groups & set(PER_VENUE):
        raise ConfigError(f"--venues narrows the {' and '.join(PER_VENUE)} groups, and this up runs neither "
                          f"(groups: {', '.join(sorted(groups))})")
    return [n for n in cfg.venues if n in names]


def persist_consumer(n: int, split: bool, host: str, data_dir: str) -> str:
    """The persist consumer name of this up's n-th worker. One whole-platform `up` keeps `up-<n>`
    (a restart resumes its pending entries at once). A split platform may run persist groups on
    several hosts, all in the one consumer group, where `up-0` would be two processes under one
    name: their names then carry the host and the data dir, which one `up` owns at a time, so they
    are unique and stable across restarts."""
    if not split:
        return f"up-{n}"
    return f"up-{host}-{hashlib.sha256(data_dir.encode()).hexdigest()[:6]}-{n}"
