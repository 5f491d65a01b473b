"""The OKX v5 simulator: subscribe/ack/errors, aggregated ``trades`` against the per-fill ground
truth, ``trades-all``, text ping/pong and the idle drop without a close frame, REST history
pagination, candles, instruments, faults."""

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
    f = SimFactory(tmp_path, "okx", SYMS)
    yield f
    f.close()


def urls(sim):
    ep = sim.endpoints["okx"]
    return ep["ws"] + "/ws/v5/public", ep["ws"] + "/ws/v5/business", ep["rest"]


def gt_rows(sim) -> dict[tuple[str, int], dict]:
    sim.flush()
    rows = read_gt(sim.ground_truth_path)
    assert rows and all(r["exchange"] == "okx" for r in rows)
    return {(r["symbol"], int(r["trade_id"])): r for r in rows}


async def data_msgs(ws, n: int, channel: str, timeout: float = 10.0) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        m = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if m.get("arg", {}).get("channel") == channel and "data" in m:
            out.append(m)
    return out


def test_subscribe_trades_aggregates_and_trades_all_match_ground_truth(make_sim):
    sim = make_sim(rate=3000, seed=3)
    pub, bus, _ = urls(sim)

    async def run():
        async with ws_connect(pub) as ws, ws_connect(bus) as wb:
            await ws.send('{"id":"1512","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},'
                          '{"channel":"trades","instId":"ETH-USDT"}]}')
            acks = [await recv_json(ws), await recv_json(ws)]
            assert [a["arg"]["instId"] for a in acks] == SYMS
            assert all(a["id"] == "1512" and a["event"] == "subscribe" and len(a["connId"]) == 8 for a in acks)
            # errors: trades-all is on /business, unknown instrument, bad JSON, bad op
            await ws.send('{"id":"2","op":"subscribe","args":[{"channel":"trades-all","instId":"BTC-USDT"}]}')
            await ws.send('{"op":"subscribe","args":[{"channel":"trades","instId":"NOPE-USDT"}]}')
            await ws.send("{not json")
            await ws.send('{"op":"frobnicate","args":[]}')
            errors, trades = [], []
            while len(errors) < 4 or len(trades) < 300:
                m = await recv_json(ws)
                if m.get("event") == "error":
                    errors.append(m)
                elif "data" in m:
                    trades.append(m)
            assert [e["code"] for e in errors] == ["60018", "60018", "60012", "60012"]
            assert errors[0]["id"] == "2" and "trades-all" in errors[0]["msg"]
            await wb.send('{"op":"subscribe","args":[{"channel":"trades-all","instId":"BTC-USDT"}]}')
            assert (await recv_json(wb))["event"] == "subscribe"
            fills = await data_msgs(wb, 200, "trades-all")
            return trades, fills

    trades, fills = asyncio.run(run())
    gt = gt_rows(sim)
    last: dict[str, int] = {}
    counts = defaultdict(int)
    for m in trades:
        assert len(m["data"]) == 1
        d = m["data"][0]
        sym = m["arg"]["instId"]
        assert d["instId"] == sym and d["source"] == "0"
        tid, count = int(d["tradeId"]), int(d["count"])
        assert isinstance(d["tradeId"], str) and isinstance(d["ts"], str) and isinstance(d["seqId"], int)
        if sym in last:
            assert tid - count == last[sym], "consecutive ids: tradeId - count == previous tradeId"
        last[sym] = tid
        counts[count > 1] += 1
        rows = [gt[(sym, i)] for i in range(tid - count + 1, tid + 1)]
        assert {r["price"] for r in rows} == {d["px"]}
        assert {r["side"] for r in rows} == {d["side"]}
        assert {int(r["ts_us"]) for r in rows} == {int(d["ts"]) * 1000}
        assert sum(Decimal(r["qty"]) for r in rows) == Decimal(d["sz"])
    assert counts[True] > 10 and counts[False] > 10, "both single fills and aggregates occur"
    ids = [int(m["data"][0]["tradeId"]) for m in fills]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    for m in fills:
        d = m["data"][0]
        r = gt[("BTC-USDT", int(d["tradeId"]))]
        assert (r["price"], r["qty"], r["side"], int(r["ts_us"])) == (d["px"], d["sz"], d["side"], int(d["ts"]) * 1000)
        assert "count" not in d
    assert all(int(r["ts_us"]) % 1000 == 0 for r in gt.values())


def test_text_ping_and_idle_drop_without_close_frame(make_sim):
    sim = make_sim(rate=500, venue_options={"okx": {"idle_timeout": 1.0}})
    pub, _, rest = urls(sim)

    async def silent_subscriber():
        async with ws_connect(pub) as ws:
            await ws.send('{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}')
            t0 = time.monotonic()
            got = 0
            with pytest.raises(ConnectionClosed) as e:
                while True:
                    m = await recv_text(ws, 5)
                    got += '"data"' in m
            return e.value, time.monotonic() - t0, got

    async def quiet(ping: bool, seconds: float):
        """No subscription, so nothing flows; optionally ping every 0.3 s."""
        async with ws_connect(pub) as ws:
            t0 = time.monotonic()
            pongs = 0
            try:
                while time.monotonic() - t0 < seconds:
                    if ping:
                        await ws.send("ping")
                    try:
                        m = await recv_text(ws, 0.3)
                        assert m == "pong"
                        pongs += 1
                    except asyncio.TimeoutError:
                        pass
            except ConnectionClosed as exc:
                return exc, time.monotonic() - t0, pongs
            return None, time.monotonic() - t0, pongs

    async def run():
        return await asyncio.gather(silent_subscriber(), quiet(False, 4.0), quiet(True, 2.6))

    (e1, t1, got), (e2, t2, _), (e3, t3, pongs) = asyncio.run(run())
    # data flowed, yet a client that never sends anything is dropped, with no close frame
    assert got > 0 and e1.rcvd is None and 0.9 <= t1 < 2.5
    assert e2 is not None and e2.rcvd is None and 0.9 <= t2 < 2.5
    # a client that sends the text ping stays, and every ping gets the text pong
    assert e3 is None and t3 >= 2.5 and pongs >= 6
    st = sim.stats("okx")
    assert st["okx"]["idle_drops"] == 2
    assert sum(c["closed_reason"] == "idle_timeout" for c in st["closed_connections"]) == 2


def test_rest_history_pagination_candles_instruments(make_sim):
    end = "2026-01-05T10:04:00Z"
    sim = make_sim(rate=4000, speed=120, end=end, seed=21)
    _, _, rest = urls(sim)
    assert sim.wait_for(sim.ended, timeout=20)
    gt = gt_rows(sim)
    ids = sorted(i for s, i in gt if s == "BTC-USDT")
    with httpx.Client(base_url=rest) as c:
        inst = c.get("/api/v5/public/instruments", params={"instType": "SPOT"}).json()
        assert inst["code"] == "0"
        by = {d["instId"]: d for d in inst["data"]}
        assert by["BTC-USDT"]["baseCcy"] == "BTC" and by["BTC-USDT"]["quoteCcy"] == "USDT"
        assert by["BTC-USDT"]["state"] == "live" and any(d["state"] != "live" for d in inst["data"])
        assert c.get("/api/v5/public/instruments").json()["code"] == "50014"
        # newest first, at most 100, pages back with after=<oldest id seen>
        page = c.get("/api/v5/market/history-trades", params={"instId": "BTC-USDT", "limit": 500}).json()["data"]
        assert len(page) == 100 and [int(t["tradeId"]) for t in page] == ids[-1:-101:-1]
        target_lo, target_hi = ids[1000], ids[1450]  # repair the ids strictly between these
        got = []
        after = target_hi
        while True:
            page = c.get("/api/v5/market/history-trades",
                         params={"instId": "BTC-USDT", "type": "1", "after": after}).json()["data"]
            got += page
            after = int(page[-1]["tradeId"])
            if after <= target_lo:
                break
        repaired = sorted(int(t["tradeId"]) for t in got if target_lo < int(t["tradeId"]) < target_hi)
        assert repaired == list(range(target_lo + 1, target_hi))
        for t in got:
            r = gt[("BTC-USDT", int(t["tradeId"]))]
            assert (r["price"], r["qty"], r["side"], int(r["ts_us"])) == (t["px"], t["sz"], t["side"],
                                                                          int(t["ts"]) * 1000)
        # before + after: the newest rows strictly between the two ids
        both = c.get("/api/v5/market/history-trades",
                     params={"instId": "BTC-USDT", "after": ids[60], "before": ids[49]}).json()["data"]
        assert [int(t["tradeId"]) for t in both] == ids[59:49:-1]
        # type=2: by timestamp (ms); before is not supported there
        t_ms = int(gt[("BTC-USDT", ids[500])]["ts_us"]) // 1000
        p2 = c.get("/api/v5/market/history-trades",
                   params={"instId": "BTC-USDT", "type": "2", "after": t_ms, "limit": 5}).json()["data"]
        assert all(int(t["ts"]) < t_ms for t in p2) and len(p2) == 5
        older = sorted((int(r["ts_us"]), i) for (s, i), r in gt.items()
                       if s == "BTC-USDT" and int(r["ts_us"]) // 1000 < t_ms)
        assert [int(t["tradeId"]) for t in p2] == [i for _, i in older[-1:-6:-1]]     # the newest 5 older
        assert c.get("/api/v5/market/history-trades",
                     params={"instId": "BTC-USDT", "type": "2", "before": t_ms}).json()["code"] == "51000"
        assert c.get("/api/v5/market/history-trades", params={"instId": "X-Y"}).json()["code"] == "51001"
        # candles: newest first, only bars with trades, volume in base currency, no trade count
        per_min = defaultdict(lambda: {"vol": Decimal(0), "px": []})
        for (s, _), r in gt.items():
            if s == "ETH-USDT":
                k = int(r["ts_us"]) // 60_000_000 * 60_000
                per_min[k]["vol"] += Decimal(r["qty"])
        for (s, i) in sorted(k for k in gt if k[0] == "ETH-USDT"):
            r = gt[(s, i)]
            per_min[int(r["ts_us"]) // 60_000_000 * 60_000]["px"].append(Decimal(r["price"]))
        for path in ("/api/v5/market/candles", "/api/v5/market/history-candles"):
            # The simulated clock runs on after the end (120x), so a bar can close during the call:
            # confirm is "1" for a bar closed before it, "0" for one still open after it.
            now_before_ms = sim.sim_now_us() // 1000
            kl = c.get(path, params={"instId": "ETH-USDT", "bar": "1m"}).json()["data"]
            now_after_ms = sim.sim_now_us() // 1000
            assert [int(k[0]) for k in kl] == sorted(per_min, reverse=True)
            for k in kl:
                agg = per_min[int(k[0])]
                assert len(k) == 9 and Decimal(k[5]) == agg["vol"]
                assert (Decimal(k[1]), Decimal(k[4])) == (agg["px"][0], agg["px"][-1])
                assert (Decimal(k[2]), Decimal(k[3])) == (max(agg["px"]), min(agg["px"]))
                closes_ms = int(k[0]) + 60_000
                if closes_ms <= now_before_ms:
                    assert k[8] == "1", k
                elif closes_ms > now_after_ms:
                    assert k[8] == "0", k
                else:
                    assert k[8] in ("0", "1"), k
        t1 = START_US // 1000 + 120_000
        older = c.get("/api/v5/market/candles", params={"instId": "ETH-USDT", "after": t1}).json()["data"]
        assert [int(k[0]) for k in older] == [START_US // 1000 + 60_000, START_US // 1000]
        newer = c.get("/api/v5/market/candles", params={"instId": "ETH-USDT", "before": t1, "limit": 1}).json()
        assert [int(k[0]) for k in newer["data"]] == [max(per_min)]
        assert c.get("/api/v5/public/time").json()["data"][0]["ts"].isdigit()


def test_faults_skip_malformed_notice_rest(make_sim):
    sim = make_sim(rate=2000, seed=8)
    pub, _, rest = urls(sim)

    async def run():
        async with ws_connect(pub) as ws:
            await ws.send('{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}')
            await recv_json(ws)
            first = await data_msgs(ws, 3, "trades")
            cid = await asyncio.to_thread(conn_id, sim, "okx", ws)
            await asyncio.to_thread(sim.fault, "okx", "skip_ids", symbol="BTC-USDT", count=5)
            nxt = await asyncio.to_thread(lambda: sim.stats("okx")["symbols"]["BTC-USDT"]["next_trade_id"])
            prev = int(first[-1]["data"][0]["tradeId"])
            jump = None
            while prev < nxt + 30:
                d = (await data_msgs(ws, 1, "trades"))[0]["data"][0]
                tid, cnt = int(d["tradeId"]), int(d["count"])
                if tid - cnt != prev:
                    assert jump is None
                    jump = (prev, tid - cnt)
                prev = tid
            await asyncio.to_thread(sim.fault, "okx", "malformed", conn=cid, count=2)
            await asyncio.to_thread(sim.fault, "okx", "unknown_symbol", conn=cid, symbol="ZZZ-USDT")
            await asyncio.to_thread(sim.fault, "okx", "notice", conn=cid)
            invalid = missing = 0
            unknown = notice = None
            while invalid < 1 or missing < 1 or unknown is None or notice is None:
                raw = await recv_text(ws)
                try:
                    m = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    invalid += 1
                    continue
                if m.get("event") == "notice":
                    notice = m
                elif m.get("arg", {}).get("instId") == "ZZZ-USDT":
                    unknown = m
                elif "data" in m and "tradeId" not in m["data"][0]:
                    missing += 1
            return jump, notice

    jump, notice = asyncio.run(run())
    assert jump is not None and jump[1] - jump[0] >= 5
    assert notice["code"] == "64008" and "connId" in notice
    # the withheld ids come back from REST history
    with httpx.Client(base_url=rest) as c:
        page = c.get("/api/v5/market/history-trades",
                     params={"instId": "BTC-USDT", "after": jump[1] + 1, "before": jump[0]}).json()["data"]
        assert sorted(int(t["tradeId"]) for t in page) == list(range(jump[0] + 1, jump[1] + 1))
        sim.fault("okx", "rest_fail", status=429, retry_after=2)
        r = c.get("/api/v5/market/trades", params={"instId": "BTC-USDT"})
        assert r.status_code == 429 and r.json()["code"] == "50011" and r.headers["Retry-After"] == "2"
        r = c.get("/api/v5/market/trades", params={"instId": "BTC-USDT", "limit": 3}).json()["data"]
        assert len(r) == 3 and int(r[0]["tradeId"]) > int(r[1]["tradeId"])
