-- One row per exchange, symbol and minute. complete = 1 when the minute lies fully inside
-- coverage; a covered minute without trades is a complete flat bar at the previous close.
-- A rebuild writes every minute of its range again with a higher build_version.
CREATE TABLE IF NOT EXISTS marketdata.bars_1m
(
    exchange       LowCardinality(String),
    symbol         LowCardinality(String),
    minute         DateTime('UTC'),
    open           Decimal(38, 18),
    high           Decimal(38, 18),
    low            Decimal(38, 18),
    close          Decimal(38, 18),
    volume         Decimal(38, 18),
    trade_count    UInt64,
    vwap           Float64,
    complete       UInt8,
    build_version  UInt64,
    built_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(build_version)
PARTITION BY toYYYYMM(minute)
ORDER BY (exchange, symbol, minute);
