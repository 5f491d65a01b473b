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

from ..clock import now_us
from ..procs import default_signals, terminate
from ..simulator import sendlag
from ..storage.clickhouse import ClickHouse, LocalClickHouse
from ..storage.migrate import migrate
from ..storage.redis import EmbeddedRedis, client
from ..supervisor import DEMO_CREDENTIALS
from ..stream import STREAMS_SET, health_key, parse_stream_key

DEFAULT_SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "ADA-USDT"]


def _ms(us_pair) -> dict:
    """ClickHouse's quantiles(0.5, 0.99) in µs -> {p50, p99} in ms."""
    us_pair = list(us_pair) if us_pair else [float("nan")] * 2
    return {"p50": us_pair[0] / 1000, "p99": us_pair[1] / 1000}


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
        self.lat: dict[str, list[int]] = defaultdict(list)       # entry time - trade time
        self.lat_recv: dict[str, list[int]] = defaultdict(list)  # entry time - the connector's receive time
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
                out, out_recv = self.lat[venue], self.lat_recv[venue]
                for eid, fields in entries:
                    self.last[key] = eid.decode()
                    t = fields.get(b"t")
                    if t:
                        us = int(eid.split(b"-")[0]) * 1000
                        rows = orjson.loads(t)
                        out.extend(us - row[0] for row in rows)
                        out_recv.extend(us - row[9] for row in rows)   # stream.py: recv_us is field 9


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
              drain_timeout: float = 180.0, echo=print, idle_s: float = 20.0) -> dict:
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
        idle = measure_idle(venues, symbols, work / "idle", idle_s, seed) if idle_s > 0 else {}
        if idle:
            echo(f"bench: idle connectors (1 trade/s per venue) use {', '.join(f'{v} {p}%' for v, p in idle.items())} of a core")
        eps_file = work / "endpoints.json"
        procs["simulator"] = _proc(["simulate", "--venues", ",".join(venues), *_sim_symbols(venues, symbols),
                                    "--rate", str(rate / len(venues)), "--seed", str(seed), "--ground-truth", str(gt),
                                    "--endpoints-file", str(eps_file), "--paused", *_sim_options(venues)],
                                   env, logs / "simulator.log")
        eps = _await_endpoints(eps_file, procs["simulator"], logs / "simulator.log")
        _write_config(work / "bench.yaml", venues, symbols, eps)
        env["MARKETDATA_CONFIG"] = str(work / "bench.yaml")
        for i in range(persist_workers):
            procs[f"persist-{i}"] = _proc(["persist", "--consumer", f"bench-{i}"], env, logs / f"persist-{i}.log")
        for v in venues:
            procs[f"ingest-{v}"] = _proc(["ingest", "--venue", v], {**env, **DEMO_CREDENTIALS.get(v, ({},))[0]},
                                         logs / f"ingest-{v}.log")
        r = client(redis.url)
        _await_subscribed(r, venues, procs, logs)
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
        result = _measure(ch, truth, venues, cpu0, cpu1, probe.lat, probe.lat_recv, t_start, t_end, stats)
        result.update({"venues": venues, "symbols": symbols, "rate_offered_cfg": rate, "duration_s": duration,
                       "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                       "workdir": str(work), "peak_rss_mb": rss.mb()})
        if idle:
            result["ingest_idle_cpu_pct"] = max(idle.values())
            for v, pct in idle.items():
                result["per_venue"][v]["idle_cpu_pct"] = pct
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


def measure_idle(venues: list[str], symbols: list[str], work: Path, seconds: float, seed: int = 7,
                 warmup_s: float = 5.0) -> dict[str, float]:
    """% of one core each connector uses while subscribed to a quiet market: 1 trade/s per venue,
    measured over ``seconds`` after ``warmup_s`` (start-up work such as instrument checks done).
    Its own simulator and Redis, so nothing of the loaded run is still draining."""
    work.mkdir(parents=True, exist_ok=True)
    redis = EmbeddedRedis(work / "redis", publish_url=False).start()
    env = dict(os.environ, MARKETDATA_HOME=str(work), MARKETDATA_REDIS_URL=redis.url,
               MARKETDATA_CLICKHOUSE_URL="http://127.0.0.1:9", PYTHONUNBUFFERED="1")
    procs: dict[str, subprocess.Popen] = {}
    try:
        eps_file = work / "endpoints.json"
        procs["simulator"] = _proc(["simulate", "--venues", ",".join(venues), *_sim_symbols(venues, symbols),
                                    "--rate", "1", "--seed", str(seed), "--endpoints-file", str(eps_file),
                                    *_sim_options(venues)], env, work / "simulator.log")
        eps = _await_endpoints(eps_file, procs["simulator"], work / "simulator.log")
        _write_config(work / "idle.yaml", venues, symbols, eps)
        env["MARKETDATA_CONFIG"] = str(work / "idle.yaml")
        for v in venues:
            procs[f"ingest-{v}"] = _proc(["ingest", "--venue", v], {**env, **DEMO_CREDENTIALS.get(v, ({},))[0]},
                                         work / f"ingest-{v}.log")
        r = client(redis.url)
        _await_subscribed(r, venues, procs, work)
        r.close()
        time.sleep(warmup_s)
        cpu0 = {v: _cpu(procs[f"ingest-{v}"]) for v in venues}
        t0 = time.monotonic()
        time.sleep(seconds)
        span = time.monotonic() - t0
        return {v: round((_cpu(procs[f"ingest-{v}"]) - cpu0[v]) / span * 100, 2) for v in venues}
    finally:
        for p in procs.values():
            terminate(p)
        redis.stop()


def _await_endpoints(eps_file: Path, sim: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + 30
    while not eps_file.exists():
        if time.monotonic() > deadline or sim.poll() is not None:
            raise RuntimeError(f"simulator did not start; see {log}")
        time.sleep(0.05)
    time.sleep(0.05)
    return orjson.loads(eps_file.read_bytes())


def _write_config(path: Path, venues: list[str], symbols: list[str], eps: dict) -> None:
    cfg = {"venues": {v: {"symbols": _venue_symbols(v, symbols), "ws_url": eps[v]["ws"],
                          "rest_url": eps[v]["rest"]} for v in venues}}
    path.write_text(yaml.safe_dump(cfg))


def _await_subscribed(r, venues: list[str], procs: dict[str, subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + 60
    while not all(int(r.hget(health_key(v), "connections") or 0) >= 1 for v in venues):
        for name, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}; see {logs}/{name}.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"connectors did not connect; see {logs}")
        time.sleep(0.1)


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
             redis_lat: dict[str, list[int]], redis_lat_recv: dict[str, list[int]],
             t_start: int, t_end: int, stats: dict) -> dict:
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
        lat_cols = ("quantiles(0.5, 0.99)(toUnixTimestamp64Micro(inserted_at) - ts_us), "
                    "quantiles(0.5, 0.99)(toUnixTimestamp64Micro(inserted_at) - recv_us), "
                    "max(toUnixTimestamp64Micro(inserted_at))")
        ch_lat = {r[0]: r[1:] for r in c.query(
            f"SELECT exchange, {lat_cols} FROM marketdata.ticks WHERE source = 'ws' GROUP BY exchange").result_rows}
        ch_all = c.query(f"SELECT {lat_cols} FROM marketdata.ticks WHERE source = 'ws'").result_rows[0]
        last_insert_us = c.query("SELECT max(toUnixTimestamp64Micro(inserted_at)) FROM marketdata.ticks").result_rows[0][0]
    # A trade counts as offered to the pipeline from the first trade each connector saw on.
    offered = {k for k in truth if (k[0], k[1]) in first_ids and k[2].isdigit()
               and int(k[2]) >= first_ids[(k[0], k[1])]}
    lost = offered - stored
    unexpected = stored - set(truth)
    # The rate over the offered trades' own time span: the resume and pause calls to a loaded
    # simulator take seconds, so the wall time between them overstates the span.
    ts = [truth[k][0] for k in offered]
    dur = (max(ts) - min(ts)) / 1e6 if len(ts) > 1 else (t_end - t_start) / 1e6
    per_venue = {}
    ingest_cpu_total = 0.0
    for v in venues:
        off_v = [k for k in offered if k[0] == v]
        cpu = cpu1.get(f"ingest-{v}", 0) - cpu0.get(f"ingest-{v}", 0)
        ingest_cpu_total += cpu
        p50r, p99r = _quantiles(list(redis_lat.get(v, [])))
        nan2 = [float("nan")] * 2
        lat = ch_lat.get(v, (nan2, nan2, 0))
        per_venue[v] = {"offered": len(off_v), "lost": sum(1 for k in lost if k[0] == v),
                        "ingest_cpu_s": round(cpu, 3),
                        "ingest_cpu_us_per_tick": round(cpu / max(1, len(off_v)) * 1e6, 2),
                        "latency_ms_to_redis": {"p50": p50r, "p99": p99r},
                        "latency_ms_to_clickhouse": _ms(lat[0]),
                        "latency_ms_recv_to_redis": dict(zip(("p50", "p99"), _quantiles(list(redis_lat_recv.get(v, []))))),
                        "latency_ms_recv_to_clickhouse": _ms(lat[1]),
                        "simulator_lag_ms": dict(zip(("p50", "p99"), sendlag.quantiles_ms(
                            sendlag.merge([stats.get(v, {}).get("send_lag_hist")]))))}
    persist_cpu = sum(cpu1[n] - cpu0.get(n, 0) for n in cpu1 if n.startswith("persist"))
    clickhouse_cpu = cpu1.get("clickhouse", 0) - cpu0.get("clickhouse", 0)
    sim_cpu = cpu1.get("simulator", 0) - cpu0.get("simulator", 0)
    all_redis = [x for v in redis_lat.values() for x in v]
    p50r, p99r = _quantiles(all_redis)
    all_redis_recv = [x for v in redis_lat_recv.values() for x in v]
    persist_span = max(1e-6, (last_insert_us - t_start) / 1e6) if last_insert_us else float("nan")
    return {
        "offered_ticks": len(offered),
        "offered_ticks_per_s": round(len(offered) / dur, 1),
        "offered_span_s": round(dur, 1),
        "simulator_rate_deficit": sum(int(st.get("rate_deficit", 0)) for st in stats.values()),
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
        "latency_ms_to_clickhouse": _ms(ch_all[0]),
        "latency_ms_recv_to_redis": dict(zip(("p50", "p99"), _quantiles(all_redis_recv))),
        "latency_ms_recv_to_clickhouse": _ms(ch_all[1]),
        "simulator_lag_ms": dict(zip(("p50", "p99"), sendlag.quantiles_ms(
            sendlag.merge([st.get("send_lag_hist") for st in stats.values()])))),
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
    ap.add_argument("--idle-seconds", type=float, default=20, help="measure each connector's CPU in a quiet market "
                    "(1 trade/s per venue) for this long before the loaded run; 0 skips (default 20)")
    ap.add_argument("--json", default=None, help="also write the result as one JSON object to this file")
    a = ap.parse_args(argv)
    res = run_bench([v.strip() for v in a.venues.split(",") if v.strip()], a.rate, a.duration,
                    a.symbols_per_venue, a.persist_workers, Path(a.workdir) if a.workdir else None, a.seed,
                    idle_s=a.idle_seconds)
    print(f"offered    {res['offered_ticks']} ticks, {res['offered_ticks_per_s']:.0f}/s over {res['offered_span_s']} s "
          f"of trade time (the simulator fell {res['simulator_rate_deficit']} trades short of the asked rate)")
    print(f"persisted  {res['persisted_ticks']} ticks, {res['persisted_ticks_per_s']:.0f}/s "
          f"(trade time of first offered tick to last insert)")
    print(f"lost       {res['lost']}    duplicated {res['duplicated']}    "
          f"(duplicate rows awaiting merge: {res['duplicate_rows_before_merge']})")
    print(f"cpu        ingest {res['ingest_cpu_us_per_tick']} us/tick ({res['ingest_cpu_s']} s), "
          f"persist {res['persist_cpu_us_per_tick']} us/tick ({res['persist_cpu_s']} s), "
          f"ClickHouse server {res['clickhouse_cpu_us_per_tick']} us/tick ({res['clickhouse_cpu_s']} s), "
          f"simulator {res['simulator_cpu_s']} s")
    print(f"peak RSS   {', '.join(f'{k} {v} MB' for k, v in res['peak_rss_mb'].items())}")
    def pq(d: dict) -> str:
        return f"p50 {d['p50']:.1f} ms p99 {d['p99']:.1f} ms"
    print(f"latency    trade time to Redis {pq(res['latency_ms_to_redis'])}; to ClickHouse {pq(res['latency_ms_to_clickhouse'])}")
    print(f"           receive to Redis {pq(res['latency_ms_recv_to_redis'])}; to ClickHouse {pq(res['latency_ms_recv_to_clickhouse'])}")
    print(f"           simulator send lag {pq(res['simulator_lag_ms'])} (trade time to the simulator's write)")
    if "ingest_idle_cpu_pct" in res:
        print(f"idle       a subscribed connector at 1 trade/s: up to {res['ingest_idle_cpu_pct']} % of a core")
    for v, pv in res["per_venue"].items():
        print(f"  {v:9s} offered {pv['offered']} lost {pv['lost']} cpu {pv['ingest_cpu_us_per_tick']} us/tick "
              f"redis p99 {pv['latency_ms_to_redis']['p99']:.1f} ms clickhouse p99 {pv['latency_ms_to_clickhouse']['p99']:.1f} ms "
              f"recv->redis p99 {pv['latency_ms_recv_to_redis']['p99']:.1f} ms sim lag p99 {pv['simulator_lag_ms']['p99']:.1f} ms"
              + (f" idle {pv['idle_cpu_pct']} %" if "idle_cpu_pct" in pv else ""))
    if a.json:
        Path(a.json).write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 0 if res["lost"] == 0 else 1
