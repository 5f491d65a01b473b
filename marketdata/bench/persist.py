"""Throughput of one persist worker.

Drain (default): pre-load ticks into streams, then time one in-process worker draining them.

    python -m marketdata.bench.persist [--ticks 1000000] [--streams 10] [--per-entry 100]

Steady rate: a `python -m marketdata.persist` process persists while this process publishes at a
fixed rate, flushing every stream every few ms like a connector; reports the worker's CPU.

    python -m marketdata.bench.persist --rate 50000 --seconds 20 [--streams 10] [--flush-ms 5]

Starts its own redis-server and local ClickHouse server in a temp dir (removed afterwards). CPU is
the worker process's; the redis-server and the ClickHouse server are separate processes.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from ..storage.clickhouse import ClickHouse, LocalClickHouse
from ..storage.migrate import migrate
from ..storage.redis import EmbeddedRedis, client
from ..stream import PERSIST_GROUP, STREAMS_SET, encode_entry, health_key, stream_key
from ..tick import Tick
from ..persist.worker import PersistWorker

BASE_US = 1_700_000_000_000_000


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _proc_cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _ticks(ex: str, sym: str, start: int, n: int) -> list[Tick]:
    return [Tick.trade(ex, sym, BASE_US + i * 1000, "65000.12", "0.00123", "buy" if i % 2 else "sell",
                       str(1_000_000 + i), BASE_US + i * 1000 + 250) for i in range(start, start + n)]


def preload(r, n_ticks: int, n_streams: int, per_entry: int) -> int:
    """XADD n_ticks ticks as entries of per_entry ticks (each with a coverage mark); returns the
    number of entries."""
    per_stream = n_ticks // n_streams
    entries = 0
    pipe = r.pipeline(transaction=False)
    for s in range(n_streams):
        ex, sym = "binance", f"S{s:03d}-USDT"
        key = stream_key(ex, sym)
        r.sadd(STREAMS_SET, key)
        for start in range(0, per_stream, per_entry):
            ticks = _ticks(ex, sym, start, min(per_entry, per_stream - start))
            pipe.xadd(key, encode_entry(ex, sym, ticks, coverage=(ticks[0].ts_us, ticks[-1].ts_us, "ws")))
            entries += 1
            if len(pipe) >= 500:
                pipe.execute()
    pipe.execute()
    return entries


def drain(args, er: EmbeddedRedis, ch: ClickHouse) -> int:
    r = client(er.url)
    t = time.perf_counter()
    n_entries = preload(r, args.ticks, args.streams, args.per_entry)
    n_ticks = (args.ticks // args.streams) * args.streams
    print(f"preloaded {n_ticks} ticks in {n_entries} entries on {args.streams} streams "
          f"in {time.perf_counter() - t:.1f}s")
    w = PersistWorker(er.url, ch.url, consumer="bench", batch_max=args.batch_max)
    redis_proc = psutil.Process(er.proc.pid)
    rc0 = _proc_cpu(redis_proc)
    c0, t0 = _cpu(), time.perf_counter()
    while w.stats["entries_acked"] < n_entries:
        w.run_once()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    redis_cpu = _proc_cpu(redis_proc) - rc0
    stored = ch.rows("SELECT count() FROM marketdata.ticks FINAL")[0][0]
    print(f"drained {w.stats['ticks_persisted']} ticks in {wall:.2f}s = {n_ticks / wall:,.0f} ticks/s; "
          f"{w.stats['batches']} batches; worker CPU {cpu:.2f}s = {cpu / n_ticks * 1e6:.2f} us/tick "
          f"({cpu / wall * 100:.0f}% of one core); redis-server CPU {redis_cpu / n_ticks * 1e6:.2f} us/tick; "
          f"rows stored (FINAL) {stored}")
    w.close()
    return 0 if stored == n_ticks else 1


def steady(args, er: EmbeddedRedis, ch: ClickHouse, d: Path) -> int:
    r = client(er.url)
    keys = []
    for s in range(args.streams):
        keys.append(stream_key("binance", f"S{s:03d}-USDT"))
        r.sadd(STREAMS_SET, keys[-1])
    env = dict(os.environ, MARKETDATA_REDIS_URL=er.url, MARKETDATA_CLICKHOUSE_URL=ch.url,
               MARKETDATA_HOME=str(d / "home"))
    log = open(d / "worker.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "marketdata.persist", "--consumer", "bench",
                          "--batch-max", str(args.batch_max), "--linger-ms", str(args.linger_ms)],
                         env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while not r.hget(health_key("persist:bench"), "heartbeat_us"):
            if p.poll() is not None:
                raise RuntimeError(f"worker exited: {(d / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.05)
        wp = psutil.Process(p.pid)
        redis_proc = psutil.Process(er.proc.pid)
        c0, rc0, t0 = _proc_cpu(wp), _proc_cpu(redis_proc), time.perf_counter()
        flush_s = args.flush_ms / 1000.0
        per_flush = args.rate * flush_s / args.streams          # ticks per stream per flush
        sent = 0
        acc = 0.0
        counters = [0] * args.streams
        next_flush = time.perf_counter()
        lags = []
        end = t0 + args.seconds
        while next_flush < end:
            acc += per_flush
            n = int(acc)
            acc -= n
            if n:
                pipe = r.pipeline(transaction=False)
                for s, key in enumerate(keys):
                    ticks = _ticks("binance", f"S{s:03d}-USDT", counters[s], n)
                    counters[s] += n
                    pipe.xadd(key, encode_entry("binance", f"S{s:03d}-USDT", ticks,
                                                coverage=(ticks[0].ts_us, ticks[-1].ts_us + 999, "ws")))
                pipe.execute()
                sent += n * args.streams
            next_flush += flush_s
            delay = next_flush - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if int(next_flush * 10) != int((next_flush - flush_s) * 10):     # ~10 samples/s
                lag = r.hget(health_key("persist:bench"), "lag_ms")
                if lag is not None:
                    lags.append(int(lag))
        publish_wall = time.perf_counter() - t0
        while True:
            done = all(
                (g := {x["name"]: x for x in r.xinfo_groups(k)}.get(PERSIST_GROUP.encode())) is not None
                and g["pending"] == 0 and g["last-delivered-id"] == r.xrevrange(k, count=1)[0][0]
                for k in keys)
            if done:
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        cpu = _proc_cpu(wp) - c0
        redis_cpu = _proc_cpu(redis_proc) - rc0
        h = {k.decode(): v.decode() for k, v in r.hgetall(health_key("persist:bench")).items()}
        print(f"published {sent} ticks in {publish_wall:.1f}s = {sent / publish_wall:,.0f} ticks/s "
              f"({args.streams} streams, flush every {args.flush_ms} ms); all persisted after {wall:.1f}s")
        print(f"worker CPU {cpu:.2f}s = {cpu / sent * 1e6:.2f} us/tick = {cpu / wall * 100:.0f}% of one core; "
              f"{h.get('batches')} batches; lag_ms p50 {sorted(lags)[len(lags) // 2] if lags else '-'} "
              f"max {max(lags) if lags else '-'}; redis-server CPU {redis_cpu / wall * 100:.0f}% of one core")
        return 0
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m marketdata.bench.persist")
    ap.add_argument("--ticks", type=int, default=1_000_000, help="drain mode: ticks to pre-load")
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--per-entry", type=int, default=100, help="drain mode: ticks per entry")
    ap.add_argument("--batch-max", type=int, default=50_000)
    ap.add_argument("--rate", type=int, default=0, help="steady mode: ticks/s to publish")
    ap.add_argument("--seconds", type=float, default=20.0, help="steady mode: how long to publish")
    ap.add_argument("--flush-ms", type=float, default=5.0, help="steady mode: connector flush interval")
    ap.add_argument("--linger-ms", type=int, default=100, help="steady mode: the worker's --linger-ms")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args(argv)

    d = Path(tempfile.mkdtemp(prefix="md-persist-bench-"))
    er = EmbeddedRedis(d / "redis", publish_url=False).start()
    chs = LocalClickHouse(d / "clickhouse", publish_url=False).start()
    try:
        ch = ClickHouse(chs.url)
        migrate(ch)
        return steady(args, er, ch, d) if args.rate else drain(args, er, ch)
    finally:
        chs.stop()
        er.stop()
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
