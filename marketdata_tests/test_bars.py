"""bars_1m build, coverage merging and the completeness audit, against the real embedded
ClickHouse engine (the local server), checked against bars computed independently in plain Python."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from marketdata.bars import (audit_hours, build_bars, complete_minutes, covered_minutes,
                             merge_intervals, merged_intervals, missing_by_pair, register_calendar,
                             totals)
from marketdata.bars import calendar as cal

M = 60_000_000
H_US = 3_600_000_000
H0 = 1_767_225_600_000_000          # 2026-01-01T00:00Z
TICK_COLS = ["exchange", "symbol", "trade_id", "ts_us", "open", "high", "low", "close", "volume",
             "trade_count", "side", "recv_us", "source", "event", "version", "is_deleted"]
COV_COLS = ["exchange", "symbol", "from_us", "to_us", "source", "recorded_us"]


@pytest.fixture
def ch(clickhouse):
    return clickhouse


def tick(ex, sym, tid, ts, price, qty, *, version=1, deleted=0, count=1, event="trade",
         o=None, h=None, lo=None):
    return {"exchange": ex, "symbol": sym, "trade_id": str(tid), "ts_us": ts,
            "open": o or price, "high": h or price, "low": lo or price, "close": price,
            "volume": qty, "trade_count": count, "side": "buy", "recv_us": ts, "source": "ws",
            "event": event, "version": version, "is_deleted": deleted}


def cov(ex, sym, a, b):
    return {"exchange": ex, "symbol": sym, "from_us": a, "to_us": b, "source": "ws", "recorded_us": 1}


def insert(ch, ticks=(), coverage=()):
    with ch.session() as c:
        if ticks:
            c.raw_insert("marketdata.ticks", TICK_COLS, fmt="JSONEachRow",
                         insert_block="\n".join(json.dumps(t) for t in ticks).encode())
        if coverage:
            c.raw_insert("marketdata.coverage", COV_COLS, fmt="JSONEachRow",
                         insert_block="\n".join(json.dumps(r) for r in coverage).encode())


def stored_bars(ch, start_us, end_us):
    rows = ch.rows(
        "SELECT exchange, symbol, toInt64(toUnixTimestamp(minute)) * 1000000, open, high, low, close, "
        "volume, trade_count, vwap, complete, build_version FROM marketdata.bars_1m FINAL "
        "WHERE minute >= toDateTime(intDiv({s:Int64}, 1000000), 'UTC') "
        "AND minute < toDateTime(intDiv({e:Int64}, 1000000), 'UTC') ORDER BY exchange, symbol, minute",
        {"s": start_us, "e": end_us})
    return {(r[0], r[1], r[2]): r[3:] for r in rows}


# --- independent Python reference ----------------------------------------------------------------

def live_ticks(ticks):
    """ReplacingMergeTree(version, is_deleted) FINAL: the highest version per id; deleted -> gone."""
    best: dict = {}
    for t in ticks:
        k = (t["exchange"], t["symbol"], t["trade_id"])
        if k not in best or t["version"] >= best[k]["version"]:
            best[k] = t
    return [t for t in best.values() if not t["is_deleted"]]


def order_key(t):
    tid = t["trade_id"]
    return (t["ts_us"], int(tid) if tid.isdigit() else 0, tid)


def reference_bars(ticks, coverage, pairs, start_us, end_us):
    live = live_ticks(ticks)
    out = {}
    for ex, sym in pairs:
        mine = sorted((t for t in live if (t["exchange"], t["symbol"]) == (ex, sym)), key=order_key)
        before = [t for t in mine if start_us - 7 * 24 * H_US <= t["ts_us"] < start_us]
        last = Decimal(before[-1]["close"]) if before else Decimal(0)
        done = set(complete_minutes([(c["from_us"], c["to_us"]) for c in coverage
                                     if (c["exchange"], c["symbol"]) == (ex, sym)], start_us, end_us))
        for m in range(start_us // M, end_us // M):
            ts = [t for t in mine if m * M <= t["ts_us"] < (m + 1) * M]
            if ts:
                o, c = Decimal(ts[0]["open"]), Decimal(ts[-1]["close"])
                hi = max(Decimal(t["high"]) for t in ts)
                lo = min(Decimal(t["low"]) for t in ts)
                vol = sum(Decimal(t["volume"]) for t in ts)
                n = sum(t["trade_count"] for t in ts)
                fv = sum(float(t["volume"]) for t in ts)
                vwap = sum(float(t["close"]) * float(t["volume"]) for t in ts) / fv if fv else float(c)
                last = c
            else:
                o = hi = lo = c = last
                vol, n, vwap = Decimal(0), 0, float(last)
            out[(ex, sym, m * M)] = (o, hi, lo, c, vol, n, vwap, int(m in done))
    return out


def assert_bars_equal(got, want):
    assert set(got) == set(want), (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    for k, w in want.items():
        g = got[k]
        assert g[:6] == w[:6], (k, g, w)
        assert g[6] == pytest.approx(w[6], rel=1e-9, abs=1e-12), (k, g[6], w[6])
        assert g[7] == w[7], (k, "complete", g[7], w[7])


# --- coverage -------------------------------------------------------------------------------------

def test_merge_intervals_reference():
    assert merge_intervals([]) == []
    assert merge_intervals([(10, 20), (0, 5), (6, 9)]) == [(0, 20)]          # touching chain
    assert merge_intervals([(0, 10), (2, 3), (12, 15)]) == [(0, 10), (12, 15)]  # nested; gap of 1 µs
    assert merge_intervals([(0, 10), (5, 30), (30, 31)]) == [(0, 31)]          # overlaps
    assert merge_intervals([(5, 4)]) == []                                      # empty interval ignored
    # minute m complete iff one merged interval spans [m*M, m*M+M-1]
    assert complete_minutes([(0, M - 1)]) == [0]
    assert complete_minutes([(0, M - 2)]) == []
    assert complete_minutes([(0, 30 * 10**6), (30 * 10**6 + 1, 2 * M - 1)]) == [0, 1]
    assert complete_minutes([(1, 3 * M)]) == [1, 2]
    assert complete_minutes([(0, 10 * M)], start_us=2 * M, end_us=4 * M) == [2, 3]


def test_coverage_sql_matches_reference(ch):
    rng = random.Random(11)
    pairs = [("binance", "BTC-USDT"), ("kraken", "BTC-USD"), ("okx", "ETH-USDT")]
    rows = []
    for ex, sym in pairs:
        t = H0 - 5 * M
        while t < H0 + 2 * H_US:
            length = rng.randint(1, 7 * M)
            rows.append(cov(ex, sym, t, t + length - 1))
            r = rng.random()
            if r < 0.4:
                t += length                                   # touching: next from = to + 1
            elif r < 0.7:
                t += length - rng.randint(0, length - 1)      # overlapping
            else:
                t += length + rng.randint(1, 90 * 10**6)      # a hole, possibly under a minute
            if rng.random() < 0.1:
                rows.append(cov(ex, sym, t - 2 * M, t - M))   # nested duplicate-ish piece
    rng.shuffle(rows)
    insert(ch, coverage=rows)
    start, end = H0, H0 + 2 * H_US
    got = covered_minutes(ch, start, end)
    for ex, sym in pairs:
        mine = [(r["from_us"], r["to_us"]) for r in rows if (r["exchange"], r["symbol"]) == (ex, sym)]
        assert got.get((ex, sym), []) == complete_minutes(mine, start, end)
        merged = merged_intervals(ch, start, end, [(ex, sym)])[(ex, sym)]
        ref = [(max(a, start), min(b, end - 1)) for a, b in merge_intervals(mine) if b >= start and a < end]
        assert merged == ref
    assert 0 < sum(len(v) for v in got.values()) < 3 * 120       # the data has holes and coverage


# --- build ----------------------------------------------------------------------------------------

def random_market(seed, pairs, start, end):
    rng = random.Random(seed)
    ticks, coverage = [], []
    tid = 1000
    for ex, sym in pairs:
        price = Decimal(rng.randint(100, 50000))
        # trades before the range give the previous close (one pair has none)
        if sym != "SOL-USDT":
            for _ in range(3):
                tid += 1
                ticks.append(tick(ex, sym, tid, start - rng.randint(1, 3 * H_US), str(price), "1.5"))
        t = start
        while True:
            t += rng.choice([rng.randint(1, 5 * 10**6), rng.randint(1, 4 * M)])
            if t >= end + 2 * M:
                break
            tid += 1
            price = max(Decimal("0.01"), price + Decimal(rng.randint(-500, 500)) / 100)
            qty = str(Decimal(rng.randint(1, 10**6)) / 10**4)
            if rng.random() < 0.1:     # venue-aggregated tick with a range inside it
                ticks.append(tick(ex, sym, tid, t, str(price), qty, count=rng.randint(2, 9),
                                  o=str(price + 1), h=str(price + 3), lo=str(price - 2)))
            else:
                ticks.append(tick(ex, sym, tid, t, str(price), qty))
            if rng.random() < 0.05:    # same timestamp, ids 9 and 10: numeric order decides
                ticks.append(tick(ex, sym, f"{tid}9", t, str(price + 7), "0.1"))
                ticks.append(tick(ex, sym, f"{tid}10", t, str(price - 7), "0.2"))
            if rng.random() < 0.03:    # duplicate delivery
                ticks.append(dict(ticks[-1]))
        # coverage: mostly contiguous, touching and overlapping pieces, a few holes
        a = start - 10 * M
        while a < end:
            length = rng.randint(M // 2, 15 * M)
            coverage.append(cov(ex, sym, a, a + length - 1))
            a += length - (rng.randint(0, M) if rng.random() < 0.3 else 0)
            if rng.random() < 0.15:
                a += rng.randint(1, 3 * M)
    # corrections and cancels
    live = [t for t in ticks if start <= t["ts_us"] < end]
    for t in rng.sample(live, 10):
        c = dict(t, version=2, event="correct", close=str(Decimal(t["close"]) + 11),
                 open=str(Decimal(t["close"]) + 11), high=str(Decimal(t["close"]) + 11),
                 low=str(Decimal(t["close"]) + 11), volume="3.25")
        ticks.append(c)
    for t in rng.sample(live, 10):
        ticks.append(dict(t, version=3, event="cancel", is_deleted=1))
    return ticks, coverage


def test_build_matches_python_reference(ch):
    pairs = [("binance", "BTC-USDT"), ("kraken", "BTC-USD"), ("okx", "SOL-USDT")]
    start, end = H0, H0 + 2 * H_US
    ticks, coverage = random_market(5, pairs, start, end)
    insert(ch, ticks, coverage)
    configured = pairs + [("bybit", "ETH-USDT")]        # configured but silent: all incomplete
    res = build_bars(ch, start, end, configured)
    assert res.pairs == sorted(configured)
    assert res.minutes == 120
    assert res.bars_written == 4 * 120
    want = reference_bars(ticks, coverage, sorted(configured), start, end)
    got = stored_bars(ch, start, end)
    assert_bars_equal({k: v[:8] for k, v in got.items()}, want)
    assert {v[8] for v in got.values()} == {res.build_version}
    assert res.complete_bars == sum(w[7] for w in want.values())
    assert 0 < res.complete_bars < res.bars_written
    assert res.trades == sum(w[5] for w in want.values())
    assert res.ticks == len([t for t in live_ticks(ticks) if start <= t["ts_us"] < end])
    assert res.incomplete["bybit:ETH-USDT"] == 120
    # the pair without any earlier trade starts at price 0 until its first trade
    first = got[("okx", "SOL-USDT", start)]
    if first[5] == 0:
        assert first[3] == 0


def test_flat_and_uncovered_minutes(ch):
    ex, sym = "binance", "BTC-USDT"
    insert(ch, [tick(ex, sym, 1, H0 - 2 * H_US, "95.5", "1"),        # previous close, 2 h back
                tick(ex, sym, 2, H0 + 10 * M + 5, "100", "2"),
                tick(ex, sym, 3, H0 + 10 * M + 9, "101", "1")],
           [cov(ex, sym, H0, H0 + 20 * M - 1),                       # minutes 0..19
            cov(ex, sym, H0 + 20 * M + 1, H0 + 40 * M - 1)])         # starts 1 µs late: 20 incomplete
    res = build_bars(ch, H0, H0 + H_US)
    assert res.pairs == [(ex, sym)]
    got = stored_bars(ch, H0, H0 + H_US)
    bar = lambda m: got[(ex, sym, H0 + m * M)]  # noqa: E731
    # covered, no trade, before the first trade: complete flat bar at the close from 2 h earlier
    assert bar(0)[:8] == (Decimal("95.5"),) * 4 + (Decimal(0), 0, 95.5, 1)
    assert bar(10)[:8] == (Decimal(100), Decimal(101), Decimal(100), Decimal(101), Decimal(3), 2,
                           pytest.approx(301 / 3), 1)
    assert bar(11)[:8] == (Decimal(101),) * 4 + (Decimal(0), 0, 101.0, 1)
    assert bar(20)[7] == 0 and bar(20)[3] == Decimal(101) and bar(20)[5] == 0   # 1 µs short
    assert all(bar(m)[7] == 1 for m in range(21, 40))
    assert all(bar(m)[7] == 0 and bar(m)[5] == 0 and bar(m)[3] == Decimal(101) for m in range(40, 60))
    assert res.complete_bars == 39 and res.bars_written == 60
    assert res.incomplete == {"binance:BTC-USDT": 21}


def test_trades_in_uncovered_minute_are_not_complete(ch):
    insert(ch, [tick("okx", "BTC-USDT", 7, H0 + 30 * M, "10", "1")])
    build_bars(ch, H0, H0 + H_US)
    got = stored_bars(ch, H0, H0 + H_US)
    b = got[("okx", "BTC-USDT", H0 + 30 * M)]
    assert b[3] == Decimal(10) and b[5] == 1 and b[7] == 0
    assert got[("okx", "BTC-USDT", H0)][3] == 0         # no earlier price: 0, trade_count 0


def test_idempotent_rebuild(ch):
    pairs = [("binance", "BTC-USDT"), ("kraken", "BTC-USD")]
    ticks, coverage = random_market(9, pairs, H0, H0 + H_US)
    insert(ch, ticks, coverage)
    r1 = build_bars(ch, H0, H0 + H_US, pairs)
    first = stored_bars(ch, H0, H0 + H_US)
    r2 = build_bars(ch, H0, H0 + H_US, pairs)
    second = stored_bars(ch, H0, H0 + H_US)
    assert r2.build_version > r1.build_version
    assert {k: v[:8] for k, v in first.items()} == {k: v[:8] for k, v in second.items()}
    assert {v[8] for v in second.values()} == {r2.build_version}
    assert len(second) == 2 * 60
    assert ch.rows("SELECT count() FROM marketdata.bars_1m")[0][0] == 2 * 2 * 60   # two builds stored
    # a late trade (gap repair) and a rebuild: FINAL shows the new bar, nothing else changes
    late = tick("binance", "BTC-USDT", 999_999, H0 + 59 * M + 1, "1", "5")
    insert(ch, [late])
    build_bars(ch, H0, H0 + H_US, pairs)
    third = stored_bars(ch, H0, H0 + H_US)
    changed = {k for k in third if third[k][:8] != second[k][:8]}
    assert changed == {("binance", "BTC-USDT", H0 + 59 * M)}
    assert third[("binance", "BTC-USDT", H0 + 59 * M)][2] == Decimal(1)       # the new low


def test_corrections_and_cancels(ch):
    ex, sym = "alpaca", "AAPL-USD"
    insert(ch, [tick(ex, sym, 1, H0 + 5, "200", "10"),
                tick(ex, sym, 2, H0 + 6, "250", "1"),        # a bad print, later cancelled
                tick(ex, sym, 3, H0 + 7, "201", "5"),        # corrected to 202 x 6
                tick(ex, sym, 4, H0 + M + 1, "300", "1")],   # minute 1's only trade, cancelled
           [cov(ex, sym, H0, H0 + 5 * M - 1)])
    build_bars(ch, H0, H0 + H_US)
    before = stored_bars(ch, H0, H0 + H_US)
    assert before[(ex, sym, H0)][1] == Decimal(250)
    insert(ch, [tick(ex, sym, 2, H0 + 6, "250", "1", version=2, deleted=1, event="cancel"),
                tick(ex, sym, 3, H0 + 7, "202", "6", version=2, event="correct"),
                tick(ex, sym, 4, H0 + M + 1, "300", "1", version=2, deleted=1, event="cancel")])
    build_bars(ch, H0, H0 + H_US)
    got = stored_bars(ch, H0, H0 + H_US)
    assert got[(ex, sym, H0)][:8] == (Decimal(200), Decimal(202), Decimal(200), Decimal(202),
                                      Decimal(16), 2, pytest.approx((2000 + 1212) / 16), 1)
    # minute 1 lost its only trade: a complete flat bar at the corrected close
    assert got[(ex, sym, H0 + M)][:8] == (Decimal(202),) * 4 + (Decimal(0), 0, 202.0, 1)


# --- completeness -------------------------------------------------------------------------------

def test_audit_names_exactly_the_uncovered_minutes(ch):
    a, b, c = ("binance", "BTC-USDT"), ("okx", "ETH-USDT"), ("kraken", "XBT-USD")
    insert(ch, [tick(*a, 1, H0 + 3 * M, "1", "1")],
           [cov(*a, H0 - H_US, H0 + 17 * M - 1),                 # hour 0: 17..21 and 45 missing
            cov(*a, H0 + 22 * M, H0 + 45 * M - 1),
            cov(*a, H0 + 45 * M + 30 * 10**6, H0 + 2 * H_US),    # hour 1 complete
            cov(*b, H0, H0 + 2 * H_US - 1)])                      # both hours complete
    build_bars(ch, H0, H0 + 2 * H_US, [a, b, c])                  # c configured, no data at all
    audits = audit_hours(ch, H0, H0 + 2 * H_US, [a, b, c])
    by = {(x.exchange, x.symbol, x.hour_start_us): x for x in audits}
    assert len(audits) == 6
    ha = by[(*a, H0)]
    assert ha.missing_offsets == [17, 18, 19, 20, 21, 45]
    assert ha.missing_minutes == ["2026-01-01T00:17Z", "2026-01-01T00:18Z", "2026-01-01T00:19Z",
                                  "2026-01-01T00:20Z", "2026-01-01T00:21Z", "2026-01-01T00:45Z"]
    assert (ha.expected, ha.stored, ha.passed) == (60, 54, False)
    assert ha.completeness_pct == pytest.approx(90.0)
    assert by[(*a, H0 + H_US)].passed and by[(*b, H0)].passed and by[(*b, H0 + H_US)].passed
    assert by[(*c, H0)].stored == 0 and len(by[(*c, H0)].missing_offsets) == 60
    t = totals(audits)
    assert (t.expected, t.stored, t.incomplete_hours, t.pairs, t.hours) == (360, 234, 3, 3, 2)
    mm = missing_by_pair(audits, max_pairs=2, max_minutes=100)
    assert list(mm) == ["kraken:XBT-USD", "binance:BTC-USDT", "_truncated"]
    assert mm["binance:BTC-USDT"] == ha.missing_minutes
    assert len(mm["kraken:XBT-USD"]) == 100 and mm["_truncated"]["minutes_omitted"] == 20
    # an hour that was never built: every expected minute is missing, even with coverage; the
    # audited pairs are the ones asked for plus any with data in the hour (a's coverage reaches
    # 1 µs into it)
    later = audit_hours(ch, H0 + 2 * H_US, H0 + 3 * H_US, [b])
    assert [(x.pair, x.stored, x.expected) for x in later] == [(a, 0, 60), (b, 0, 60)]


def test_calendar_plugs_into_the_audit(ch, monkeypatch):
    assert cal.expected_count("binance", "BTC-USDT", H0) == 60
    assert cal.expected_count("alpaca", "AAPL-USD", H0) == 0        # New Year's Day, at night
    monday_10am_ny = 1767625200_000000                                # 2026-01-05 15:00 UTC
    assert cal.expected_count("alpaca", "AAPL-USD", monday_10am_ny) == 60
    with pytest.raises(ValueError):
        cal.expected_minutes("binance", "BTC-USDT", H0 + 1)

    class FirstHalf:
        name = "test"

        def expected_minutes(self, hour_start_us):
            return tuple(range(30))

    monkeypatch.setattr(cal, "_BY_EXCHANGE", {})
    register_calendar("alpaca", FirstHalf())
    insert(ch, coverage=[cov("alpaca", "AAPL-USD", H0, H0 + 30 * M - 1)])
    build_bars(ch, H0, H0 + H_US)
    (a,) = audit_hours(ch, H0, H0 + H_US, ["alpaca:AAPL-USD"])
    assert (a.expected, a.stored, a.passed) == (30, 30, True)
