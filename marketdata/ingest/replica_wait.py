"""On a Redis Cluster with replicas: make a flush count as published only once a replica has it.

Redis replication is asynchronous: a master acknowledges an XADD before its replica has it, and a
master killed in that window takes the entry with it when the replica is promoted. The connector
has moved on by then (its sequence state in memory is past those trades), so nothing would notice
the hole except the coverage audit. Instead, a publisher on a cluster appends ``WAIT 1 <ms>`` for
every master its flush wrote to, to the SAME pipeline (WAIT counts the writes of its own
connection, and the cluster pipeline sends each node's commands on one connection, in order): one
round trip still, longer by the replication delay (sub-millisecond on a LAN).

- WAIT answers >= 1: a replica holds the flush; a failover keeps it.
- The master dies before answering: the pipeline raises, the publisher keeps the batch and sends
  it again once the promoted replica serves the slots. Entries of that batch the replica did get
  are then in the stream twice; ClickHouse stores a trade once (ReplacingMergeTree on exchange,
  symbol, trade_id), so a replay duplicates nothing that is read back.
- WAIT times out with 0 (the master has no live replica, e.g. after its replica was promoted and
  the old master is not back): the flush counts as published (counted in ``shortfalls``, logged),
  and that node is not waited on for ``idle_s``, so a shard without a replica does not slow every
  flush by the timeout. Such a flush is exactly as safe as on a single Redis.

A single-node Redis never gets here: the publisher checks once, at construction, whether its
client is a cluster client, and on a single node its flush is unchanged (no WAIT, no extra work).

The timeout is MARKETDATA_REDIS_WAIT_MS (default 250; 0 turns the WAIT off).
"""

from __future__ import annotations

import logging
import os
import time

from .. import settings

log = logging.getLogger("marketdata.ingest.replica_wait")

DEFAULT_WAIT_MS = 250


def wait_ms_from_env() -> int:
    return int(settings.env_number(os.environ, "MARKETDATA_REDIS_WAIT_MS", DEFAULT_WAIT_MS, integer=True))


class ReplicaWait:
    """Appends the WAITs to a cluster flush pipeline and reads their answers."""

    def __init__(self, cluster, timeout_ms: int | None = None, idle_s: float = 10.0):
        self.cluster = cluster
        self.timeout_ms = wait_ms_from_env() if timeout_ms is None else timeout_ms
        self.idle_s = idle_s
        self._skip_until: dict[str, float] = {}     # node name -> monotonic time to wait again
        self._last_log = 0.0
        self.shortfalls = 0
        self.waits = 0

    @property
    def enabled(self) -> bool:
        return self.timeout_ms > 0

    async def add(self, pipe, keys) -> list[str]:
        """Queue WAIT on every master that serves one of ``keys``; returns their node names in
        queue order (the last len() results of the pipeline are their answers)."""
        if not self.enabled:
            return []
        await self.cluster.initialize()              # a no-op once the slot map is known
        now = time.monotonic()
        nodes = {}
        for k in keys:
            try:
                n = self.cluster.get_node_from_key(k)
            except Exception:    # slot not covered right now (mid-failover): the write fails anyway
                continue
            if n.name not in nodes and self._skip_until.get(n.name, 0.0) <= now:
                nodes[n.name] = n
        for n in nodes.values():
            pipe.execute_command("WAIT", 1, self.timeout_ms, target_nodes=n)
        return list(nodes)

    def check(self, names: list[str], answers: list) -> None:
        self.waits += len(names)
        now = time.monotonic()
        short = [n for n, a in zip(names, answers) if not isinstance(a, int) or a < 1]
        if not short:
            return
        self.shortfalls += len(short)
        for n in short:
            self._skip_until[n] = now + self.idle_s
        if now - self._last_log > 10:
            self._last_log = now
            log.warning("no replica acknowledged a flush within %d ms on %s: counted as published "
                        "(as safe as a single Redis); not waiting on that node for %.0fs",
                        self.timeout_ms, ", ".join(short), self.idle_s)


async def execute_flush(pipe, replica_wait: ReplicaWait | None, batch, key_of) -> list:
    """Send a flush pipeline. On a cluster (``replica_wait`` set) the WAITs for the masters that
    serve ``key_of(exchange, symbol)`` of every ``batch`` key go at its end and their answers are
    checked; on a single Redis it is ``pipe.execute()`` and nothing else (no key is computed)."""
    if replica_wait is None:
        return await pipe.execute()
    waited = await replica_wait.add(pipe, [key_of(e, s) for e, s in batch])
    results = await pipe.execute()
    if waited:
        replica_wait.check(waited, results[-len(waited):])
    return results
