"""`marketdata export bars|ticks --venues ... --symbols ... --from ... --to ... --out DIR`."""

from __future__ import annotations

import argparse
import sys

from ..read.request import ReadError, resolve_pairs, time_range
from ..storage.clickhouse import ClickHouse


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="marketdata export",
                                 description="Write bars (1m) or ticks to Parquet, partitioned by venue, symbol "
                                             "and UTC day, with manifest.json (completeness, gaps, build "
                                             "versions, the query range). Run again: only changed days are written.")
    ap.add_argument("kind", choices=["bars", "ticks"])
    ap.add_argument("--venues", required=True, help="comma-separated venue ids, e.g. binance,okx")
    ap.add_argument("--symbols", required=True, help="comma-separated symbols (BTC-USDT) or pairs (binance:BTC-USDT)")
    ap.add_argument("--from", dest="start", required=True, help="start (inclusive), e.g. 2026-01-05 or 2026-01-05T10:00Z")
    ap.add_argument("--to", dest="end", required=True, help="end (exclusive)")
    ap.add_argument("--out", required=True, help="output directory (the dataset goes to OUT/bars or OUT/ticks)")
    ap.add_argument("--config", default=None, help="config file for the configured symbols (default $MARKETDATA_CONFIG)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    from .parquet import export

    store = ClickHouse()
    try:
        start_us, end_us = time_range(a.start, a.end, 60_000_000 if a.kind == "bars" else 1)
        with store.session() as c:
            sel = resolve_pairs(c, a.venues, a.symbols, start_us, end_us, config_path=a.config)
        r = export(store, a.kind, sel.pairs, start_us, end_us, a.out, progress=not a.no_progress,
                   query={"venues": a.venues.split(","), "symbols": a.symbols.split(",")})
    except ReadError as e:
        print(f"marketdata export: {e}", file=sys.stderr)
        return 2
    print(f"{a.kind}: {len(r.written)} day file(s) written ({r.rows_written} rows), {len(r.unchanged)} unchanged, "
          f"{len(r.removed)} removed; completeness {r.stored}/{r.expected} ({r.completeness_pct}%); "
          f"manifest {r.manifest_path} ({r.elapsed_s}s)")
    for k, mins in r.missing_minutes.items():
        print(f"  {k}: {len(mins)} missing minute(s), first {mins[0]}")
    return 0
