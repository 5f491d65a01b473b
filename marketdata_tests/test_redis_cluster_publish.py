"""The connector's publisher on a real Redis Cluster (``EmbeddedRedisCluster``): each flush ends
with ``WAIT 1`` on every master it wrote to, so when a flush returns, each of its entries is on
that master's replica already; a master whose replica does not answer (frozen with SIGSTOP here)
costs one WAIT timeout, is counted as a shortfall, and is then not waited on, so later flushes do
not stall. A single-node client gets no replica wait at all."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from marketdata.ingest.publisher import Publisher
from marketdata.storage.redis import async_client
from marketdata.storage.redis_cluster import EmbeddedRedisCluster
from marketdata.stream import stream_key
from marketdata.tick import Tick

T0 = 1_700_000_000_000_000
SYMBOLS = [f"S{i}-USDT" for i in range(12)]


def _put(pub: Publisher, n: int, base: int) -> None:
    for s in SYMBOLS:
        for i in range(n):
            pub.put_nowait(Tick.trade("binance", s, T0 + base + i, "100", "1", "buy", str(base + i + 1), T0))


def _replica_len(node, key: str) -> int:
    c = node.conn(single_connection_client=True)
    try:
        c.execute_command("READONLY")           # let a replica answer for its master's slots
        return c.xlen(key)
    finally:
        c.close()


def test_flush_returns_once_every_master_s_replica_has_it_and_a_frozen_replica_is_skipped(tmp_path, redis_server):
    with EmbeddedRedisCluster(tmp_path / "cluster", cluster_node_timeout_ms=15_000) as cl:
        keys = [stream_key("binance", s) for s in SYMBOLS]
        masters = {k: cl.master_of_key(k) for k in keys}
        assert len({m.port for m in masters.values()}) == 3, "12 symbols should land on all 3 masters"

        async def main() -> None:
            r = async_client(cl.url)
            pub = Publisher(r, flush_ms=1.0)
            rw = pub.replica_wait
            assert rw is not None and rw.timeout_ms == 250
            for round_ in range(3):
                _put(pub, 50, round_ * 50)
                await pub.flush()
                # No replication delay left to wait out: every replica holds every entry now.
                for k in keys:
                    assert _replica_len(cl.replica_of(masters[k]), k) == round_ + 1, k
            assert rw.waits == 9 and rw.shortfalls == 0

            frozen = cl.replica_of(masters[keys[0]])
            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                t = time.monotonic()
                _put(pub, 10, 1000)
                await pub.flush()
                first = time.monotonic() - t
                assert rw.shortfalls == 1 and first >= 0.25       # one WAIT timed out, counted
                t = time.monotonic()
                _put(pub, 10, 2000)
                await pub.flush()
                second = time.monotonic() - t
                assert rw.shortfalls == 1 and second < 0.2, second  # that master is not waited on
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
            assert pub.published_ticks == len(SYMBOLS) * (150 + 20)
            await r.aclose()

            single = async_client(redis_server.url)
            assert Publisher(single).replica_wait is None
            await single.aclose()
        asyncio.run(main())
