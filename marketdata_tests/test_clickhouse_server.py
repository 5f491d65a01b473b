"""The local ClickHouse server (`marketdata clickhouse`): stock clickhouse-connect works against it
unchanged, errors arrive as ClickHouse sends them, settings never leak between requests, a retried
insert is stored once, a long query does not hold inserts back, a password is enforced and never
logged, and a kill -9 mid-insert loses and duplicates nothing once it is back."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import httpx
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from marketdata.procs import default_signals
from marketdata.storage.clickhouse import ClickHouse, LocalClickHouse
from marketdata.storage.redis import EmbeddedRedis, client as redis_client
from marketdata.stream import PERSIST_GROUP, STREAMS_SET, encode_entry, health_key, stream_key
from marketdata.tick import Tick

from .harness import REPO, fresh_store, wait_for

BASE_US = 1_700_000_000_000_000


def connect(url: str, **kw):
    host, port = url.removeprefix("http://").split(":")
    kw.setdefault("autogenerate_session_id", False)
    return clickhouse_connect.get_client(host=host, port=int(port), **kw)


@pytest.fixture
def scratch(clickhouse_server):
    c = connect(clickhouse_server.url)
    c.command("DROP DATABASE IF EXISTS scratch SYNC")
    c.command("CREATE DATABASE scratch")
    c.command("CREATE TABLE scratch.t (a UInt64, b String, d Decimal(38, 18), ts DateTime64(3, 'UTC')) "
              "ENGINE = MergeTree ORDER BY a SETTINGS non_replicated_deduplication_window = 100")
    yield c
    c.command("DROP DATABASE IF EXISTS scratch SYNC")
    c.close()


@pytest.mark.parametrize("compress", [False, True, "zstd", "gzip"])
def test_stock_client_round_trips_every_insert_and_read_path(clickhouse_server, scratch, compress):
    c = connect(clickhouse_server.url, compress=compress)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    s = c.insert("scratch.t", [[1, "a", Decimal("1.5"), t0], [2, "b", Decimal("2.25"), t0 + dt.timedelta(days=1)]],
                 column_names=["a", "b", "d", "ts"])                                   # Native
    assert s.written_rows == 2
    c.raw_insert("scratch.t", ["a", "b", "d", "ts"], fmt="JSONEachRow",
                 insert_block=b'{"a":3,"b":"c","d":"3.125","ts":"2026-01-03 00:00:00"}\n')
    c.insert_arrow("scratch.t", pa.table({"a": pa.array([4], pa.uint64()), "b": ["d"],
                                          "d": pa.array([Decimal("4.5")], pa.decimal128(38, 18)),
                                          "ts": pa.array([dt.datetime(2026, 1, 4)], pa.timestamp("ms"))}))
    c.command("INSERT INTO scratch.t FORMAT CSV\n5,e,5.0625,2026-01-05 00:00:00\n")  # data inside the statement
    rows = c.query("SELECT a, b, d, ts FROM scratch.t ORDER BY a").result_rows
    assert [(a, b, d) for a, b, d, _ in rows] == [(1, "a", Decimal("1.5")), (2, "b", Decimal("2.25")),
                                                   (3, "c", Decimal("3.125")), (4, "d", Decimal("4.5")),
                                                   (5, "e", Decimal("5.0625"))]
    assert [r[3].replace(tzinfo=None) for r in rows] == [dt.datetime(2026, 1, d) for d in range(1, 6)]
    assert c.query("SELECT count() FROM scratch.t WHERE b = {b:String} AND a > {a:UInt64}",
                   parameters={"b": "c", "a": 2}).result_rows == [(1,)]
    assert c.query_arrow("SELECT a, b FROM scratch.t ORDER BY a").column("b").to_pylist() == list("abcde")
    assert c.query_df("SELECT a FROM scratch.t ORDER BY a")["a"].tolist() == [1, 2, 3, 4, 5]
    assert c.command("SELECT count() FROM scratch.t", settings={"max_threads": 1}) == 5
    raw = c.raw_query("SELECT a FROM scratch.t ORDER BY a FORMAT TSV")
    assert raw == b"1\n2\n3\n4\n5\n"
    c.close()


def test_http_interface_headers_ping_and_unknown_paths(clickhouse_server):
    url = clickhouse_server.url
    assert httpx.get(url + "/ping").text == "Ok.\n"
    r = httpx.post(url + "/", params={"default_format": "JSONEachRow"}, content=b"SELECT 1 AS x")
    assert r.status_code == 200 and r.json() == {"x": 1}
    assert r.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert set(httpx.get(url + "/", params={"query": "SELECT 1"}).headers) >= {
        "x-clickhouse-summary", "x-clickhouse-query-id", "x-clickhouse-timezone", "x-clickhouse-format"}
    assert httpx.get(url + "/nope").status_code == 404


@pytest.mark.parametrize("sql, code, name, status", [
    ("SELEC 1", 62, "SYNTAX_ERROR", 400),
    ("SELECT * FROM scratch.nope", 60, "UNKNOWN_TABLE", 404),
    ("SELECT toUInt8('abc')", 6, "CANNOT_PARSE_TEXT", 400),
    ("SELECT no_such_function(1)", 46, "UNKNOWN_FUNCTION", 404),
])
def test_errors_arrive_as_clickhouse_sends_them(clickhouse_server, scratch, sql, code, name, status):
    """Status and code follow ClickHouse's own mapping (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp),
    so clickhouse-connect raises what it raises against a real server."""
    with pytest.raises(DatabaseError) as e:
        scratch.query(sql)
    assert e.value.code == code and e.value.name == name
    r = httpx.post(clickhouse_server.url + "/", content=sql.encode())
    assert r.status_code == status
    assert r.headers["X-ClickHouse-Exception-Code"] == str(code)
    assert r.text.startswith(f"Code: {code}. DB::Exception: ") and f"({name})" in r.text


def test_a_refused_insert_raises_with_its_code_and_stores_nothing(scratch):
    with pytest.raises(DatabaseError) as e:
        scratch.raw_insert("scratch.t", ["a", "b"], insert_block=b'{"a":"zz","b":1}\n', fmt="JSONEachRow")
    assert e.value.code == 27                        # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    assert scratch.command("SELECT count() FROM scratch.t") == 0


def test_settings_and_database_of_one_request_never_leak_into_another(clickhouse_server, scratch):
    default_threads = scratch.command("SELECT getSetting('max_threads')")
    for _ in range(10):      # every pooled connection serves one of these
        assert scratch.command("SELECT getSetting('max_threads')", settings={"max_threads": 1}) == 1
        assert scratch.command("SELECT getSetting('max_threads')") == default_threads
    r = httpx.get(clickhouse_server.url + "/", params={"query": "SELECT currentDatabase()", "database": "scratch"})
    assert r.text == "scratch\n"
    assert httpx.get(clickhouse_server.url + "/", params={"query": "SELECT currentDatabase()"}).text == "default\n"
    # A SET inside a session holds for that session only.
    sess = {"session_id": "s1"}
    assert httpx.post(clickhouse_server.url + "/", params=sess, content=b"SET max_threads = 1").status_code == 200
    q = {"query": "SELECT getSetting('max_threads')"}
    assert httpx.get(clickhouse_server.url + "/", params={**q, **sess}).text == "1\n"
    assert httpx.get(clickhouse_server.url + "/", params=q).text == f"{default_threads}\n"


def test_a_retried_insert_with_its_token_is_stored_once(scratch):
    """insert_deduplication_token on a non-replicated MergeTree with non_replicated_deduplication_window
    (every platform table that takes retried batches has it): the retry adds no part and no row."""
    rows = [[i, "x", Decimal(i), dt.datetime(2026, 1, 1)] for i in range(100)]
    parts = "SELECT count() FROM system.parts WHERE database = 'scratch' AND table = 't' AND active"
    for _ in range(2):
        scratch.insert("scratch.t", rows, column_names=["a", "b", "d", "ts"],
                       settings={"insert_deduplication_token": "batch-1"})
    assert scratch.command("SELECT count() FROM scratch.t") == 100
    assert scratch.command(parts) == 1
    scratch.insert("scratch.t", rows, column_names=["a", "b", "d", "ts"],
                   settings={"insert_deduplication_token": "batch-2"})
    assert scratch.command("SELECT count() FROM scratch.t") == 200
    # The persist worker's path: INSERT ... SELECT ... FROM input() with the data in the body.
    sql = ("INSERT INTO scratch.t (a, b, d, ts) SELECT x, y, 0, now() FROM input('x UInt64, y String') "
           "FORMAT JSONCompactEachRow")
    for _ in range(2):
        scratch.command(sql, data=b'[1000,"i"]\n[1001,"j"]\n', settings={"insert_deduplication_token": "batch-3"})
    assert scratch.command("SELECT count() FROM scratch.t WHERE a >= 1000") == 2


def test_inserts_do_not_wait_for_a_long_query(scratch):
    """One engine connection per request: inserts finish while a long query is still running."""
    long_done = threading.Event()
    result: list = []

    def long_query():
        result.append(scratch.command("SELECT sum(sipHash64(number)) FROM numbers(150000000)"))
        long_done.set()

    t = threading.Thread(target=long_query)
    t.start()
    wait_for(lambda: scratch.command("SELECT count() FROM system.processes WHERE query LIKE '%sipHash64%' "
                                     "AND query NOT LIKE '%system.processes%'") == 1, what="the long query running")
    for i in range(20):
        scratch.raw_insert("scratch.t", ["a", "b"], insert_block=f'{{"a":{i},"b":"x"}}\n'.encode(), fmt="JSONEachRow")
    finished_first = not long_done.is_set()
    t.join(120)
    assert result and finished_first, "20 inserts did not finish while the long query ran"
    assert scratch.command("SELECT count() FROM scratch.t") == 20


def test_memory_bound_is_the_engine_setting(clickhouse_server):
    c = connect(clickhouse_server.url)
    assert c.command("SELECT value FROM system.server_settings WHERE name = 'max_server_memory_usage'") == 1 << 30
    assert c.command("SELECT value FROM system.server_settings WHERE name = 'uncompressed_cache_size'") == 0
    c.close()


def test_password_is_required_and_never_logged(tmp_path, monkeypatch):
    secret = "s3cret-Pw-7781"
    env = dict(os.environ, MARKETDATA_CLICKHOUSE_PASSWORD=secret)
    with LocalClickHouse(tmp_path / "ch", publish_url=False, env=env) as srv:
        for kw in ({}, {"password": "wrong"}, {"username": "other", "password": secret}):
            with pytest.raises(DatabaseError) as e:
                connect(srv.url, **kw)
            assert e.value.code == 516
            assert secret not in str(e.value)
        r = httpx.get(srv.url + "/", params={"query": "SELECT 1"})
        assert r.status_code == 403 and r.headers["X-ClickHouse-Exception-Code"] == "516"
        assert httpx.get(srv.url + "/ping").status_code == 200          # health needs no password
        assert connect(srv.url, password=secret).command("SELECT 1") == 1
        monkeypatch.setenv("MARKETDATA_CLICKHOUSE_PASSWORD", secret)
        ch = ClickHouse(srv.url)                                          # the platform's client: from the env
        assert ch.command("SELECT 2") == 2
        assert secret not in repr(ch)
        ch.close()
    log = (tmp_path / "ch-server" / "clickhouse.log").read_text()
    assert "with password" in log and secret not in log


def _spawn_persist(env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "marketdata.persist", "--consumer", "k9", "--block-ms", "50",
                                 "--batch-max", "5000", "--linger-ms", "0"], env=env, stdout=f,
                                stderr=subprocess.STDOUT, cwd=str(REPO), start_new_session=True,
                                preexec_fn=default_signals)


def test_kill_9_of_the_server_mid_insert_loses_and_duplicates_nothing(tmp_path):
    """The server is killed while persist inserts; restarted on the same data dir and port, persist
    retries its batch with the same deduplication token. Merges are off for the ticks table, so a
    duplicate would stay visible in count() (no FINAL)."""
    srv = LocalClickHouse(tmp_path / "ch", publish_url=False).start()
    redis = EmbeddedRedis(tmp_path / "redis", publish_url=False).start()
    persist = None
    try:
        ch = fresh_store(srv.url)
        ch.command("ALTER TABLE marketdata.ticks MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 1")
        r = redis_client(redis.url)
        n_streams, per_stream, per_entry = 4, 50_000, 250
        keys = []
        for s in range(n_streams):
            sym, key = f"K{s}-USDT", stream_key("bybit", f"K{s}-USDT")
            keys.append(key)
            r.sadd(STREAMS_SET, key)
            pipe = r.pipeline(transaction=False)
            for start in range(0, per_stream, per_entry):
                ticks = [Tick.trade("bybit", sym, BASE_US + i * 1000, "100.5", "1", "buy", str(i), BASE_US + i * 1000)
                         for i in range(start, start + per_entry)]
                pipe.xadd(key, encode_entry("bybit", sym, ticks))
            pipe.execute()
        total = n_streams * per_stream
        env = dict(os.environ, MARKETDATA_REDIS_URL=redis.url, MARKETDATA_CLICKHOUSE_URL=srv.url,
                   MARKETDATA_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
        persist = _spawn_persist(env, tmp_path / "persist.log")

        # Kill while batches are going in back to back (linger 0): some stored, more to come.
        wait_for(lambda: 0 < ch.command("SELECT count() FROM marketdata.ticks") < total // 2, timeout=60,
                 what="persist part way through", interval=0.002,
                 on_timeout=lambda: (tmp_path / "persist.log").read_text()[-3000:])
        srv.kill9()
        wait_for(lambda: int(r.hget(health_key("persist:k9"), "errors") or 0) >= 1, what="persist meeting the outage")
        srv.start()
        # Everything acknowledged (streams are trimmed behind acks, so read the group's state).
        def done():
            return ch.command("SELECT count() FROM marketdata.ticks") >= total and \
                all(r.xpending(k, PERSIST_GROUP)["pending"] == 0 for k in keys)
        wait_for(done, timeout=120, what="everything persisted after the restart")
        assert ch.rows("SELECT count(), uniqExact(symbol, trade_id) FROM marketdata.ticks") == [(total, total)]
        assert int(r.hget(health_key("persist:k9"), "errors")) >= 1
    finally:
        if persist is not None:
            persist.send_signal(signal.SIGTERM)
            persist.wait(30)
        srv.stop()
        redis.stop()


def test_a_dagster_run_on_a_password_protected_server_stores_no_secret(tmp_path, monkeypatch):
    import dagster as dg

    from marketdata.definitions import defs
    from marketdata.defs.bars.assets import bars_1m

    secret = "dagster-never-sees-Pw-4411"
    env = dict(os.environ, MARKETDATA_CLICKHOUSE_PASSWORD=secret)
    with LocalClickHouse(tmp_path / "ch", publish_url=False, env=env) as srv:
        monkeypatch.setenv("MARKETDATA_CLICKHOUSE_PASSWORD", secret)
        monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", srv.url)
        monkeypatch.setenv("MARKETDATA_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("MARKETDATA_CONFIG", str(tmp_path / "absent.yaml"))
        fresh_store(srv.url).close()
        home = tmp_path / "dagster"
        home.mkdir()
        with dg.DagsterInstance.local_temp(str(home)) as instance:
            result = dg.materialize([bars_1m], resources=defs.resources, instance=instance,
                                    partition_key="2026-03-01-09:00")
            assert result.success
        stored = [p for p in home.rglob("*") if p.is_file()]
        assert stored and not [p for p in stored if secret.encode() in p.read_bytes()]


def test_long_queries_and_parameters_sent_as_a_form(scratch):
    """clickhouse-connect moves a long query and its parameters into a multipart form body."""
    names = [f"n{i:05d}" for i in range(5000)]
    scratch.raw_insert("scratch.t", ["a", "b"], fmt="JSONEachRow",
                       insert_block=b'{"a":1,"b":"n00042"}\n{"a":2,"b":"zz"}\n')
    got = scratch.query("SELECT a FROM scratch.t WHERE b IN {names:Array(String)} -- " + "x" * 20000,
                        parameters={"names": names}).result_rows
    assert got == [(1,)]


def test_long_urls_are_accepted(clickhouse_server):
    r = httpx.get(clickhouse_server.url + "/", params={"query": "SELECT length({s:String})", "param_s": "y" * 50_000})
    assert r.status_code == 200 and r.text == "50000\n"
