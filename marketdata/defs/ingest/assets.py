"""External assets for what runs outside Dagster: one per venue's ingest process, and raw_ticks.

The ingest processes (``marketdata ingest --venue NAME``) and persist workers are services
(``marketdata up``, systemd, one Kubernetes Deployment per venue), never Dagster runs (reference
notes §3). Dagster observes them: the ``ingest_health`` sensor reports observations and the
``ingest_healthy`` / ``persist_healthy`` checks; ``bars_hour_closed`` reports a raw_ticks hour as
materialized once every venue's persisted coverage has passed it.

The venues are the enabled venues of the config (MARKETDATA_CONFIG, default ./marketdata.yaml)
when the code location loads; without a readable config, every venue the platform knows. A venue
added to the config appears after the code location is reloaded.
"""

import logging
import os
from pathlib import Path

import dagster as dg
from redis.exceptions import RedisError

from ... import venues as venue_registry
from ...clock import now_us
from ...config import load_config
from ...errors import ConfigError
from ...ingest.health import HealthBounds, evaluate_persist, evaluate_venue, read_persist_health, read_venue_health
from ...settings import redact
from ..partitions import hourly_partitions
from ..resources import RedisResource
from .events import (
    INGEST_CHECK, PERSIST_CHECK, RAW_TICKS, ingest_key, persist_check_result, unreachable_check_results,
    venue_check_result,
)

log = logging.getLogger("marketdata.defs.ingest")

GROUP = "ingest"
OWNERS = ["team:marketdata"]
CHECK_OWNER = {"owners": "team:marketdata"}      # asset checks take no owners= in Dagster 1.13


def ingest_venues() -> list[str]:
    """Venues to declare: the config's enabled venues, else every known venue."""
    path = Path(os.environ.get("MARKETDATA_CONFIG") or "marketdata.yaml")
    if path.exists():
        try:
            return sorted(load_config(path, resolve_endpoints=False).venues)
        except (ConfigError, OSError) as e:
            log.warning("ingest assets: cannot read %s (%s); declaring every known venue", path, e)
    return sorted(venue_registry.names())


VENUES: list[str] = ingest_venues()

ingest_specs = [
    dg.AssetSpec(
        ingest_key(v),
        group_name=GROUP,
        owners=OWNERS,
        kinds={"redis"},
        description=(
            f"The {v} ingest process (`marketdata ingest --venue {v}`), a service outside Dagster: "
            "WebSocket trades -> canonical ticks -> Redis Streams, with gap repair from REST. "
            "Observed every ~30 s by the ingest_health sensor from its Redis heartbeat "
            f"(md:health:{{{v}}}): ticks/s, lag, connections, reconnects, open holes."),
        metadata={"redis_health_key": f"md:health:{{{v}}}", "venue": v},
    )
    for v in VENUES
]

raw_ticks = dg.AssetSpec(
    RAW_TICKS,
    deps=[s.key for s in ingest_specs],
    partitions_def=hourly_partitions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"redis", "clickhouse"},
    description=(
        "Canonical ticks of every venue: Redis Streams (one per exchange:symbol) persisted by the "
        "persist workers into ClickHouse marketdata.ticks, with coverage marks and gap records. "
        "An hourly partition is reported materialized by the bars_hour_closed sensor once every "
        "venue that is up has persisted coverage past the hour (venues known down are named in "
        "its metadata). Persist workers are observed here (pending, lag, ticks/s)."),
    metadata={"dagster/table_name": "marketdata.ticks"},
)

health_check_specs = [
    dg.AssetCheckSpec(
        INGEST_CHECK, asset=s.key, blocking=False, metadata=CHECK_OWNER,
        description=(
            "Fails when the ingest process's heartbeat is stale (MARKETDATA_HEALTH_STALE_S, "
            "default 30 s), its receive lag exceeds MARKETDATA_HEALTH_MAX_LAG_MS (default 10 s), "
            "its state is 'stopped' or it never wrote a heartbeat; passes again once it is back. "
            "Evaluated by the ingest_health sensor (or on demand)."))
    for s in ingest_specs
] + [
    dg.AssetCheckSpec(
        PERSIST_CHECK, asset=RAW_TICKS, blocking=False, metadata=CHECK_OWNER,
        description=(
            "Fails when no persist worker has a fresh heartbeat, or a live worker's lag (age of the "
            "oldest unacknowledged stream entry) exceeds MARKETDATA_HEALTH_PERSIST_MAX_LAG_MS "
            "(default 60 s). Evaluated by the ingest_health sensor (or on demand).")),
]


@dg.multi_asset_check(
    specs=health_check_specs,
    name="ingest_health_checks",
    can_subset=True,
    description="On-demand evaluation of the ingest and persist health checks (the ingest_health "
                "sensor evaluates them every ~30 s without a run).",
)
def ingest_health_checks(context: dg.AssetCheckExecutionContext, redis: RedisResource):
    """The same evaluation as the sensor, from the current Redis heartbeats (no rates: a run has
    no previous reading)."""
    bounds = HealthBounds.from_env()
    now = now_us()
    try:
        r = redis.client()
        try:
            raw = read_venue_health(r, VENUES)
            persist = evaluate_persist(read_persist_health(r), now, bounds)
        finally:
            r.close()
        evaluations = [venue_check_result(evaluate_venue(v, raw.get(v), now, bounds), bounds) for v in VENUES]
        evaluations.append(persist_check_result(persist, bounds))
    except (RedisError, OSError, RuntimeError) as e:
        evaluations = unreachable_check_results(VENUES, f"Redis unreachable: {redact(str(e))}")
    selected = context.selected_asset_check_keys
    for ev in evaluations:
        if dg.AssetCheckKey(ev.asset_key, ev.check_name) in selected:
            yield dg.AssetCheckResult(asset_key=ev.asset_key, check_name=ev.check_name, passed=ev.passed,
                                      severity=ev.severity, description=ev.description, metadata=ev.metadata)
