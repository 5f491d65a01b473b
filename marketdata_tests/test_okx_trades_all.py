"""OKX `channel: trades-all` through the real connector against the simulator's business endpoint:
one tick per fill (trade_count 1, every trade id), withheld fills and a dropped link repaired by id
from REST, and
what reached Redis equals the simulator's record of the fills it made, each exactly once."""

from __future__ import annotations

import asyncio

from marketdata.config import VenueConfig
from marketdata.ingest.connector import VenueConnector
from marketdata.storage.redis import client
from marketdata.stream import decode_entry, stream_key

from .harness import SimProc, platform_env
from .pipeline import read_truth


def test_trades_all_delivers_every_fill_once(tmp_path, redis_server):
    env = platform_env(tmp_path, redis_server.url, "http://127.0.0.1:9")
    truth_path = tmp_path / "truth.csv"
    sim = SimProc(["simulate", "--venues", "okx", "--symbols", "BTC-USDT", "--rate", "300",
                   "--ground-truth", str(truth_path)], env, tmp_path)
    try:
        eps = sim.endpoints["okx"]
        cfg = VenueConfig("okx", ["BTC-USDT"], eps["ws"], eps["rest"], idle_timeout=5,
                          options={"channel": "trades-all"})
        conn = VenueConnector(cfg, redis_server.url)

        async def run() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            try:
                async with asyncio.timeout(60):      # a deadline for the events, generous for a loaded machine
                    await until_done()
            except TimeoutError:
                seq = conn.seqs["BTC-USDT"]
                raise AssertionError(f"not repaired: reconnects {conn.reconnects}, ticks_in {conn.ticks_in}, "
                                     f"last id {seq.last_id}, holes {seq.holes}, found {seq.gaps_found}, "
                                     f"repaired {seq.gaps_repaired}, health {conn.health()}") from None
            stop.set()
            await task

        async def until_done() -> None:
            while conn.ticks_in < 200:
                await asyncio.sleep(0.05)
            # Withheld fills make the REST repair certain: whether the reconnect itself misses
            # any depends on the scheduling of two processes (a simulator starved on a loaded
            # machine sends what it owes to the new link, and then nothing was missed).
            sim.fault("okx", kind="skip_ids", symbol="BTC-USDT", count=30)
            sim.fault("okx", kind="close")
            seq = conn.seqs["BTC-USDT"]
            while conn.reconnects < 1 or seq.gaps_repaired < 1 or seq.holes or conn.ticks_in < 400:
                await asyncio.sleep(0.05)
        asyncio.run(run())
        sim.control("okx", "/_sim/flush", {})
    finally:
        sim.stop()

    assert conn.malformed == 0 and conn.unrecognised == 0
    r = client(redis_server.url)
    ticks = [t for _, f in r.xrange(stream_key("okx", "BTC-USDT")) for t in decode_entry(f).ticks]
    r.close()
    assert ticks and all(t.trade_count == 1 for t in ticks), "trades-all: one fill per tick"
    got = sorted(int(t.trade_id) for t in ticks)
    assert len(got) == len(set(got)), "each fill once"
    truth = sorted(int(tid) for tid, *_ in read_truth(truth_path, 0, 1 << 62)[("okx", "BTC-USDT")])
    window = [i for i in truth if got[0] <= i <= got[-1]]
    assert got == window, "every fill between the first and the last we hold, across the dropped link"
    assert any(t.source == "rest" for t in ticks), "the span the link was down came back from REST"
