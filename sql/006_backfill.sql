-- Historical backfill progress: one cursor per (exchange, symbol, requested range), so a
-- restarted backfill continues where it stopped. A later record (higher updated_us) replaces
-- the earlier one. Trade ids are text (the venue's), like ticks.trade_id.
CREATE TABLE IF NOT EXISTS marketdata.backfill_progress
(
    exchange      LowCardinality(String),
    symbol        LowCardinality(String),
    from_us       Int64,                    -- requested range [from_us, to_us)
    to_us         Int64,
    first_id      String,                   -- first trade id at or after from_us
    end_id        String,                   -- first trade id at or after to_us ('' = not known yet)
    next_id       String,                   -- next id to fetch
    loaded_to_us  Int64,                    -- every trade with from_us <= ts < loaded_to_us is stored
    trades        UInt64,
    pages         UInt64,
    status        LowCardinality(String),   -- running | done | incomplete | failed
    detail        String,
    started_us    Int64,
    updated_us    Int64
)
ENGINE = ReplacingMergeTree(updated_us)
ORDER BY (exchange, symbol, from_us, to_us);
-- Attempts of the gap-repair job per gap, so a gap the venue cannot give back is retried a few
-- times (spaced out), then left unrepairable with its minutes incomplete.
CREATE TABLE IF NOT EXISTS marketdata.gap_repair_attempts
(
    exchange         LowCardinality(String),
    symbol           LowCardinality(String),
    gap_id           String,
    attempts         UInt32,
    last_attempt_us  Int64,
    result           LowCardinality(String),   -- repaired | unrepairable | failed
    detail           String
)
ENGINE = ReplacingMergeTree(last_attempt_us)
ORDER BY (exchange, symbol, gap_id);
