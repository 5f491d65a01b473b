"""Ingest and persist health evaluation (library, no Dagster), against a real redis-server."""

from __future__ import annotations

import pytest

from marketdata.ingest.health import (
    HealthBounds, RateSample, evaluate_persist, evaluate_venue, rate_per_s, read_persist_health,
    read_venue_health,
)
from marketdata.stream import health_key

NOW = 1_772_355_600_000_000          # 2026-03-01 09:00 UTC
S = 1_000_000
BOUNDS = HealthBounds(stale_s=30, max_lag_ms=5_000, persist_max_lag_ms=60_000)


def venue_hash(**kw) -> dict:
    h = {"heartbeat_us": NOW - 1 * S, "pid": 4242, "connections": 1, "symbols": 2, "ticks_in": 1000,
         "ticks_published": 1000, "queued": 0, "malformed": 0, "reconnects": 0, "open_holes": 0,
         "gaps_found": 0, "gaps_repaired": 0, "gaps_unrepairable": 0, "last_tick_recv_us": NOW - 2 * S,
         "last_trade_ts_us": NOW - 2 * S - 80_000, "lag_us": 80_000, "covered_to_us": NOW - 3 * S,
         "state": "running", "last_error": ""}
    h.update(kw)
    return {k: str(v) for k, v in h.items()}


def test_fresh_heartbeat_is_healthy_and_rate_comes_from_the_previous_reading():
    prev = RateSample(pid=4242, count=400, at_us=NOW - 31 * S)
    h = evaluate_venue("binance", venue_hash(), NOW, BOUNDS, prev)
    assert h.healthy and h.status == "ok" and not h.reasons
    assert h.heartbeat_age_s == 1.0 and h.lag_ms == 80.0 and h.connections == 1
    assert h.ticks_per_s == 20.0                         # (1000 - 400) / 30 s
    assert h.sample == RateSample(4242, 1000, NOW - 1 * S)
    assert h.last_tick_age_s == 2.0 and h.coverage_age_s == 3.0
    assert "healthy" in h.summary()


@pytest.mark.parametrize("kw,status,needle", [
    ({"heartbeat_us": NOW - 31 * S}, "stale", "heartbeat stale: 31.0s old"),
    ({"state": "stopped"}, "stopped", "stopped"),
    ({"lag_us": 6_000_000}, "lagging", "receive lag 6000 ms exceeds 5000 ms"),
])
def test_unhealthy_states_name_the_reason(kw, status, needle):
    h = evaluate_venue("binance", venue_hash(**kw), NOW, BOUNDS)
    assert not h.healthy and h.status == status
    assert any(needle in r for r in h.reasons), h.reasons
    assert "UNHEALTHY" in h.summary()


def test_missing_hash_is_unhealthy():
    h = evaluate_venue("binance", {}, NOW, BOUNDS)
    assert not h.healthy and h.status == "missing" and not h.present
    assert "md:health:{binance}" in h.reasons[0]


def test_rate_is_unknown_after_a_restart_or_without_history():
    assert rate_per_s(None, RateSample(1, 10, NOW)) is None
    assert rate_per_s(RateSample(1, 10, NOW - S), RateSample(2, 20, NOW)) is None      # new pid
    assert rate_per_s(RateSample(1, 50, NOW - S), RateSample(1, 20, NOW)) is None      # counter reset
    assert rate_per_s(RateSample(1, 10, NOW), RateSample(1, 20, NOW)) is None          # no time passed
    assert rate_per_s(RateSample(1, 10, NOW - 2 * S), RateSample(1, 20, NOW)) == 5.0
    assert RateSample.from_list([1, 2, 3]) == RateSample(1, 2, 3) and RateSample.from_list("x") is None


def test_bounds_from_env_validate_and_name_the_variable():
    b = HealthBounds.from_env({"MARKETDATA_HEALTH_STALE_S": "12", "MARKETDATA_HEALTH_MAX_LAG_MS": "250"})
    assert b == HealthBounds(stale_s=12, max_lag_ms=250, persist_max_lag_ms=60_000)
    assert HealthBounds.from_env({}) == HealthBounds()
    with pytest.raises(ValueError, match="MARKETDATA_HEALTH_STALE_S='soon' is not a number"):
        HealthBounds.from_env({"MARKETDATA_HEALTH_STALE_S": "soon"})
    with pytest.raises(ValueError, match="MARKETDATA_HEALTH_MAX_LAG_MS='-1' must be positive"):
        HealthBounds.from_env({"MARKETDATA_HEALTH_MAX_LAG_MS": "-1"})


def test_persist_workers_live_lagging_and_dead():
    workers = {
        "w1": {"heartbeat_us": str(NOW - S), "pid": "1", "phase": "idle", "pending": "3",
               "group_pending": "7", "lag_ms": "120", "ticks_persisted": "5000"},
        "w2": {"heartbeat_us": str(NOW - 600 * S), "pid": "2", "phase": "idle", "lag_ms": "999999"},
    }
    p = evaluate_persist(workers, NOW, BOUNDS, {"w1": RateSample(1, 4000, NOW - 11 * S)})
    assert p.healthy and [w.consumer for w in p.live] == ["w1"]
    assert p.pending == 7 and p.lag_ms == 120 and p.ticks_per_s == 100.0     # w2's lag is not counted
    workers["w1"]["lag_ms"] = "61000"
    p = evaluate_persist(workers, NOW, BOUNDS)
    assert not p.healthy and "lag 61000 ms exceeds 60000 ms" in p.reasons[0]
    workers["w1"]["phase"] = "stopped"
    p = evaluate_persist(workers, NOW, BOUNDS)
    assert not p.healthy and p.reasons[0].startswith("no live persist worker")
    assert not evaluate_persist({}, NOW, BOUNDS).healthy


def test_reads_the_hashes_from_redis(redis_client):
    redis_client.hset(health_key("binance"), mapping=venue_hash())
    redis_client.hset("md:health:{persist:host-1}", mapping={"heartbeat_us": NOW, "lag_ms": 5, "phase": "idle"})
    redis_client.hset("md:health:{persist:host-2}", mapping={"heartbeat_us": NOW - S, "lag_ms": 9})
    raw = read_venue_health(redis_client, ["binance", "okx"])
    assert raw["okx"] == {} and raw["binance"]["pid"] == "4242" and raw["binance"]["state"] == "running"
    assert evaluate_venue("binance", raw["binance"], NOW, BOUNDS).healthy
    persist = read_persist_health(redis_client)
    assert sorted(persist) == ["host-1", "host-2"] and persist["host-2"]["lag_ms"] == "9"
