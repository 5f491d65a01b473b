"""The Alpaca (IEX) simulator: connect/auth/subscribe with the error codes, mixed trade arrays
in NYSE session minutes only, corrections and cancels reflected in the ground truth and REST,
REST trades by time with page tokens, bars with `n`, assets."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import orjson
import pytest

from .simtest import SimFactory, read_gt, recv_json, ws_connect, wait_until

pytestmark = pytest.mark.timeout(60)

SYMS = ["AAPL-USD", "MSFT-USD"]
OPTS = {"alpaca": {"key": "k1", "secret": "s1", "max_symbols": 3}}
HDRS = {"APCA-API-KEY-ID": "k1", "APCA-API-SECRET-KEY": "s1"}


@pytest.fixture
def make_sim(tmp_path):
    f = SimFactory(tmp_path, "alpaca", SYMS)
    yield f
    f.close()


async def _auth(ws, key="k1", secret="s1"):
    assert await recv_json(ws) == [{"T": "success", "msg": "connected"}]
    await ws.send(orjson.dumps({"action": "auth", "key": key, "secret": secret}).decode())
    return await recv_json(ws)


def test_auth_errors_subscription_and_connection_limit(make_sim):
    sim = make_sim(start="2026-01-05T15:00:00Z", venue_options=OPTS)
    url = sim.endpoints["alpaca"]["ws"] + "/v2/iex"

    async def run():
        async with ws_connect(url) as ws:
            assert await recv_json(ws) == [{"T": "success", "msg": "connected"}]
            await ws.send('{"action":"subscribe","trades":["AAPL"]}')
            assert await recv_json(ws) == [{"T": "error", "code": 401, "msg": "not authenticated"}]
        async with ws_connect(url) as ws:
            assert await _auth(ws, secret="bad") == [{"T": "error", "code": 402, "msg": "auth failed"}]
            await asyncio.wait_for(ws.wait_closed(), 5)
        async with ws_connect(url) as ws:
            assert await _auth(ws) == [{"T": "success", "msg": "authenticated"}]
            await ws.send('{"action":"subscribe","trades":["AAPL"],"quotes":["A","B","C"]}')
            assert (await recv_json(ws))[0]["code"] == 405        # 4 symbols > 3, nothing changed
            await ws.send('{"action":"subscribe","trades":["AAPL","MSFT"]}')
            ack = (await recv_json(ws))[0]
            assert ack["T"] == "subscription" and ack["trades"] == ["AAPL", "MSFT"]
            assert ack["corrections"] == ack["cancelErrors"] == ["AAPL", "MSFT"] and ack["quotes"] == []
            await ws.send('{"action":"unsubscribe","trades":["MSFT"]}')
            ack = None
            while ack is None:
                m = await recv_json(ws)
                ack = m[0] if m[0]["T"] == "subscription" else None
            assert ack["trades"] == ["AAPL"]
            async with ws_connect(url) as ws2:       # one connection per key
                assert await _auth(ws2) == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
            seen = Counter()
            while sum(seen.values()) < 200:
                for t in await recv_json(ws):
                    seen[(t["T"], t["S"], t["x"])] += 1
                    assert isinstance(t["s"], int) and isinstance(t["p"], float | int) and t["t"].endswith("Z")
            assert set(seen) == {("t", "AAPL", "V")}
    asyncio.run(run())
    assert sim.stats("alpaca")["alpaca"]["connection_limit_errors"] == 1


def test_trades_only_in_session_minutes(make_sim, tmp_path):
    # 2026-01-05 14:29:30 UTC = 09:29:30 ET: nothing until the 09:30 open
    sim = make_sim(start="2026-01-05T14:29:30Z", speed=60, venue_options=OPTS)
    assert wait_until(lambda: sim.stats("alpaca")["generated"] > 500, 30)
    sim.flush()
    rows = read_gt(sim.ground_truth_path)
    open_us = 1767623400 * 1_000_000
    assert min(int(r["ts_us"]) for r in rows) >= open_us
    assert {r["side"] for r in rows} == {"unknown"}
    ids = sorted(int(r["trade_id"]) for r in rows if r["symbol"] == "AAPL-USD")
    assert any(b - a > 1 for a, b in zip(ids, ids[1:])), "IEX ids are not consecutive"
    # Christmas: the market is closed all day, the venue stays silent
    xmas = make_sim(start="2026-12-25T16:00:00Z", speed=60, venue_options=OPTS)
    t0 = xmas.sim_now_us()
    assert wait_until(lambda: xmas.sim_now_us() > t0 + 60_000_000, 10)
    assert xmas.stats("alpaca")["generated"] == 0


def test_corrections_and_cancels_reach_the_stream_truth_and_rest(make_sim):
    sim = make_sim(start="2026-01-05T15:00:00Z", venue_options=OPTS)
    ep = sim.endpoints["alpaca"]

    async def run():
        async with ws_connect(ep["ws"] + "/v2/iex") as ws:
            await _auth(ws)
            await ws.send('{"action":"subscribe","trades":["AAPL"]}')
            await recv_json(ws)
            await recv_json(ws)
            cor = sim.fault("alpaca", kind="correct", symbol="AAPL-USD", count=2)
            can = sim.fault("alpaca", kind="cancel", symbol="AAPL-USD", count=2)
            got = []
            while len(got) < 4:
                got += [m for m in await recv_json(ws) if m["T"] in ("c", "x")]
            return cor, can, got
    cor, can, got = asyncio.run(run())
    cids = cor["note"].split(" trade ids ")[1].split(",")
    xids = can["note"].split(" trade ids ")[1].split(",")
    assert [str(m["oi"]) for m in got if m["T"] == "c"] == cids
    assert [str(m["i"]) for m in got if m["T"] == "x"] == xids and all(m["a"] == "C" for m in got if m["T"] == "x")
    sim.flush()
    gt = {r["trade_id"]: r for r in read_gt(sim.ground_truth_path)}
    assert not set(xids) & set(gt)
    for m in got:
        if m["T"] == "c":
            r = gt[str(m["ci"])]
            assert (r["price"], r["qty"]) == (repr(m["cp"]), str(m["cs"])) and m["cs"] == m["os"] + 1
    # REST history reflects both: cancelled trades gone, corrected ones with the new values
    rest = {}
    token = None
    while True:
        params = {"start": "2026-01-05T15:00:00Z", "limit": 500, **({"page_token": token} if token else {})}
        body = httpx.get(ep["rest"] + "/v2/stocks/AAPL/trades", params=params, headers=HDRS).json()
        rest.update({str(t["i"]): t for t in body["trades"]})
        token = body["next_page_token"]
        if not token:
            break
    aapl = {k: v for k, v in gt.items() if v["symbol"] == "AAPL-USD"}
    assert set(rest) >= set(aapl) and not set(xids) & set(rest)
    for i in cids:
        assert (repr(rest[i]["p"]), str(rest[i]["s"])) == (aapl[i]["price"], aapl[i]["qty"])


def test_rest_bars_with_n_assets_and_auth(make_sim):
    sim = make_sim(start="2026-01-05T15:00:00Z", speed=120, venue_options=OPTS)
    ep = sim.endpoints["alpaca"]["rest"]
    assert wait_until(lambda: sim.sim_now_us() > 1767625200_000_000 + 130_000_000, 30)
    assert httpx.get(ep + "/v2/assets").status_code == 401
    assets = httpx.get(ep + "/v2/assets", params={"status": "active"}, headers=HDRS).json()
    assert [a["symbol"] for a in assets] == ["AAPL", "MSFT"] and all(a["class"] == "us_equity" for a in assets)
    bars = httpx.get(ep + "/v2/stocks/AAPL/bars", params={"timeframe": "1Min", "start": "2026-01-05T15:00:00Z",
                                                         "end": "2026-01-05T15:01:59Z"}, headers=HDRS).json()["bars"]
    sim.flush()
    rows = [r for r in read_gt(sim.ground_truth_path) if r["symbol"] == "AAPL-USD"]
    assert [b["t"] for b in bars] == ["2026-01-05T15:00:00Z", "2026-01-05T15:01:00Z"]
    for b in bars:
        m0 = 1767625200_000_000 + (0 if b["t"].endswith("00:00Z") else 60_000_000)
        inside = [r for r in rows if m0 <= int(r["ts_us"]) < m0 + 60_000_000]
        assert b["n"] == len(inside) and b["v"] == sum(int(r["qty"]) for r in inside)
    bad = httpx.get(ep + "/v2/stocks/AAPL/bars", params={"timeframe": "1Min"})
    assert bad.status_code == 401
