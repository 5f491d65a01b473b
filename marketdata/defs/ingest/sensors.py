"""Sensors over the services: ingest_health (observations + health checks, no runs) and
bars_hour_closed (the data-driven trigger of bars_1m). The judgement is library code
(marketdata.ingest.health, marketdata.bars.watermark); these functions read, call and report."""

import json
import warnings
from typing import Any

import dagster as dg
from redis.exceptions import RedisError

from ...bars.coverage import first_coverage_us
from ...bars.watermark import (
    WatermarkSettings, persisted_coverage_ends, plan_closed_hours, ticks_per_hour, venue_progress,
)
from ...clock import US_PER_HOUR, floor_hour, hour_key, now_us, parse_hour_key
from ...ingest.health import (
    HealthBounds, RateSample, evaluate_persist, evaluate_venue, read_persist_health, read_venue_health,
)
from ...settings import redact
from ..bars.schedules import bars_1m_job
from ..partitions import first_hour_us
from ..resources import ClickHouseResource, MarketdataConfigResource, RedisResource
from .assets import OWNERS, VENUES
from .events import (
    RAW_TICKS, persist_check_result, persist_observation, unreachable_check_results, venue_check_result,
    venue_observation,
)

CHECK_REEMIT_S = 600      # an unchanged check result is re-reported this often (shows the sensor is alive)


def _load_cursor(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        v = json.loads(raw)
        return v if isinstance(v, dict) else {}
    except ValueError:
        return {}


def _ingest_health(context: dg.SensorEvaluationContext, redis: RedisResource) -> dg.SensorResult:
    bounds = HealthBounds.from_env()
    cursor = _load_cursor(context.cursor)
    prev_v: dict[str, Any] = cursor.get("v", {})
    now = now_us()
    try:
        r = redis.client()
        try:
            raw = read_venue_health(r, VENUES)
            persist_raw = read_persist_health(r)
        finally:
            r.close()
    except (RedisError, OSError, RuntimeError) as e:
        error = f"Redis unreachable: {redact(str(e))}"
        if cursor.get("down") == error[:200] and now - cursor.get("down_t", 0) <= CHECK_REEMIT_S * 1e6:
            return dg.SensorResult(cursor=context.cursor, skip_reason=error)       # already reported
        # every check goes red; the cursor remembers that, so recovery is reported at once
        down_cursor = {"down": error[:200], "down_t": now,
                       "v": {v: {"ok": False, "st": "redis_unreachable", "t": now} for v in VENUES},
                       "p": {"ok": False, "t": now, "s": {}}}
        return dg.SensorResult(asset_events=unreachable_check_results(VENUES, error),
                               cursor=json.dumps(down_cursor))

    events: list = []
    next_v: dict[str, Any] = {}
    for venue in VENUES:
        pv = prev_v.get(venue, {})
        h = evaluate_venue(venue, raw.get(venue), now, bounds, RateSample.from_list(pv.get("s")))
        if h.present:
            events.append(venue_observation(h))
        entry: dict[str, Any] = {"ok": h.healthy, "st": h.status, "t": pv.get("t", 0)}
        if h.sample is not None:
            entry["s"] = h.sample.to_list()
        if pv.get("ok") is not h.healthy or pv.get("st") != h.status or now - pv.get("t", 0) > CHECK_REEMIT_S * 1e6:
            events.append(venue_check_result(h, bounds))
            entry["t"] = now
        next_v[venue] = entry

    prev_p = cursor.get("p", {})
    prev_samples = {c: s for c, s in ((c, RateSample.from_list(v)) for c, v in prev_p.get("s", {}).items()) if s}
    p = evaluate_persist(persist_raw, now, bounds, prev_samples)
    if p.workers:
        events.append(persist_observation(p))
    p_entry: dict[str, Any] = {"ok": p.healthy, "t": prev_p.get("t", 0),
                               "s": {w.consumer: w.sample.to_list() for w in p.live if w.sample}}
    if prev_p.get("ok") is not p.healthy or now - prev_p.get("t", 0) > CHECK_REEMIT_S * 1e6:
        events.append(persist_check_result(p, bounds))
        p_entry["t"] = now
    return dg.SensorResult(asset_events=events, cursor=json.dumps({"v": next_v, "p": p_entry}))


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)    # owners= is beta in 1.13
    ingest_health = dg.sensor(
        name="ingest_health",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        owners=OWNERS,
        description=(
            "Every ~30 s: reads each venue's ingest heartbeat and each persist worker's health from "
            "Redis and reports observations on ingest/<venue> and raw_ticks (ticks/s, lag, heartbeat "
            "age, connections, open holes, reconnects, malformed, pending) plus the ingest_healthy / "
            "persist_healthy checks (re-reported on change, and every 10 min). Launches no runs. "
            "Bounds: MARKETDATA_HEALTH_STALE_S, MARKETDATA_HEALTH_MAX_LAG_MS, "
            "MARKETDATA_HEALTH_PERSIST_MAX_LAG_MS."),
    )(_ingest_health)



def _range_request(first: int, last: int, partial: dict[int, list[str]]) -> dg.RunRequest:
    a, b = hour_key(first), hour_key(last)
    down = sorted({v for h in range(first, last + US_PER_HOUR, US_PER_HOUR) for v in partial.get(h, [])})
    tags = {"marketdata/trigger": "bars_hour_closed"}
    if down:
        tags["marketdata/venues_down"] = ",".join(down)
    if first == last:
        return dg.RunRequest(run_key=f"bars_1m:{a}", partition_key=a, tags=tags)
    # One run over the whole range (bars_1m is range-aware: one INSERT ... SELECT). The range tags
    # are what Dagster's backfill daemon itself puts on a single-run range (reference notes §1.3/§4).
    tags.update({"dagster/asset_partition_range_start": a, "dagster/asset_partition_range_end": b})
    return dg.RunRequest(run_key=f"bars_1m:{a}..{b}", tags=tags)


def _bars_hour_closed(context: dg.SensorEvaluationContext, clickhouse: ClickHouseResource,
                     redis: RedisResource, marketdata_config: MarketdataConfigResource) -> dg.SensorResult:
    settings = WatermarkSettings.from_env()
    cursor = _load_cursor(context.cursor)
    now = now_us()
    first_hour = first_hour_us()
    after = parse_hour_key(cursor["last"]) if cursor.get("last") else None
    prior_partial = {parse_hour_key(k): v for k, v in cursor.get("partial", {}).items()}
    pairs = marketdata_config.pairs()
    venues = sorted({ex for ex, _ in pairs})
    try:
        r = redis.client()
        try:
            health = read_venue_health(r, venues) if venues else {}
        finally:
            r.close()
    except (RedisError, OSError, RuntimeError) as e:
        return dg.SensorResult(skip_reason=f"Redis unreachable, cannot tell which venues are up: "
                                           f"{redact(str(e))}", cursor=context.cursor)

    store = clickhouse.store()
    if after is None:
        # First evaluation: start where the platform's data begins (the first coverage), never
        # before -- the hours before it have no data to build (they stay unmaterialized; a
        # historical backfill can still build them).
        data_start = first_coverage_us(store)
        if data_start is None:
            return dg.SensorResult(skip_reason="no data yet: nothing is covered in marketdata.coverage",
                                   cursor=context.cursor)
        first_hour = max(first_hour, floor_hour(data_start))
    start = after + US_PER_HOUR if after is not None else max(
        first_hour, floor_hour(now) - settings.lookback_hours * US_PER_HOUR)
    since = min([start, now - int(settings.stall_after_s * 1e6)] + list(prior_partial))
    ends = persisted_coverage_ends(store, pairs, since)
    progress = venue_progress(pairs, ends, health, now, settings, since_us=since)
    skip: set[int] = set()
    if after is None:       # first evaluation: do not rebuild hours that already have bars
        done = context.instance.get_materialized_partitions(dg.AssetKey("bars_1m"))
        skip = {parse_hour_key(k) for k in done if k >= hour_key(start)}
    plan = plan_closed_hours(progress, now_us=now, settings=settings, after_hour_us=after,
                             first_hour_us=first_hour, prior_partial=prior_partial, skip=skip)

    requests = [_range_request(a, b, plan.partial) for a, b in plan.ranges]
    for h in plan.rebuild:
        k = hour_key(h)
        venues_back = ",".join(sorted(prior_partial.get(h, [])))
        requests.append(dg.RunRequest(run_key=f"bars_1m:{k}:after:{venues_back}", partition_key=k,
                                      tags={"marketdata/trigger": "bars_hour_closed",
                                            "marketdata/rebuild_after": venues_back}))
    events = []
    if plan.hours:
        counts = ticks_per_hour(store, plan.hours[0], plan.hours[-1] + US_PER_HOUR)
        for h in plan.hours:
            md: dict[str, Any] = {
                "ticks": dg.MetadataValue.int(sum(n for (hh, _), n in counts.items() if hh == h)),
                "venues": dg.MetadataValue.int(len(progress)),
                "venues_down": dg.MetadataValue.int(len(plan.partial.get(h, []))),
            }
            for v in sorted(progress):
                md[f"ticks_{v}"] = dg.MetadataValue.int(counts.get((h, v), 0))
            if plan.partial.get(h):
                md["venues_down_names"] = dg.MetadataValue.text(", ".join(plan.partial[h]))
                md["down_reasons"] = dg.MetadataValue.md(
                    "\n".join(f"- **{v}**: {plan.down.get(v, '')}" for v in plan.partial[h]))
            events.append(dg.AssetMaterialization(RAW_TICKS, partition=hour_key(h), metadata=md,
                                                  description="hour closed: coverage of every venue that "
                                                              "is up has passed it"))
    new_cursor = {"last": hour_key(plan.last_hour_us) if plan.last_hour_us is not None else cursor.get("last"),
                  "partial": {hour_key(h): v for h, v in sorted(plan.pending_partial.items())}}
    if new_cursor["last"] is None:
        new_cursor.pop("last")
    skip_reason = None
    if not requests:
        waits = "; ".join(f"{v}: {w}" for v, w in sorted(plan.waiting_on.items()))
        last = new_cursor.get("last", "nothing yet")
        skip_reason = (f"nothing new to build: requested through {last}; "
                       + (f"waiting on {waits}" if waits else
                          f"the next hour closes {settings.grace_s:g}s after it ends"))
    if plan.dropped_partial:
        context.log.warning("gave up waiting for venues of partial hours: " + ", ".join(
            f"{hour_key(h)} ({','.join(v)})" for h, v in sorted(plan.dropped_partial.items())))
    return dg.SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps(new_cursor),
                           skip_reason=skip_reason)



with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)    # owners= is beta in 1.13
    bars_hour_closed = dg.sensor(
        name="bars_hour_closed",
        job=bars_1m_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        owners=OWNERS,
        description=(
            "Requests bars_1m for an hour once every enabled venue's persisted coverage (ClickHouse "
            "coverage, min over its configured symbols) has passed the hour's end plus a grace "
            "(MARKETDATA_HOUR_CLOSE_GRACE_S, default 120 s); venues whose heartbeat is stale beyond "
            "MARKETDATA_HOUR_CLOSE_DOWN_S are known down and do not hold the hour back (it is built, "
            "shows incomplete, and is requested again once they have caught up). After an outage the "
            "backlog goes out as few range runs (≤ MARKETDATA_HOUR_CLOSE_MAX_HOURS_PER_RUN hours "
            "each). The first evaluation starts at the hour the data begins (the first coverage row), "
            "never before it. A venue whose market calendar expects no bars (an equity outside its "
            "session) neither holds an hour back nor counts as down. Reports raw_ticks hours as "
            "materialized. Cursor: the last requested hour. The bars_1m_hourly schedule remains "
            "the safety net."),
    )(_bars_hour_closed)