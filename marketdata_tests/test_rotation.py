"""Make-before-break: a link the venue cuts after a lifetime (Binance: 24 h) is replaced by a new,
subscribed one before the cut, so the tape has no reconnect span at all -- no hole, no gap record,
no REST repair."""

from __future__ import annotations

import asyncio

from marketdata.config import VenueConfig
from marketdata.ingest.connector import VenueConnector
from marketdata.stream import decode_entry, stream_key
from marketdata.storage.redis import client

from .harness import SimProc, platform_env, wait_for


def test_links_rotate_before_the_venue_cuts_them_and_nothing_is_missed(tmp_path, redis_server):
    env = platform_env(tmp_path, redis_server.url, "http://127.0.0.1:9")
    sim = SimProc(["simulate", "--venues", "binance", "--symbols", "BTC-USDT", "--rate", "400",
                   "--venue-option", "binance.max_lifetime=3"], env, tmp_path)
    try:
        eps = sim.endpoints["binance"]
        cfg = VenueConfig("binance", ["BTC-USDT"], eps["ws"], eps["rest"], max_lifetime=2.5, idle_timeout=5)
        conn = VenueConnector(cfg, redis_server.url)

        async def run() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(conn.run(stop))
            while conn.rotations < 3 and not task.done():
                await asyncio.sleep(0.1)
            stop.set()
            await task
        asyncio.run(asyncio.wait_for(run(), 60))
        assert conn.rotations >= 3
        assert conn.reconnects == 0, "the venue never had to cut a link"
        # On stop the last link goes down: that, and only that, opens a span.
        assert conn.seqs["BTC-USDT"].gaps_found == 1
        r = client(redis_server.url)
        ids, gaps = [], []
        for _, fields in r.xrange(stream_key("binance", "BTC-USDT")):
            e = decode_entry(fields)
            ids += [int(t.trade_id) for t in e.ticks]
            gaps += e.gaps
        assert ids == list(range(ids[0], ids[0] + len(ids))), "ids published once each, in order"
        assert not [g for g in gaps if g.found_by == "reconnect"]
        assert conn.repair_requests == 0
        r.close()
    finally:
        sim.stop()
