"""Independent reference computations for the read-side tests, in plain Python: minute bars from
trades and coverage, the NYSE session minutes straight from exchange_calendars, and coarse bars
resampled from minute bars -- none of it shares code with marketdata.read."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

M = 60_000_000


def minute_bars(trades: dict, covered: dict, pairs: list, start_us: int, end_us: int) -> dict:
    """{(ex, sym, minute_us): dict(open..complete)} for every minute of the range.
    trades: {(ex, sym): [(ts_us, trade_id:int, price, qty)]}; covered: {(ex, sym): [(from, to)]}."""
    out = {}
    for pair in pairs:
        by_min = defaultdict(list)
        for ts, tid, px, qty in trades.get(pair, []):
            by_min[ts // M * M].append((ts, tid, px, qty))
        before = sorted(t for t in trades.get(pair, []) if t[0] < start_us)
        last = before[-1][2] if before else Decimal(0)
        for m in range(start_us, end_us, M):
            ts_list = sorted(by_min.get(m, []))
            comp = any(f <= m and t >= m + M - 1 for f, t in covered.get(pair, []))
            if ts_list:
                pxs = [t[2] for t in ts_list]
                out[(*pair, m)] = dict(open=pxs[0], high=max(pxs), low=min(pxs), close=pxs[-1],
                                       volume=sum(t[3] for t in ts_list), trade_count=len(ts_list), complete=comp)
                last = pxs[-1]
            else:
                out[(*pair, m)] = dict(open=last, high=last, low=last, close=last, volume=Decimal(0),
                                       trade_count=0, complete=comp)
    return out


def nyse_session_minutes(day_start_us: int) -> set[int]:
    """The session minutes (µs) of the UTC day from exchange_calendars' schedule."""
    import exchange_calendars
    import pandas as pd

    cal = exchange_calendars.get_calendar("XNYS", start="2025-01-01")
    day = pd.Timestamp(datetime.fromtimestamp(day_start_us / 1e6, tz=timezone.utc).date())
    if not cal.is_session(day):
        return set()
    o, c = cal.session_open(day), cal.session_close(day)
    return set(range(int(o.value // 1000), int(c.value // 1000), M))


def resample(bars_1m: dict, expected: dict, every_us: int) -> dict:
    """{(ex, sym, bucket_us): dict} from minute bars; expected: {(ex, sym): set of minute µs}."""
    buckets = defaultdict(list)
    for (ex, sym, m), b in sorted(bars_1m.items()):
        if m in expected[(ex, sym)]:
            buckets[(ex, sym, m // every_us * every_us)].append(b)
    n_expected = defaultdict(int)
    for (ex, sym), mins in expected.items():
        for m in mins:
            n_expected[(ex, sym, m // every_us * every_us)] += 1
    out = {}
    for k, rows in buckets.items():
        traded = [r for r in rows if r["trade_count"] > 0]
        last = rows[-1]["close"]
        vol = sum(r["volume"] for r in rows)
        out[k] = dict(open=traded[0]["open"] if traded else last,
                      high=max(r["high"] for r in traded) if traded else last,
                      low=min(r["low"] for r in traded) if traded else last,
                      close=traded[-1]["close"] if traded else last,
                      volume=vol, trade_count=sum(r["trade_count"] for r in rows),
                      expected_minutes=n_expected[k], complete_minutes=sum(1 for r in rows if r["complete"]),
                      complete=sum(1 for r in rows if r["complete"]) == n_expected[k] > 0)
    for k, n in n_expected.items():
        if k not in out:
            out[k] = dict(expected_minutes=n, complete_minutes=0, complete=False)
    return out


def frame_rows(df, time_col: str = "time") -> dict:
    """polars frame -> {(ex, sym, time_us): row dict}."""
    out = {}
    for r in df.to_dicts():
        t = r[time_col]
        out[(r["exchange"], r["symbol"], int(t.timestamp()) * 1_000_000)] = r
    return out
