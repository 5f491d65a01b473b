"""`marketdata bench`: simulator -> connector(s) -> Redis -> persist -> ClickHouse, measured.

Runs everything as real processes on an isolated temp data dir (embedded Redis, the local
ClickHouse server),
offers `--rate` trades/s for `--duration` s, waits until the pipeline has drained, then reports:
offered and persisted ticks/s, ticks lost and duplicated against the simulator's ground truth,
CPU seconds per tick of the ingest, persist and ClickHouse server processes, the peak RSS of each
kind of process (``peak_rss_mb``), and p50/p99 latency from trade time
to Redis (entry append time) and to ClickHouse (insert time), per venue and in total.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import orjson
import psutil
import yaml

from .clock import now_us
from .procs import default_signals, terminate
from .storage.clickhouse import ClickHouse, LocalClickHouse
from .storage.migrate import migrate
from .storage.redis import EmbeddedRedis, client
from .supervisor import DEMO_CREDENTIALS
from .stream import STREAMS_SET, health_key, parse_stream_key

DEFAULT_SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "ADA-USDT"]


def _quantiles(values: list[int], qs=(0.5, 0.99)) -> list[float]:
    if not values:
        return [float("nan")] * len(qs)
    values.sort()
    return [values[min(len(values) - 1, int(q * len(values)))] / 1000.0 for q in qs]  # ms


class _RedisLatencyProbe(threading.Thread):
    """Reads every stream entry as it is appended and records (entry time - trade time) per tick."""

    def __init__(self, url: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.r = client(url)
        self.stop = stop
        self.lat: dict[str, list[int]] = defaultdict(list)
        self.last: dict[str, str] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            keys = [k.decode() for k in self.r.smembers(STREAMS_SET)]
            for k in keys:
                self.last.setdefault(k, "$")
            if not keys:
                time.sleep(0.05)
                continue
            resp = self.r.xread({k: self.last[k] for k in keys}, block=200, count=2000)
            for key, entries in resp or []:
                key = key.decode()
                venue = parse_stream_key(key)[0]
                out = self.lat[venue]
                for eid, fields in entries:
                    self.last[key] = eid.decode()
                    t = fields.get(b"t")
                    if t:
                        ms = int(eid.split(b"-")[0]) * 1000
                        out.extend(ms - row[0] for row in orjson.loads(t))


class _PeakRss(threading.Thread):
    """Samples the RSS of each process every 0.25 s; peak per role (ingest: the largest connector)."""

    def __init__(self, pids: dict[str, int], stop: threading.Event):
        super().__init__(daemon=True)
        self.pids = pids
        self.stop = stop
        self.peak: dict[str, int] = {}

    def run(self) -> None:
        procs = {}
        for name, pid in self.pids.items():
            try:
                procs[name] = psutil.Process(pid)
            except psutil.Error:
                pass
        while True:
            for name, p in procs.items():
                role = name.split("-", 1)[0]
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                self.peak[role] = max(self.peak.get(role, 0), rss)
            if self.stop.wait(0.25):
                return

    def mb(self) -> dict[str, int]:
        return {k: v >> 20 for k, v in sorted(self.peak.items())}


def _proc(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    f = open(log, "ab")
    p = subprocess.Popen([sys.executable, "-m", "marketdata.cli", *args], env=env, stdout=f,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                         preexec_fn=default_signals)
    f.close()
    return p


def _cpu(p: subprocess.Popen) -> float:
    try:
        t = psutil.Process(p.pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def run_bench(venues: list[str], rate: float, duration: float, symbols_per_venue: int = 2,
              persist_workers: int = 1, workdir: Path | None = None, seed: int = 7,
              drain_timeout: float = 180.0, echo=print) -> dict:
    own_dir = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="marketdata-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    symbols = DEFAULT_SYMBOLS[:symbols_per_venue]
    redis = EmbeddedRedis(work / "redis", publish_url=False).start()
    chs = LocalClickHouse(work / "clickhouse", publish_url=False).start()
    ch_url = chs.url
    ch = ClickHouse(ch_url)
    migrate(ch)
    env = dict(os.environ, MARKETDATA_HOME=str(work), MARKETDATA_REDIS_URL=redis.url,
               MARKETDATA_CLICKHOUSE_URL=ch_url, PYTHONUNBUFFERED="1")
    procs: dict[str, subprocess.Popen] = {}
    stop_probe = threading.Event()
    gt = work / "ground_truth.csv"
    try:
        eps_file = work / "endpoints.json"
        procs["simulator"] = _proc(["simulate", "--venues", ",".join(venues), *_sim_symbols(venues, symbols),
                                    "--rate", str(rate / len(venues)), "--seed", str(seed), "--ground-truth", str(gt),
                                    "--endpoints-file", str(eps_file), "--paused", *_sim_options(venues)],
                                   env, logs / "simulator.log")
        deadline = time.monotonic() + 30
        while not eps_file.exists():
            if time.monotonic() > deadline or procs["simulator"].poll() is not None:
                raise RuntimeError(f"simulator did not start; see {logs / 'simulator.log'}")
            time.sleep(0.05)
        time.sleep(0.05)
        eps = orjson.loads(eps_file.read_bytes())
        cfg = {"venues": {v: {"symbols": _venue_symbols(v, symbols), "ws_url": eps[v]["ws"],
                              "rest_url": eps[v]["rest"]} for v in venues}}
        (work / "bench.yaml").write_text(yaml.safe_dump(cfg))
        env["MARKETDATA_CONFIG"] = str(work / "bench.yaml")
        for i in range(persist_workers):
            procs[f"persist-{i}"] = _proc(["persist", "--consumer", f"bench-{i}"], env, logs / f"persist-{i}.log")
        for v in venues:
            procs[f"ingest-{v}"] = _proc(["ingest", "--venue", v], {**env, **DEMO_CREDENTIALS.get(v, ({},))[0]},
                                         logs / f"ingest-{v}.log")
        r = client(redis.url)

        def subscribed() -> bool:
            return all(int(r.hget(health_key(v), "connections") or 0) >= 1 for v in venues)
        deadline = time.monotonic() + 60
        while not subscribed():
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}; see {logs}/{name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"connectors did not connect; see {logs}")
            time.sleep(0.1)
        probe = _RedisLatencyProbe(redis.url, stop_probe)
        probe.start()
        rss = _PeakRss({**{n: p.pid for n, p in procs.items()}, "clickhouse": chs.proc.pid}, stop_probe)
        rss.start()
        cpu0 = {n: _cpu(p) for n, p in {**procs, "clickhouse": chs.proc}.items()}
        echo(f"bench: {len(venues)} venue(s) x {len(symbols)} symbols, {rate:.0f} trades/s offered for {duration:.0f}s")
        t_start = now_us()
        for v in venues:
            httpx.post(eps[v]["rest"] + "/_sim/resume", json={}, timeout=10).raise_for_status()
        time.sleep(duration)
        for v in venues:
            httpx.post(eps[v]["rest"] + "/_sim/pause", json={}, timeout=10).raise_for_status()
        t_end = now_us()
        stats = {v: httpx.get(eps[v]["rest"] + "/_sim/stats", timeout=10).json() for v in venues}
        for v in venues:
            httpx.post(eps[v]["rest"] + "/_sim/flush", json={}, timeout=30).raise_for_status()
        truth = _read_truth(gt)
        expected = len(truth)
        echo(f"bench: offered {expected} trades; draining")
        drained_at = time.monotonic() + drain_timeout
        persisted = 0
        while time.monotonic() < drained_at:
            persisted = ch.rows("SELECT sum(trade_count) FROM marketdata.ticks FINAL")[0][0]
            holes = sum(int(r.hget(health_key(v), "open_holes") or 0) for v in venues)
            if persisted >= expected and holes == 0:
                break
            time.sleep(0.5)
        cpu1 = {n: _cpu(p) for n, p in {**procs, "clickhouse": chs.proc}.items()}
        stop_probe.set()
        probe.join(5)
        result = _measure(ch, truth, venues, cpu0, cpu1, probe.lat, t_start, t_end, stats)
        result.update({"venues": venues, "symbols": symbols, "rate_offered_cfg": rate, "duration_s": duration,
                       "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                       "workdir": str(work), "peak_rss_mb": rss.mb()})
        return result
    finally:
        stop_probe.set()
        for name in [n for n in procs if n.startswith("ingest")] + ["simulator"] + \
                [n for n in procs if n.startswith("persist")]:
            if name in procs:
                terminate(procs[name])
        ch.close()
        chs.stop()
        redis.stop()
        if own_dir and os.environ.get("MARKETDATA_BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


# Quote currency per venue where the default USDT pairs are not what the venue lists.
_QUOTE = {"kraken": "USD", "coinbase": "USD", "bitstamp": "USD", "bitfinex": "USD"}
_STOCKS = ["AAPL-USD", "MSFT-USD", "NVDA-USD", "AMZN-USD", "GOOGL-USD", "META-USD"]


def _venue_symbols(venue: str, symbols: list[str]) -> list[str]:
    if venue == "alpaca":
        return _STOCKS[:len(symbols)]
    quote = _QUOTE.get(venue)
    return [s.rsplit("-", 1)[0] + "-" + quote for s in symbols] if quote else list(symbols)


def _sim_symbols(venues: list[str], symbols: list[str]) -> list[str]:
    return [a for v in venues for a in ("--symbols", f"{v}:{','.join(_venue_symbols(v, symbols))}")]


def _sim_options(venues: list[str]) -> list[str]:
    """Demo keys for venues that need them; Alpaca trading at any wall time (the bench measures
    latency from trade time, so it cannot start at a simulated NYSE session in the past)."""
    opts = {v: dict(DEMO_CREDENTIALS[v][1]) for v in venues if v in DEMO_CREDENTIALS}
    if "alpaca" in venues:
        opts["alpaca"]["sessions"] = "always"
    return [a for v, o in opts.items() for k, val in o.items() for a in ("--venue-option", f"{v}.{k}={val}")]


def _read_truth(path: Path) -> dict[tuple[str, str, str], tuple]:
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[(row["exchange"], row["symbol"], row["trade_id"])] = (int(row["ts_us"]), row["price"], row["qty"])
    return out


def _measure(ch: ClickHouse, truth: dict, venues: list[str], cpu0: dict, cpu1: dict,
             redis_lat: dict[str, list[int]], t_start: int, t_end: int, stats: dict) -> dict:
    with ch.session() as c:
        # A venue-aggregated tick (OKX `count`) stands for the fills tradeId-count+1 .. tradeId.
        stored = set()
        for ex, sym, tid, n in c.query("SELECT exchange, symbol, trade_id, trade_count FROM marketdata.ticks FINAL"
                                       ).result_rows:
            if n > 1 and tid.isdigit():
                stored.update((ex, sym, str(i)) for i in range(int(tid) - n + 1, int(tid) + 1))
            else:
                stored.add((ex, sym, tid))
        physical = c.query("SELECT count() FROM marketdata.ticks").result_rows[0][0]
        logical = c.query("SELECT count() FROM marketdata.ticks FINAL").result_rows[0][0]
        first_ids = {(r[0], r[1]): int(r[2]) - int(r[3]) + 1 for r in c.query(
            "SELECT exchange, symbol, argMin(toUInt64OrZero(trade_id), toUInt64OrZero(trade_id)), "
            "argMin(trade_count, toUInt64OrZero(trade_id)) FROM marketdata.ticks FINAL "
            "WHERE source = 'ws' GROUP BY exchange, symbol").result_rows}
        ch_lat = {r[0]: (r[1], r[2], r[3]) for r in c.query(
            "SELECT exchange, quantile(0.5)(toUnixTimestamp64Micro(inserted_at) - ts_us), "
            "quantile(0.99)(toUnixTimestamp64Micro(inserted_at) - ts_us), "
            "max(toUnixTimestamp64Micro(inserted_at)) FROM marketdata.ticks WHERE source = 'ws' "
            "GROUP BY exchange").result_rows}
        ch_all = c.query("SELECT quantile(0.5)(toUnixTimestamp64Micro(inserted_at) - ts_us), "
                         "quantile(0.99)(toUnixTimestamp64Micro(inserted_at) - ts_us), "
                         "max(toUnixTimestamp64Micro(inserted_at)) FROM marketdata.ticks").result_rows[0]
    # A trade counts as offered to the pipeline from the first trade each connector saw on.
    offered = {k for k in truth if (k[0], k[1]) in first_ids and k[2].isdigit()
               and int(k[2]) >= first_ids[(k[0], k[1])]}
    lost = offered - stored
    unexpected = stored - set(truth)
    dur = (t_end - t_start) / 1e6
    per_venue = {}
    ingest_cpu_total = 0.0
    for v in venues:
        off_v = [k for k in offered if k[0] == v]
        cpu = cpu1.get(f"ingest-{v}", 0) - cpu0.get(f"ingest-{v}", 0)
        ingest_cpu_total += cpu
        p50r, p99r = _quantiles(list(redis_lat.get(v, [])))
        lat = ch_lat.get(v, (float("nan"),) * 3)
        per_venue[v] = {"offered": len(off_v), "lost": sum(1 for k in lost if k[0] == v),
                        "ingest_cpu_s": round(cpu, 3),
                        "ingest_cpu_us_per_tick": round(cpu / max(1, len(off_v)) * 1e6, 2),
                        "latency_ms_to_redis": {"p50": p50r, "p99": p99r},
                        "latency_ms_to_clickhouse": {"p50": lat[0] / 1000, "p99": lat[1] / 1000}}
    persist_cpu = sum(cpu1[n] - cpu0.get(n, 0) for n in cpu1 if n.startswith("persist"))
    clickhouse_cpu = cpu1.get("clickhouse", 0) - cpu0.get("clickhouse", 0)
    sim_cpu = cpu1.get("simulator", 0) - cpu0.get("simulator", 0)
    all_redis = [x for v in redis_lat.values() for x in v]
    p50r, p99r = _quantiles(all_redis)
    last_insert_us = ch_all[2]
    persist_span = max(1e-6, (last_insert_us - t_start) / 1e6) if last_insert_us else float("nan")
    return {
        "offered_ticks": len(offered),
        "offered_ticks_per_s": round(len(offered) / dur, 1),
        "persisted_ticks": len(stored & offered),
        "persisted_ticks_per_s": round(len(stored & offered) / persist_span, 1),
        "lost": len(lost), "duplicated": len(unexpected),
        "duplicate_rows_before_merge": physical - logical,
        "ingest_cpu_s": round(ingest_cpu_total, 3),
        "ingest_cpu_us_per_tick": round(ingest_cpu_total / max(1, len(offered)) * 1e6, 2),
        "persist_cpu_s": round(persist_cpu, 3),
        "persist_cpu_us_per_tick": round(persist_cpu / max(1, len(offered)) * 1e6, 2),
        "clickhouse_cpu_s": round(clickhouse_cpu, 3),
        "clickhouse_cpu_us_per_tick": round(clickhouse_cpu / max(1, len(offered)) * 1e6, 2),
        "simulator_cpu_s": round(sim_cpu, 3),
        "latency_ms_to_redis": {"p50": p50r, "p99": p99r},
        "latency_ms_to_clickhouse": {"p50": ch_all[0] / 1000, "p99": ch_all[1] / 1000},
        "drain_s_after_offer_end": round((last_insert_us - t_end) / 1e6, 2) if last_insert_us else None,
        "per_venue": per_venue,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="marketdata bench", description=__doc__.splitlines()[0])
    ap.add_argument("--venues", default="binance", help="comma-separated venue ids")
    ap.add_argument("--rate", type=float, default=50_000, help="trades/s offered in total")
    ap.add_argument("--duration", type=float, default=60, help="seconds of offered load")
    ap.add_argument("--symbols-per-venue", type=int, default=2, help="symbols each venue trades (default 2)")
    ap.add_argument("--persist-workers", type=int, default=1, help="persist processes sharing the consumer group (default 1)")
    ap.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    ap.add_argument("--workdir", default=None, help="keep everything here instead of a temp dir")
    ap.add_argument("--json", default=None, help="also write the result as one JSON object to this file")
    a = ap.parse_args(argv)
    res = run_bench([v.strip() for v in a.venues.split(",") if v.strip()], a.rate, a.duration,
                    a.symbols_per_venue, a.persist_workers, Path(a.workdir) if a.workdir else None, a.seed)
    print(f"offered    {res['offered_ticks']} ticks, {res['offered_ticks_per_s']:.0f}/s")
    print(f"persisted  {res['persisted_ticks']} ticks, {res['persisted_ticks_per_s']:.0f}/s "
          f"(trade time of first offered tick to last insert)")
    print(f"lost       {res['lost']}    duplicated {res['duplicated']}    "
          f"(duplicate rows awaiting merge: {res['duplicate_rows_before_merge']})")
    print(f"cpu        ingest {res['ingest_cpu_us_per_tick']} us/tick ({res['ingest_cpu_s']} s), "
          f"persist {res['persist_cpu_us_per_tick']} us/tick ({res['persist_cpu_s']} s), "
          f"ClickHouse server {res['clickhouse_cpu_us_per_tick']} us/tick ({res['clickhouse_cpu_s']} s), "
          f"simulator {res['simulator_cpu_s']} s")
    print(f"peak RSS   {', '.join(f'{k} {v} MB' for k, v in res['peak_rss_mb'].items())}")
    print(f"latency    to Redis p50 {res['latency_ms_to_redis']['p50']:.1f} ms p99 {res['latency_ms_to_redis']['p99']:.1f} ms;"
          f" to ClickHouse p50 {res['latency_ms_to_clickhouse']['p50']:.1f} ms p99 {res['latency_ms_to_clickhouse']['p99']:.1f} ms")
    for v, pv in res["per_venue"].items():
        print(f"  {v:9s} offered {pv['offered']} lost {pv['lost']} cpu {pv['ingest_cpu_us_per_tick']} us/tick "
              f"redis p99 {pv['latency_ms_to_redis']['p99']:.1f} ms clickhouse p99 {pv['latency_ms_to_clickhouse']['p99']:.1f} ms")
    if a.json:
        Path(a.json).write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 0 if res["lost"] == 0 else 1
