"""The simulator's send-lag histogram: counts per trade, merges across venues, and its quantiles
land in the bucket that holds them (upper edge, within one bucket's ~9 % width)."""

from marketdata.simulator.sendlag import SendLag, bucket_of, bucket_upper_us, merge, quantiles_ms


def test_quantiles_count_trades_not_writes_and_merge_across_venues():
    a, b = SendLag(), SendLag()
    a.add(500, 98)            # 98 trades sent 0.5 ms after their time
    b.add(40_000, 2)          # one late write of 2 trades, 40 ms
    counts = merge([a.as_json(), b.as_json()])
    assert sum(counts.values()) == 100
    p50, p99 = quantiles_ms(counts)
    assert 0.5 <= p50 <= 0.5 * 1.1
    assert 40 <= p99 <= 40 * 1.1
    assert quantiles_ms(merge([a.as_json()]), qs=(0.99,))[0] < 1


def test_buckets_bound_the_lag_from_above_and_empty_is_nan():
    for lag in (0, 1, 3, 999, 123_456):
        assert bucket_upper_us(bucket_of(lag)) >= lag
        assert bucket_upper_us(bucket_of(lag)) <= max(1, lag) * 1.1
    assert all(q != q for q in quantiles_ms({}))
