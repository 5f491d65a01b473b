-- Every trade, once. A replayed, re-fetched or duplicated trade has the same
-- (exchange, symbol, trade_id) and collapses to one row; a correction carries a higher
-- version and wins; a cancel is a row with is_deleted = 1 that hides the trade under FINAL.
-- Prices and quantities are Decimal: a bar must not be off by a float rounding.
CREATE TABLE IF NOT EXISTS marketdata.ticks
(
    exchange     LowCardinality(String),
    symbol       LowCardinality(String),
    trade_id     String,
    ts_us        Int64,
    ts           DateTime64(6, 'UTC') MATERIALIZED fromUnixTimestamp64Micro(ts_us),
    open         Decimal(38, 18),
    high         Decimal(38, 18),
    low          Decimal(38, 18),
    close        Decimal(38, 18),
    volume       Decimal(38, 18),
    trade_count  UInt32,
    side         LowCardinality(String),
    recv_us      Int64,
    source       LowCardinality(String),
    event        LowCardinality(String),
    version      UInt64,
    is_deleted   UInt8,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX ts_minmax ts_us TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toDate(fromUnixTimestamp64Micro(ts_us))
ORDER BY (exchange, symbol, trade_id)
SETTINGS non_replicated_deduplication_window = 10000;
