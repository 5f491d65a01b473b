"""The persist worker against a real redis-server and the real ClickHouse engine (the local server,
over HTTP).

Every wait polls Redis or ClickHouse for the condition with a deadline; every process started
here is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from marketdata.gap import Gap
from marketdata.persist import DEADLETTER_STREAM, PersistWorker
from marketdata.persist import rows as R
from marketdata.procs import default_signals
from marketdata.storage.clickhouse import LocalClickHouse
from marketdata.storage.redis import client
from marketdata.stream import PERSIST_GROUP, STREAMS_SET, encode_entry, health_key, stream_key
from marketdata.tick import Tick

from .harness import fresh_store, wait_for

BASE_US = 1_700_000_000_000_000
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture
def ch(clickhouse):
    return clickhouse


@pytest.fixture
def r(redis_server):
    c = client(redis_server.url)
    yield c
    c.close()


def trades(exchange: str, symbol: str, start: int, n: int, price: str = "100.5") -> list[Tick]:
    return [Tick.trade(exchange, symbol, BASE_US + i * 1000, price, f"0.{i + 1:04d}",
                       "buy" if i % 2 else "sell", str(i), BASE_US + i * 1000 + 250)
            for i in range(start, start + n)]


def publish(r, exchange: str, symbol: str, ticks=(), coverage=None, gaps=()) -> bytes:
    key = stream_key(exchange, symbol)
    r.sadd(STREAMS_SET, key)
    return r.xadd(key, encode_entry(exchange, symbol, ticks, coverage=coverage, gaps=gaps))


def group_idle(r, keys) -> bool:
    """Everything in these streams delivered to the persist group and acknowledged."""
    for k in keys:
        groups = {g["name"]: g for g in r.xinfo_groups(k)}
        g = groups.get(PERSIST_GROUP.encode())
        if g is None or g["pending"] != 0:
            return False
        last = r.xrevrange(k, count=1)
        if last and g["last-delivered-id"] != last[0][0]:
            return False
    return True


def health(r, consumer: str) -> dict:
    return {k.decode(): v.decode() for k, v in r.hgetall(health_key(f"persist:{consumer}")).items()}


@contextlib.contextmanager
def running(worker: PersistWorker):
    stop = threading.Event()
    errors: list[BaseException] = []

    def target():
        try:
            worker.run(stop)
        except BaseException as e:     # surfaced in the test thread
            errors.append(e)

    t = threading.Thread(target=target, name=f"persist-{worker.consumer}", daemon=True)
    t.start()
    try:
        yield worker
    finally:
        stop.set()
        t.join(timeout=30)
        worker.close()
        assert not t.is_alive(), "worker thread did not stop"
        assert not errors, errors


def make_worker(redis_server, ch, consumer: str, **kw) -> PersistWorker:
    kw.setdefault("linger_ms", 20)
    kw.setdefault("block_ms", 50)
    return PersistWorker(redis_server.url, ch.url, consumer=consumer, **kw)


def spawn_worker(redis_server, ch, tmp_path: Path, consumer: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, MARKETDATA_REDIS_URL=redis_server.url, MARKETDATA_CLICKHOUSE_URL=ch.url,
               MARKETDATA_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    log = open(tmp_path / f"worker-{consumer}.log", "wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "marketdata.persist", "--consumer", consumer,
                                 "--block-ms", "50", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=default_signals)
    finally:
        log.close()


def stop_process(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def final_ticks(ch, exchange: str) -> list[tuple]:
    return ch.rows("SELECT symbol, trade_id, ts_us, open, high, low, close, volume, trade_count, side, "
                   "recv_us, source, event, version FROM marketdata.ticks FINAL "
                   "WHERE exchange = {e:String} ORDER BY symbol, toUInt64(trade_id)", {"e": exchange})


def as_row(t: Tick, version: int = 0) -> tuple:
    return (t.symbol, t.trade_id, t.ts_us, Decimal(t.open), Decimal(t.high), Decimal(t.low),
            Decimal(t.close), Decimal(t.volume), t.trade_count, t.side, t.recv_us, t.source, t.event, version)


# ------------------------------------------------------------------ tests

def test_layout_learned_from_the_one_format_definition(monkeypatch):
    assert R.FAST_PATH, "the fast path could not learn the entry layout from encode_entry"
    assert sorted(R.ROW_ORDER) == sorted(R.TICK_FIELDS)
    ticks = trades("binance", "BTC-USDT", 0, 3)
    fields = encode_entry("binance", "BTC-USDT", ticks, coverage=(1, 2, "ws"))
    fast = R.parse_entry(b"k", b"1-0", fields)
    monkeypatch.setattr(R, "FAST_PATH", False)
    slow = R.parse_entry(b"k", b"1-0", fields)
    assert orjson.loads(fast.line) == orjson.loads(slow.line) == ["binance", "BTC-USDT",
                                                                  [[getattr(t, f) for f in R.ROW_ORDER] for t in ticks]]
    assert (fast.n_ticks, fast.coverage) == (slow.n_ticks, slow.coverage) == (3, slow.coverage)


def test_ticks_coverage_and_gaps_are_stored_as_published(r, redis_server, ch):
    btc = trades("binance", "BTC-USDT", 0, 300)
    # Three contiguous marks and one after a hole: two coverage rows after merging.
    publish(r, "binance", "BTC-USDT", btc[:100], coverage=(BASE_US, BASE_US + 99_999, "ws"))
    publish(r, "binance", "BTC-USDT", btc[100:200], coverage=(BASE_US + 100_000, BASE_US + 199_999, "ws"))
    gap = Gap("binance", "BTC-USDT", "g-1", BASE_US + 200_000, BASE_US + 250_000, "200", "249",
              found_by="id_jump", detected_us=BASE_US + 260_000, updated_us=BASE_US + 260_000)
    publish(r, "binance", "BTC-USDT", btc[200:], coverage=(BASE_US + 150_000, BASE_US + 209_999, "ws"),
            gaps=[gap])
    publish(r, "binance", "BTC-USDT", coverage=(BASE_US + 400_000, BASE_US + 500_000, "ws"))
    repaired = Gap(**{**gap.as_dict(), "status": "repaired", "repaired_by": "rest_by_id", "recovered": 50,
                      "updated_us": BASE_US + 300_000})
    publish(r, "binance", "BTC-USDT", gaps=[repaired])
    # Equities: a trade corrected and a trade cancelled (Alpaca).
    aapl = trades("alpaca", "AAPL-USD", 0, 5, price="190.25")
    corrected = Tick.trade("alpaca", "AAPL-USD", aapl[2].ts_us, "190.30", aapl[2].volume, aapl[2].side, "2",
                           BASE_US + 900_000, event="correct")
    cancel = Tick.trade("alpaca", "AAPL-USD", aapl[3].ts_us, aapl[3].open, aapl[3].volume, aapl[3].side, "3",
                        BASE_US + 900_001, event="cancel")
    publish(r, "alpaca", "AAPL-USD", aapl, coverage=(BASE_US, BASE_US + 4_999, "ws"))
    publish(r, "alpaca", "AAPL-USD", [corrected, cancel])
    keys = [stream_key("binance", "BTC-USDT"), stream_key("alpaca", "AAPL-USD")]

    w = make_worker(redis_server, ch, "w1")
    with running(w):
        wait_for(lambda: group_idle(r, keys) and w.stats["entries_acked"] == 7, what="all entries acked")
        wait_for(lambda: health(r, "w1").get("ticks_persisted") == str(307), what="health published")

    assert final_ticks(ch, "binance") == [as_row(t) for t in btc]
    assert final_ticks(ch, "alpaca") == [as_row(aapl[0]), as_row(aapl[1]), as_row(corrected, corrected.recv_us),
                                         as_row(aapl[4])]
    deleted = ch.rows("SELECT trade_id, version, is_deleted FROM marketdata.ticks "
                      "WHERE exchange = 'alpaca' AND event = 'cancel'")
    assert deleted == [("3", cancel.recv_us, 1)]
    assert ch.rows("SELECT exchange, symbol, from_us, to_us, source FROM marketdata.coverage "
                   "ORDER BY exchange, from_us") == [
        ("alpaca", "AAPL-USD", BASE_US, BASE_US + 4_999, "ws"),
        ("binance", "BTC-USDT", BASE_US, BASE_US + 209_999, "ws"),
        ("binance", "BTC-USDT", BASE_US + 400_000, BASE_US + 500_000, "ws"),
    ]
    gaps = ch.rows("SELECT gap_id, from_us, to_us, from_id, to_id, found_by, status, repaired_by, recovered, "
                   "detected_us, updated_us FROM marketdata.gaps FINAL")
    assert gaps == [("g-1", gap.from_us, gap.to_us, "200", "249", "id_jump", "repaired", "rest_by_id", 50,
                     gap.detected_us, BASE_US + 300_000)]
    for k in keys:
        assert r.xpending(k, PERSIST_GROUP)["pending"] == 0
    h = health(r, "w1")
    assert h["phase"] == "stopped" and h["entries_acked"] == "7" and h["deadletters"] == "0"
    for f in ("heartbeat_us", "batches", "last_batch_ticks", "last_insert_ms", "pending", "lag_ms"):
        assert f in h


def test_duplicates_and_redelivered_batches_store_one_row_per_trade(r, redis_server, ch):
    ticks = trades("kraken", "BTC-USD", 0, 200)
    publish(r, "kraken", "BTC-USD", ticks[:120])
    publish(r, "kraken", "BTC-USD", ticks[:120])            # replayed entry
    publish(r, "kraken", "BTC-USD", ticks[80:])             # overlap (re-fetched from REST)
    key = stream_key("kraken", "BTC-USD")

    # 1. The deduplication token: the same batch inserted twice is stored once. Merges are
    #    stopped in this session so that only the token can have prevented the second copy.
    w = make_worker(redis_server, ch, "tok")
    with ch.session() as c:
        c.command("SYSTEM STOP MERGES marketdata.ticks")
        try:
            batch = w._read()
            assert len(batch.parsed) == 3
            w._insert(batch.parsed, [])
            w._insert(batch.parsed, [])                     # identical retry
            raw = c.query("SELECT count() FROM marketdata.ticks").result_rows[0][0]
            # (Duplicates inside one insert already collapse: optimize_on_insert.)
            assert raw == 200
            # Control: the same rows under another token are stored again.
            token = R.ids_token
            try:
                R.ids_token = lambda kind, entries, payload=b"": "control-token"
                w._insert(batch.parsed, [])
            finally:
                R.ids_token = token
            assert c.query("SELECT count() FROM marketdata.ticks").result_rows[0][0] == 2 * raw
        finally:
            c.command("SYSTEM START MERGES marketdata.ticks")
    assert ch.rows("SELECT count(), uniqExact(trade_id) FROM marketdata.ticks FINAL "
                   "WHERE exchange = 'kraken'") == [(200, 200)]
    w.close()

    # 2. A worker dies after its insert and before its ack: the entries are re-delivered (claimed
    #    by another consumer) and inserted again -- still one row per trade.
    class Crash(BaseException):
        pass

    def crash(*_):
        raise Crash()

    a = make_worker(redis_server, ch, "a")
    assert a._ack is not None
    a._ack = crash
    with pytest.raises(Crash):
        # The "tok" consumer's entries above are still pending; claim them like a new worker would.
        a.claim_idle_ms = 1
        a.run_once()
    assert r.xpending(key, PERSIST_GROUP)["pending"] == 3
    a.close()
    b = make_worker(redis_server, ch, "b", claim_idle_ms=100)
    with running(b):
        wait_for(lambda: group_idle(r, [key]), what="redelivered entries acked")
    assert final_ticks(ch, "kraken") == [as_row(t) for t in ticks]


def test_kill_9_mid_batch_loses_and_duplicates_nothing(r, redis_server, ch, tmp_path):
    n_streams, per_stream, per_entry = 4, 40_000, 200
    keys = []
    pipe = r.pipeline(transaction=False)
    for s in range(n_streams):
        sym = f"K{s}-USDT"
        key = stream_key("bybit", sym)
        keys.append(key)
        r.sadd(STREAMS_SET, key)
        for start in range(0, per_stream, per_entry):
            ticks = trades("bybit", sym, start, per_entry)
            pipe.xadd(key, encode_entry("bybit", sym, ticks,
                                        coverage=(ticks[0].ts_us, ticks[-1].ts_us + 999, "ws")))
        pipe.execute()
    total = n_streams * per_stream

    a = spawn_worker(redis_server, ch, tmp_path, "A", "--batch-max", "20000", "--claim-idle-ms", "60000")
    try:
        def mid_batch():
            h = health(r, "A")
            return h.get("phase") == "inserting" and int(h.get("batches", "0")) >= 1
        wait_for(mid_batch, timeout=30, what="worker A inserting its second batch or later", interval=0.005)
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=10)
    finally:
        stop_process(a)
    pending = sum(r.xpending(k, PERSIST_GROUP)["pending"] for k in keys)
    assert pending > 0, "worker A was killed holding no batch"
    assert not group_idle(r, keys)

    b = make_worker(redis_server, ch, "B", claim_idle_ms=300, batch_max=50_000)
    with running(b):
        wait_for(lambda: group_idle(r, keys), timeout=40, what="everything acked after the kill")
        # The dead consumer owns nothing any more and is removed from the group.
        wait_for(lambda: all(b"A" not in {c["name"] for c in r.xinfo_consumers(k, PERSIST_GROUP)} for k in keys),
                 what="dead consumer A removed")
    assert b.stats["claimed"] > 0
    assert ch.rows("SELECT count(), uniqExact(symbol, trade_id) FROM marketdata.ticks FINAL "
                   "WHERE exchange = 'bybit'") == [(total, total)]
    assert ch.rows("SELECT count() FROM marketdata.ticks FINAL WHERE exchange = 'bybit' AND "
                   "(open != 100.5 OR trade_count != 1)") == [(0,)]
    # Coverage: per symbol, the marks stored cover the whole tape without a hole.
    for s in range(n_streams):
        spans = ch.rows("SELECT from_us, to_us FROM marketdata.coverage WHERE exchange = 'bybit' AND symbol = "
                        "{s:String} ORDER BY from_us", {"s": f"K{s}-USDT"})
        end = BASE_US - 1
        for f, t in spans:
            assert f <= end + 1, f"coverage hole before {f}"
            end = max(end, t)
        assert end == BASE_US + (per_stream - 1) * 1000 + 999
    assert sum(r.xpending(k, PERSIST_GROUP)["pending"] for k in keys) == 0


def test_streams_are_trimmed_only_behind_every_group(r, redis_server, ch):
    key = stream_key("okx", "ETH-USDT")
    for i in range(50):
        publish(r, "okx", "ETH-USDT", trades("okx", "ETH-USDT", i * 2, 2))
    w = make_worker(redis_server, ch, "t", trim_interval_s=0.1)
    with running(w):
        wait_for(lambda: group_idle(r, [key]), what="first entries acked")
        wait_for(lambda: r.xlen(key) == 0, what="acknowledged entries trimmed")

        # A second group that has read nothing holds everything after it was created.
        r.xgroup_create(key, "audit", id="$")
        ids = [publish(r, "okx", "ETH-USDT", trades("okx", "ETH-USDT", 100 + i * 2, 2)) for i in range(30)]
        wait_for(lambda: group_idle(r, [key]), what="new entries acked by persist")
        runs = w.stats["trim_runs"]
        wait_for(lambda: w.stats["trim_runs"] >= runs + 3, what="three more trim passes")
        assert r.xlen(key) == 30

        # The audit group reads 10 and acknowledges 5: only the 5 acknowledged ones may go.
        got = r.xreadgroup("audit", "auditor", {key: ">"}, count=10)[0][1]
        r.xack(key, "audit", *[i for i, _ in got[:5]])
        wait_for(lambda: r.xlen(key) == 25, what="trim up to the audit group's oldest pending entry")
        assert r.xrange(key, count=1)[0][0] == ids[5]
        runs = w.stats["trim_runs"]
        wait_for(lambda: w.stats["trim_runs"] >= runs + 3, what="three more trim passes")
        assert r.xlen(key) == 25
    assert ch.rows("SELECT count() FROM marketdata.ticks FINAL WHERE exchange = 'okx'") == [(160,)]


def test_undecodable_entries_go_to_the_dead_letter_stream(r, redis_server, ch):
    key = stream_key("gateio", "BTC-USDT")
    r.sadd(STREAMS_SET, key)
    good = trades("gateio", "BTC-USDT", 0, 40)
    bad_row = encode_entry("gateio", "BTC-USDT", good[:1])
    bad_row[b"t"] = b'[[1,"2"]]'                                       # a row too short
    bad_price = encode_entry("gateio", "BTC-USDT", [Tick.trade("gateio", "BTC-USDT", BASE_US, "abc", "1",
                                                               "buy", "x1", BASE_US)])
    corrupt = [
        {b"v": b"99", b"x": b"gateio", b"s": b"BTC-USDT", b"t": b"[]"},  # unknown version
        {b"v": b"1", b"x": b"gateio", b"s": b"BTC-USDT", b"t": b"[[1,2"},  # truncated JSON
        {b"v": b"1", b"x": b"gateio", b"s": b"BTC-USDT", b"t": b'[[1,"2",]]'},  # invalid JSON
        {b"v": b"1", b"x": b"gateio", b"c": b"[1,2,\"ws\"]"},             # no symbol
        bad_row,
        bad_price,                                                       # refused by ClickHouse
    ]
    bad_ids = []
    for i in range(10):
        r.xadd(key, encode_entry("gateio", "BTC-USDT", good[i * 4:(i + 1) * 4]))
        if i < len(corrupt):
            bad_ids.append(r.xadd(key, corrupt[i]))
    w = make_worker(redis_server, ch, "d")
    with running(w):
        wait_for(lambda: group_idle(r, [key]), what="all entries acked")
        wait_for(lambda: health(r, "d").get("deadletters") == str(len(corrupt)), what="deadletters in health")
    assert final_ticks(ch, "gateio") == [as_row(t) for t in good]
    dl = r.xrange(DEADLETTER_STREAM)
    assert sorted(f[b"origin_id"] for _, f in dl) == sorted(bad_ids)
    for _, f in dl:
        assert f[b"origin_stream"] == key.encode() and f[b"error"] and f[b"consumer"] == b"d"
        original = corrupt[bad_ids.index(f[b"origin_id"])]
        assert {k[2:]: v for k, v in f.items() if k.startswith(b"e:")} == original
    assert r.xpending(key, PERSIST_GROUP)["pending"] == 0


def test_clickhouse_down_is_waited_out_and_sigterm_exits_cleanly(r, redis_server, tmp_path):
    """ClickHouse stopped: the worker holds its batch (nothing acked, nothing dropped) and keeps its
    heartbeat; ClickHouse back on the same port and data dir: everything goes in once. SIGTERM
    while ClickHouse is down exits 0 at once and leaves the batch pending for another worker."""
    server = LocalClickHouse(tmp_path / "ch", publish_url=False).start()
    try:
        ch = fresh_store(server.url)
        key = stream_key("coinbase", "BTC-USD")
        r.sadd(STREAMS_SET, key)
        p = spawn_worker(redis_server, ch, tmp_path, "busy", "--claim-idle-ms", "600")
        try:
            wait_for(lambda: health(r, "busy").get("heartbeat_us"), timeout=30, what="worker up")
            ticks = trades("coinbase", "BTC-USD", 0, 500)
            server.stop()
            for i in range(5):
                publish(r, "coinbase", "BTC-USD", ticks[i * 100:(i + 1) * 100],
                        coverage=(ticks[i * 100].ts_us, ticks[i * 100 + 99].ts_us, "ws"))
            wait_for(lambda: int(health(r, "busy").get("errors", "0")) >= 2, what="worker meeting the outage")
            # Down well past claim_idle_ms: the waiting worker keeps its entries.
            in_hand = r.xpending(key, PERSIST_GROUP)["pending"]
            assert in_hand >= 1 and health(r, "busy")["pending"] == str(in_hand)
            beat = health(r, "busy")["heartbeat_us"]
            wait_for(lambda: health(r, "busy")["heartbeat_us"] != beat, what="heartbeat while waiting")
            errors = int(health(r, "busy")["errors"])
            wait_for(lambda: int(health(r, "busy")["errors"]) >= errors + 2, what="two more retries")
            assert r.xpending(key, PERSIST_GROUP)["pending"] == in_hand
            server.start()
            wait_for(lambda: group_idle(r, [key]), timeout=30, what="persisted after ClickHouse came back")
            assert final_ticks(ch, "coinbase") == [as_row(t) for t in ticks]
            assert ch.rows("SELECT count() FROM marketdata.ticks") == [(500,)]

            # SIGTERM while ClickHouse is down: exits 0 at once, the batch stays pending.
            server.stop()
            errors = int(health(r, "busy")["errors"])
            publish(r, "coinbase", "BTC-USD", trades("coinbase", "BTC-USD", 500, 10))
            wait_for(lambda: int(health(r, "busy")["errors"]) > errors, what="worker waiting again")
            os.kill(p.pid, signal.SIGTERM)
            assert p.wait(timeout=15) == 0
            assert r.xpending(key, PERSIST_GROUP)["pending"] == 1
            assert health(r, "busy")["phase"] == "stopped"
        finally:
            stop_process(p)

        # A new worker (another consumer) picks the abandoned entry up.
        server.start()
        w = make_worker(redis_server, ch, "after", claim_idle_ms=200)
        with running(w):
            wait_for(lambda: group_idle(r, [key]), what="abandoned entry claimed and persisted")
        assert ch.rows("SELECT count() FROM marketdata.ticks FINAL WHERE exchange = 'coinbase'") == [(510,)]
        ch.close()
    finally:
        server.stop()


def test_redis_restart_is_waited_out(r, redis_server, ch):
    key = stream_key("bitstamp", "BTC-USD")
    publish(r, "bitstamp", "BTC-USD", trades("bitstamp", "BTC-USD", 0, 10))
    w = make_worker(redis_server, ch, "rr")
    with running(w):
        wait_for(lambda: group_idle(r, [key]), what="first entry acked")
        redis_server.stop()                      # same port and data dir (AOF) when it comes back
        wait_for(lambda: w.stats["errors"] > 0, what="worker meeting the outage")
        redis_server.start()
        publish(r, "bitstamp", "BTC-USD", trades("bitstamp", "BTC-USD", 10, 10))
        wait_for(lambda: group_idle(r, [key]), timeout=30, what="entry after the restart acked")
    assert w.stats["errors"] > 0
    assert ch.rows("SELECT count() FROM marketdata.ticks FINAL WHERE exchange = 'bitstamp'") == [(20,)]


def test_two_workers_coverage_never_runs_ahead_of_ticks(r, redis_server, ch):
    """Two consumers share the streams; whenever we look, each stored coverage interval holds
    every published trade of its span (one trade per ms here)."""
    symbols = ["A-USDT", "B-USDT", "C-USDT"]
    keys = [stream_key("bitfinex", s) for s in symbols]
    per_entry, n_entries = 50, 30

    def violations() -> list:
        return ch.rows(
            "SELECT c.symbol, c.from_us, c.to_us, c.expected, "
            "  (SELECT count() FROM marketdata.ticks FINAL WHERE exchange = 'bitfinex') AS _all, "
            "  countIf(t.ts_us BETWEEN c.from_us AND c.to_us) AS stored "
            "FROM (SELECT symbol, from_us, to_us, intDiv(to_us - from_us + 1, 1000) AS expected "
            "      FROM marketdata.coverage WHERE exchange = 'bitfinex') AS c "
            "LEFT JOIN (SELECT symbol, ts_us FROM marketdata.ticks FINAL WHERE exchange = 'bitfinex') AS t "
            "  ON t.symbol = c.symbol "
            "GROUP BY c.symbol, c.from_us, c.to_us, c.expected "
            "HAVING stored != c.expected")

    w1 = make_worker(redis_server, ch, "c1", claim_idle_ms=5000, batch_max=500)
    w2 = make_worker(redis_server, ch, "c2", claim_idle_ms=5000, batch_max=500)
    # c1 is slow: it holds each batch a while before inserting, so c2 overtakes it with newer
    # entries of the same streams -- whose marks must then wait for c1's ticks.
    real_insert = w1._insert

    def slow_insert(parsed, allowed_cov):
        time.sleep(0.05)
        real_insert(parsed, allowed_cov)

    w1._insert = slow_insert
    checks = 0
    with running(w1), running(w2):
        # Both read every stream before the first entry (a worker finds new streams once a second;
        # the other could otherwise take them all first).
        r.sadd(STREAMS_SET, *keys)
        wait_for(lambda: all({k.encode() for k in keys} <= set(w._streams) for w in (w1, w2)),
                 what="both workers reading the three streams")
        for i in range(n_entries):
            pipe = r.pipeline(transaction=False)
            for s, key in zip(symbols, keys):
                r.sadd(STREAMS_SET, key)
                pipe.xadd(key, encode_entry("bitfinex", s, trades("bitfinex", s, i * per_entry, per_entry)))
                if i % 3 == 2:
                    # A mark of its own, vouching for the ticks of the last three entries.
                    pipe.xadd(key, encode_entry("bitfinex", s, coverage=(
                        BASE_US + (i - 2) * per_entry * 1000, BASE_US + (i + 1) * per_entry * 1000 - 1, "ws")))
            pipe.execute()
            if i % 3 == 2:
                assert violations() == []
                checks += 1
        wait_for(lambda: group_idle(r, keys), timeout=30, what="both workers done")
    assert checks == n_entries // 3
    assert w2.stats["deferred"] >= 0 and (w1.stats["batches"] and w2.stats["batches"])
    assert violations() == []
    assert w1.stats["entries_acked"] > 0 and w2.stats["entries_acked"] > 0
    total = len(symbols) * per_entry * n_entries
    assert ch.rows("SELECT count() FROM marketdata.ticks FINAL WHERE exchange = 'bitfinex'") == [(total,)]
    for s in symbols:
        spans = ch.rows("SELECT from_us, to_us FROM marketdata.coverage WHERE exchange = 'bitfinex' AND "
                        "symbol = {s:String} ORDER BY from_us", {"s": s})
        end = BASE_US - 1
        for f, t in spans:
            assert f <= end + 1
            end = max(end, t)
        assert end == BASE_US + (per_entry * n_entries - 1) * 1000 + 999


def test_coverage_mark_waits_for_older_entries_pending_elsewhere(r, redis_server, ch):
    key = stream_key("bitfinex", "ETH-USD")
    ticks = trades("bitfinex", "ETH-USD", 0, 100)
    publish(r, "bitfinex", "ETH-USD", ticks[:50])
    publish(r, "bitfinex", "ETH-USD", ticks[50:])
    w1 = make_worker(redis_server, ch, "slow", claim_idle_ms=60_000)
    w2 = make_worker(redis_server, ch, "fast", claim_idle_ms=60_000)
    held = w1._read()                        # w1 is mid-batch with the ticks
    assert len(held.parsed) == 2
    mark = publish(r, "bitfinex", "ETH-USD", coverage=(BASE_US, BASE_US + 99_999, "ws"))
    w2.run_once()                            # w2 gets the mark, which vouches for w1's ticks
    assert ch.rows("SELECT count() FROM marketdata.coverage WHERE exchange = 'bitfinex'") == [(0,)]
    assert w2.stats["deferred"] == 1
    assert [p["message_id"] for p in r.xpending_range(key, PERSIST_GROUP, "-", "+", 10, "fast")] == [mark]
    w1._process(held)                        # w1 stores its ticks and acks them
    assert r.xpending(key, PERSIST_GROUP)["pending"] == 1
    w2.run_once()                            # now the mark may go in
    assert ch.rows("SELECT from_us, to_us FROM marketdata.coverage WHERE exchange = 'bitfinex'") == [
        (BASE_US, BASE_US + 99_999)]
    assert r.xpending(key, PERSIST_GROUP)["pending"] == 0 and w2.stats["deferred"] == 0
    assert ch.rows("SELECT count() FROM marketdata.ticks FINAL WHERE exchange = 'bitfinex'") == [(100,)]
    w1.close()
    w2.close()
