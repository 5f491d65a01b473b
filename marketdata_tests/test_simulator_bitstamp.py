"""The Bitstamp v2 simulator: per-channel acks, an unknown pair acknowledged and then silent,
trades against the ground truth with ids beyond 2^53 (only ``id_str`` exact), heartbeat, the
512-byte frame cap, ``bts:request_reconnect`` then a close, REST windows."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from .simtest import SimFactory, conn_id, read_gt, recv_json, ws_connect

pytestmark = pytest.mark.timeout(60)

SYMS = ["BTC-USD", "ETH-USD"]


@pytest.fixture
def make_sim(tmp_path):
    f = SimFactory(tmp_path, "bitstamp", SYMS)
    yield f
    f.close()


def sub(channel: str, event: str = "bts:subscribe") -> str:
    return '{"event":"%s","data":{"channel":"%s"}}' % (event, channel)


def test_acks_silent_unknown_pair_and_exact_ids_only_in_id_str(make_sim):
    # btcusd is a legacy pair (small ids, the number `id` is exact); solusd a newer market whose
    # ids are beyond 2^53, so only `id_str` is exact there.
    sim = make_sim(rate=2000, seed=4, symbols=["BTC-USD", "SOL-USD"])
    url = sim.endpoints["bitstamp"]["ws"] + "/"

    async def run():
        async with ws_connect(url) as ws:
            for ch in ("live_trades_btcusd", "live_trades_fooxyz", "live_trades_BTCUSD", "nonsense_btcusd",
                       "live_trades_solusd"):
                await ws.send(sub(ch))
            await ws.send("{not json")
            await ws.send('{"event":"bts:heartbeat"}')
            control, trades = [], []
            while len(control) < 7 or len(trades) < 1000:
                m = await recv_json(ws)
                (trades if m["event"] == "trade" else control).append(m)
            return control, trades

    control, trades = asyncio.run(run())
    assert control[:2] == [{"event": "bts:subscription_succeeded", "channel": c, "data": {}}
                           for c in ("live_trades_btcusd", "live_trades_fooxyz")]
    assert [c["data"]["message"] for c in control[2:4]] == ["Bad subscription string.", "Invalid channel provided."]
    assert control[4] == {"event": "bts:subscription_succeeded", "channel": "live_trades_solusd", "data": {}}
    assert control[5]["data"]["message"] == "Incorrect JSON format."
    assert control[6] == {"event": "bts:heartbeat", "channel": "", "data": {"status": "success"}}
    assert {t["channel"] for t in trades} == {"live_trades_btcusd", "live_trades_solusd"}, \
        "the acked unknown pair stays silent"
    sim.flush()
    gt = {(r["symbol"], r["trade_id"]): r for r in read_gt(sim.ground_truth_path)}
    wrong = {"live_trades_btcusd": 0, "live_trades_solusd": 0}
    count = dict.fromkeys(wrong, 0)
    for t in trades:
        d = t["data"]
        sym = "BTC-USD" if t["channel"] == "live_trades_btcusd" else "SOL-USD"
        g = gt[(sym, d["id_str"])]
        assert (int(d["id_str"]) > 2 ** 53) == (sym == "SOL-USD"), "ids beyond 2^53 only on the newer market"
        assert (d["price_str"], d["amount_str"], int(d["microtimestamp"])) == (g["price"], g["qty"], int(g["ts_us"]))
        assert d["type"] == (0 if g["side"] == "buy" else 1)
        assert max(d["buy_order_id"], d["sell_order_id"]) == (d["buy_order_id"] if d["type"] == 0
                                                               else d["sell_order_id"]), "taker = newer order"
        wrong[t["channel"]] += str(d["id"]) != d["id_str"]
        count[t["channel"]] += 1
    assert wrong["live_trades_btcusd"] == 0, "a legacy pair's number id is exact"
    assert wrong["live_trades_solusd"] > count["live_trades_solusd"] // 3, \
        "the number id is what a double holds: it corrupts odd ids"


def test_request_reconnect_then_close_and_frame_cap(make_sim):
    sim = make_sim(rate=300)
    url = sim.endpoints["bitstamp"]["ws"] + "/"

    async def notice():
        async with ws_connect(url) as ws:
            await ws.send(sub("live_trades_ethusd"))
            await recv_json(ws)
            sim.fault("bitstamp", kind="notice", conn=conn_id(sim, "bitstamp", ws), close_after=0.5)
            trades_after, seen = 0, False
            try:
                while True:
                    m = await recv_json(ws)
                    if m["event"] == "bts:request_reconnect":
                        assert m == {"event": "bts:request_reconnect", "channel": "", "data": ""}
                        seen = True
                    elif m["event"] == "trade":
                        trades_after += seen
            except ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None, trades_after

    async def big():
        async with ws_connect(url) as ws:
            await ws.send('{"event":"bts:subscribe","data":{"channel":"live_trades_btcusd","pad":"%s"}}' % ("x" * 520))
            try:
                await recv_json(ws)
            except ConnectionClosed as e:
                return e.rcvd.code

    code, after = asyncio.run(notice())
    assert code == 1001 and after > 0, "the old link keeps delivering until the close"
    assert asyncio.run(big()) == 1009


def test_rest_pairs_transactions_window_and_ohlc(make_sim):
    sim = make_sim(rate=2000, venue_options={"bitstamp": {"quiet_symbols": ["LTC-USD"]}})
    rest = sim.endpoints["bitstamp"]["rest"] + "/api/v2"
    assert sim.wait_generated(3000, timeout=20)
    pairs = {p["url_symbol"]: p["trading"] for p in httpx.get(rest + "/trading-pairs-info/").json()}
    assert pairs == {"btcusd": "Enabled", "ethusd": "Enabled", "ltcusd": "Enabled", "lunausd": "Disabled"}
    markets = httpx.get(rest + "/markets/").json()
    assert {m["market_symbol"]: (m["base_currency"], m["counter_currency"], m["trading"], m["market_type"])
            for m in markets} == {"btcusd": ("BTC", "USD", "Enabled", "SPOT"), "ethusd": ("ETH", "USD", "Enabled", "SPOT"),
                                  "ltcusd": ("LTC", "USD", "Enabled", "SPOT"),
                                  "lunausd": ("LUNA", "USD", "Disabled", "SPOT")}
    minute = httpx.get(rest + "/transactions/btcusd/", params={"time": "minute"}).json()
    hour = httpx.get(rest + "/transactions/btcusd/", params={"time": "hour"}).json()
    assert minute and len(hour) > len(minute)
    assert {r["tid"] for r in minute if int(r["date"]) < int(hour[0]["date"])} <= {r["tid"] for r in hour}
    assert all(isinstance(v, str) for r in minute for v in r.values())
    dates = [int(r["date"]) for r in minute]
    assert dates == sorted(dates, reverse=True) and dates[0] - dates[-1] <= 60
    assert httpx.get(rest + "/transactions/nopeusd/").status_code == 404
    ohlc = httpx.get(rest + "/ohlc/btcusd/", params={"step": 60, "limit": 5}).json()["data"]
    assert ohlc["pair"] == "BTC/USD" and ohlc["ohlc"]
