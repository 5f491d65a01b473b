"""The KuCoin simulator: bullet tokens, welcome, subscribe/ack/errors, match messages against the
ground truth (tradeId == sequence), JSON ping/pong and the ping-timeout drop, token expiry with a
make-before-break second connection, REST histories (last 100 only), candles, symbols, faults."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from decimal import Decimal

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from .simtest import START_US, SimFactory, conn_id, read_gt, recv_json, recv_text, ws_connect

pytestmark = pytest.mark.timeout(60)

SYMS = ["BTC-USDT", "ETH-USDT"]


@pytest.fixture
def make_sim(tmp_path):
    f = SimFactory(tmp_path, "kucoin", SYMS)
    yield f
    f.close()


def rest(sim) -> str:
    return sim.endpoints["kucoin"]["rest"]


async def bullet(sim) -> tuple[str, dict]:
    r = await asyncio.to_thread(httpx.post, rest(sim) + "/api/v1/bullet-public")
    body = r.json()
    assert body["code"] == "200000"
    return body["data"]["token"], body["data"]["instanceServers"][0]


async def open_ws(sim, connect_id: str):
    token, server = await bullet(sim)
    ws = await ws_connect(f"{server['endpoint']}?token={token}&connectId={connect_id}")
    welcome = await recv_json(ws)
    assert welcome == {"id": connect_id, "type": "welcome"}
    return ws, token, server


async def matches(ws, n: int, timeout: float = 10.0) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        m = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if m.get("subject") == "trade.l3match":
            out.append(m)
    return out


def test_subscribe_and_match_messages_equal_ground_truth(make_sim):
    sim = make_sim(rate=3000, seed=2)

    async def run():
        ws, _, server = await open_ws(sim, "c1")
        assert server["pingInterval"] == 18000 and server["pingTimeout"] == 10000
        async with ws:
            await ws.send('{"id":1545910660739,"type":"subscribe","topic":"/market/match:BTC-USDT,ETH-USDT",'
                          '"privateChannel":false,"response":true}')
            assert await recv_json(ws) == {"id": "1545910660739", "type": "ack"}
            await ws.send('{"id":"e1","type":"subscribe","topic":"/market/match:BSV-BTC","response":true}')
            await ws.send('{"id":"p1","type":"ping"}')
            err = pong = None
            got = []
            while err is None or pong is None or len(got) < 400:
                m = await recv_json(ws)
                if m.get("type") == "error":
                    err = m
                elif m.get("type") == "pong":
                    pong = m
                else:
                    got.append(m)
            assert err == {"id": "e1", "type": "error", "code": 404, "data": "topic /market/match:BSV-BTC is not found"}
            assert pong == {"id": "p1", "type": "pong"}
            return got

    msgs = asyncio.run(run())
    sim.flush()
    gt = {(r["symbol"], r["trade_id"]): r for r in read_gt(sim.ground_truth_path)}
    last = {}
    for m in msgs:
        assert m["type"] == "message" and m["subject"] == "trade.l3match"
        d = m["data"]
        sym = m["topic"].split(":")[1]
        assert d["symbol"] == sym and d["type"] == "match"
        assert d["tradeId"] == d["sequence"] and isinstance(d["time"], str) and len(d["time"]) == 19
        assert len(d["makerOrderId"]) == len(d["takerOrderId"]) == 24
        seq = int(d["sequence"])
        assert seq > last.get(sym, 0), "sequences increase per symbol"
        last[sym] = seq
        r = gt[(sym, d["tradeId"])]
        assert (r["price"], r["qty"], r["side"]) == (d["price"], d["size"], d["side"])
        assert int(r["ts_us"]) * 1000 == int(d["time"])
    # sequences jump (book events share the sequence), so ids are not gap-detectable
    seqs = [int(m["data"]["sequence"]) for m in msgs if m["data"]["symbol"] == "BTC-USDT"]
    assert any(b - a > 1 for a, b in zip(seqs, seqs[1:]))
    # the ground truth holds every trade, with the sequence as trade id
    rows = [r for r in read_gt(sim.ground_truth_path) if r["symbol"] == "BTC-USDT"]
    ids = [int(r["trade_id"]) for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_ping_timeout_drops_without_close_frame(make_sim):
    sim = make_sim(rate=300, venue_options={"kucoin": {"ping_interval_ms": 400, "ping_timeout_ms": 400}})

    async def run():
        t0 = time.monotonic()      # before the silent link opens: its idle clock starts there
        silent, _, _ = await open_ws(sim, "silent")
        pinger, _, server = await open_ws(sim, "pinger")
        assert server["pingInterval"] == 400
        pongs = 0
        closed = None
        async with silent, pinger:
            await silent.send('{"id":"s","type":"subscribe","topic":"/market/match:BTC-USDT","response":true}')
            while time.monotonic() - t0 < 2.0:
                await pinger.send('{"id":"%d","type":"ping"}' % pongs)
                while (m := await recv_json(pinger))["type"] != "pong":
                    pass
                pongs += 1
                if closed is None:  # read the silent one for 0.2 s (trades flow to it)
                    until = time.monotonic() + 0.2
                    try:
                        while (left := until - time.monotonic()) > 0:
                            await asyncio.wait_for(silent.recv(), left)
                    except asyncio.TimeoutError:
                        pass
                    except ConnectionClosed as e:
                        closed = (e, time.monotonic() - t0)
                else:
                    await asyncio.sleep(0.2)
            assert pinger.state.name == "OPEN"
        return closed, pongs

    closed, pongs = asyncio.run(run())
    assert closed is not None and closed[0].rcvd is None, "dropped without a close frame"
    assert 0.7 <= closed[1] < 2.0 and pongs >= 4
    assert sim.stats("kucoin")["kucoin"]["ping_drops"] == 1


def test_token_expiry_closes_connections_while_new_token_keeps_receiving(make_sim):
    ttl = 2.5
    sim = make_sim(rate=1000, venue_options={"kucoin": {"token_ttl": ttl, "ping_interval_ms": 60000}})

    async def run():
        old, old_token, s1 = await open_ws(sim, "old")
        await old.send('{"id":"1","type":"subscribe","topic":"/market/match:BTC-USDT","response":true}')
        assert (await recv_json(old))["type"] == "ack"
        t_old = time.monotonic()
        await matches(old, 3)
        await asyncio.sleep(max(0.0, ttl - 1.2 - (time.monotonic() - t_old)))
        # make before break: a new token, a second connection, subscribed before the old one expires
        new, new_token, s2 = await open_ws(sim, "new")
        assert new_token != old_token and s2["endpoint"] != s1["endpoint"], "endpoints rotate"
        await new.send('{"id":"2","type":"subscribe","topic":"/market/match:BTC-USDT","response":true}')
        assert (await recv_json(new))["type"] == "ack"
        seen_old, seen_new = [], []
        with pytest.raises(ConnectionClosed) as e:
            while True:
                m = await recv_json(old)
                if m.get("type") == "error":
                    assert m == {"type": "error", "code": 401, "data": "token is expired"}
                    seen_old.append("expired")
                elif m.get("subject") == "trade.l3match":
                    seen_old.append(int(m["data"]["sequence"]))
        expired_after = time.monotonic() - t_old
        assert e.value.rcvd is not None and seen_old[-1] == "expired", "401 error, then a close frame"
        assert ttl - 0.3 <= expired_after < ttl + 1.0
        # the new connection kept receiving through the cut-over: it overlaps the old one
        last_old = max(s for s in seen_old if isinstance(s, int))
        while not seen_new or seen_new[-1] <= last_old + 1000:
            seen_new += [int(m["data"]["sequence"]) for m in await matches(new, 1)]
        assert seen_new[0] <= last_old, "the connections overlapped"
        assert {s for s in seen_old if isinstance(s, int) and s >= seen_new[0]} <= set(seen_new)
        # the expired token is refused
        ws = await ws_connect(f"{s1['endpoint']}?token={old_token}&connectId=again")
        m = await recv_json(ws)
        assert m == {"type": "error", "code": 401, "data": "token is expired"}
        with pytest.raises(ConnectionClosed):
            await recv_text(ws)
        # the fault expires a token right now
        cid = await asyncio.to_thread(conn_id, sim, "kucoin", new)
        rec = await asyncio.to_thread(sim.fault, "kucoin", "token_expiry", conn=cid)
        assert rec["applied_to"] == [cid]
        with pytest.raises(ConnectionClosed):
            while True:
                await recv_text(new)
        await old.close()

    asyncio.run(run())
    st = sim.stats("kucoin")["kucoin"]
    assert st["tokens_issued"] == 2 and st["tokens_expired"] == 2


def test_rest_histories_candles_symbols_and_faults(make_sim):
    sim = make_sim(rate=3000, speed=120, seed=12)

    async def run():
        ws, _, _ = await open_ws(sim, "f")
        async with ws:
            await ws.send('{"id":"1","type":"subscribe","topic":"/market/match:ETH-USDT","response":true}')
            await recv_json(ws)
            await matches(ws, 3)
            cid = await asyncio.to_thread(conn_id, sim, "kucoin", ws)
            await asyncio.to_thread(sim.fault, "kucoin", "skip_ids", symbol="ETH-USDT", count=20)
            await asyncio.to_thread(sim.fault, "kucoin", "malformed", conn=cid, count=2)
            invalid = missing = 0
            seen = []
            while invalid < 1 or missing < 1 or len(seen) < 300:
                raw = await recv_text(ws)
                try:
                    m = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    invalid += 1
                    continue
                if "sequence" not in m.get("data", {}):
                    missing += 1
                else:
                    seen.append(m["data"]["sequence"])
            return seen

    seen = asyncio.run(run())
    assert sim.wait_for(lambda: sim.sim_now_us() >= START_US + 150_000_000, 10)  # a few candles
    sim.pause()
    sim.flush()
    rows = read_gt(sim.ground_truth_path)
    eth = [r for r in rows if r["symbol"] == "ETH-USDT"]
    ids = [r["trade_id"] for r in eth]
    i0 = ids.index(seen[0])
    missing_ids = set(ids[i0:ids.index(seen[-1]) + 1]) - set(seen)
    assert len(missing_ids) == 20 and sim.stats("kucoin")["symbols"]["ETH-USDT"]["withheld"] == 20
    with httpx.Client(base_url=rest(sim)) as c:
        h = c.get("/api/v1/market/histories", params={"symbol": "ETH-USDT"}).json()["data"]
        assert len(h) == 100, "only the last 100 trades"
        assert [t["sequence"] for t in h] == ids[-100:]
        assert all(isinstance(t["time"], int) and t["time"] == int(r["ts_us"]) * 1000 for t, r in zip(h, eth[-100:]))
        assert [(t["price"], t["size"], t["side"]) for t in h] == [
            (r["price"], r["qty"], r["side"]) for r in eth[-100:]]
        assert not missing_ids & {t["sequence"] for t in h}, "withheld trades are older than REST can reach"
        syms = c.get("/api/v2/symbols").json()["data"]
        by = {s["symbol"]: s for s in syms}
        assert by["ETH-USDT"]["enableTrading"] and by["ETH-USDT"]["baseCurrency"] == "ETH"
        assert any(not s["enableTrading"] for s in syms)
        assert c.get("/api/v1/symbols").json()["data"] == syms
        kl = c.get("/api/v1/market/candles", params={"symbol": "ETH-USDT", "type": "1min"}).json()["data"]
        per = defaultdict(list)
        for r in eth:
            per[int(r["ts_us"]) // 60_000_000 * 60].append(r)
        assert [int(k[0]) for k in kl] == sorted(per, reverse=True)
        for k in kl:
            rs = per[int(k[0])]
            px = [Decimal(r["price"]) for r in rs]
            assert (Decimal(k[1]), Decimal(k[2]), Decimal(k[3]), Decimal(k[4])) == (px[0], px[-1], max(px), min(px))
            assert Decimal(k[5]) == sum(Decimal(r["qty"]) for r in rs)
        two = c.get("/api/v1/market/candles", params={"symbol": "ETH-USDT", "type": "1min",
                                                      "startAt": int(kl[-1][0]), "endAt": int(kl[-2][0])}).json()
        assert [k[0] for k in two["data"]] == [kl[-2][0], kl[-1][0]]
        lv = c.get("/api/v1/market/orderbook/level2_20", params={"symbol": "ETH-USDT"}).json()["data"]
        assert len(lv["bids"]) == 20 and isinstance(lv["sequence"], str)
        assert Decimal(lv["bids"][0][0]) < Decimal(lv["asks"][0][0])
        assert c.get("/api/v1/market/histories", params={"symbol": "NOPE-USDT"}).json()["code"] == "400100"
        sim.fault("kucoin", "rest_fail", status=503)
        r = c.post("/api/v1/bullet-public")
        assert r.status_code == 503 and r.json()["code"] == "500000"
        assert c.get("/api/v1/timestamp").json()["data"] > 0
