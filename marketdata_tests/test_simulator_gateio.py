"""The Gate.io v4 simulator: one ack per request and error envelopes, ``spot.trades`` pushes
against the ground truth (``id_market`` consecutive, platform ``id`` not, ``create_time_ms`` a
string with sub-millisecond digits), ``spot.ping``, the idle cut, REST paging by ``last_id``,
candlesticks, faults."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from .simtest import SimFactory, conn_id, read_gt, recv_json, ws_connect

pytestmark = pytest.mark.timeout(60)

SYMS = ["BTC-USDT", "ETH-USDT"]


@pytest.fixture
def make_sim(tmp_path):
    f = SimFactory(tmp_path, "gateio", SYMS)
    yield f
    f.close()


def urls(sim):
    ep = sim.endpoints["gateio"]
    return ep["ws"] + "/ws/v4/", ep["rest"] + "/api/v4"


def sub(pairs, rid=None, event="subscribe", channel="spot.trades") -> str:
    msg = {"time": int(time.time()), "channel": channel, "event": event, "payload": pairs}
    if rid is not None:
        msg["id"] = rid
    return orjson.dumps(msg).decode()


async def updates(ws, n: int, timeout: float = 10.0) -> list[dict]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        m = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if m.get("event") == "update":
            out.append(m)
    return out


def test_acks_errors_and_trades_match_ground_truth(make_sim):
    sim = make_sim(rate=2000, seed=5)
    ws_url, _ = urls(sim)

    async def run():
        async with ws_connect(ws_url) as ws:
            await ws.send(sub(["BTC_USDT", "ETH_USDT"], rid=42))
            ack = await recv_json(ws)
            assert ack["id"] == 42 and ack["event"] == "subscribe" and ack["error"] is None
            assert ack["result"] == {"status": "success"} and ack["channel"] == "spot.trades"
            await ws.send(sub(["GIBBERISH_USD"], rid=43))
            await ws.send(sub(["BTC_USDT"], channel="spot.nothing"))
            await ws.send("{not json")
            errors, trades = [], []
            while len(errors) < 3 or len(trades) < 400:
                m = await recv_json(ws)
                if m.get("error"):
                    errors.append(m)
                elif m.get("event") == "update":
                    trades.append(m)
            return errors, trades

    errors, trades = asyncio.run(run())
    assert [e["error"]["code"] for e in errors] == [2, 2, 1]
    assert errors[0]["id"] == 43 and "GIBBERISH_USD" in errors[0]["error"]["message"]
    assert errors[0]["result"] == {"status": "fail"}
    sim.flush()
    gt = {(r["symbol"], r["trade_id"]): r for r in read_gt(sim.ground_truth_path)}
    last: dict[str, int] = {}
    platform_steps = set()
    sub_ms = 0
    for m in trades:
        r = m["result"]
        assert set(r) == {"id", "id_market", "create_time", "create_time_ms", "side", "currency_pair", "amount",
                          "price", "range"}
        assert isinstance(r["id"], int) and isinstance(r["id_market"], int)
        assert isinstance(r["create_time_ms"], str) and isinstance(r["price"], str)
        sym = r["currency_pair"].replace("_", "-")
        if sym in last:
            assert r["id_market"] == last[sym] + 1, "id_market is consecutive per pair"
        last[sym] = r["id_market"]
        assert r["range"] == f"{r['id_market']}-{r['id_market']}"
        g = gt[(sym, str(r["id_market"]))]
        # µs exactly from the string: ms and the sub-ms decimals
        assert Decimal(r["create_time_ms"]) * 1000 == int(g["ts_us"])
        assert r["create_time"] == int(g["ts_us"]) // 1_000_000
        sub_ms += "." in r["create_time_ms"]
        assert (r["price"], r["amount"], r["side"]) == (g["price"], g["qty"], g["side"])
        platform_steps.add(r["id"] % 64)
    assert sub_ms > len(trades) // 2, "most timestamps carry sub-millisecond digits"
    assert platform_steps == {0, 1}, "platform ids differ per pair: not the market id"
    with pytest.raises(ValueError):     # the trap: not an integer
        int(next(t["result"]["create_time_ms"] for t in trades if "." in t["result"]["create_time_ms"]))


def test_spot_ping_and_idle_cut_without_close_frame(make_sim):
    sim = make_sim(rate=200, venue_options={"gateio": {"idle_timeout": 1.0}})
    ws_url, _ = urls(sim)

    async def pinger() -> int:
        async with ws_connect(ws_url) as ws:
            t0 = time.monotonic()
            pongs = 0
            while time.monotonic() - t0 < 2.5:
                await ws.send('{"time":%d,"channel":"spot.ping"}' % int(time.time()))
                m = await recv_json(ws)
                assert m["channel"] == "spot.pong" and m["event"] == "" and m["error"] is None and m["result"] is None
                pongs += 1
                await asyncio.sleep(0.3)
            return pongs

    async def silent() -> str:
        async with ws_connect(ws_url) as ws:
            await ws.send(sub(["BTC_USDT"]))
            try:
                while True:
                    await recv_json(ws, 5)
            except ConnectionClosed as e:
                return "no close frame" if e.rcvd is None else f"close {e.rcvd.code}"

    async def both():
        return await asyncio.gather(pinger(), silent())

    pongs, how = asyncio.run(both())
    assert pongs >= 5, "spot.ping keeps the link alive past the idle cut"
    assert how == "no close frame"
    assert sim.stats("gateio")["gateio"]["idle_drops"] == 1


def test_rest_trades_by_last_id_and_candles(make_sim):
    sim = make_sim(rate=3000, seed=9)
    _, rest = urls(sim)
    assert sim.wait_generated(6000, timeout=20)
    newest = httpx.get(rest + "/spot/trades", params={"currency_pair": "ETH_USDT", "limit": 1000}).json()
    assert len(newest) == 1000
    seqs = [int(r["sequence_id"]) for r in newest]
    assert seqs == sorted(seqs, reverse=True) and seqs == list(range(seqs[0], seqs[0] - 1000, -1))
    assert all(isinstance(r["id"], str) and isinstance(r["create_time_ms"], str) for r in newest)
    # page forward from the platform id of the oldest row: exactly the next trades, newest first
    oldest = newest[-1]
    page = httpx.get(rest + "/spot/trades", params={"currency_pair": "ETH_USDT", "limit": 10,
                                                      "last_id": oldest["id"], "reverse": "false"}).json()
    assert [int(r["sequence_id"]) for r in page] == list(range(seqs[-1] + 10, seqs[-1], -1))
    back = httpx.get(rest + "/spot/trades", params={"currency_pair": "ETH_USDT", "limit": 5,
                                                      "last_id": oldest["id"], "reverse": "true"}).json()
    assert [int(r["sequence_id"]) for r in back] == list(range(seqs[-1] - 1, seqs[-1] - 6, -1))
    sim.flush()
    gt = {(r["symbol"], r["trade_id"]): r for r in read_gt(sim.ground_truth_path)}
    for r in page + back:
        g = gt[("ETH-USDT", r["sequence_id"])]
        assert (r["price"], r["amount"], r["side"], Decimal(r["create_time_ms"]) * 1000) == \
            (g["price"], g["qty"], g["side"], int(g["ts_us"]))
    bad = httpx.get(rest + "/spot/trades", params={"currency_pair": "NOPE_USDT"})
    assert bad.status_code == 400 and bad.json()["label"] == "INVALID_CURRENCY_PAIR"
    pairs = httpx.get(rest + "/spot/currency_pairs").json()
    assert {(p["id"], p["trade_status"]) for p in pairs} == {("BTC_USDT", "tradable"), ("ETH_USDT", "tradable"),
                                                           ("LUNA_USDT", "untradable")}
    # candles: [t, quote vol, close, high, low, open, base vol, closed], oldest first
    rows = read_gt(sim.ground_truth_path)
    ts = sorted(int(r["ts_us"]) for r in rows if r["symbol"] == "BTC-USDT")
    t0 = ts[0] // 60_000_000 * 60
    c = httpx.get(rest + "/spot/candlesticks", params={"currency_pair": "BTC_USDT", "interval": "1m",
                                                         "from": t0, "to": t0 + 59}).json()
    assert len(c) == 1 and c[0][0] == str(t0)
    mine = [r for r in rows if r["symbol"] == "BTC-USDT" and int(r["ts_us"]) // 60_000_000 * 60 == t0]
    mine.sort(key=lambda r: int(r["trade_id"]))
    assert c[0][5] == mine[0]["price"] and c[0][2] == mine[-1]["price"]
    assert c[0][3] == max(mine, key=lambda r: Decimal(r["price"]))["price"]
    assert Decimal(c[0][6]) == sum(Decimal(r["qty"]) for r in mine)
    conflict = httpx.get(rest + "/spot/candlesticks", params={"currency_pair": "BTC_USDT", "interval": "1m",
                                                                "from": t0, "to": t0 + 59, "limit": 5})
    assert conflict.status_code == 400


def test_skip_ids_makes_id_market_jump_and_notice_is_refused(make_sim):
    sim = make_sim(rate=1000)
    ws_url, _ = urls(sim)

    async def run():
        async with ws_connect(ws_url) as ws:
            await ws.send(sub(["BTC_USDT"]))
            await recv_json(ws)
            first = await updates(ws, 5)
            cid = conn_id(sim, "gateio", ws)
            with pytest.raises(Exception):
                sim.fault("gateio", kind="notice", conn=cid)
            sim.fault("gateio", kind="skip_ids", symbol="BTC-USDT", count=7)
            rest = await updates(ws, 200)
            return first + rest

    msgs = asyncio.run(run())
    ids = [m["result"]["id_market"] for m in msgs]
    jumps = [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
    assert len(jumps) == 1 and jumps[0][1] - jumps[0][0] == 8
