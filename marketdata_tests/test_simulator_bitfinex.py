"""The Bitfinex simulator: info/conf/subscribe with chanIds that differ per connection, the trades
snapshot on every subscribe, each trade as `te` then `tu`, heartbeats, SEQ_ALL sequence numbers,
REST trades/hist and candles against the ground truth, faults (lost frames, notices, maintenance)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from decimal import Decimal

import httpx
import orjson
import pytest

from .simtest import SimFactory, read_gt, recv_json, ws_connect

pytestmark = pytest.mark.timeout(90)

SYMS = ["BTC-USDT", "DOGE-USD"]
SEQ_ALL = 65536


@pytest.fixture
def make_sim(tmp_path):
    f = SimFactory(tmp_path, "bitfinex", SYMS)
    yield f
    f.close()


def urls(sim):
    ep = sim.endpoints["bitfinex"]
    return ep["ws"] + "/ws/2", ep["rest"]


async def open_trades(ws, symbols: list[str], flags: int | None = SEQ_ALL) -> tuple[dict, dict, list]:
    """info, conf, subscribe: returns (symbol -> chanId, chanId -> snapshot, other frames seen)."""
    info = await recv_json(ws)
    assert info["event"] == "info" and info["version"] == 2 and info["platform"] == {"status": 1}
    if flags is not None:
        await ws.send(orjson.dumps({"event": "conf", "flags": flags}).decode())
        assert await recv_json(ws) == {"event": "conf", "status": "OK", "flags": flags}
    for s in symbols:
        await ws.send(orjson.dumps({"event": "subscribe", "channel": "trades", "symbol": s}).decode())
    chans, snaps, other = {}, {}, []
    while len(snaps) < len(symbols):
        m = await recv_json(ws)
        if isinstance(m, dict) and m.get("event") == "subscribed":
            assert m["channel"] == "trades" and m["pair"] == m["symbol"][1:]
            chans[m["symbol"]] = m["chanId"]
        else:
            other.append(m)
            if isinstance(m, list) and isinstance(m[1], list):
                snaps[m[0]] = m
    return chans, snaps, other


def gt_by_id(path) -> dict[str, dict]:
    return {r["trade_id"]: r for r in read_gt(path)}


def same_trade(row: list, gt: dict) -> bool:
    side = "buy" if row[2] > 0 else "sell"
    return (int(gt["ts_us"]) == row[1] * 1000 and Decimal(gt["price"]) == Decimal(repr(row[3]))
            and Decimal(gt["qty"]) == abs(Decimal(repr(row[2]))) and gt["side"] == side)


def test_chan_ids_snapshot_te_tu_heartbeats_and_sequence(make_sim):
    # DOGE never trades: its channel only heartbeats
    sim = make_sim(rate=1500, seed=3, symbol_weights={"DOGE-USD": 0.0},
                   venue_options={"bitfinex": {"heartbeat_interval": 0.3, "tu_delay": 0.3}})
    ws_url, _ = urls(sim)

    async def run():
        async with ws_connect(ws_url) as a, ws_connect(ws_url) as b:
            await asyncio.sleep(0.3)           # let the tape grow so the snapshot is full
            chans_a, snaps_a, first = await open_trades(a, ["tBTCUST", "tDOGE:USD"])
            chans_b, _, _ = await open_trades(b, ["tBTCUST"], flags=None)
            assert set(chans_a.values()).isdisjoint(chans_b.values()), "chanIds differ per connection"
            # errors: unknown pair, duplicate, unknown channel, unknown event; ping
            for req in ({"event": "subscribe", "channel": "trades", "symbol": "tBTCUSDT"},
                        {"event": "subscribe", "channel": "trades", "symbol": "tBTCUST"},
                        {"event": "subscribe", "channel": "nope", "symbol": "tBTCUST"},
                        {"event": "dance"}, {"event": "ping", "cid": 77}):
                await a.send(orjson.dumps(req).decode())
            te, tu, hb, errors, pong = defaultdict(list), defaultdict(list), 0, [], None
            seqs = [m[-1] for m in first if isinstance(m, list)]
            for m in first:
                if isinstance(m, list) and m[1] in ("te", "tu"):
                    (te if m[1] == "te" else tu)[m[2][0]].append((m[0], m[2]))
            deadline = time.monotonic() + 20
            while (len(errors) < 4 or pong is None or len(tu) < 200 or not hb) and time.monotonic() < deadline:
                m = await recv_json(a)
                if isinstance(m, dict):
                    if m["event"] == "error":
                        errors.append(m["code"])
                    elif m["event"] == "pong":
                        pong = m
                    continue
                seqs.append(m[-1])
                if m[1] == "te":
                    te[m[2][0]].append((m[0], m[2]))
                elif m[1] == "tu":
                    tu[m[2][0]].append((m[0], m[2]))
                elif m[1] == "hb":
                    hb += 1
            # b never asked for SEQ_ALL: its frames carry no sequence number
            m = await recv_json(b)
            while not isinstance(m, list):
                m = await recv_json(b)
            assert len(m) == 3 and m[0] == chans_b["tBTCUST"]
        return chans_a, snaps_a, te, tu, seqs, hb, errors, pong

    chans, snaps, te, tu, seqs, hb, errors, pong = asyncio.run(run())
    assert errors == [10001, 10301, 10302, 10000]
    assert pong["cid"] == 77 and pong["ts"] > 0
    assert hb > 0, "idle DOGE channel heartbeats"
    # SEQ_ALL: +1 per channel frame across channels, heartbeats and snapshots included
    assert seqs == list(range(1, 1 + len(seqs)))
    # every tu of a trade made after the subscribe repeats its te, on the same channel
    newest = snaps[chans["tBTCUST"]][1][0][0]
    assert tu and all(te[i] and te[i][0] == tu[i][0] for i in tu if i > newest)
    sim.flush()
    gt = gt_by_id(sim.ground_truth_path)
    cid_sym = {v: k for k, v in chans.items()}
    sym_of = {"tBTCUST": "BTC-USDT", "tDOGE:USD": "DOGE-USD"}
    for i, lst in te.items():
        assert len(lst) == 1
        r = gt[str(i)]
        assert sym_of[cid_sym[lst[0][0]]] == r["symbol"] and same_trade(lst[0][1], r)
    # snapshot: the newest trades of the tape, newest first; ids increase but not by one
    snap = snaps[chans["tBTCUST"]][1]
    assert len(snap) == 30
    ids = [r[0] for r in snap]
    assert ids == sorted(ids, reverse=True) and any(x - y > 1 for x, y in zip(ids, ids[1:]))
    assert all(same_trade(r, gt[str(r[0])]) for r in snap)
    btc = [int(r["trade_id"]) for r in read_gt(sim.ground_truth_path) if r["symbol"] == "BTC-USDT"]
    assert btc == sorted(btc) and len(set(btc)) == len(btc)
    assert min(te) > ids[0], "live trades follow the snapshot"


def test_rest_conf_trades_hist_and_candles(make_sim):
    sim = make_sim(rate=3000, seed=5, speed=120)
    _, rest = urls(sim)
    time.sleep(1.0)
    sim.pause("bitfinex")
    sim.flush()
    gt = [r for r in read_gt(sim.ground_truth_path) if r["symbol"] == "BTC-USDT"]
    with httpx.Client(base_url=rest, timeout=10) as c:
        assert c.get("/v2/conf/pub:list:pair:exchange").json() == [["BTCUST", "DOGE:USD"]]
        assert ["UST", "USDT"] in c.get("/v2/conf/pub:map:currency:sym").json()[0]
        assert c.get("/v2/platform/status").json() == [1]
        mid = int(gt[len(gt) // 2]["ts_us"]) // 1000
        end = mid + 1500
        want = [r for r in gt if mid <= int(r["ts_us"]) // 1000 <= end]
        got = c.get("/v2/trades/tBTCUST/hist", params={"start": mid, "end": end, "limit": 10000, "sort": 1}).json()
        assert [str(r[0]) for r in got] == [r["trade_id"] for r in want] and len(got) > 10
        assert all(same_trade(g, w) for g, w in zip(got, want))
        newest = c.get("/v2/trades/tBTCUST/hist", params={"start": mid, "end": end, "limit": 5}).json()
        assert [str(r[0]) for r in newest] == [r["trade_id"] for r in want[::-1][:5]]
        assert len(c.get("/v2/trades/tBTCUST/hist").json()) == 125
        bad = c.get("/v2/trades/tBTCUSDT/hist")
        assert bad.status_code == 500 and bad.json()[:2] == ["error", 10020]
        candles = c.get("/v2/candles/trade:1m:tBTCUST/hist", params={"sort": 1, "limit": 10000}).json()
    by_min = defaultdict(list)
    for r in gt:
        by_min[int(r["ts_us"]) // 60_000_000 * 60_000].append(r)
    assert [k[0] for k in candles] == sorted(by_min)
    for mts, o, cl, h, lo, v in candles:
        px = [Decimal(r["price"]) for r in by_min[mts]]
        assert (Decimal(repr(o)), Decimal(repr(cl)), Decimal(repr(h)), Decimal(repr(lo))) == \
            (px[0], px[-1], max(px), min(px)), "O,C,H,L order"
        assert Decimal(repr(v)) == sum(Decimal(r["qty"]) for r in by_min[mts])


def test_lost_frames_jump_the_sequence_and_notices(make_sim):
    sim = make_sim(rate=300, seed=8, venue_options={"bitfinex": {"heartbeat_interval": 0.2, "tu_delay": 0.2}})
    ws_url, rest = urls(sim)

    async def frames_until(ws, pred, timeout=10.0):
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = await recv_json(ws)
            out.append(m)
            if pred(m):
                return out
        raise AssertionError(f"not seen within {timeout}s; last {out[-3:]}")

    async def run():
        async with ws_connect(ws_url) as a:
            chans, snaps, first = await open_trades(a, ["tBTCUST", "tDOGE:USD"])
            # skip_ids: the withheld trades' te and tu frames are lost, their numbers consumed
            sim.fault("bitfinex", kind="skip_ids", symbol="BTC-USDT", count=5)
            skipped_at = time.monotonic()
            seen = []
            deadline = time.monotonic() + 30
            while sim.stats("bitfinex")["faults"][0]["hits"] < 5 and time.monotonic() < deadline:
                seen += [await recv_json(a) for _ in range(20)]
            seen += [await recv_json(a) for _ in range(20)]     # frames after the withheld ones
            assert sim.stats("bitfinex")["faults"][0]["hits"] == 5
            seq = [m[-1] for m in seen if isinstance(m, list)]
            assert any(y - x > 1 for x, y in zip(seq, seq[1:])), "the sequence jumps over the lost frames"
            sim.flush()
            got = {m[2][0] for m in first + seen if isinstance(m, list) and m[1] == "te" and m[0] == chans["tBTCUST"]}
            after = max((r[0] for r in snaps[chans["tBTCUST"]][1]), default=0)
            made = {int(r["trade_id"]) for r in read_gt(sim.ground_truth_path) if r["symbol"] == "BTC-USDT"}
            assert len({i for i in made if after < i < max(got)} - got) == 5, "exactly the withheld trades"
            # unknown chanId, malformed
            sim.fault("bitfinex", kind="unknown_symbol")
            await frames_until(a, lambda m: isinstance(m, list) and m[0] not in chans.values())
            sim.fault("bitfinex", kind="malformed", count=2, variant="missing_fields")
            await frames_until(a, lambda m: isinstance(m, list) and m[1] == "te" and len(m[2]) == 1)
            # seq_gap: the next frames of the connection are lost, whatever they carry
            # Read on past the `tu` echoes of the withheld trades (lost too, tu_delay = 1 s later), so
            # the only numbers missing below are the seq_gap's.
            while time.monotonic() < skipped_at + 2.0:
                await recv_json(a)
            seen = await frames_until(a, lambda m: isinstance(m, list), 5)
            sim.fault("bitfinex", kind="seq_gap", count=3)

            def lost() -> int:
                seq = [m[-1] for m in seen if isinstance(m, list) and isinstance(m[-1], int)]
                return sum(y - x - 1 for x, y in zip(seq, seq[1:]))
            deadline = time.monotonic() + 30
            while lost() < 3 and time.monotonic() < deadline:
                seen.append(await recv_json(a))
            seen += [await recv_json(a) for _ in range(10)]     # and nothing more is lost after them
            assert lost() == 3, "exactly three frames lost"
            # 20051
            sim.fault("bitfinex", kind="notice", code=20051)
            await frames_until(a, lambda m: isinstance(m, dict) and m.get("code") == 20051)
            # maintenance: heartbeats only on the old channels, REST refuses, new links see status 0
            sim.fault("bitfinex", kind="notice", code=20060, duration=1.5)
            await frames_until(a, lambda m: isinstance(m, dict) and m.get("code") == 20060)
            async with httpx.AsyncClient(base_url=rest) as c:
                r = await c.get("/v2/trades/tBTCUST/hist")
                assert r.status_code == 503 and r.json() == ["error", 20060, "maintenance"]
                assert (await c.get("/v2/platform/status")).json() == [0]
            during = await frames_until(a, lambda m: isinstance(m, dict) and m.get("code") == 20061)
            kinds = {m[1] for m in during if isinstance(m, list)}
            assert kinds <= {"hb", "tu"} and "hb" in kinds, kinds
            # after 20061 the old channels stay quiet; a new subscription carries data again
            await a.send('{"event":"unsubscribe","chanId":%d}' % chans["tBTCUST"])
            await frames_until(a, lambda m: isinstance(m, dict) and m.get("event") == "unsubscribed")
            await a.send('{"event":"subscribe","channel":"trades","symbol":"tBTCUST"}')
            sub = await frames_until(a, lambda m: isinstance(m, dict) and m.get("event") == "subscribed")
            cid = sub[-1]["chanId"]
            assert cid != chans["tBTCUST"]
            await frames_until(a, lambda m: isinstance(m, list) and m[0] == cid and m[1] == "te")
            stale = await frames_until(a, lambda m: isinstance(m, list) and m[0] == chans["tDOGE:USD"]
                                       and m[1] == "hb", 5)
            assert not [m for m in stale if isinstance(m, list) and m[0] == chans["tDOGE:USD"] and m[1] == "te"]

    asyncio.run(run())
    st = sim.stats("bitfinex")
    assert st["bitfinex"]["maintenance"] is False and st["bitfinex"]["heartbeats"] > 0


def test_connection_rate_limit(make_sim):
    sim = make_sim(rate=10, venue_options={"bitfinex": {"max_connections_per_min": 2}})
    ws_url, _ = urls(sim)

    async def run():
        async with ws_connect(ws_url), ws_connect(ws_url):
            with pytest.raises(Exception) as e:
                async with ws_connect(ws_url):
                    pass
            assert "429" in str(e.value)

    asyncio.run(run())
    assert sim.stats("bitfinex")["bitfinex"]["rejected_connections"] == 1
