"""`marketdata bench --bars`: a 30-day backfill of bars_1m through Dagster, measured.

    python -m marketdata.bench.backfill [--days 30] [--venues 10] [--symbols 20] [--trades-per-minute 3]

1. A fresh embedded ClickHouse in a temp dir gets synthetic ticks generated inside ClickHouse
   (INSERT ... SELECT FROM numbers(), one statement per day): ``venues`` x ``symbols`` pairs,
   ``trades-per-minute`` trades per pair per minute, and full coverage for every pair.
2. bars_1m (with its bars_1m_complete check) is backfilled over the range through a real Dagster
   instance (sqlite in the temp dir): the range is cut into runs exactly as the asset's
   BackfillPolicy cuts a UI backfill (``max_partitions_per_run`` hours per run), and each run is
   ``materialize`` with the range tags a backfill run carries.
3. Report: total time, the SQL time of the builds (build_bars' own elapsed, from each run's
   materialization metadata), the check time (the check steps: audit SQL plus one result per
   hour), and the rest as Dagster overhead; and whether every bar came out complete.

``--daemon`` launches the same backfill as the UI's asset graph does -- GraphQL
``launchPartitionBackfill`` against a real dagster-webserver + dagster-daemon on a temp
DAGSTER_HOME -- so the policy cuts the runs and the run queue, run workers and step processes are
all in the number ("total" = launch to the last run's end; the backfill daemon wakes every 30 s,
so up to 30 s of it is waiting for the daemon's next tick).

This is a tool of marketdata.bench, the package that drives Dagster, so it imports dagster (lazily);
the loading/bars library itself never does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..clock import US_PER_HOUR, format_us, hour_key, parse_time_us

VENUES = ["binance", "okx", "kucoin", "kraken", "coinbase", "bybit", "bitfinex", "gateio", "bitstamp", "alpaca"]
BASES = ["BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "AVAX", "DOT", "LINK", "LTC", "BCH", "TRX", "ATOM",
         "NEAR", "UNI", "XLM", "ETC", "FIL", "APT", "ARB", "OP", "SUI", "INJ", "AAVE"]

GEN_SQL = """
INSERT INTO marketdata.ticks
    (exchange, symbol, trade_id, ts_us, open, high, low, close, volume, trade_count, side, recv_us,
     source, event, version, is_deleted)
SELECT exchange, symbol, trade_id, ts_us, px, px, px, px, qty, 1, side, ts_us, 'bench', 'trade', 0, 0
FROM (
    SELECT
        number % {pairs:UInt32} AS pair,
        intDiv(number, {pairs:UInt32}) AS k,
        {venues:Array(String)}[intDiv(pair, {per_venue:UInt32}) + 1] AS exchange,
        {symbols:Array(String)}[(pair % {per_venue:UInt32}) + 1] AS symbol,
        toString(k) AS trade_id,
        {start_us:Int64} + toInt64(intDiv(k, {tpm:UInt32})) * 60000000
            + toInt64(k % {tpm:UInt32}) * intDiv(60000000, {tpm:UInt32}) + toInt64(pair) * 7 AS ts_us,
        toDecimal128(100 + pair, 18) + toDecimal128((k * 7919) % 1000, 18) / 100 AS px,
        toDecimal128(1 + k % 50, 18) / 1000 AS qty,
        if(k % 2 = 0, 'buy', 'sell') AS side
    FROM numbers({offset:UInt64}, {count:UInt64})
)
"""


@dataclass
class RunTiming:
    start: str
    end: str
    hours: int
    wall_s: float
    build_s: float
    check_s: float                    # bars_1m_complete's step
    complete_bars: int
    bars_written: int
    other_checks_s: float = 0.0       # any other check on bars_1m that ran in the run


@dataclass
class BenchResult:
    pairs: int
    ticks: int
    hours: int
    generate_s: float
    runs: list[RunTiming] = field(default_factory=list)
    total_s: float = 0.0

    @property
    def build_s(self) -> float:
        return round(sum(r.build_s for r in self.runs), 3)

    @property
    def check_s(self) -> float:
        return round(sum(r.check_s for r in self.runs), 3)

    @property
    def other_checks_s(self) -> float:
        return round(sum(r.other_checks_s for r in self.runs), 3)

    @property
    def overhead_s(self) -> float:
        return round(self.total_s - self.build_s - self.check_s - self.other_checks_s, 3)


def generate(ch, start_us: int, days: int, venues: int, symbols: int, tpm: int) -> int:
    """Synthetic ticks and full coverage; returns the tick count."""
    from ..backfill.store import write
    vs = VENUES[:venues] if venues <= len(VENUES) else [f"venue{i:02d}" for i in range(venues)]
    syms = [f"{b}-USDT" for b in BASES[:symbols]] if symbols <= len(BASES) else [f"S{i:03d}-USDT" for i in range(symbols)]
    pairs = len(vs) * len(syms)
    per_day = pairs * 1440 * tpm
    with ch.session() as c:
        for d in range(days):
            c.command(GEN_SQL, parameters={
                "pairs": pairs, "per_venue": len(syms), "venues": vs, "symbols": syms, "tpm": tpm,
                "start_us": start_us, "offset": d * per_day, "count": per_day})
    end_us = start_us + days * 24 * US_PER_HOUR
    write(ch, coverage=[(v, s, start_us, end_us - 1, "bench") for v in vs for s in syms])
    return per_day * days


def run_backfill(start_us: int, end_us: int, instance, per_run: int, log=print) -> list[RunTiming]:
    """bars_1m + bars_1m_complete over [start_us, end_us), ``per_run`` hours per run."""
    import dagster as dg

    from ..definitions import defs
    from ..defs.bars.assets import bars_1m
    from ..defs.bars.checks import bars_1m_complete

    out = []
    hours = list(range(start_us, end_us, US_PER_HOUR))
    for i in range(0, len(hours), per_run):
        chunk = hours[i:i + per_run]
        tags = {"dagster/asset_partition_range_start": hour_key(chunk[0]),
                "dagster/asset_partition_range_end": hour_key(chunk[-1])}
        t0 = time.monotonic()
        res = dg.materialize([bars_1m, bars_1m_complete], instance=instance, resources=defs.resources, tags=tags,
                             run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        wall = time.monotonic() - t0
        if not res.success:
            raise RuntimeError(f"run {tags} failed")
        rt = run_timing(instance, res.run_id, wall)
        log(f"  run {rt.start} .. {rt.end} ({rt.hours} h): {rt.wall_s:.2f}s (build SQL {rt.build_s:.2f}s, "
            f"check {rt.check_s:.2f}s), {rt.complete_bars}/{rt.bars_written} bars complete")
        out.append(rt)
    return out


def run_timing(instance, run_id: str, wall: float | None = None) -> RunTiming:
    """Build SQL time (the materialization's build_seconds), check step time and bars of a run."""
    md: dict = {}
    starts: dict = {}
    check_s = other_s = 0.0
    first = last = None
    for rec in instance.all_logs(run_id):
        first = rec.timestamp if first is None else first
        last = rec.timestamp
        ev = rec.dagster_event
        if ev is None:
            continue
        if ev.event_type_value == "ASSET_MATERIALIZATION" and not md:
            md = {k: v.value for k, v in ev.event_specific_data.materialization.metadata.items()}
        if ev.step_key and ev.step_key != "bars_1m":             # the checks' steps
            if ev.event_type_value == "STEP_START":
                starts[ev.step_key] = rec.timestamp
            elif ev.event_type_value == "STEP_SUCCESS" and ev.step_key in starts:
                if ev.step_key.endswith("bars_1m_complete"):
                    check_s += rec.timestamp - starts[ev.step_key]
                else:
                    other_s += rec.timestamp - starts[ev.step_key]
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run else {}
    a = tags.get("dagster/asset_partition_range_start") or tags.get("dagster/partition", "")
    b = tags.get("dagster/asset_partition_range_end") or a
    return RunTiming(a, b, int(md.get("hours", 0)), round(wall if wall is not None else (last or 0) - (first or 0), 3),
                     float(md.get("build_seconds", 0.0)), round(check_s, 3), int(md.get("complete_bars", 0)),
                     int(md.get("bars_written", 0)), round(other_s, 3))


def run_backfill_daemon(start_us: int, end_us: int, work: Path, log=print) -> tuple[list[RunTiming], dict]:
    """The same backfill launched as the UI's asset graph launches it: a partition backfill of
    bars_1m over the range through the real webserver and daemon (its BackfillPolicy applies)."""
    import dagster as dg

    from .dagster_service import DagsterService

    svc = DagsterService(work / "dagster_home", dict(os.environ), log_dir=work / "logs")
    t_start = time.monotonic()
    svc.start(timeout=180)
    svc.wait_daemons(timeout=180)
    log(f"  webserver + daemon up and healthy in {time.monotonic() - t_start:.1f}s (not counted)")
    try:
        svc.set_automation(False)
        t0, wall0 = time.monotonic(), time.time()
        bid = svc.launch_asset_backfill("bars_1m", hour_key(start_us), hour_key(end_us - US_PER_HOUR),
                                        title="bench --bars")
        b = svc.wait_backfill(bid, timeout=1800)
        marked = time.monotonic() - t0
        first_created = min(r["creationTime"] for r in b["runs"]) - wall0
        last_end = max(r["endTime"] or 0 for r in b["runs"]) - wall0
        log(f"  launch -> first run created {first_created:.1f}s, -> last run done {last_end:.1f}s "
            f"(bars complete), -> backfill marked complete by the daemon {marked:.1f}s")
        total = last_end
        if b["status"] != "COMPLETED_SUCCESS":
            raise RuntimeError(f"backfill {bid} ended {b['status']}\n{svc.log_tail()}")
        os.environ["DAGSTER_HOME"] = str(work / "dagster_home")           # its dagster.yaml reads it
        with dg.DagsterInstance.get() as instance:
            runs = sorted((run_timing(instance, r["runId"], (r["endTime"] or 0) - (r["startTime"] or 0))
                           for r in b["runs"]), key=lambda r: r.start)
        for rt in runs:
            log(f"  run {rt.start} .. {rt.end} ({rt.hours} h): {rt.wall_s:.2f}s in its worker (build SQL "
                f"{rt.build_s:.2f}s, completeness check {rt.check_s:.2f}s, other checks {rt.other_checks_s:.2f}s), "
                f"{rt.complete_bars}/{rt.bars_written} bars complete")
        return runs, {"total_s": round(total, 3), "backfill_id": bid, "marked_s": round(marked, 3)}
    finally:
        svc.stop()


class _InsertProbe(threading.Thread):
    """Inserts 1,000 ticks every 100 ms, as the persist worker does, while the backfill runs, and
    records each insert's latency: what a long bars build costs the live path."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.latency_ms: list[float] = []

    def run(self) -> None:
        from ..storage.clickhouse import ClickHouse, insert_json_rows
        ch = ClickHouse(self.url)
        c = ch.client()
        n = 0
        while not self.stop.wait(0.1):
            base = 1_900_000_000_000_000 + n * 1000
            rows = b"".join(
                b'{"exchange":"probe","symbol":"P-USD","trade_id":"%d","ts_us":%d,"open":"1","high":"1",'
                b'"low":"1","close":"1","volume":"1","trade_count":1,"side":"buy","recv_us":%d,"source":"ws",'
                b'"event":"trade","version":0,"is_deleted":0}\n' % (n + i, base + i, base + i) for i in range(1000))
            t0 = time.perf_counter()
            insert_json_rows(c, "marketdata.ticks", ["exchange", "symbol", "trade_id", "ts_us", "open", "high",
                                                     "low", "close", "volume", "trade_count", "side", "recv_us",
                                                     "source", "event", "version", "is_deleted"], rows)
            self.latency_ms.append((time.perf_counter() - t0) * 1000)
            n += 1000
        ch.close()

    def report(self) -> str:
        v = sorted(self.latency_ms)
        if not v:
            return "no inserts"
        q = lambda x: v[min(len(v) - 1, int(x * len(v)))]  # noqa: E731
        return f"{len(v)} inserts of 1,000 ticks: p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {v[-1]:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="marketdata bench --bars",
                                 description="Backfill bars_1m over 30 days of synthetic ticks through Dagster.")
    ap.add_argument("--bars", action="store_true", help="(accepted for `marketdata bench --bars`)")
    ap.add_argument("--days", type=int, default=30, help="days of hourly partitions to backfill (default 30)")
    ap.add_argument("--venues", type=int, default=10, help="number of venues (default 10)")
    ap.add_argument("--symbols", type=int, default=20, help="symbols per venue")
    ap.add_argument("--trades-per-minute", type=int, default=3, help="per pair")
    ap.add_argument("--start", default="2026-02-01T00:00Z", help="first hour (UTC)")
    ap.add_argument("--hours-per-run", type=int, default=None,
                    help="hours per run (default: bars_1m's BackfillPolicy max_partitions_per_run; "
                         "0 = one run for the whole range, as single_run would)")
    ap.add_argument("--daemon", action="store_true",
                    help="launch the backfill through a real dagster-webserver + dagster-daemon (GraphQL "
                         "launchPartitionBackfill, as the UI does; runs as the BackfillPolicy cuts them) "
                         "instead of materialize() in this process")
    ap.add_argument("--with-inserts", action="store_true",
                    help="insert 1,000 ticks every 100 ms during the backfill and report their latency")
    ap.add_argument("--dir", default=None, help="work dir, kept; its synthetic ticks are reused when they match "
                                                "(default: a temp dir, removed afterwards)")
    a = ap.parse_args(argv)

    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="md-bench-bars-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MARKETDATA_CONFIG"] = str(work / "absent.yaml")      # pairs = what the data holds
    os.environ.setdefault("MARKETDATA_BARS_START", "2026-01-01-00:00")
    import warnings

    import dagster as dg

    from ..defs.bars.assets import bars_1m
    from ..storage.clickhouse import ClickHouse, LocalClickHouse
    from ..storage.migrate import migrate

    warnings.simplefilter("ignore")
    start_us = parse_time_us(a.start) // US_PER_HOUR * US_PER_HOUR
    end_us = start_us + a.days * 24 * US_PER_HOUR
    policy = bars_1m.backfill_policy
    per_run = a.hours_per_run if a.hours_per_run is not None else (policy.max_partitions_per_run or 0)
    hours = (end_us - start_us) // US_PER_HOUR
    per_run = per_run or hours
    chs = LocalClickHouse(work / "clickhouse", publish_url=False).start()
    os.environ["MARKETDATA_CLICKHOUSE_URL"] = chs.url
    try:
        ch = ClickHouse()
        migrate(ch)
        pairs = a.venues * a.symbols
        want = a.days * 1440 * pairs * a.trades_per_minute
        have = ch.rows("SELECT count() FROM marketdata.ticks WHERE source = 'bench'")[0][0]
        t0 = time.monotonic()
        if a.dir and have == want:
            print(f"reusing {have:,} synthetic ticks in {work}; bars_1m emptied")
            ch.command("TRUNCATE TABLE marketdata.bars_1m")
            ticks = have
        else:
            print(f"generating {a.days} days x {pairs} pairs x {a.trades_per_minute} trades/min in ClickHouse ...")
            for t in ("ticks", "coverage", "bars_1m"):
                ch.command(f"TRUNCATE TABLE marketdata.{t}")
            ticks = generate(ch, start_us, a.days, a.venues, a.symbols, a.trades_per_minute)
            print(f"  {ticks:,} ticks + coverage in {time.monotonic() - t0:.1f}s")
        gen_s = time.monotonic() - t0
        runs = -(-hours // per_run)
        how = "via dagster-webserver + dagster-daemon" if a.daemon else "via materialize() in this process"
        if a.daemon and a.hours_per_run is not None:
            print("note: --hours-per-run is ignored with --daemon (the asset's BackfillPolicy decides)")
            runs = -(-hours // (policy.max_partitions_per_run or hours))
        print(f"backfilling bars_1m {format_us(start_us)} .. {format_us(end_us)} {how}: {hours} hourly partitions as "
              f"{runs} run(s) (policy: {policy})")
        res = BenchResult(pairs, ticks, hours, round(gen_s, 3))
        probe = _InsertProbe(chs.url) if a.with_inserts else None
        if probe:
            probe.start()
        if a.daemon:
            res.runs, info = run_backfill_daemon(start_us, end_us, work)
            res.total_s = info["total_s"]
        else:
            (work / "dagster").mkdir(exist_ok=True)
            with dg.DagsterInstance.local_temp(str(work / "dagster")) as instance:
                t0 = time.monotonic()
                res.runs = run_backfill(start_us, end_us, instance, per_run)
                res.total_s = round(time.monotonic() - t0, 3)
        if probe:
            probe.stop.set()
            probe.join(30)
            print(f"inserts during the backfill: {probe.report()}")
        complete = sum(r.complete_bars for r in res.runs)
        written = sum(r.bars_written for r in res.runs)
        print(f"\nbars_1m backfill of {hours} h x {pairs} pairs = {written:,} bars ({complete:,} complete) "
              f"in {len(res.runs)} run(s)")
        print(f"  total           {res.total_s:8.2f} s")
        print(f"  build SQL       {res.build_s:8.2f} s   (build_bars elapsed)")
        print(f"  completeness    {res.check_s:8.2f} s   (bars_1m_complete step: audit SQL + a result per hour)")
        if res.other_checks_s:
            print(f"  other checks    {res.other_checks_s:8.2f} s   (other checks on bars_1m run by the backfill, "
                  "e.g. bars_1m_reconciled)")
        print(f"  Dagster overhead{res.overhead_s:8.2f} s   (the rest: run queue, run workers, step processes, "
              "event log writes" + (", waiting for the backfill daemon's tick)" if a.daemon else ")"))
        ok = complete == written == hours * 60 * pairs
        print("  every bar complete" if ok else "  NOT every bar complete")
        return 0 if ok else 1
    finally:
        chs.stop()
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
