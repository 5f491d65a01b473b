"""Tests of the venue simulator (Binance) with plain websockets / httpx / raw-socket clients.

Real sockets on free ports, temp dirs; the simulator runs in a background thread (or, for the CLI
test, as a child process that is stopped by PID).
"""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from marketdata.simulator import Simulator, SimulatorConfig, parse_time_us

pytestmark = pytest.mark.timeout(60)

START = "2026-01-05T10:00:00Z"
START_US = parse_time_us(START)


# ---------------------------------------------------------------------------------------- helpers
@pytest.fixture
def make_sim(tmp_path):
    sims: list[Simulator] = []

    def factory(**kw) -> Simulator:
        kw.setdefault("venues", ["binance"])
        kw.setdefault("symbols", ["BTC-USDT", "ETH-USDT"])
        kw.setdefault("start", START)
        kw.setdefault("speed", 60)
        kw.setdefault("rate", 2000)
        kw.setdefault("ground_truth", tmp_path / f"gt-{len(sims)}.csv")
        sim = Simulator(SimulatorConfig(**kw)).start()
        sims.append(sim)
        return sim

    yield factory
    for s in sims:
        s.stop()


def ws_url(sim: Simulator, path: str) -> str:
    return sim.endpoints["binance"]["ws"] + path


def rest(sim: Simulator) -> str:
    return sim.endpoints["binance"]["rest"]


def ws_connect(url: str):
    return connect(url, compression=None, ping_interval=None, max_size=None, close_timeout=0.5)


async def recv_json(ws, timeout: float = 5.0):
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect_trades(ws, n: int, timeout: float = 10.0) -> list[dict]:
    """Receive until ``n`` data messages (trade/aggTrade payloads, unwrapped) arrived."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        data = msg.get("data", msg)
        if isinstance(data, dict) and data.get("e") in ("trade", "aggTrade"):
            out.append(msg)
    return out


def read_gt(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def gt_index(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["symbol"], int(r["trade_id"])): r for r in rows}


def conn_id(sim: Simulator, ws) -> int:
    """The simulator's id of the connection behind client ``ws`` (matched by peer port)."""
    port = ws.local_address[1]
    for c in sim.stats("binance")["connections"]:
        if c["peer"].endswith(f":{port}"):
            return c["conn"]
    raise AssertionError("connection not found in stats")


def conn_stats(sim: Simulator, cid: int) -> dict:
    st = sim.stats("binance")
    for c in st["connections"] + st["closed_connections"]:
        if c["conn"] == cid:
            return c
    raise AssertionError(f"no connection {cid}")


async def raw_ws(port: int, path: str, rcvbuf: int | None = None):
    """Minimal raw client: handshake only; the caller decides whether to read/pong."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if rcvbuf:
        import socket

        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return reader, writer


async def read_frame(reader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    assert not b1 & 0x80, "server frames must be unmasked"
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


def port_of(sim: Simulator) -> int:
    return int(sim.endpoints["binance"]["ws"].rsplit(":", 1)[1])


# ---------------------------------------------------------------------------------------- tests
def test_determinism_independent_of_timing(make_sim):
    a = make_sim(seed=11, rate=20000, slice_ms=2)
    b = make_sim(seed=11, rate=6000, slice_ms=9, speed=1)
    c = make_sim(seed=12, rate=20000)
    n = 3000
    for s in (a, b, c):
        for sym in ("BTC-USDT", "ETH-USDT"):
            assert s.wait_generated(n + 20, symbol=sym, timeout=20)

    def seq(sim, sym):
        return [(t["trade_id"], t["price"], t["qty"], t["side"]) for t in sim.trades(None, sym, 0, n)]

    for sym in ("BTC-USDT", "ETH-USDT"):
        assert seq(a, sym) == seq(b, sym)
        assert seq(a, sym) != seq(c, sym)
    # the taker-order structure (aggregate trades) is identical too
    ra = httpx.get(rest(a) + "/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": 0, "limit": 300},
                   timeout=30).json()
    first = ra[0]["a"]
    rb = httpx.get(rest(b) + "/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": first, "limit": 300},
                   timeout=30).json()
    strip = [[r[k] for k in ("a", "p", "q", "f", "l", "m")] for r in ra]
    assert strip == [[r[k] for k in ("a", "p", "q", "f", "l", "m")] for r in rb]
    # ids start at a seeded large number and increase by exactly one
    ids = [int(t[0]) for t in seq(a, "BTC-USDT")]
    assert ids[0] > 10**9 and ids == list(range(ids[0], ids[0] + n))


def test_ws_raw_and_combined_match_ground_truth(make_sim):
    sim = make_sim(seed=3, rate=3000)

    async def run():
        async with ws_connect(ws_url(sim, "/stream?streams=btcusdt@trade/btcusdt@aggTrade")) as comb, \
                ws_connect(ws_url(sim, "/ws")) as raw:
            await raw.send('{"method":"SUBSCRIBE","params":["ethusdt@trade","ethusdt@aggTrade"],"id":1}')
            assert await asyncio.wait_for(raw.recv(), 5) == '{"result":null,"id":1}'
            await raw.send('{"method":"LIST_SUBSCRIPTIONS","id":"x2"}')
            while True:
                m = await recv_json(raw)
                if "id" in m:
                    assert m == {"result": ["ethusdt@trade", "ethusdt@aggTrade"], "id": "x2"}
                    break
            await raw.send("not json")
            await raw.send('{"method":"FROB","id":7}')
            errors = []
            raw_trades = []
            while len(errors) < 2 or len(raw_trades) < 200:
                m = await recv_json(raw)
                if "code" in m:
                    errors.append(m)
                elif m.get("e") in ("trade", "aggTrade"):
                    raw_trades.append(m)
            assert errors[0]["code"] == 3 and errors[0]["msg"].startswith("Invalid JSON")
            assert errors[1]["code"] == 2 and errors[1]["id"] == 7 and errors[1]["msg"].startswith("Invalid request")
            comb_msgs = await collect_trades(comb, 300)
            # SET_PROPERTY combined turns on the wrapping for a raw connection
            await raw.send('{"method":"SET_PROPERTY","params":["combined",true],"id":9}')
            while (m := await recv_json(raw)).get("id") != 9:
                pass
            assert m == {"result": None, "id": 9}
            wrapped = await collect_trades(raw, 5)
            assert all(w["stream"].startswith("ethusdt@") for w in wrapped)
            return raw_trades, comb_msgs

    raw_trades, comb_msgs = asyncio.run(run())
    sim.flush()
    gt = gt_index(read_gt(sim.ground_truth_path))
    assert all(m["stream"] in ("btcusdt@trade", "btcusdt@aggTrade") for m in comb_msgs)
    msgs = [("BTC-USDT", m["data"]) for m in comb_msgs] + [("ETH-USDT", m) for m in raw_trades]
    trades = defaultdict(list)
    aggs = defaultdict(list)
    for sym, d in msgs:
        assert d["s"] == sym.replace("-", "")
        assert isinstance(d["p"], str) and len(d["p"].split(".")[1]) == 8
        assert d["E"] >= d["T"]
        (trades if d["e"] == "trade" else aggs)[sym].append(d)
    for sym in ("BTC-USDT", "ETH-USDT"):
        assert trades[sym] and aggs[sym]
        ids = [d["t"] for d in trades[sym]]
        assert ids == list(range(ids[0], ids[0] + len(ids))), "trade ids must be consecutive"
        ts = [d["T"] for d in trades[sym]]
        assert ts == sorted(ts)
        for d in trades[sym]:
            row = gt[(sym, d["t"])]
            assert row["exchange"] == "binance"
            assert (row["price"], row["qty"], int(row["ts_us"])) == (d["p"], d["q"], d["T"] * 1000)
            assert row["side"] == ("sell" if d["m"] else "buy")
        a_ids = [d["a"] for d in aggs[sym]]
        assert a_ids == list(range(a_ids[0], a_ids[0] + len(a_ids)))
        for prev, nxt in zip(aggs[sym], aggs[sym][1:]):
            assert nxt["f"] == prev["l"] + 1
        for d in aggs[sym]:
            fills = [gt[(sym, t)] for t in range(d["f"], d["l"] + 1)]
            assert {f["price"] for f in fills} == {d["p"]}
            assert sum(Decimal(f["qty"]) for f in fills) == Decimal(d["q"])
            assert {f["side"] for f in fills} == {"sell" if d["m"] else "buy"}
            assert {int(f["ts_us"]) for f in fills} == {d["T"] * 1000}
    # ground-truth timestamps are simulated time, at Binance millisecond resolution
    rows = read_gt(sim.ground_truth_path)
    assert all(int(r["ts_us"]) >= START_US and int(r["ts_us"]) % 1000 == 0 for r in rows)


def test_pings_and_pong_timeout(make_sim):
    sim = make_sim(rate=200, ping_interval=0.2, pong_timeout=0.6)

    async def run():
        # no data streams: websockets stops reading (and ponging) when its queue is full
        async with ws_connect(ws_url(sim, "/ws")) as good:
            cid = conn_id(sim, good)
            t0 = time.monotonic()      # before connecting: the server's ping clock starts at accept
            reader, writer = await raw_ws(port_of(sim), "/ws")  # never answers pings
            pings = 0
            dropped = None
            try:
                while True:
                    op, _ = await asyncio.wait_for(read_frame(reader), 5)
                    pings += op == 0x9
            except (asyncio.IncompleteReadError, ConnectionResetError):
                dropped = time.monotonic() - t0
            writer.close()
            assert pings >= 2, "ping frames arrive"
            assert 0.55 <= dropped < 3.0, dropped
            # the well-behaved client (websockets answers pings) stays connected
            st = await asyncio.to_thread(conn_stats, sim, cid)
            assert st["state"] == "open" and st["pings_sent"] >= 3 and st["pongs_received"] >= 2
            await good.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')
            while "id" not in (m := await recv_json(good)):
                pass
            assert m["result"] == []
        closed = sim.stats("binance")["closed_connections"]
        assert any(c["closed_reason"] == "pong_timeout" for c in closed)

    asyncio.run(run())


def test_fault_silent_drop(make_sim):
    sim = make_sim(rate=2000, ping_interval=0.2, pong_timeout=0.6)

    async def run():
        async with ws_connect(ws_url(sim, "/ws/btcusdt@trade")) as ws:
            await collect_trades(ws, 5)
            cid = conn_id(sim, ws)
            rec = await asyncio.to_thread(sim.fault, "binance", "silent_drop", conn=cid)
            assert rec["applied_to"] == [cid]
            # drain what was already in flight, then nothing at all arrives
            while True:
                try:
                    await asyncio.wait_for(ws.recv(), 0.3)
                except asyncio.TimeoutError:
                    break
            before = sim.generated("binance")
            pings_before = conn_stats(sim, cid)["pings_sent"]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 1.5)  # > pong_timeout: not dropped either
            assert sim.generated("binance") > before, "trades are still generated"
            st = conn_stats(sim, cid)
            assert st["state"] == "silent" and st["pings_sent"] == pings_before
            assert ws.state.name == "OPEN"
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')  # ignored
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)

    asyncio.run(run())


def test_fault_skip_ids_and_rest_repair(make_sim):
    sim = make_sim(rate=3000)

    def next_id() -> int:
        return sim.stats("binance")["symbols"]["BTC-USDT"]["next_trade_id"]

    async def ids_until(ws, min_id: int, last: int) -> list[int]:
        """Trade ids received until one >= min_id (generated well after a fault), starting with
        the last id seen before the fault so that a jump right at the boundary is visible."""
        ids = [last]
        while ids[-1] < min_id:
            ids += [m["t"] for m in await collect_trades(ws, 1)]
        return ids

    async def run():
        async with ws_connect(ws_url(sim, "/ws/btcusdt@trade")) as a, \
                ws_connect(ws_url(sim, "/ws/btcusdt@trade")) as b:
            last_a = (await collect_trades(a, 3))[-1]["t"]
            last_b = (await collect_trades(b, 3))[-1]["t"]
            cid_b = conn_id(sim, b)
            await asyncio.to_thread(sim.fault, "binance", "skip_ids", symbol="BTC-USDT", count=7)
            after = await asyncio.to_thread(next_id) + 50
            ids_a, ids_b = await ids_until(a, after, last_a), await ids_until(b, after, last_b)
            # now only connection b misses the next 4 trades (redundancy scenario)
            await asyncio.to_thread(sim.fault, "binance", "skip_ids", symbol="BTC-USDT", count=4, conn=cid_b)
            after = await asyncio.to_thread(next_id) + 50
            ids_a2, ids_b2 = await ids_until(a, after, ids_a[-1]), await ids_until(b, after, ids_b[-1])
            return ids_a, ids_b, ids_a2, ids_b2

    ids_a, ids_b, ids_a2, ids_b2 = asyncio.run(run())

    def jumps(ids):
        return [(x, y) for x, y in zip(ids, ids[1:]) if y != x + 1]

    ja, jb = jumps(ids_a), jumps(ids_b)
    assert len(ja) == 1 and ja == jb and ja[0][1] - ja[0][0] == 8
    assert jumps(ids_a2) == []
    jb2 = jumps(ids_b2)
    assert len(jb2) == 1 and jb2[0][1] - jb2[0][0] == 5
    missing = list(range(ja[0][0] + 1, ja[0][1]))
    r = httpx.get(rest(sim) + "/api/v3/historicalTrades",
                  params={"symbol": "BTCUSDT", "fromId": missing[0], "limit": len(missing)})
    assert r.status_code == 200
    got = r.json()
    assert [t["id"] for t in got] == missing
    sim.flush()
    gt = gt_index(read_gt(sim.ground_truth_path))
    for t in got:
        row = gt[("BTC-USDT", t["id"])]
        assert (row["price"], row["qty"], int(row["ts_us"])) == (t["price"], t["qty"], t["time"] * 1000)
        assert row["side"] == ("sell" if t["isBuyerMaker"] else "buy")
    st = sim.stats("binance")
    assert st["symbols"]["BTC-USDT"]["withheld"] == 7
    assert [f["kind"] for f in st["faults"]] == ["skip_ids", "skip_ids"]
    assert st["faults"][0]["hits"] == 7 and st["faults"][1]["hits"] == 4


def test_fault_rest_fail_and_headers(make_sim):
    sim = make_sim(rate=500)
    base = rest(sim)
    with httpx.Client(base_url=base) as c:
        r = c.get("/api/v3/time")
        assert r.status_code == 200 and r.headers["X-MBX-USED-WEIGHT-1M"] == "1"
        assert abs(r.json()["serverTime"] * 1000 - sim.sim_now_us()) < 5_000_000
        r = c.post("/_sim/fault", json={"kind": "rest_fail", "count": 2})
        assert r.status_code == 200 and r.json()["ok"]
        assert c.get("/api/v3/trades", params={"symbol": "BTCUSDT"}).status_code == 500
        assert c.get("/api/v3/depth", params={"symbol": "BTCUSDT"}).status_code == 500
        sim.fault("binance", "rest_fail", status=429, retry_after=3)
        r = c.get("/api/v3/trades", params={"symbol": "BTCUSDT"})
        assert r.status_code == 429 and r.headers["Retry-After"] == "3" and r.json()["code"] == -1003
        r = c.get("/api/v3/trades", params={"symbol": "BTCUSDT", "limit": 5})
        assert r.status_code == 200 and len(r.json()) == 5 and int(r.headers["X-MBX-USED-WEIGHT-1M"]) > 1
        r = c.get("/api/v3/trades", params={"symbol": "NOPEUSDT"})
        assert r.status_code == 400 and r.json() == {"code": -1121, "msg": "Invalid symbol."}
        assert c.post("/_sim/fault", json={"kind": "bogus"}).status_code == 400
        info = c.get("/api/v3/exchangeInfo").json()
        by = {s["symbol"]: s for s in info["symbols"]}
        assert by["BTCUSDT"]["status"] == "TRADING" and by["BTCUSDT"]["baseAsset"] == "BTC"
        assert by["BTCUSDT"]["quoteAsset"] == "USDT"
        assert {f["filterType"] for f in by["BTCUSDT"]["filters"]} >= {"PRICE_FILTER", "LOT_SIZE"}
        assert any(s["status"] != "TRADING" for s in info["symbols"])
        assert info["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
        depth = c.get("/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 5}).json()
        assert len(depth["bids"]) == 5 and len(depth["asks"]) == 5 and depth["lastUpdateId"] > 0
        assert Decimal(depth["bids"][0][0]) < Decimal(depth["asks"][0][0])
        assert Decimal(depth["bids"][0][0]) > Decimal(depth["bids"][1][0])
        sim.fault("binance", "rest_delay", delay=0.3)
        t0 = time.monotonic()
        assert c.get("/api/v3/ping").json() == {}
        assert time.monotonic() - t0 >= 0.3
        stats = c.get("/_sim/stats").json()
        assert stats["rest"] == {"calls": stats["rest"]["calls"], "failed": 3, "delayed": 1}


def test_fault_malformed_and_unknown_symbol(make_sim):
    sim = make_sim(rate=1000)

    async def run():
        async with ws_connect(ws_url(sim, "/ws/btcusdt@trade")) as ws:
            await collect_trades(ws, 2)
            await asyncio.to_thread(sim.fault, "binance", "malformed", count=4)
            await asyncio.to_thread(sim.fault, "binance", "unknown_symbol", symbol="ZZZ-USDT")
            await asyncio.to_thread(sim.fault, "binance", "notice")
            invalid, missing, unknown, notices = 0, 0, [], []
            deadline = time.monotonic() + 5
            while (invalid < 2 or missing < 2 or not unknown or not notices) and time.monotonic() < deadline:
                raw = await asyncio.wait_for(ws.recv(), 5)
                try:
                    m = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    invalid += 1
                    continue
                if m.get("s") == "ZZZUSDT":
                    unknown.append(m)
                elif m.get("e") == "serverShutdown":
                    notices.append(m)
                elif not {"t", "p", "q", "m"} <= m.keys():
                    missing += 1
            return invalid, missing, unknown, notices

    invalid, missing, unknown, notices = asyncio.run(run())
    assert invalid == 2 and missing == 2
    assert len(notices) == 1 and set(notices[0]) == {"e", "E"}
    assert len(unknown) == 1 and unknown[0]["e"] == "trade" and isinstance(unknown[0]["t"], int)
    info = httpx.get(rest(sim) + "/api/v3/exchangeInfo").json()
    assert "ZZZUSDT" not in {s["symbol"] for s in info["symbols"]}


def test_fault_close_and_abort(make_sim):
    sim = make_sim(rate=1000)

    async def run():
        async with ws_connect(ws_url(sim, "/ws/btcusdt@trade")) as c1, \
                ws_connect(ws_url(sim, "/stream?streams=ethusdt@trade")) as c2:
            await collect_trades(c1, 2)
            await collect_trades(c2, 2)
            id1, id2 = conn_id(sim, c1), conn_id(sim, c2)
            await asyncio.to_thread(sim.fault, "binance", "close", conn=id1, code=1001, reason="maintenance")
            with pytest.raises(ConnectionClosed) as e1:
                while True:
                    await asyncio.wait_for(c1.recv(), 5)
            assert e1.value.rcvd is not None and e1.value.rcvd.code == 1001
            await asyncio.to_thread(sim.fault, "binance", "abort", conn=id2)
            with pytest.raises(ConnectionClosed) as e2:
                while True:
                    await asyncio.wait_for(c2.recv(), 5)
            assert e2.value.rcvd is None, "abort sends no close frame"
            # more than 5 inbound messages per second: Binance disconnects
            async with ws_connect(ws_url(sim, "/ws")) as c3:
                for i in range(7):
                    await c3.send(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
                with pytest.raises(ConnectionClosed) as e3:
                    while True:
                        await asyncio.wait_for(c3.recv(), 5)
                assert e3.value.rcvd is not None and e3.value.rcvd.code == 1008
            # unknown connection id is rejected
            r = await asyncio.to_thread(httpx.post, rest(sim) + "/_sim/fault", json={"kind": "abort", "conn": 999})
            assert r.status_code == 400
            return id1, id2

    id1, id2 = asyncio.run(run())
    reasons = {c["conn"]: c["closed_reason"] for c in sim.stats("binance")["closed_connections"]}
    assert reasons[id2] == "fault:abort" and reasons[id1].startswith("closed:1001")


def test_klines_match_ground_truth_and_end(make_sim):
    end = "2026-01-05T10:04:00Z"
    sim = make_sim(rate=4000, speed=120, end=end, ping_interval=0.2)
    # some trades are withheld from the WebSocket: they still count in the candles
    sim.fault("binance", "skip_ids", symbol="ETH-USDT", count=50)
    assert sim.wait_for(sim.ended, timeout=20)
    n_end = sim.generated()
    sim.flush()
    rows = read_gt(sim.ground_truth_path)
    assert len(rows) == n_end
    assert max(int(r["ts_us"]) for r in rows) <= parse_time_us(end)
    per_min = defaultdict(lambda: {"n": 0, "vol": Decimal(0), "prices": []})
    for r in rows:
        k = (r["symbol"], int(r["ts_us"]) // 60_000_000 * 60_000)
        per_min[k]["n"] += 1
        per_min[k]["vol"] += Decimal(r["qty"])
        per_min[k]["prices"].append(Decimal(r["price"]))
    for sym in ("BTC-USDT", "ETH-USDT"):
        kl = httpx.get(rest(sim) + "/api/v3/klines", params={
            "symbol": sym.replace("-", ""), "interval": "1m", "startTime": START_US // 1000,
            "endTime": parse_time_us(end) // 1000, "limit": 1000}).json()
        expected = sorted(m for (s, m) in per_min if s == sym)
        assert [k[0] for k in kl] == expected and len(kl) >= 4
        for k in kl:
            agg = per_min[(sym, k[0])]
            assert k[8] == agg["n"] and Decimal(k[5]) == agg["vol"]
            assert Decimal(k[1]) == agg["prices"][0] and Decimal(k[4]) == agg["prices"][-1]
            assert Decimal(k[2]) == max(agg["prices"]) and Decimal(k[3]) == min(agg["prices"])
            assert k[6] == k[0] + 59_999
    # aggTrades by time window are consistent with the tape
    t0 = START_US // 1000 + 60_000
    aggs = httpx.get(rest(sim) + "/api/v3/aggTrades", params={
        "symbol": "BTCUSDT", "startTime": t0, "endTime": t0 + 59_999, "limit": 1000}).json()
    assert 0 < len(aggs) < 1000 and all(t0 <= a["T"] <= t0 + 59_999 for a in aggs)
    assert sum(a["l"] - a["f"] + 1 for a in aggs) == per_min[("BTC-USDT", t0)]["n"]
    assert [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + len(aggs)))
    # after the end: no more trades, but connections stay open and pings continue
    async def after_end():
        async with ws_connect(ws_url(sim, "/ws/btcusdt@trade")) as ws:
            cid = conn_id(sim, ws)
            ok = await asyncio.to_thread(sim.wait_for, lambda: conn_stats(sim, cid)["pongs_received"] >= 2, 5)
            assert ok
            assert conn_stats(sim, cid)["trades_sent"] == 0
    asyncio.run(after_end())
    assert sim.generated() == n_end


def test_control_pause_resume_and_slow_consumer(make_sim):
    sim = make_sim(rate=20000, symbols=["BTC-USDT"], ping_interval=0, max_send_buffer=256 * 1024, speed=1)
    base = rest(sim)
    assert httpx.post(base + "/_sim/pause").json()["paused"] is True
    g0 = sim.generated()
    time.sleep(0.3)  # nothing to await: this asserts that nothing happens
    assert sim.generated() <= g0 + 200  # at most the step in flight
    g1 = sim.generated()
    assert httpx.post(base + "/_sim/resume").json()["paused"] is False
    assert sim.wait_generated(g1 + 1000, timeout=10)

    async def slow():
        reader, writer = await raw_ws(port_of(sim), "/ws/btcusdt@trade", rcvbuf=4096)  # never reads
        ok = await asyncio.to_thread(sim.wait_for, lambda: any(
            c["closed_reason"] == "slow_consumer" for c in sim.stats("binance")["closed_connections"]), 20)
        writer.close()
        return ok

    assert asyncio.run(slow()), "a client that does not read is dropped"
    closed = sim.stats("binance")["closed_connections"][-1]
    assert closed["max_write_buffer"] <= 256 * 1024 + 200_000
    flushed = httpx.post(base + "/_sim/flush").json()
    assert flushed["ok"] and flushed["path"] == sim.ground_truth_path


def test_cli_subprocess(tmp_path):
    gt = tmp_path / "gt.csv"
    ep_file = tmp_path / "endpoints.json"
    cmd = [sys.executable, "-m", "marketdata.simulator", "--venues", "binance", "--symbols", "BTC-USDT,ETH-USDT",
           "--rate", "1500", "--seed", "7", "--start", START, "--speed", "60", "--ground-truth", str(gt),
           "--port", "0", "--ping-interval", "20", "--pong-timeout", "60", "--endpoints-file", str(ep_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(20), "no endpoints line"
        line = proc.stdout.readline()
        endpoints = json.loads(line)
        assert set(endpoints) == {"binance"} and endpoints["binance"]["ws"].startswith("ws://127.0.0.1:")
        assert json.loads(ep_file.read_text()) == endpoints
        base = endpoints["binance"]["rest"]
        server_ms = httpx.get(base + "/api/v3/time").json()["serverTime"]
        assert START_US // 1000 <= server_ms < START_US // 1000 + 3_600_000
        deadline = time.monotonic() + 10
        while httpx.get(base + "/_sim/stats").json()["generated"] < 500:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = httpx.get(base + "/_sim/stats").json()["generated"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    rows = read_gt(gt)
    assert len(rows) >= before
    by_sym = defaultdict(list)
    for r in rows:
        by_sym[r["symbol"]].append(int(r["trade_id"]))
    for ids in by_sym.values():
        assert ids == list(range(ids[0], ids[0] + len(ids)))
