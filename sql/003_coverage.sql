-- Intervals [from_us, to_us] during which a symbol's tape is known complete: every trade with a
-- timestamp inside has been stored. Intervals may overlap and touch; readers merge them.
CREATE TABLE IF NOT EXISTS marketdata.coverage
(
    exchange     LowCardinality(String),
    symbol       LowCardinality(String),
    from_us      Int64,
    to_us        Int64,
    source       LowCardinality(String),
    recorded_us  Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(fromUnixTimestamp64Micro(from_us))
ORDER BY (exchange, symbol, from_us, to_us)
SETTINGS non_replicated_deduplication_window = 10000;
