"""The Coinbase Exchange simulator: subscribe/subscriptions/errors, `last_match` and `match` (maker
side on the wire, taker side in the ground truth), the subscribe deadline, heartbeats carrying the
venue's last trade id (also across withheld trades before a quiet period), REST trades paged by id,
candles, products and faults."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from .simtest import SimFactory, read_gt, recv_json, ws_connect

pytestmark = pytest.mark.timeout(60)

SYMS = ["BTC-USD", "ETH-USD"]
SUB = '{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channels":["matches","heartbeat"]}'


@pytest.fixture
def make_sim(tmp_path):
    f = SimFactory(tmp_path, "coinbase", SYMS)
    yield f
    f.close()


def gt_rows(sim) -> dict[tuple[str, int], dict]:
    sim.flush()
    rows = read_gt(sim.ground_truth_path)
    assert rows and all(r["exchange"] == "coinbase" for r in rows)
    return {(r["symbol"], int(r["trade_id"])): r for r in rows}


def rfc3339_us(text: str) -> int:
    assert text.endswith("Z") and len(text.split(".")[1]) == 7, text
    dt = datetime.fromisoformat(text[:-1] + "+00:00")
    return int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond


def test_subscribe_last_match_and_matches_carry_the_maker_side(make_sim):
    sim = make_sim(rate=3000, seed=5)
    assert sim.wait_generated(200, "coinbase")
    url = sim.endpoints["coinbase"]["ws"]

    async def run():
        async with ws_connect(url) as ws:
            await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],'
                          '"channels":["matches",{"name":"heartbeat","product_ids":["ETH-USD"]}]}')
            ack = await recv_json(ws)
            assert ack == {"type": "subscriptions", "channels": [{"name": "matches", "product_ids": ["BTC-USD"]},
                                                                 {"name": "heartbeat", "product_ids": ["ETH-USD"]}]}
            first = await recv_json(ws)
            await ws.send('{"type":"subscribe","product_ids":["FOO-USD"],"channels":["matches"]}')
            await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],"channels":["level3"]}')
            await ws.send("{nope")
            errors, matches, beats = [], [], []
            while len(errors) < 3 or len(matches) < 400:
                m = await recv_json(ws)
                {"error": errors, "match": matches, "heartbeat": beats}.get(m["type"], []).append(m)
            return first, errors, matches

    first, errors, matches = asyncio.run(run())
    assert first["type"] == "last_match" and first["product_id"] == "BTC-USD"
    assert errors[0] == {"type": "error", "message": "Failed to subscribe", "reason": "FOO-USD is not a valid product"}
    assert errors[1]["reason"] == "level3 is not a valid channel"
    assert errors[2]["message"] == "Malformed JSON"
    gt = gt_rows(sim)
    ids = [m["trade_id"] for m in matches]
    assert ids[0] == first["trade_id"] + 1 and ids == list(range(ids[0], ids[0] + len(ids)))
    seqs = [m["sequence"] for m in matches]
    assert all(b > a for a, b in zip(seqs, seqs[1:])) and any(b - a > 1 for a, b in zip(seqs, seqs[1:])), \
        "sequence rises but jumps (it is shared with order events)"
    sides = defaultdict(int)
    for m in [first] + matches:
        assert isinstance(m["trade_id"], int) and isinstance(m["price"], str) and isinstance(m["size"], str)
        r = gt[("BTC-USD", m["trade_id"])]
        # The wire says the maker's side; the ground truth holds the taker's.
        assert {"buy": "sell", "sell": "buy"}[m["side"]] == r["side"]
        assert (r["price"], r["qty"], int(r["ts_us"])) == (m["price"], m["size"], rfc3339_us(m["time"]))
        assert len(m["maker_order_id"]) == 36 and len(m["taker_order_id"]) == 36
        sides[m["side"]] += 1
    assert sides["buy"] > 50 and sides["sell"] > 50
    # one taker order = one taker_order_id over consecutive fills at one price
    by_taker = defaultdict(set)
    for m in matches:
        by_taker[m["taker_order_id"]].add((m["price"], m["side"]))
    assert len(by_taker) < len(matches) and all(len(v) == 1 for v in by_taker.values())


def test_subscribe_deadline_cuts_a_silent_client_only(make_sim):
    sim = make_sim(rate=200, venue_options={"coinbase": {"subscribe_deadline": 1.0}})
    url = sim.endpoints["coinbase"]["ws"]

    async def late():
        t0 = time.monotonic()      # before connecting: the venue's deadline runs from its accept
        async with ws_connect(url) as ws:
            err = await recv_json(ws, 5)
            with pytest.raises(ConnectionClosed) as exc:
                await recv_json(ws, 5)
            return err, time.monotonic() - t0, exc.value.rcvd.code

    async def prompt():
        async with ws_connect(url) as ws:
            await ws.send(SUB)
            assert (await recv_json(ws))["type"] == "subscriptions"
            n = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:      # twice the deadline: still served
                n += (await recv_json(ws))["type"] == "match"
            return n

    async def both():
        return await asyncio.gather(late(), prompt())

    (err, waited, code), served = asyncio.run(both())
    assert err["type"] == "error" and "subscribe within 1 seconds" in err["reason"]
    assert 0.9 <= waited < 3.0 and code == 1008
    assert served > 50
    st = sim.stats("coinbase")
    assert st["coinbase"]["deadline_cuts"] == 1
    assert [c["closed_reason"] for c in st["closed_connections"]].count("subscribe_deadline") == 1


def test_heartbeat_reveals_trades_withheld_before_a_quiet_period(make_sim):
    sim = make_sim(rate=1000, venue_options={"coinbase": {"heartbeat_interval": 0.2}})
    ep = sim.endpoints["coinbase"]

    async def run():
        async with ws_connect(ep["ws"]) as ws:
            await ws.send(SUB)
            assert (await recv_json(ws))["type"] == "subscriptions"
            last_seen: dict[str, int] = {}
            beats = []
            # ordinary heartbeats: never ahead of the trades already sent on this link
            while len(beats) < 6:
                m = await recv_json(ws)
                if m["type"] in ("match", "last_match"):
                    last_seen[m["product_id"]] = m["trade_id"]
                elif m["type"] == "heartbeat":
                    assert m["last_trade_id"] == last_seen[m["product_id"]]
                    assert isinstance(m["sequence"], int) and rfc3339_us(m["time"])
                    beats.append(m)
            f = sim.fault("coinbase", kind="skip_ids", symbol="BTC-USD", count=30, then_pause=True)
            assert f["params"]["then_pause"] is True
            quiet = []
            while len(quiet) < 3:
                m = await recv_json(ws)
                if m["type"] == "match":
                    last_seen[m["product_id"]] = m["trade_id"]
                elif m["type"] == "heartbeat" and m["product_id"] == "BTC-USD" and sim.stats("coinbase")["paused"]:
                    quiet.append(m)
            return last_seen, quiet

    last_seen, quiet = asyncio.run(run())
    st = sim.stats("coinbase")
    (period,) = st["coinbase"]["quiet_periods"]
    assert period["symbol"] == "BTC-USD" and period["last_id"] - period["first_id"] + 1 >= 30
    # The link's last match stops before the withheld trades; the heartbeat tells where the tape ends.
    assert last_seen["BTC-USD"] == period["first_id"] - 1
    assert {m["last_trade_id"] for m in quiet} == {period["last_id"]} == {st["symbols"]["BTC-USD"]["last_trade_id"]}
    # The withheld trades are on REST and in the ground truth.
    r = httpx.get(ep["rest"] + "/products/BTC-USD/trades", params={"after": period["last_id"] + 1, "limit": 100})
    got = [t["trade_id"] for t in r.json()]
    assert got[0] == period["last_id"] and got[-1] < period["first_id"]
    gt = gt_rows(sim)
    assert all(("BTC-USD", i) in gt for i in range(period["first_id"], period["last_id"] + 1))


def test_rest_trades_paged_by_id_candles_and_products(make_sim):
    sim = make_sim(rate=3000, seed=9)
    assert sim.wait_generated(5000, "coinbase")
    sim.pause()
    rest = sim.endpoints["coinbase"]["rest"]
    gt = gt_rows(sim)
    with httpx.Client(base_url=rest, timeout=10) as c:
        newest = c.get("/products/BTC-USD/trades", params={"limit": 5})
        rows = newest.json()
        ids = [r["trade_id"] for r in rows]
        assert ids == list(range(ids[0], ids[0] - 5, -1)), "newest first"
        assert newest.headers["CB-BEFORE"] == str(ids[0]) and newest.headers["CB-AFTER"] == str(ids[-1])
        # paging older with CB-AFTER, as a gap fill does
        older = c.get("/products/BTC-USD/trades", params={"limit": 1000, "after": newest.headers["CB-AFTER"]}).json()
        assert [r["trade_id"] for r in older] == list(range(ids[-1] - 1, ids[-1] - 1 - len(older), -1))
        assert len(older) == 1000
        newer = c.get("/products/BTC-USD/trades", params={"limit": 3, "before": ids[-1] - 10}).json()
        assert [r["trade_id"] for r in newer] == [ids[-1] - 7, ids[-1] - 8, ids[-1] - 9]
        both = c.get("/products/BTC-USD/trades", params={"before": ids[-1] - 10, "after": ids[-1] - 6}).json()
        assert [r["trade_id"] for r in both] == [ids[-1] - 7, ids[-1] - 8, ids[-1] - 9]
        for r in rows + older:
            g = gt[("BTC-USD", r["trade_id"])]
            assert {"buy": "sell", "sell": "buy"}[r["side"]] == g["side"]
            assert (r["price"], r["size"], rfc3339_us(r["time"])) == (g["price"], g["qty"], int(g["ts_us"]))
        assert c.get("/products/NOPE-USD/trades").status_code == 404
        assert c.get("/products/BTC-USD/trades", params={"after": "x"}).status_code == 400

        products = c.get("/products").json()
        assert {p["id"]: p["status"] for p in products} == {"BTC-USD": "online", "ETH-USD": "online",
                                                            "UST-USD": "delisted"}
        assert all(p["trading_disabled"] for p in products if p["status"] != "online")
        assert c.get("/products/ETH-USD").json()["quote_currency"] == "USD"

        # candles: [time, low, high, open, close, volume] numbers, newest first, empty buckets omitted
        raw = c.get("/products/ETH-USD/candles", params={"granularity": 60})
        candles = orjson.loads(raw.content)
        assert raw.status_code == 200 and candles and all(len(k) == 6 for k in candles)
        assert [k[0] for k in candles] == sorted((k[0] for k in candles), reverse=True)
        by_min = defaultdict(list)
        for (sym, tid), g in sorted(gt.items(), key=lambda kv: kv[0][1]):
            if sym == "ETH-USD":
                by_min[int(g["ts_us"]) // 60_000_000 * 60].append(g)
        body = raw.text
        for k in candles:
            t = by_min[k[0]]
            px = [Decimal(g["price"]) for g in t]
            want = (min(px), max(px), px[0], px[-1], sum(Decimal(g["qty"]) for g in t))
            assert tuple(Decimal(str(v)) for v in k[1:]) == want, (k, want)
        assert "e-" not in body and "E" not in body, "numbers are written as plain decimals"
        start = datetime.fromtimestamp(candles[-1][0]).astimezone().isoformat()
        assert c.get("/products/ETH-USD/candles", params={"granularity": 60, "start": start,
                                                          "end": "2027-01-01T00:00:00Z"}).status_code == 400
        assert c.get("/products/ETH-USD/candles", params={"granularity": 61}).status_code == 400
        assert c.get("/time").json()["epoch"] > 0


def test_faults_malformed_unknown_symbol_and_rest_fail(make_sim):
    sim = make_sim(rate=300)
    ep = sim.endpoints["coinbase"]

    async def run():
        async with ws_connect(ep["ws"]) as ws:
            await ws.send(SUB)
            await recv_json(ws)
            sim.fault("coinbase", kind="malformed", count=2)
            sim.fault("coinbase", kind="unknown_symbol")
            bad, unknown = [], []
            while len(bad) < 2 or not unknown:
                raw = await asyncio.wait_for(ws.recv(), 5)
                try:
                    m = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    bad.append(raw)
                    continue
                if m.get("type") == "match" and "trade_id" not in m:
                    bad.append(raw)
                elif m.get("type") == "match" and m["product_id"] not in SYMS:
                    unknown.append(m)
            return bad, unknown

    bad, unknown = asyncio.run(run())
    assert len(bad) == 2 and unknown[0]["product_id"] == "ZZZ-USD"
    sim.fault("coinbase", kind="rest_fail", status=429, count=1)
    r = httpx.get(ep["rest"] + "/products")
    assert r.status_code == 429 and r.json() == {"message": "Public rate limit exceeded"} and r.headers["Retry-After"]
    assert httpx.get(ep["rest"] + "/products").status_code == 200
    with pytest.raises(Exception):
        sim.fault("coinbase", kind="close", then_pause=True)
