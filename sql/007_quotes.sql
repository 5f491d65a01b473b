-- Best bid and ask per exchange:symbol, one row per change of the top of the book. A quote
-- replayed from Redis (a persist retry) has the same key and collapses to one row; an insert
-- retried with the same entries is skipped by its deduplication token. An empty side is 0.
CREATE TABLE IF NOT EXISTS marketdata.quotes
(
    exchange     LowCardinality(String),
    symbol       LowCardinality(String),
    ts_us        Int64,
    ts           DateTime64(6, 'UTC') MATERIALIZED fromUnixTimestamp64Micro(ts_us),
    recv_us      Int64,
    bid_px       Decimal(38, 18),
    bid_qty      Decimal(38, 18),
    ask_px       Decimal(38, 18),
    ask_qty      Decimal(38, 18),
    update_id    Int64,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(fromUnixTimestamp64Micro(ts_us))
ORDER BY (exchange, symbol, ts_us, recv_us, update_id)
SETTINGS non_replicated_deduplication_window = 10000;
