"""The NYSE calendar behind Alpaca's expected bars: session minutes per UTC hour from the
maintained exchange_calendars library (holidays, 13:00 ET early closes, DST), 24/7 elsewhere."""

from __future__ import annotations

from datetime import datetime, timezone

from marketdata.bars.calendar import expected_count, expected_minutes


def h(*a) -> int:
    return int(datetime(*a, tzinfo=timezone.utc).timestamp()) * 1_000_000


def day(y, m, d, ex="alpaca") -> list[int]:
    return [expected_count(ex, "AAPL-USD", h(y, m, d, hr)) for hr in range(24)]


def test_regular_winter_day_is_1430_to_2100_utc():
    counts = day(2026, 1, 5)
    assert sum(counts) == 390
    assert counts[14] == 30 and counts[15:21] == [60] * 6 and counts[21] == 0
    assert expected_minutes("alpaca", "AAPL-USD", h(2026, 1, 5, 14)) == tuple(range(30, 60))


def test_christmas_has_no_expected_bars_and_crypto_is_unaffected():
    assert sum(day(2026, 12, 25)) == 0
    assert sum(day(2026, 12, 25, ex="binance")) == 24 * 60


def test_thanksgiving_friday_closes_at_1300_et():
    counts = day(2026, 11, 27)
    assert sum(counts) == 210            # 09:30-13:00 ET = 14:30-18:00 UTC
    assert counts[17] == 60 and counts[18] == 0
    assert sum(day(2026, 11, 26)) == 0   # Thanksgiving itself


def test_dst_switch_moves_the_session_an_hour_earlier_in_utc():
    assert day(2026, 3, 6)[14] == 30 and day(2026, 3, 6)[20] == 60      # EST: 14:30-21:00 UTC
    after = day(2026, 3, 9)                                               # EDT from 2026-03-08
    assert after[13] == 30 and after[19] == 60 and after[20] == 0 and sum(after) == 390
