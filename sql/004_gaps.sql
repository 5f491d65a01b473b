-- Every detected hole in a tape: where, how it was found, and whether (and how) it was repaired.
-- A later record for the same gap_id (higher updated_us) replaces the earlier one.
CREATE TABLE IF NOT EXISTS marketdata.gaps
(
    exchange     LowCardinality(String),
    symbol       LowCardinality(String),
    gap_id       String,
    from_us      Int64,
    to_us        Int64,
    from_id      String,
    to_id        String,
    found_by     LowCardinality(String),
    status       LowCardinality(String),   -- open | repaired | unrepairable
    repaired_by  LowCardinality(String),
    recovered    Int64,
    detected_us  Int64,
    updated_us   Int64,
    detail       String
)
ENGINE = ReplacingMergeTree(updated_us)
ORDER BY (exchange, symbol, gap_id)
SETTINGS non_replicated_deduplication_window = 10000;
