"""The Bybit v5 spot simulator: subscribe/ack, the 10-args cap and bad-topic errors, publicTrade
frames batching many trades against the ground truth (ids increasing, not consecutive), op
ping/pong and the idle drop without a close frame, REST recent-trade (last 60 only), klines,
instruments, faults (one connection targeted, skip_ids, malformed, unknown symbol, REST)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from .simtest import SimFactory, conn_id, read_gt, recv_json, wait_until, ws_connect

pytestmark = pytest.mark.timeout(60)

SYMS = ["BTC-USDT", "ETH-USDT"]
TWELVE = [f"{b}-USDT" for b in ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "LTC", "DOT", "LINK", "AVAX",
                                "TRX", "BCH")]


@pytest.fixture
def make_sim(tmp_path):
    f = SimFactory(tmp_path, "bybit", SYMS)
    yield f
    f.close()


def ws_url(sim) -> str:
    return sim.endpoints["bybit"]["ws"] + "/v5/public/spot"


def rest(sim, path: str, **params) -> dict:
    r = httpx.get(sim.endpoints["bybit"]["rest"] + path, params=params, timeout=10)
    return r.json() | {"_status": r.status_code}


async def trade_msgs(ws, n_trades: int, timeout: float = 10.0) -> list[dict]:
    out, got = [], 0
    deadline = time.monotonic() + timeout
    while got < n_trades:
        m = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if str(m.get("topic", "")).startswith("publicTrade."):
            out.append(m)
            got += len(m["data"])
    return out


def test_subscribe_batches_and_trades_match_ground_truth(make_sim):
    sim = make_sim(rate=4000, seed=5)

    async def run():
        async with ws_connect(ws_url(sim)) as ws:
            await ws.send('{"req_id":"sub-1","op":"subscribe","args":["publicTrade.BTCUSDT","publicTrade.ETHUSDT"]}')
            ack = await recv_json(ws)
            assert ack["success"] is True and ack["ret_msg"] == "subscribe" and ack["op"] == "subscribe"
            assert ack["req_id"] == "sub-1" and len(ack["conn_id"]) == 36
            return await trade_msgs(ws, 2000)

    msgs = asyncio.run(run())
    sim.flush()
    gt = {(r["symbol"], r["trade_id"]): r for r in read_gt(sim.ground_truth_path)}
    assert all(r["exchange"] == "bybit" for r in gt.values())
    assert max(len(m["data"]) for m in msgs) > 1, "several trades per frame"
    ids: dict[str, list[int]] = {}
    for m in msgs:
        assert m["type"] == "snapshot" and isinstance(m["ts"], int)
        vs = m["topic"].split(".", 1)[1]
        sym = vs[:-4] + "-" + vs[-4:]
        for d in m["data"]:
            assert d["s"] == vs and m["ts"] >= d["T"] and d["BT"] is False and isinstance(d["seq"], int)
            assert isinstance(d["p"], str) and isinstance(d["v"], str) and isinstance(d["i"], str)
            r = gt[(sym, d["i"])]
            assert (r["price"], r["qty"], r["side"]) == (d["p"], d["v"], d["S"].lower())
            assert int(r["ts_us"]) == d["T"] * 1000
            ids.setdefault(sym, []).append(int(d["i"]))
    for sym, lst in ids.items():
        assert lst == sorted(lst) and len(set(lst)) == len(lst), "ids increase per symbol"
        assert any(b - a > 1 for a, b in zip(lst, lst[1:])), "ids are not consecutive"
    # every ground-truth trade of the window reached the client, in order
    first = {s: min(v) for s, v in ids.items()}
    last = {s: max(v) for s, v in ids.items()}
    want = sorted(int(t) for (s, t) in gt if s in first and first[s] <= int(t) <= last[s])
    assert want == sorted(i for v in ids.values() for i in v)


def test_args_cap_bad_topics_and_split_subscribe(tmp_path):
    f = SimFactory(tmp_path, "bybit", TWELVE)
    sim = f(rate=1200)
    topics = [f"publicTrade.{s.replace('-', '')}" for s in TWELVE]

    async def run():
        async with ws_connect(ws_url(sim)) as ws:
            await ws.send(orjson.dumps({"req_id": "all", "op": "subscribe", "args": topics}).decode())
            err = await recv_json(ws)
            assert err["success"] is False and err["ret_msg"] == "args size >10" and err["req_id"] == "all"
            await ws.send('{"req_id":"bad","op":"subscribe","args":["publicTrade.BTCUSDT","publicTrade.ZZZUSDT"]}')
            err = await recv_json(ws)
            assert err == {"success": False, "ret_msg": "Invalid symbol :[publicTrade.ZZZUSDT]",
                           "conn_id": err["conn_id"], "req_id": "bad", "op": "subscribe"}
            # nothing was subscribed by the rejected requests
            cid = await asyncio.to_thread(conn_id, sim, "bybit", ws)
            assert (await asyncio.to_thread(sim.stats, "bybit"))["bybit"]["subscriptions"][str(cid)] == []
            for k, chunk in enumerate((topics[:10], topics[10:])):
                await ws.send(orjson.dumps({"req_id": f"s{k}", "op": "subscribe", "args": chunk}).decode())
            acks = []
            seen = set()
            while len(acks) < 2 or len(seen) < len(TWELVE):
                m = await recv_json(ws)
                if "topic" in m:
                    seen.add(m["topic"])
                else:
                    acks.append(m)
            assert [(a["req_id"], a["success"]) for a in acks] == [("s0", True), ("s1", True)]
            assert seen == set(topics)

    try:
        asyncio.run(run())
        assert sim.stats("bybit")["bybit"]["rejected_subscribes"] == 2
    finally:
        f.close()


def test_op_ping_pong_and_idle_drop_without_close_frame(make_sim):
    sim = make_sim(rate=300, venue_options={"bybit": {"idle_timeout": 1.5}})

    async def run():
        async with ws_connect(ws_url(sim)) as quiet, ws_connect(ws_url(sim)) as pinger:
            await quiet.send('{"op":"subscribe","args":["publicTrade.BTCUSDT"]}')
            assert (await recv_json(quiet))["success"] is True
            t0 = time.monotonic()
            pongs = 0

            async def ping_until(done: asyncio.Event) -> None:
                nonlocal pongs
                while not done.is_set():
                    await pinger.send('{"req_id":"100001","op":"ping"}')
                    pong = await recv_json(pinger)
                    assert pong == {"success": True, "ret_msg": "pong", "conn_id": pong["conn_id"],
                                    "req_id": "100001", "op": "ping"}
                    pongs += 1
                    await asyncio.sleep(0.1)   # pacing, well inside the idle limit

            done = asyncio.Event()
            pinging = asyncio.create_task(ping_until(done))
            closed = None
            try:     # trade data keeps flowing to the quiet link, which does not count as activity
                await trade_msgs(quiet, 10**9, timeout=30)
            except ConnectionClosed as e:
                closed = (e, time.monotonic() - t0)
            while pongs < 4:      # the pinger outlives the quiet link's cut
                await asyncio.sleep(0.05)
            done.set()
            await pinging
            assert pinger.state.name == "OPEN"
            return closed, pongs

    closed, pongs = asyncio.run(run())
    assert closed is not None and closed[0].rcvd is None, "dropped without a close frame"
    assert closed[1] >= 1.2, "not dropped before the idle limit"
    assert sim.stats("bybit")["bybit"]["idle_drops"] == 1


def test_rest_recent_trade_klines_instruments(make_sim):
    sim = make_sim(rate=3000, seed=7, venue_options={"bybit": {"closed_symbols": ["LUNA-USDT"]}})
    assert sim.wait_generated(6000, "bybit")
    sim.pause("bybit")
    sim.flush()
    gt = [r for r in read_gt(sim.ground_truth_path) if r["symbol"] == "BTC-USDT"]
    gt.sort(key=lambda r: int(r["trade_id"]))

    inst = rest(sim, "/v5/market/instruments-info", category="spot")
    assert inst["retCode"] == 0 and inst["retMsg"] == "OK"
    rows = {r["symbol"]: r for r in inst["result"]["list"]}
    assert rows["BTCUSDT"]["baseCoin"] == "BTC" and rows["BTCUSDT"]["quoteCoin"] == "USDT"
    assert rows["BTCUSDT"]["status"] == "Trading" and rows["LUNAUSDT"]["status"] == "Closed"
    assert rows["BTCUSDT"]["priceFilter"]["tickSize"] == "0.01"

    # only the last 60, newest first; time and seq as strings; asking for more gives 60
    rt = rest(sim, "/v5/market/recent-trade", category="spot", symbol="BTCUSDT", limit="1000")
    lst = rt["result"]["list"]
    assert len(lst) == 60
    assert [r["execId"] for r in lst] == [r["trade_id"] for r in reversed(gt[-60:])]
    r0, g0 = lst[0], gt[-1]
    assert (r0["price"], r0["size"], r0["side"].lower(), int(r0["time"]) * 1000) == \
        (g0["price"], g0["qty"], g0["side"], int(g0["ts_us"]))
    assert isinstance(r0["time"], str) and isinstance(r0["seq"], str)
    assert len(rest(sim, "/v5/market/recent-trade", category="spot", symbol="BTCUSDT", limit="5")
               ["result"]["list"]) == 5

    # klines: newest first, minute buckets equal the ground truth, no trade count
    first_min = int(gt[0]["ts_us"]) // 60_000_000 * 60_000
    k = rest(sim, "/v5/market/kline", category="spot", symbol="BTCUSDT", interval="1",
             start=str(first_min), end=str(int(gt[-1]["ts_us"]) // 1000))
    kl = k["result"]["list"]
    assert kl and [int(r[0]) for r in kl] == sorted((int(r[0]) for r in kl), reverse=True)
    by_min: dict[int, list] = {}
    for r in gt:
        by_min.setdefault(int(r["ts_us"]) // 60_000_000 * 60_000, []).append(r)
    for start, o, h, lo, c, v, _turnover in kl:
        trades = by_min[int(start)]
        pxs = [Decimal(t["price"]) for t in trades]
        assert (Decimal(o), Decimal(h), Decimal(lo), Decimal(c)) == (pxs[0], max(pxs), min(pxs), pxs[-1])
        assert Decimal(v) == sum(Decimal(t["qty"]) for t in trades)
    assert len(kl) == len(by_min)

    # errors: HTTP 200 with retCode != 0
    bad = rest(sim, "/v5/market/recent-trade", category="spot", symbol="ZZZUSDT")
    assert bad["_status"] == 200 and bad["retCode"] == 10001
    assert rest(sim, "/v5/market/kline", symbol="BTCUSDT", interval="1")["retCode"] == 10001
    assert rest(sim, "/v5/market/kline", category="spot", symbol="BTCUSDT", interval="7")["retCode"] == 10001


def test_faults_target_one_connection(make_sim):
    sim = make_sim(rate=2000)

    async def run():
        async with ws_connect(ws_url(sim)) as a, ws_connect(ws_url(sim)) as b:
            for ws in (a, b):
                await ws.send('{"op":"subscribe","args":["publicTrade.BTCUSDT"]}')
                assert (await recv_json(ws))["success"] is True
            ca = await asyncio.to_thread(conn_id, sim, "bybit", a)
            # skip_ids on one connection: b still gets the trades a misses
            before_a = {d["i"] for m in await trade_msgs(a, 20) for d in m["data"]}
            before_b = {d["i"] for m in await trade_msgs(b, 20) for d in m["data"]}
            rec = await asyncio.to_thread(sim.fault, "bybit", "skip_ids", symbol="BTC-USDT", count=30, conn=ca)
            assert rec["kind"] == "skip_ids"
            await asyncio.to_thread(wait_until, lambda: sim.stats("bybit")["faults"][0]["hits"] == 30)
            lo, hi = (int(x) for x in sim.stats("bybit")["faults"][0]["note"].split()[-1].split(".."))
            venue = sim.venue("bybit")
            withheld = {venue.fmt_trade_id(0, t) for t in range(lo, hi + 1)}
            last = venue.fmt_trade_id(0, hi)

            async def ids_through(ws) -> set[str]:
                got: set[str] = set()
                while not got or max(map(int, got)) <= int(last):
                    got.update(d["i"] for m in await trade_msgs(ws, 1) for d in m["data"])
                return got

            ia, ib = before_a | await ids_through(a), before_b | await ids_through(b)
            assert withheld <= ib and not withheld & ia
            first = max(min(map(int, ia)), min(map(int, ib)))
            assert {i for i in ib if int(i) >= first} - ia == withheld
            # malformed + unknown symbol on a only
            await asyncio.to_thread(sim.fault, "bybit", "malformed", count=2, conn=ca)
            await asyncio.to_thread(sim.fault, "bybit", "unknown_symbol", conn=ca)
            bad = []
            while len(bad) < 3:
                raw = await asyncio.wait_for(a.recv(), 5)
                try:
                    m = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    bad.append("invalid")
                    continue
                if m.get("topic") == "publicTrade.ZZZUSDT" or (m.get("data") and "i" not in m["data"][0]):
                    bad.append(m.get("topic"))
            assert bad.count("invalid") == 1 and "publicTrade.ZZZUSDT" in bad
            # close only a: b keeps receiving
            rec = await asyncio.to_thread(sim.fault, "bybit", "close", conn=ca)
            assert rec["applied_to"] == [ca]
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(a.recv(), 5)
            assert await trade_msgs(b, 50)
            with pytest.raises(Exception, match="does not implement"):
                await asyncio.to_thread(sim.fault, "bybit", "notice")

    asyncio.run(run())
    # REST faults in the venue's envelope
    sim.fault("bybit", "rest_fail", status=429, count=1)
    r = rest(sim, "/v5/market/recent-trade", category="spot", symbol="BTCUSDT")
    assert r["_status"] == 429 and r["retCode"] == 10006
