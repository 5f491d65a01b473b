"""Order books in the simulator: for every venue, a client that follows the venue's documented
sync procedure (snapshot + diff stream, sequence rules, checksums) ends up with exactly the book
the simulator reports at a checkpoint (``GET /_sim/book`` while generation is paused).

Checksums are verified with the CRC-32 implementation in ``simtest`` (not zlib)."""

from __future__ import annotations

import asyncio
import zlib
from decimal import Decimal

import httpx
import pytest

from marketdata.simulator.book import OrderBook
from marketdata.simulator.generator import SymbolSpec, TradeGenerator

from .simtest import SimFactory, conn_id, crc32, crc32_signed, recv_json, ws_connect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def factory(tmp_path):
    made: list[SimFactory] = []

    def make(venue: str, symbols: list[str]) -> SimFactory:
        f = SimFactory(tmp_path / venue, venue, symbols)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def sim_book(base: str, symbol: str) -> dict:
    r = httpx.get(base + "/_sim/book", params={"symbol": symbol})
    assert r.status_code == 200, r.text
    return r.json()


def as_dict(levels) -> dict[str, str]:
    return {p: q for p, q, *_ in levels}


def pause(base: str) -> None:
    assert httpx.post(base + "/_sim/pause").json()["paused"] is True


def resume(base: str) -> None:
    assert httpx.post(base + "/_sim/resume").json()["paused"] is False


# ----------------------------------------------------------------------------------- unit level
def test_crc32_and_book_invariants():
    assert crc32(b"3366.1:7:3366.8:9:3366:6:3368:8") == zlib.crc32(b"3366.1:7:3366.8:9:3366:6:3368:8")
    spec = SymbolSpec.make("BTC-USDT", "7:x")
    gen = TradeGenerator([spec], "7:x")
    book = OrderBook(spec, "7:x", depth_ticks=60)
    book2 = OrderBook(spec, "7:x", depth_ticks=60)
    t = 0
    for k in range(300):
        for si, i0, i1, o0, o1 in gen.generate(50, t, t + 1000, 1000):
            book.apply_orders(gen.tapes[si], o0, o1)
        t += 1000
        bid, ask = book.best()
        assert bid is not None and ask is not None and bid < ask
        assert len(book.bids) <= 60 and len(book.asks) <= 60
        assert book.bid_px == sorted(book.bids) and book.ask_px == sorted(book.asks)
    tape = gen.tapes[0]
    assert len(book.trade_seq) == len(tape)
    assert all(b > a for a, b in zip(book.trade_seq, book.trade_seq[1:]))
    # applying the same orders in other slices gives the same book (determinism)
    n = len(tape.order_start)
    for o in range(0, n, 7):
        book2.apply_orders(tape, o, min(n, o + 7))
    assert (book2.bids, book2.asks, book2.update_id) == (book.bids, book.asks, book.update_id)
    # the change log replayed from the start reproduces the book
    first, bids, asks = book.coalesced(spec.first_update_id)
    assert first == spec.first_update_id + 1


# ----------------------------------------------------------------------------------- Binance
def test_binance_depth_diff_stream_matches_snapshot_and_checkpoint(factory):
    sim = factory("binance", ["BTC-USDT", "ETH-USDT"])(rate=3000, seed=5)
    base = sim.endpoints["binance"]["rest"]
    url = sim.endpoints["binance"]["ws"] + "/stream?streams=btcusdt@depth@100ms/btcusdt@depth/ethusdt@trade"

    async def run():
        async with ws_connect(url) as ws:
            buffered = []
            while len(buffered) < 3:
                m = await recv_json(ws)
                if m["stream"] == "btcusdt@depth@100ms":
                    buffered.append(m["data"])
            snap = (await asyncio.to_thread(httpx.get, base + "/api/v3/depth",
                                            params={"symbol": "BTCUSDT", "limit": 5000})).json()
            lid = snap["lastUpdateId"]
            assert lid >= buffered[0]["U"], "snapshot must not be older than the first buffered event"
            bids, asks = as_dict(snap["bids"]), as_dict(snap["asks"])
            book_id = lid
            applied = 0
            slow = []

            def apply(ev):
                nonlocal book_id, applied
                if ev["u"] <= book_id:
                    return
                if applied == 0:
                    assert ev["U"] <= book_id + 1 <= ev["u"]
                else:
                    assert ev["U"] == book_id + 1, "no gap in the 100 ms stream"
                for side, levels in ((bids, ev["b"]), (asks, ev["a"])):
                    for p, q in levels:
                        if Decimal(q) == 0:
                            side.pop(p, None)
                        else:
                            side[p] = q
                book_id = ev["u"]
                applied += 1

            for ev in buffered:
                apply(ev)
            while applied < 15:
                m = await recv_json(ws)
                if m["stream"] == "btcusdt@depth@100ms":
                    apply(m["data"])
                elif m["stream"] == "btcusdt@depth":
                    slow.append(m["data"])
            # checkpoint: pause generation, read the simulator's book, catch up to its update id
            await asyncio.to_thread(pause, base)
            ref = await asyncio.to_thread(sim_book, base, "BTC-USDT")
            while book_id < ref["update_id"]:
                m = await recv_json(ws)
                if m["stream"] == "btcusdt@depth@100ms":
                    apply(m["data"])
                elif m["stream"] == "btcusdt@depth":
                    slow.append(m["data"])      # keep the 1000 ms chain whole
            assert book_id == ref["update_id"] == ref["lastUpdateId"]
            assert bids == as_dict(ref["bids"]) and asks == as_dict(ref["asks"])
            assert max(map(Decimal, bids)) < min(map(Decimal, asks))
            # the 1000 ms stream is a chain of its own
            while len(slow) < 2:
                m = await recv_json(ws)
                if m["stream"] == "btcusdt@depth":
                    slow.append(m["data"])
            for a, b in zip(slow, slow[1:]):
                assert b["U"] == a["u"] + 1
            await asyncio.to_thread(resume, base)
            # seq_gap: one event is withheld from this connection, U jumps
            cid = await asyncio.to_thread(conn_id, sim, "binance", ws)
            await asyncio.to_thread(sim.fault, "binance", "seq_gap", conn=cid, symbol="BTC-USDT")
            prev = book_id
            while True:
                m = await recv_json(ws)
                if m["stream"] == "btcusdt@depth@100ms":
                    ev = m["data"]
                    if ev["u"] <= prev:
                        continue
                    if ev["U"] > prev + 1:
                        break
                    prev = ev["u"]
            assert ev["s"] == "BTCUSDT" and ev["e"] == "depthUpdate"

    asyncio.run(run())


# ----------------------------------------------------------------------------------- OKX
def okx_checksum(bids: dict[str, str], asks: dict[str, str]) -> int:
    b = sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:25]
    a = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))[:25]
    parts = []
    for i in range(25):
        if i < len(b):
            parts += b[i]
        if i < len(a):
            parts += a[i]
    return crc32_signed(":".join(parts).encode())


def test_okx_books_snapshot_seq_checksum_and_checkpoint(factory):
    sim = factory("okx", ["BTC-USDT", "ETH-USDT"])(rate=3000, seed=9)
    base = sim.endpoints["okx"]["rest"]
    url = sim.endpoints["okx"]["ws"] + "/ws/v5/public"

    async def run():
        async with ws_connect(url) as ws:
            await ws.send('{"id":"b1","op":"subscribe","args":[{"channel":"books","instId":"ETH-USDT"}]}')
            ack = await recv_json(ws)
            assert ack["event"] == "subscribe" and ack["arg"] == {"channel": "books", "instId": "ETH-USDT"}
            bids: dict[str, str] = {}
            asks: dict[str, str] = {}
            state = {"seq": None, "checked": 0, "bad": 0, "gaps": 0}

            async def next_book():
                while True:
                    m = await recv_json(ws)
                    if m.get("arg", {}).get("channel") == "books" and "data" in m:
                        return m

            def apply(m) -> None:
                d = m["data"][0]
                if m["action"] == "snapshot":
                    assert d["prevSeqId"] == -1
                    bids.clear()
                    asks.clear()
                elif d["prevSeqId"] != state["seq"]:
                    state["gaps"] += 1
                    return
                for side, levels in ((bids, d["bids"]), (asks, d["asks"])):
                    for p, sz, zero, n in levels:
                        assert zero == "0"
                        if Decimal(sz) == 0:
                            side.pop(p, None)
                        else:
                            side[p] = sz
                state["seq"] = d["seqId"]
                if okx_checksum(bids, asks) == d["checksum"]:
                    state["checked"] += 1
                else:
                    state["bad"] += 1

            first = await next_book()
            assert first["action"] == "snapshot" and len(first["data"][0]["bids"]) > 100
            apply(first)
            while state["checked"] < 12:
                apply(await next_book())
            assert state == {"seq": state["seq"], "checked": 12, "bad": 0, "gaps": 0}
            await asyncio.to_thread(pause, base)
            ref = await asyncio.to_thread(sim_book, base, "ETH-USDT")
            while state["seq"] != ref["update_id"]:
                apply(await next_book())
            assert ref["seqId"] == state["seq"] and ref["checksum"] == okx_checksum(bids, asks)
            again = await asyncio.to_thread(sim.book, "okx", "ETH-USDT")
            assert (again["update_id"], again["bids"], again["asks"]) == (ref["update_id"], ref["bids"], ref["asks"])
            assert bids == as_dict(ref["bids"]) and asks == as_dict(ref["asks"])
            await asyncio.to_thread(resume, base)
            # faults: a bad checksum, then a withheld update (prevSeqId no longer chains)
            cid = await asyncio.to_thread(conn_id, sim, "okx", ws)
            await asyncio.to_thread(sim.fault, "okx", "bad_checksum", conn=cid)
            while state["bad"] == 0:
                apply(await next_book())
            await asyncio.to_thread(sim.fault, "okx", "seq_gap", conn=cid)
            while state["gaps"] == 0:
                apply(await next_book())
            # resubscribing yields a fresh snapshot and a clean chain again
            await ws.send('{"op":"subscribe","args":[{"channel":"books","instId":"ETH-USDT"}]}')
            while (m := await next_book())["action"] != "snapshot":
                pass
            apply(m)
            before = state["checked"]
            while state["checked"] < before + 3:
                apply(await next_book())
            assert state["gaps"] == 1 and state["bad"] == 1

    asyncio.run(run())
    rest = httpx.get(base + "/api/v5/market/books", params={"instId": "ETH-USDT", "sz": 5}).json()
    assert rest["code"] == "0" and len(rest["data"][0]["bids"]) == 5 and len(rest["data"][0]["asks"][0]) == 4


# ----------------------------------------------------------------------------------- KuCoin
def test_kucoin_level2_with_rest_snapshot_and_checkpoint(factory):
    sim = factory("kucoin", ["BTC-USDT", "ETH-USDT"])(rate=3000, seed=4)
    base = sim.endpoints["kucoin"]["rest"]

    async def run():
        bullet = (await asyncio.to_thread(httpx.post, base + "/api/v1/bullet-public")).json()["data"]
        server = bullet["instanceServers"][0]
        async with ws_connect(f"{server['endpoint']}?token={bullet['token']}&connectId=b1") as ws:
            assert (await recv_json(ws))["type"] == "welcome"
            await ws.send('{"id":"s1","type":"subscribe","topic":"/market/level2:BTC-USDT","response":true}')
            assert await recv_json(ws) == {"id": "s1", "type": "ack"}
            buffered = [await recv_json(ws) for _ in range(5)]
            r = await asyncio.to_thread(httpx.get, base + "/api/v3/market/orderbook/level2",
                                        params={"symbol": "BTC-USDT"})
            assert r.status_code == 401, "the full book needs an API key"
            snap = (await asyncio.to_thread(httpx.get, base + "/api/v3/market/orderbook/level2",
                                            params={"symbol": "BTC-USDT"}, headers={"KC-API-KEY": "x"})).json()
            seq = int(snap["data"]["sequence"])
            bids, asks = as_dict(snap["data"]["bids"]), as_dict(snap["data"]["asks"])
            state = {"seq": seq, "applied": 0, "gaps": 0}

            def apply(m) -> None:
                d = m["data"]
                assert m["subject"] == "trade.l2update" and d["symbol"] == "BTC-USDT"
                if d["sequenceEnd"] <= state["seq"]:
                    return
                if d["sequenceStart"] > state["seq"] + 1:
                    state["gaps"] += 1
                    return
                for side, changes in ((bids, d["changes"]["bids"]), (asks, d["changes"]["asks"])):
                    for p, size, s in changes:
                        if int(s) <= state["seq"]:
                            continue
                        if Decimal(size) == 0:
                            side.pop(p, None)
                        else:
                            side[p] = size
                state["seq"] = d["sequenceEnd"]
                state["applied"] += 1

            for m in buffered:
                apply(m)
            prev_end = None
            while state["applied"] < 20:
                m = await recv_json(ws)
                if prev_end is not None:
                    assert m["data"]["sequenceStart"] == prev_end + 1
                prev_end = m["data"]["sequenceEnd"]
                apply(m)
            await asyncio.to_thread(pause, base)
            ref = await asyncio.to_thread(sim_book, base, "BTC-USDT")
            while state["seq"] < ref["update_id"]:
                apply(await recv_json(ws))
            assert state["seq"] == int(ref["sequence"]) and state["gaps"] == 0
            assert bids == as_dict(ref["bids"]) and asks == as_dict(ref["asks"])
            await asyncio.to_thread(resume, base)
            cid = await asyncio.to_thread(conn_id, sim, "kucoin", ws)
            await asyncio.to_thread(sim.fault, "kucoin", "seq_gap", conn=cid, count=2)
            while state["gaps"] == 0:
                apply(await recv_json(ws))

    asyncio.run(run())


# ----------------------------------------------------------------------------------- Kraken
def kraken_checksum(bids: dict[str, str], asks: dict[str, str]) -> int:
    a = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))[:10]
    b = sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:10]
    s = "".join(p.replace(".", "").lstrip("0") + v.replace(".", "").lstrip("0") for p, v in a + b)
    return crc32(s.encode())


def test_kraken_book_checksums_truncation_and_checkpoint(factory):
    sim = factory("kraken", ["BTC-USD", "DOGE-USD"])(rate=3000, seed=6)
    base = sim.endpoints["kraken"]["rest"]
    pairs = httpx.get(base + "/0/public/AssetPairs").json()["result"]
    dec = {v["wsname"]: v["pair_decimals"] for v in pairs.values() if "wsname" in v}

    async def run():
        async with ws_connect(sim.endpoints["kraken"]["ws"] + "/") as ws:
            assert (await recv_json(ws))["event"] == "systemStatus"
            await ws.send('{"event":"subscribe","pair":["XDG/USD"],"subscription":{"name":"book","depth":10}}')
            status = await recv_json(ws)
            assert status["status"] == "subscribed" and status["channelName"] == "book-10"
            cid = status["channelID"]
            snap = await recv_json(ws)
            assert snap[0] == cid and snap[-2:] == ["book-10", "XDG/USD"]
            bids = {p: v for p, v, _ in snap[1]["bs"]}
            asks = {p: v for p, v, _ in snap[1]["as"]}
            assert len(bids) == len(asks) == 10
            assert all(len(p.split(".")[1]) == dec["XDG/USD"] for p in bids)
            state = {"ok": 0, "bad": 0, "republished": 0}

            def apply(m) -> None:
                assert m[0] == cid and m[-2:] == ["book-10", "XDG/USD"]
                dicts = m[1:-2]
                assert 1 <= len(dicts) <= 2 and "c" in dicts[-1]
                for d in dicts:
                    for key, side in (("a", asks), ("b", bids)):
                        for lvl in d.get(key, []):
                            p, v = lvl[0], lvl[1]
                            state["republished"] += lvl[3:] == ["r"]
                            if Decimal(v) == 0:
                                side.pop(p, None)
                            else:
                                side[p] = v
                for side, rev in ((asks, False), (bids, True)):
                    keep = sorted(side, key=Decimal, reverse=rev)[:10]
                    for p in list(side):
                        if p not in keep:
                            del side[p]
                if kraken_checksum(bids, asks) == int(dicts[-1]["c"]):
                    state["ok"] += 1
                else:
                    state["bad"] += 1

            async def next_book():
                while True:
                    m = await recv_json(ws)
                    if isinstance(m, list):
                        return m

            while state["ok"] < 30:
                apply(await next_book())
            assert state["bad"] == 0
            await asyncio.to_thread(pause, base)
            await asyncio.sleep(0.2)
            ref = await asyncio.to_thread(httpx.get, base + "/_sim/book", params={"symbol": "DOGE-USD", "depth": 10})
            ref = ref.json()
            while True:  # drain what was sent before the pause
                try:
                    apply(await asyncio.wait_for(next_book(), 0.3))
                except asyncio.TimeoutError:
                    break
            assert bids == as_dict(ref["bids"]) and asks == as_dict(ref["asks"])
            assert int(ref["checksum"]) == kraken_checksum(bids, asks)
            await asyncio.to_thread(resume, base)
            kid = await asyncio.to_thread(conn_id, sim, "kraken", ws)
            await asyncio.to_thread(sim.fault, "kraken", "bad_checksum", conn=kid)
            while state["bad"] == 0:
                apply(await next_book())
            # a withheld update: the following checksums fail until resubscribed
            await asyncio.to_thread(sim.fault, "kraken", "seq_gap", conn=kid)
            bad = state["bad"]
            for _ in range(5):
                apply(await next_book())
            assert state["bad"] > bad
            await ws.send('{"event":"unsubscribe","channelID":%d}' % cid)
            while (m := await recv_json(ws)) and not (isinstance(m, dict) and m.get("status") == "unsubscribed"):
                pass
            assert m["channelID"] == cid

    asyncio.run(run())
