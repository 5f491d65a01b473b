"""Which hours are closed (library, no Dagster): persisted coverage per venue, known-down and
stalled venues, catch-up ranges, partial hours requested again once their venues are back."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from marketdata.bars.watermark import (
    VenueProgress, WatermarkSettings, contiguous_ranges, persisted_coverage_ends, plan_closed_hours,
    ticks_per_hour, venue_progress,
)

S = 1_000_000
M = 60 * S
H = 3600 * S
T0 = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()) * S      # 2026-03-01 00:00 UTC
SET = WatermarkSettings(grace_s=120, down_after_s=300, stall_after_s=3600, lookback_hours=24,
                        max_hours_per_run=24, max_hours=168, partial_keep_hours=48)
PAIRS = [("binance", "BTC-USDT"), ("binance", "ETH-USDT"), ("okx", "BTC-USDT")]


def hb(now, age_s=1, **kw):
    return {"heartbeat_us": str(now - int(age_s * S)), "state": "running", **{k: str(v) for k, v in kw.items()}}


def hours(*hh):
    return [T0 + h * H for h in hh]


def test_persisted_coverage_end_is_the_max_per_pair(clickhouse):
    rows = [("binance", "BTC-USDT", T0, T0 + 10 * M - 1), ("binance", "BTC-USDT", T0 + 10 * M, T0 + 70 * M - 1),
            ("binance", "ETH-USDT", T0, T0 + 65 * M - 1), ("okx", "BTC-USDT", T0 - 2 * H, T0 - H - 1)]
    block = "\n".join(json.dumps({"exchange": e, "symbol": s, "from_us": a, "to_us": b, "source": "ws",
                                  "recorded_us": 1}) for e, s, a, b in rows).encode()
    with clickhouse.session() as c:
        c.raw_insert("marketdata.coverage", ["exchange", "symbol", "from_us", "to_us", "source", "recorded_us"],
                     fmt="JSONEachRow", insert_block=block)
    ends = persisted_coverage_ends(clickhouse, PAIRS, since_us=T0 - 3 * H)
    assert ends == {("binance", "BTC-USDT"): T0 + 70 * M, ("binance", "ETH-USDT"): T0 + 65 * M,
                    ("okx", "BTC-USDT"): T0 - H}
    assert ("okx", "BTC-USDT") not in persisted_coverage_ends(clickhouse, PAIRS, since_us=T0)
    assert persisted_coverage_ends(clickhouse, [], 0) == {}
    assert ticks_per_hour(clickhouse, T0, T0 + H) == {}


def test_venue_coverage_is_the_min_over_its_symbols_and_down_venues_are_named():
    now = T0 + 5 * H
    ends = {("binance", "BTC-USDT"): now - 10 * S, ("binance", "ETH-USDT"): now - 20 * S,
            ("okx", "BTC-USDT"): now - 30 * S}
    p = venue_progress(PAIRS, ends, {"binance": hb(now, covered_to_us=now - 2 * S), "okx": hb(now, age_s=301)},
                       now, SET)
    assert p["binance"].covered_to_us == now - 20 * S and p["binance"].behind_symbol == "ETH-USDT"
    assert p["binance"].published_to_us == now - 2 * S + 1 and not p["binance"].down
    assert p["okx"].down and "301s old" in p["okx"].reason
    p = venue_progress(PAIRS, ends, {"binance": hb(now, state="stopped")}, now, SET)
    assert p["binance"].down and p["binance"].reason == "ingest process stopped"
    assert p["okx"].down and p["okx"].reason == "no ingest heartbeat in Redis"
    # fresh heartbeat, but coverage has not moved for more than stall_after_s
    stale_cov = {**ends, ("binance", "ETH-USDT"): now - 3601 * S}
    p = venue_progress(PAIRS, stale_cov, {"binance": hb(now), "okx": hb(now)}, now, SET)
    assert p["binance"].down and p["binance"].reason.startswith("stalled") and not p["okx"].down


def progress(**cov):
    """venue -> VenueProgress with covered_to_us (None = down)."""
    out = {}
    for v, c in cov.items():
        out[v] = VenueProgress(v, ["BTC-USDT"], covered_to_us=c or 0, behind_symbol="BTC-USDT",
                               down=c is None, reason="down" if c is None else "")
    return out


def test_an_hour_closes_when_every_up_venue_passed_its_end_plus_grace():
    now = T0 + 10 * H + 30 * M
    # binance reached 09:02:00 exactly (end of 08:00 hour + 2 min grace... for 09:00 it needs 10:02)
    p = progress(binance=T0 + 9 * H + 2 * M, okx=T0 + 10 * H + 20 * M)
    plan = plan_closed_hours(p, now_us=now, settings=SET, after_hour_us=T0 + 7 * H, first_hour_us=T0)
    assert plan.hours == hours(8) and plan.ranges == [(T0 + 8 * H, T0 + 8 * H)]
    assert plan.last_hour_us == T0 + 8 * H and plan.closed_until_us == T0 + 9 * H
    assert set(plan.waiting_on) == {"binance"} and "waiting on ingest" in plan.waiting_on["binance"]
    # one microsecond short of the grace: still open
    p = progress(binance=T0 + 9 * H + 2 * M - 1, okx=T0 + 11 * H)
    plan = plan_closed_hours(p, now_us=now, settings=SET, after_hour_us=T0 + 7 * H, first_hour_us=T0)
    assert plan.hours == [] and plan.last_hour_us == T0 + 7 * H
    # the wall clock bounds it too (a simulator ahead of real time cannot close future hours)
    p = progress(binance=T0 + 20 * H)
    plan = plan_closed_hours(p, now_us=now, settings=SET, after_hour_us=T0 + 7 * H, first_hour_us=T0)
    assert plan.hours == hours(8, 9)


def test_known_down_venue_does_not_hold_the_hour_and_it_is_rebuilt_when_back():
    now = T0 + 10 * H + 5 * M
    p = progress(binance=T0 + 10 * H + 3 * M, okx=None)
    plan = plan_closed_hours(p, now_us=now, settings=SET, after_hour_us=T0 + 8 * H, first_hour_us=T0)
    assert plan.hours == hours(9) and plan.partial == {T0 + 9 * H: ["okx"]}
    assert plan.down == {"okx": "down"} and plan.pending_partial == {T0 + 9 * H: ["okx"]}
    # okx back, but its coverage has not passed 10:02 yet: keep waiting
    p = progress(binance=T0 + 10 * H + 40 * M, okx=T0 + 10 * H + M)
    plan = plan_closed_hours(p, now_us=T0 + 10 * H + 45 * M, settings=SET, after_hour_us=T0 + 9 * H,
                             first_hour_us=T0, prior_partial={T0 + 9 * H: ["okx"]})
    assert plan.rebuild == [] and plan.pending_partial == {T0 + 9 * H: ["okx"]} and plan.hours == []
    # okx repaired past it: the hour is requested again, and forgotten
    p = progress(binance=T0 + 10 * H + 50 * M, okx=T0 + 10 * H + 3 * M)
    plan = plan_closed_hours(p, now_us=T0 + 10 * H + 55 * M, settings=SET, after_hour_us=T0 + 9 * H,
                             first_hour_us=T0, prior_partial={T0 + 9 * H: ["okx"]})
    assert plan.rebuild == hours(9) and plan.pending_partial == {}
    # a partial hour older than the keep is dropped
    plan = plan_closed_hours(progress(binance=T0 + 60 * H, okx=None), now_us=T0 + 60 * H, settings=SET,
                             after_hour_us=T0 + 58 * H, first_hour_us=T0, prior_partial={T0 + H: ["okx"]})
    assert plan.dropped_partial == {T0 + H: ["okx"]} and T0 + H not in plan.pending_partial


def test_all_venues_down_builds_by_the_wall_clock():
    plan = plan_closed_hours(progress(binance=None, okx=None), now_us=T0 + 3 * H + 3 * M, settings=SET,
                             after_hour_us=T0, first_hour_us=T0)
    assert plan.hours == hours(1, 2) and plan.partial == {T0 + H: ["binance", "okx"], T0 + 2 * H: ["binance", "okx"]}


def test_catch_up_after_an_outage_is_few_ranges():
    now = T0 + 50 * H + 10 * M
    p = progress(binance=now - 5 * S)
    plan = plan_closed_hours(p, now_us=now, settings=SET, after_hour_us=T0 + 10 * H, first_hour_us=T0)
    assert plan.hours == hours(*range(11, 50))
    assert plan.ranges == [(T0 + 11 * H, T0 + 34 * H), (T0 + 35 * H, T0 + 49 * H)]      # 24 + 15 hours
    assert plan.last_hour_us == T0 + 49 * H and not plan.truncated
    small = WatermarkSettings(max_hours=10, max_hours_per_run=4)
    plan = plan_closed_hours(p, now_us=now, settings=small, after_hour_us=T0 + 10 * H, first_hour_us=T0)
    assert plan.hours == hours(*range(11, 21)) and plan.truncated and plan.last_hour_us == T0 + 20 * H
    assert plan.ranges == [(T0 + 11 * H, T0 + 14 * H), (T0 + 15 * H, T0 + 18 * H), (T0 + 19 * H, T0 + 20 * H)]


def test_first_evaluation_looks_back_and_skips_hours_already_built():
    now = T0 + 30 * H + 10 * M
    p = progress(binance=now)
    plan = plan_closed_hours(p, now_us=now, settings=SET, after_hour_us=None, first_hour_us=T0,
                             skip=hours(*range(6, 28)))
    assert plan.hours == hours(28, 29) and plan.last_hour_us == T0 + 29 * H
    # never before the first partition
    plan = plan_closed_hours(p, now_us=now, settings=SET, after_hour_us=None, first_hour_us=T0 + 27 * H)
    assert plan.hours == hours(27, 28, 29)


def test_contiguous_ranges_and_settings_from_env():
    assert contiguous_ranges(hours(1, 2, 3, 5, 7, 8), 2) == [
        (T0 + H, T0 + 2 * H), (T0 + 3 * H, T0 + 3 * H), (T0 + 5 * H, T0 + 5 * H), (T0 + 7 * H, T0 + 8 * H)]
    assert contiguous_ranges([], 5) == []
    s = WatermarkSettings.from_env({"MARKETDATA_HOUR_CLOSE_GRACE_S": "30", "MARKETDATA_HOUR_CLOSE_DOWN_S": "90",
                                    "MARKETDATA_HOUR_CLOSE_MAX_HOURS_PER_RUN": "6"})
    assert (s.grace_s, s.down_after_s, s.max_hours_per_run) == (30, 90, 6)
    with pytest.raises(ValueError, match="MARKETDATA_HOUR_CLOSE_MAX_HOURS_PER_RUN='1.5' is not an integer"):
        WatermarkSettings.from_env({"MARKETDATA_HOUR_CLOSE_MAX_HOURS_PER_RUN": "1.5"})


# Mon 2026-03-02: NYSE 09:30-16:00 EST = 14:30-21:00 UTC (the same calendar the audit expects bars from)
MON = int(datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()) * S
EQ_PAIRS = [("binance", "BTC-USDT"), ("alpaca", "AAPL-USD")]


def test_an_equity_venue_outside_its_session_is_neither_down_nor_holding_hours_back():
    from marketdata.bars.calendar import next_expected_us
    assert next_expected_us("alpaca", "AAPL-USD", MON + 2 * H, MON + 20 * H) == MON + 14 * H + 30 * M
    assert next_expected_us("alpaca", "AAPL-USD", MON + 15 * H + 5 * S, MON + 20 * H) == MON + 15 * H + 5 * S
    assert next_expected_us("alpaca", "AAPL-USD", MON + 2 * H, MON + 3 * H) == MON + 3 * H          # capped
    assert next_expected_us("binance", "BTC-USDT", MON + 2 * H, MON + 3 * H) == MON + 2 * H         # 24/7

    # 03:05 UTC, connected and silent since the platform started at 01:50: nothing persisted yet
    now = MON + 3 * H + 5 * M
    ends = {("binance", "BTC-USDT"): now - 10 * S}
    health = {"binance": hb(now), "alpaca": hb(now)}
    p = venue_progress(EQ_PAIRS, ends, health, now, SET, since_us=MON + H + 50 * M)
    assert not p["alpaca"].down and p["alpaca"].covered_to_us == now          # nothing expected since then
    plan = plan_closed_hours(p, now_us=now, settings=SET, after_hour_us=MON + H, first_hour_us=0)
    assert plan.hours == [MON + 2 * H] and plan.partial == {} and "alpaca" not in plan.waiting_on

    # in session, the same silence is a stall (the heartbeat is fresh, coverage absent for > 1 h)
    now = MON + 16 * H
    p = venue_progress(EQ_PAIRS, {("binance", "BTC-USDT"): now - 10 * S}, {"binance": hb(now), "alpaca": hb(now)},
                       now, SET, since_us=now - 2 * H)
    assert p["alpaca"].down and "stalled" in p["alpaca"].reason
    # coverage that ended at the close (21:00 UTC) vouches for the night, up to now
    now = MON + 23 * H
    p = venue_progress(EQ_PAIRS, {("binance", "BTC-USDT"): now - 10 * S, ("alpaca", "AAPL-USD"): MON + 21 * H},
                       {"binance": hb(now), "alpaca": hb(now)}, now, SET)
    assert not p["alpaca"].down and p["alpaca"].covered_to_us == now
