"""`marketdata bench --read`: a year of 1m bars for 20 symbols read into polars and exported to
Parquet, side by side with a plain SELECT into pandas, in one run.

    marketdata bench --read [--days 365] [--symbols 20] [--venue binance] [--url URL] [--dir DIR]

1. A fresh store (a local ClickHouse server, `marketdata clickhouse`, on a temp data dir and a
   free port, stopped by PID at the end; ``--url`` for a scratch server) gets ``days`` x 1440
   x ``symbols`` rows of bars_1m generated inside ClickHouse (INSERT ... SELECT FROM numbers(), one
   statement per 30 days; ~0.1 % of minutes incomplete), then OPTIMIZE ... FINAL, as a table that
   has been merged in the background looks.
2. Timed, each from a cold call in this process:
   * ``bars()``: the public API -- validation, bars_1m FINAL as Arrow -> polars, calendar column;
   * ``query_arrow`` -> ``polars.from_arrow`` of the same SELECT (the API's floor);
   * ``query_df`` of the same SELECT into pandas (clickhouse-connect's default path, Python
     Decimals), and ``query_df_arrow`` (pandas with Arrow dtypes) for reference;
   * ``export()`` of the whole range to Parquet (venue/symbol/day files + manifest), then the
     same export again (nothing changed: fingerprints only).
3. Prints a table of seconds, this process's CPU seconds, the local server's CPU seconds (its
   share of the same step), rows, rows/s and the targets (read <= 2 s, export <= 10 s).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from ..bars.universe import Pair, pairs_param
from ..storage.clickhouse import ClickHouse, LocalClickHouse
from ..storage.migrate import migrate

BASES = ["BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "AVAX", "DOT", "LINK", "LTC", "BCH", "TRX", "ATOM",
         "NEAR", "UNI", "XLM", "ETC", "FIL", "APT", "ARB", "OP", "SUI", "INJ", "AAVE"]
READ_TARGET_S, EXPORT_TARGET_S = 2.0, 10.0

FILL_SQL = """
INSERT INTO marketdata.bars_1m
    (exchange, symbol, minute, open, high, low, close, volume, trade_count, vwap, complete, build_version)
SELECT {venue:String}, {symbols:Array(String)}[pair + 1], toDateTime(intDiv({start_us:Int64}, 1000000) + k * 60, 'UTC'),
       px, px + toDecimal128(0.5, 18), px - toDecimal128(0.5, 18), px + toDecimal128(0.25, 18),
       toDecimal128(1 + k % 50, 18) / 1000, 1 + k % 7, toFloat64(px) + 0.1,
       toUInt8((cityHash64(pair, k) % 1000) != 0), 1
FROM (
    SELECT number % {n:UInt32} AS pair, intDiv(number, {n:UInt32}) AS k,
           toDecimal128(100 + pair, 18) + toDecimal128((k * 7919) % 1000, 18) / 100 AS px
    FROM numbers({offset:UInt64}, {count:UInt64})
)
"""

PLAIN_SQL = """
SELECT exchange, symbol, minute, open, high, low, close, volume, trade_count, vwap, complete, build_version
FROM marketdata.bars_1m FINAL
WHERE (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
  AND minute >= toDateTime(intDiv({a:Int64}, 1000000), 'UTC') AND minute < toDateTime(intDiv({b:Int64}, 1000000), 'UTC')
ORDER BY exchange, symbol, minute
"""


def fill(ch: ClickHouse, venue: str, symbols: list[str], start_us: int, days: int) -> float:
    t0 = time.perf_counter()
    n = len(symbols)
    with ch.session() as c:
        for d in range(0, days, 30):
            k0, k1 = d * 1440, min(days, d + 30) * 1440
            c.command(FILL_SQL, parameters={"venue": venue, "symbols": symbols, "start_us": start_us, "n": n,
                                            "offset": k0 * n, "count": (k1 - k0) * n})
        c.command("OPTIMIZE TABLE marketdata.bars_1m FINAL")
    return time.perf_counter() - t0


def cpu_s() -> float:
    """CPU seconds of this process (user + system; with the embedded store, its engine threads too)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


CPU: dict[str, float] = {}
SERVER_CPU: dict[str, float] = {}     # the local ClickHouse server's share of each step


def timed(fn, name: str = "", server: psutil.Process | None = None):
    server_cpu_s = (lambda: sum(server.cpu_times()[:2])) if server else (lambda: 0.0)
    gc.collect()
    c0, s0, t0 = cpu_s(), server_cpu_s(), time.perf_counter()
    out = fn()
    CPU[name] = cpu_s() - c0
    SERVER_CPU[name] = server_cpu_s() - s0
    return time.perf_counter() - t0, out


class _Results(list):
    """(step, wall s, rows) in order; each step is also printed as soon as it is measured."""

    def append(self, item) -> None:
        super().append(item)
        print(f"  {item[0]}: {item[1]:.2f} s wall, {item[2]:,} rows", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="marketdata bench --read", description=__doc__.split("\n\n")[0])
    ap.add_argument("--read", action="store_true", help="(accepted for `marketdata bench --read`)")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--venue", default="binance")
    ap.add_argument("--start", default="2025-01-01T00:00Z")
    ap.add_argument("--url", default=None, help="a scratch ClickHouse server (http://...); default: a local "
                                                "server (`marketdata clickhouse`) on a fresh data dir")
    ap.add_argument("--dir", default=None, help="work dir (default: a temp dir, removed afterwards)")
    ap.add_argument("--no-pandas", action="store_true", help="skip the pandas query_df comparison")
    a = ap.parse_args(argv)
    import polars as pl

    from ..clock import parse_time_us
    from ..export.parquet import export
    from ..read.bars import bars

    if a.symbols > len(BASES):
        ap.error(f"--symbols at most {len(BASES)}")
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="md-bench-read-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None if a.url else LocalClickHouse(work / "clickhouse", publish_url=False,
                                                   max_memory=6 << 30).start()   # query_df of 10.5 M rows needs > 2 GiB
    server_proc = psutil.Process(server.proc.pid) if server else None
    ch = ClickHouse(a.url or server.url)
    migrate(ch)
    start_us = parse_time_us(a.start)
    end_us = start_us + a.days * 86_400_000_000
    symbols = [f"{b}-USDT" for b in BASES[:a.symbols]]
    pairs: list[Pair] = [(a.venue, s) for s in symbols]
    rows_expected = a.days * 1440 * a.symbols
    results = _Results()
    keys: list[str] = []
    try:
        with ch.session() as c:
            have = c.query(PLAIN_SQL.replace("SELECT exchange", "SELECT count() FROM (SELECT exchange") + ")",
                           parameters={"pairs": pairs_param(pairs), "a": start_us, "b": end_us}).result_rows[0][0]
        fill_s = fill(ch, a.venue, symbols, start_us, a.days) if have == 0 else 0.0
        print(f"store {ch}: {rows_expected:,} bars_1m rows ({a.days} days x 1440 x {a.symbols} symbols), "
              f"filled in {fill_s:.1f} s" + (" (already there)" if have else ""), flush=True)
        with ch.session() as c:
            params = {"pairs": pairs_param(pairs), "a": start_us, "b": end_us}
            s, df = timed(lambda: bars(a.venue, symbols, start_us, end_us, store=ch), "api", server_proc)
            keys.append("api")
            results.append(("bars() -> polars (API)", s, df.height))
            del df
            s, df = timed(lambda: pl.from_arrow(c.query_arrow(PLAIN_SQL, parameters=params, use_strings=True)), "arrow", server_proc)
            keys.append("arrow")
            results.append(("query_arrow -> polars.from_arrow", s, df.height))
            del df
            if not a.no_pandas:
                s, df = timed(lambda: c.query_df_arrow(PLAIN_SQL, parameters=params, use_strings=True), "df_arrow", server_proc)
                keys.append("df_arrow")
                results.append(("query_df_arrow -> pandas (Arrow dtypes)", s, len(df)))
                del df
                s, df = timed(lambda: c.query_df(PLAIN_SQL, parameters=params), "df", server_proc)
                keys.append("df")
                results.append(("query_df -> pandas (plain SELECT)", s, len(df)))
                del df
        out = work / "export"
        s, r = timed(lambda: export(ch, "bars", pairs, start_us, end_us, out, progress=True), "export", server_proc)
        size = sum(p.stat().st_size for p in (out / "bars").rglob("*.parquet"))
        keys.append("export")
        results.append((f"export() -> Parquet ({len(r.written)} files, {size / 1e6:.0f} MB)", s, r.rows_written))
        s, r2 = timed(lambda: export(ch, "bars", pairs, start_us, end_us, out, progress=False), "export2", server_proc)
        keys.append("export2")
        results.append((f"export() again ({len(r2.written)} written, {len(r2.unchanged)} unchanged)", s, r2.rows_written))
    finally:
        ch.close()
        if server is not None:
            server.stop()
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    import os
    print(f"\n{'step':55s} {'wall s':>8s} {'CPU s':>8s} {'server':>8s} {'rows':>12s} {'rows/s':>12s}")
    for key, (name, s, n) in zip(keys, results):
        print(f"{name:55s} {s:8.2f} {CPU.get(key, 0):8.2f} {SERVER_CPU.get(key, 0):8.2f} {n:12,d} "
              f"{n / s if s else 0:12,.0f}")
    print(f"(load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs)")
    read_s, export_s = results[0][1], next(s for n, s, _ in results if n.startswith("export() ->"))
    print(f"\ntargets: read <= {READ_TARGET_S} s: {read_s:.2f} s ({'met' if read_s <= READ_TARGET_S else 'MISSED'}); "
          f"export <= {EXPORT_TARGET_S} s: {export_s:.2f} s ({'met' if export_s <= EXPORT_TARGET_S else 'MISSED'})")
    return 0
