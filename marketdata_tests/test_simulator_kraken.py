"""The Kraken simulator: WS v1 (systemStatus, subscriptionStatus with per-connection channel ids,
trade arrays, heartbeats, ping/pong), WS v2 (acks, snapshot, sequential trade_id), REST
AssetPairs / Trades (cursor paging) / OHLC (with count) / Depth against the ground truth, faults."""

from __future__ import annotations

import asyncio
import calendar
import time
from collections import Counter, defaultdict
from decimal import Decimal

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from .simtest import START_US, SimFactory, conn_id, read_gt, recv_json, recv_text, ws_connect

pytestmark = pytest.mark.timeout(60)

SYMS = ["BTC-USD", "DOGE-USD"]


@pytest.fixture
def make_sim(tmp_path):
    f = SimFactory(tmp_path, "kraken", SYMS)
    yield f
    f.close()


def urls(sim):
    ep = sim.endpoints["kraken"]
    return ep["ws"] + "/", ep["ws"] + "/v2", ep["rest"]


def v1_key(price: str, vol: str, t: str, side: str) -> tuple:
    return (price, vol, int(t.replace(".", "")), "buy" if side == "b" else "sell")


def gt_key(r: dict) -> tuple:
    return (r["price"], r["qty"], int(r["ts_us"]), r["side"])


async def v1_subscribe(ws, pairs: list[str], reqid: int) -> dict[str, int]:
    await ws.send(orjson.dumps({"event": "subscribe", "reqid": reqid, "pair": pairs,
                                "subscription": {"name": "trade"}}).decode())
    ids = {}
    while len(ids) < len(pairs):
        m = await recv_json(ws)
        if isinstance(m, dict) and m.get("event") == "subscriptionStatus":
            assert m["status"] == "subscribed" and m["reqid"] == reqid and m["channelName"] == "trade"
            assert m["subscription"] == {"name": "trade"}
            ids[m["pair"]] = m["channelID"]
    return ids


def test_v1_trades_channel_ids_heartbeat_ping(make_sim):
    sim = make_sim(rate=2000, seed=4, venue_options={"kraken": {"heartbeat_interval": 0.3}})
    v1, _, rest = urls(sim)

    async def run():
        async with ws_connect(v1) as a, ws_connect(v1) as b, ws_connect(v1) as idle:
            for ws in (a, b, idle):
                st = await recv_json(ws)
                assert st["event"] == "systemStatus" and st["status"] == "online" and st["connectionID"] > 2**53
            ids_a = await v1_subscribe(a, ["XBT/USD", "XDG/USD"], 1)
            ids_b = await v1_subscribe(b, ["XBT/USD", "XDG/USD"], 2)
            assert set(ids_a.values()).isdisjoint(ids_b.values()), "channel ids differ per connection"
            assert len(set(ids_a.values())) == 2
            await a.send('{"event":"subscribe","reqid":3,"pair":["XBT/EUR","XBTUSD"],"subscription":{"name":"trade"}}')
            await a.send('{"event":"subscribe","reqid":4,"pair":["XBT/USD"],"subscription":{"name":"book","depth":42}}')
            await a.send('{"event":"ping","reqid":42}')
            errors, pong, frames = [], None, []
            while len(errors) < 3 or pong is None or sum(len(f[1]) for f in frames) < 500:
                m = await recv_json(a)
                if isinstance(m, list):
                    frames.append(m)
                elif m.get("status") == "error":
                    errors.append(m)
                elif m.get("event") == "pong":
                    pong = m
            assert pong == {"event": "pong", "reqid": 42}
            assert [e["errorMessage"] for e in errors] == [
                "Currency pair not supported XBT/EUR", "Currency pair not in ISO 4217-A3 format XBTUSD",
                "Subscription depth not supported"]
            # the idle connection gets heartbeats about every interval
            while True:  # drain the ones queued so far
                try:
                    assert await recv_json(idle, 0.1) == {"event": "heartbeat"}
                except asyncio.TimeoutError:
                    break
            t0 = time.monotonic()
            beats = 0
            while time.monotonic() - t0 < 1.0:
                m = await recv_json(idle)
                assert m == {"event": "heartbeat"}
                beats += 1
            assert 2 <= beats <= 5
            # unsubscribe by channel id
            await b.send('{"event":"unsubscribe","channelID":%d}' % ids_b["XBT/USD"])
            while not (isinstance(m := await recv_json(b), dict) and m.get("status") == "unsubscribed"):
                pass
            assert m["pair"] == "XBT/USD" and m["channelID"] == ids_b["XBT/USD"]
            return ids_a, frames

    ids_a, frames = asyncio.run(run())
    sim.flush()
    rows = read_gt(sim.ground_truth_path)
    by_sym = defaultdict(list)
    for r in rows:
        by_sym[r["symbol"]].append(r)
    got = defaultdict(list)
    for f in frames:
        cid, trades, name, pair = f
        assert name == "trade" and ids_a[pair] == cid and len(f) == 4
        for t in trades:
            assert len(t) == 6 and all(isinstance(x, str) for x in t) and t[4] in "ml" and t[5] == ""
            got[pair].append(v1_key(*t[:4]))
    for pair, sym in (("XBT/USD", "BTC-USD"), ("XDG/USD", "DOGE-USD")):
        keys = [gt_key(r) for r in by_sym[sym]]
        i = keys.index(got[pair][0])
        assert keys[i:i + len(got[pair])] == got[pair], "v1 trades are the ground truth, in order"
    assert all(len(r["price"].split(".")[1]) == 5 for r in by_sym["BTC-USD"])


def test_v2_trades_snapshot_ids_and_skip(make_sim):
    sim = make_sim(rate=2000, seed=5)
    _, v2, _ = urls(sim)

    async def run():
        async with ws_connect(v2) as ws:
            st = await recv_json(ws)
            assert st["channel"] == "status" and st["data"][0]["system"] == "online"
            await asyncio.sleep(0.2)
            await ws.send('{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD","XBT/USD"]},'
                          '"req_id":7}')
            await ws.send('{"method":"ping","req_id":8}')
            ack = err = pong = snap = None
            updates = []
            while ack is None or err is None or pong is None or snap is None or len(updates) < 100:
                m = await recv_json(ws)
                if m.get("method") == "subscribe":
                    if m["success"]:
                        ack = m
                    else:
                        err = m
                elif m.get("method") == "pong":
                    pong = m
                elif m.get("channel") == "trade":
                    if m["type"] == "snapshot":
                        snap = m
                    else:
                        updates += m["data"]
            assert ack["result"]["symbol"] == "BTC/USD" and ack["req_id"] == 7 and ack["time_in"].endswith("Z")
            assert err["symbol"] == "XBT/USD" and pong["req_id"] == 8
            assert 0 < len(snap["data"]) <= 50
            cid = await asyncio.to_thread(conn_id, sim, "kraken", ws)
            await asyncio.to_thread(sim.fault, "kraken", "skip_ids", symbol="BTC-USD", count=6, conn=cid)
            nxt = await asyncio.to_thread(lambda: sim.stats("kraken")["symbols"]["BTC-USD"]["next_trade_id"])
            while updates[-1]["trade_id"] < nxt + 40:
                m = await recv_json(ws)
                if m.get("channel") == "trade":
                    updates += m["data"]
            return snap["data"], updates

    snap, updates = asyncio.run(run())
    sim.flush()
    gt = {(r["symbol"], int(r["trade_id"])): r for r in read_gt(sim.ground_truth_path)}
    ids = [t["trade_id"] for t in snap + updates]
    jumps = [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
    assert len(jumps) == 1 and jumps[0][1] - jumps[0][0] == 7, "one gap of the 6 withheld ids"
    for t in snap + updates:
        r = gt[("BTC-USD", t["trade_id"])]
        assert isinstance(t["price"], (int, float)) and Decimal(str(t["price"])) == Decimal(r["price"])
        assert Decimal(str(t["qty"])) == Decimal(r["qty"]) and t["side"] == r["side"]
        assert t["symbol"] == "BTC/USD" and t["ord_type"] in ("market", "limit")
        ts = t["timestamp"]
        assert ts.endswith("Z") and len(ts) == 27
        sec = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
        assert sec * 1_000_000 + int(ts[20:26]) == int(r["ts_us"])


def test_rest_assetpairs_trades_paging_ohlc_depth(make_sim):
    sim = make_sim(rate=3000, speed=120, seed=9)
    _, _, rest = urls(sim)
    assert sim.wait_for(lambda: sim.sim_now_us() >= START_US + 200_000_000, 10)
    sim.pause()
    sim.flush()
    rows = [r for r in read_gt(sim.ground_truth_path) if r["symbol"] == "BTC-USD"]
    with httpx.Client(base_url=rest) as c:
        pairs = c.get("/0/public/AssetPairs").json()
        assert pairs["error"] == []
        res = pairs["result"]
        assert res["XXBTZUSD"]["wsname"] == "XBT/USD" and res["XXBTZUSD"]["altname"] == "XBTUSD"
        assert res["XXBTZUSD"]["base"] == "XXBT" and res["XXBTZUSD"]["quote"] == "ZUSD"
        assert res["XDGUSD"]["wsname"] == "XDG/USD" and res["XDGUSD"]["base"] == "XXDG"
        assert any(k.endswith(".d") and "wsname" not in v for k, v in res.items())
        # page through all trades with since=<last>
        since = str(START_US * 1000 - 1)
        got = []
        while True:
            r = c.get("/0/public/Trades", params={"pair": "XBTUSD", "since": since}).json()
            assert r["error"] == [] and set(r["result"]) == {"XXBTZUSD", "last"}
            page = r["result"]["XXBTZUSD"]
            assert len(page) <= 1000
            got += page
            if not page:
                break
            assert int(r["result"]["last"]) // 1000 == round(page[-1][2] * 1_000_000)
            since = r["result"]["last"]
        assert len(got) == len(rows) > 1000
        for t, g in zip(got, rows):
            assert t[6] == int(g["trade_id"]) and (t[0], t[1]) == (g["price"], g["qty"])
            assert round(t[2] * 1_000_000) == int(g["ts_us"]) and t[3] == ("b" if g["side"] == "buy" else "s")
        ids = [t[6] for t in got]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        # since in seconds is inclusive of that second
        s = int(rows[500]["ts_us"]) // 1_000_000
        first = c.get("/0/public/Trades", params={"pair": "XXBTZUSD", "since": s, "count": 3}).json()
        first = first["result"]["XXBTZUSD"]
        expect = [int(g["trade_id"]) for g in rows if int(g["ts_us"]) >= s * 1_000_000][:3]
        assert [t[6] for t in first] == expect
        assert c.get("/0/public/Trades", params={"pair": "NOPEUSD"}).json()["error"] == ["EQuery:Unknown asset pair"]
        # OHLC with trade count, equal to the ground truth per minute
        per = defaultdict(list)
        for g in rows:
            per[int(g["ts_us"]) // 60_000_000 * 60].append(g)
        o = c.get("/0/public/OHLC", params={"pair": "XBTUSD", "interval": 1}).json()["result"]
        bars = {b[0]: b for b in o["XXBTZUSD"]}
        assert sorted(per) == sorted(t for t, b in bars.items() if b[7] > 0)
        for t, gs in per.items():
            b = bars[t]
            px = [Decimal(g["price"]) for g in gs]
            assert b[7] == len(gs) and Decimal(b[6]) == sum(Decimal(g["qty"]) for g in gs)
            assert (Decimal(b[1]), Decimal(b[2]), Decimal(b[3]), Decimal(b[4])) == (px[0], max(px), min(px), px[-1])
        assert o["last"] == max(bars) - 60
        later = c.get("/0/public/OHLC", params={"pair": "XBTUSD", "since": min(bars)}).json()["result"]
        assert [b[0] for b in later["XXBTZUSD"]][:len(bars) - 1] == sorted(bars)[1:]
        d = c.get("/0/public/Depth", params={"pair": "XBTUSD", "count": 4}).json()["result"]["XXBTZUSD"]
        assert len(d["asks"]) == len(d["bids"]) == 4 and Decimal(d["bids"][0][0]) < Decimal(d["asks"][0][0])
        assert isinstance(d["asks"][0][2], int)
        sim.fault("kraken", "rest_fail", status=429)
        r = c.get("/0/public/Time")
        assert r.status_code == 429 and r.json()["error"] == ["EGeneral:Too many requests"]
        assert c.get("/0/public/Time").json()["result"]["unixtime"] > START_US // 1_000_000


def test_v1_faults_skip_malformed_notice_close(make_sim):
    sim = make_sim(rate=2000, seed=6)
    v1, _, _ = urls(sim)

    async def run():
        async with ws_connect(v1) as ws:
            await recv_json(ws)
            ids = await v1_subscribe(ws, ["XBT/USD"], 1)
            while not isinstance(first := await recv_json(ws), list):
                pass
            trades = [v1_key(*t[:4]) for t in first[1]]
            cid = await asyncio.to_thread(conn_id, sim, "kraken", ws)
            await asyncio.to_thread(sim.fault, "kraken", "skip_ids", symbol="BTC-USD", count=10)
            await asyncio.to_thread(sim.fault, "kraken", "malformed", conn=cid, count=2)
            await asyncio.to_thread(sim.fault, "kraken", "unknown_symbol", conn=cid, symbol="ZZZ-USD")
            await asyncio.to_thread(sim.fault, "kraken", "notice", conn=cid, close_after=0.5)
            invalid = missing = 0
            unknown = notice = None
            with pytest.raises(ConnectionClosed) as e:
                while True:
                    raw = await recv_text(ws)
                    try:
                        m = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        invalid += 1
                        continue
                    if isinstance(m, dict):
                        if m.get("status") == "maintenance":
                            notice = m
                        continue
                    if m[-1] == "ZZZ/USD":
                        unknown = m
                    elif len(m[1][0]) != 6:
                        missing += 1
                    else:
                        assert m[0] == ids["XBT/USD"]
                        trades += [v1_key(*t[:4]) for t in m[1]]
            assert e.value.rcvd is not None and e.value.rcvd.code == 1001
            return invalid, missing, unknown, notice, trades

    invalid, missing, unknown, notice, trades = asyncio.run(run())
    assert invalid == 1 and missing == 1 and unknown is not None and notice["event"] == "systemStatus"
    sim.flush()
    keys = [gt_key(r) for r in read_gt(sim.ground_truth_path) if r["symbol"] == "BTC-USD"]
    i0, i1 = keys.index(trades[0]), len(keys) - 1 - keys[::-1].index(trades[-1])
    missing = Counter(keys[i0:i1 + 1]) - Counter(trades)  # multisets: identical fills of one order repeat
    assert sum(missing.values()) == 10, "the withheld trades are only in the ground truth"
