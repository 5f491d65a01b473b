"""The connector's publisher batches by time from the first item of a batch, and sleeps while
nothing is queued: after an idle spell, a tick and a lone coverage mark each still reach Redis
(one entry per batch), and a full batch goes out without waiting for its timer. Real redis-server."""

from __future__ import annotations

import asyncio

from marketdata.ingest.publisher import Publisher
from marketdata.storage.redis import async_client
from marketdata.stream import decode_entry, stream_key
from marketdata.tick import Tick

T0 = 1_700_000_000_000_000


def _tick(i: int) -> Tick:
    return Tick.trade("binance", "BTC-USDT", T0 + i, "100", "1", "buy", str(i + 1), T0 + i)


async def _next_entry(r, key: str, last: str) -> tuple[str, dict]:
    got = await r.xread({key: last}, block=20_000, count=1)
    assert got, f"nothing reached {key} within 20 s"
    eid, fields = got[0][1][0]
    return eid.decode(), fields


def test_idle_then_a_tick_then_a_lone_coverage_mark_each_reach_redis(redis_server):
    async def main() -> None:
        r = async_client(redis_server.url)
        key = stream_key("binance", "BTC-USDT")
        pub = Publisher(r, flush_ms=5.0)
        stop = asyncio.Event()
        task = asyncio.create_task(pub.run(stop))
        await asyncio.sleep(0.3)                         # an idle spell: nothing queued, nothing sent
        assert pub.published_entries == 0 and await r.xlen(key) == 0
        pub.put_nowait(_tick(0))
        pub.put_nowait(_tick(1))
        eid, fields = await _next_entry(r, key, "0")
        assert [t.trade_id for t in decode_entry(fields).ticks] == ["1", "2"]    # one batch, one entry
        pub.put_coverage("binance", "BTC-USDT", T0, T0 + 10)                     # nothing else queued
        eid, fields = await _next_entry(r, key, eid)
        cov = decode_entry(fields).coverage
        assert cov is not None and (cov.from_us, cov.to_us) == (T0, T0 + 10)
        stop.set()
        await asyncio.wait_for(task, 30)
        await r.aclose()
    asyncio.run(main())


def test_a_full_batch_goes_out_before_its_timer(redis_server):
    async def main() -> None:
        r = async_client(redis_server.url)
        key = stream_key("binance", "BTC-USDT")
        pub = Publisher(r, flush_ms=60_000.0, flush_ticks=100)      # the timer alone would take a minute
        stop = asyncio.Event()
        task = asyncio.create_task(pub.run(stop))
        for i in range(100):
            await pub.put(_tick(i))
        _, fields = await _next_entry(r, key, "0")
        assert len(decode_entry(fields).ticks) == 100
        stop.set()
        await asyncio.wait_for(task, 30)
        await r.aclose()
    asyncio.run(main())
