"""historical_backfill: load a venue's trades for symbols and a time range from its REST history
into ClickHouse ticks, then rebuild bars_1m over the range. The loading is the library's
(``marketdata.backfill.load_history``: page by page, resumable from a cursor in ClickHouse, rate-
limit aware); this module only wires it into Dagster: typed config for the launchpad, progress in
the run's logs, numeric metadata on the ``tick_backfills`` observation (plotted in the UI), and the
rebuilt hours recorded on bars_1m and bars_1m_complete."""

import time

import dagster as dg
from pydantic import Field

from ... import venues as venue_registry
from ...backfill import BackfillError, load_history, span_hours
from ...clock import format_us, parse_time_us
from ..resources import ClickHouseResource, MarketdataConfigResource
from .assets import tick_backfills
from .rebuild import rebuild_and_record

OWNERS = ["team:marketdata"]
TAGS = {"marketdata/domain": "backfill"}


class HistoricalBackfillConfig(dg.Config):
    """What to load. Times are ISO 8601 (UTC unless an offset is given); the range is [start, end)."""

    venue: str = Field(description=f"Venue id: one of {', '.join(venue_registry.names())}.")
    symbols: list[str] = Field(description="Canonical symbols, e.g. ['BTC-USDT', 'ETH-USDT'].")
    start: str = Field(description="Range start, e.g. 2026-01-05T10:00Z.")
    end: str = Field(description="Range end (exclusive), e.g. 2026-01-05T12:00Z.")
    page_size: int = Field(default=0, description="Trades per REST page; 0 = the venue's maximum.")
    weight_fraction: float = Field(
        default=0.5, description="Share of the venue's REST weight budget to use (the live connectors "
                                 "keep the rest for their repairs).")
    restart: bool = Field(default=False, description="Ignore the stored cursor and load the range again.")
    rebuild_bars: bool = Field(default=True, description="Rebuild bars_1m over the range afterwards.")


@dg.op(
    name="load_trade_history",
    description="Load the venue's REST trade history for the symbols and range into ticks (source "
                "'backfill') page by page, continuing from the stored cursor; record coverage for the "
                "loaded span and any hole in the venue's history as an unrepairable gap.",
    tags=TAGS,
)
def load_trade_history(context: dg.OpExecutionContext, config: HistoricalBackfillConfig,
                       clickhouse: ClickHouseResource, marketdata_config: MarketdataConfigResource) -> list[int]:
    if config.venue not in venue_registry.names():
        raise dg.Failure(f"unknown venue {config.venue!r}; valid: {', '.join(venue_registry.names())}")
    start_us, end_us = parse_time_us(config.start), parse_time_us(config.end)
    if end_us <= start_us:
        raise dg.Failure(f"end ({config.end}) must be after start ({config.start})")
    cfg = marketdata_config.config(resolve_endpoints=True)
    vcfg = cfg.venues.get(config.venue) if cfg else None
    if vcfg is not None and not vcfg.rest_url:
        raise dg.Failure(f"{config.venue}: the config ({marketdata_config.config_path()}) names no usable REST "
                         "endpoint (a venue on the simulator needs the simulator running)")
    # a venue the config does not list is loaded from its live endpoint
    rest_url = vcfg.rest_url if vcfg else venue_registry.get(config.venue).LIVE_REST_URL
    options = dict(vcfg.options) if vcfg else {}
    symbols = [s.strip().upper() for s in config.symbols if s.strip()]
    context.log.info(f"historical backfill {config.venue} {', '.join(symbols)} "
                     f"{format_us(start_us)} .. {format_us(end_us)} from {rest_url}")
    last_log = [0.0]

    def on_progress(p) -> None:
        now = time.monotonic()
        if p.status != "running" or now - last_log[0] >= 5:
            last_log[0] = now
            total = f"/{p.total_trades}" if p.total_trades else ""
            context.log.info(f"{p.symbol}: {p.status} {p.trades}{total} trades, {p.pages} pages, {p.pct:.1f}% "
                             f"(loaded to {format_us(p.loaded_to_us)})")

    error = None
    try:
        res = load_history(clickhouse.store(), config.venue, symbols, start_us, end_us, rest_url=rest_url,
                           options=options, page_size=config.page_size or None,
                           weight_fraction=config.weight_fraction, restart=config.restart,
                           on_progress=on_progress)
        progress = res.symbols
    except BackfillError as e:
        error = e
        from ...backfill import read_progress
        store = clickhouse.store()
        progress = [p for s in symbols if (p := read_progress(store, config.venue, s, start_us, end_us))]
        res = None
    trades = sum(p.trades for p in progress)
    pct = round(sum(p.pct for p in progress) / len(symbols), 2) if symbols else 100.0
    metadata = {
        "trades_loaded": dg.MetadataValue.int(trades),
        "trades_this_run": dg.MetadataValue.int(res.trades_this_run if res else 0),
        "pages": dg.MetadataValue.int(sum(p.pages for p in progress)),
        "pct_complete": dg.MetadataValue.float(float(pct)),
        "symbols": dg.MetadataValue.int(len(symbols)),
        "symbols_done": dg.MetadataValue.int(sum(1 for p in progress if p.status == "done")),
        "history_gaps": dg.MetadataValue.int(len(res.gaps) if res else 0),
        "rest_requests": dg.MetadataValue.int(int(res.rest.get("requests", 0)) if res else 0),
        "rate_limited": dg.MetadataValue.int(int(res.rest.get("rate_limited", 0)) if res else 0),
        "elapsed_s": dg.MetadataValue.float(float(res.elapsed_s) if res else 0.0),
        "venue": dg.MetadataValue.text(config.venue),
        "range": dg.MetadataValue.text(f"{format_us(start_us)} .. {format_us(end_us)}"),
        "by_symbol": dg.MetadataValue.json({p.symbol: {"status": p.status, "trades": p.trades, "pages": p.pages,
                                                       "pct": p.pct, "detail": p.detail} for p in progress}),
    }
    context.log_event(dg.AssetObservation(asset_key=tick_backfills.key, metadata=metadata))
    context.add_output_metadata(metadata)
    if error is not None:
        raise dg.Failure(f"{error} (progress is stored: re-run the job with the same config to continue)",
                         metadata=metadata)
    if not res.done:
        context.log.warning("not every symbol is loaded to the end of the range: "
                            + "; ".join(f"{p.symbol}: {p.status} {p.detail}" for p in progress if p.status != "done"))
    return span_hours(start_us, end_us) if config.rebuild_bars else []


@dg.op(
    name="rebuild_backfilled_bars",
    description="Rebuild bars_1m over the backfilled hours (a week per INSERT ... SELECT) and record "
                "each hour's materialization and completeness result.",
    tags=TAGS,
)
def rebuild_backfilled_bars(context: dg.OpExecutionContext, hours: list[int], clickhouse: ClickHouseResource,
                            marketdata_config: MarketdataConfigResource):
    res = yield from rebuild_and_record(context, clickhouse.store(), hours, marketdata_config.pairs(),
                                        reason="historical backfill")
    stored = sum(a.stored for a in res.audits)
    expected = sum(a.expected for a in res.audits)
    yield dg.Output(None, metadata={
        "hours_rebuilt": dg.MetadataValue.int(res.hours),
        "bars_written": dg.MetadataValue.int(res.bars_written),
        "complete_bars": dg.MetadataValue.int(stored),
        "expected_bars": dg.MetadataValue.int(expected),
        "build_seconds": dg.MetadataValue.float(float(res.build_seconds)),
    })


@dg.job(
    name="historical_backfill",
    description="Load trades for a venue, symbols and time range from the venue's REST history into "
                "ClickHouse (resumable, rate-limit aware), then rebuild bars_1m over the range. Launch "
                "from the launchpad with ops.load_trade_history.config {venue, symbols, start, end}, or "
                "run `marketdata backfill` for the same load with a progress bar.",
    tags=TAGS,
    owners=OWNERS,
    executor_def=dg.in_process_executor,      # two ops in sequence: no subprocess per step
)
def historical_backfill():
    rebuild_backfilled_bars(load_trade_history())
