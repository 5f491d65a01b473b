"""Batched, bounded publishing of best bid/ask changes to the quotes streams, with the book state
hash of every symbol flushed written after its entry (stored state never runs ahead of what was
published). Same shape as ``ingest/publisher.py``: one entry per stream per flush, one pipelined
round trip, the batch kept and retried with backoff while Redis is down, and ``put`` waiting when
the queue is full (the book reader then stops reading and TCP pushes back on the venue). On a
Redis Cluster each flush waits for a replica like the trades publisher (``replica_wait.py``)."""

from __future__ import annotations

import asyncio
from typing import Callable

from ...storage.redis import is_cluster
from ..publisher import FlushLoop
from ..replica_wait import ReplicaWait, execute_flush
from ...stream import QUOTE_STREAMS_SET, Quote, book_key, encode_quotes, quotes_key


class QuotePublisher(FlushLoop):
    what = "quotes"

    def __init__(self, redis, *, flush_ms: float = 20.0, max_queued: int = 200_000,
                 maxlen: int | None = None):
        self.redis = redis
        self.flush_s = flush_ms / 1000.0
        self.max_queued = max_queued
        self.maxlen = maxlen
        self._pending: dict[tuple[str, str], list[Quote]] = {}
        self._queued = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._known: set[str] = set()
        self.published = 0
        self.failures = 0
        self.last_error = ""
        # (exchange, symbol) -> book state to store with the flush, or None
        self.state_provider: Callable[[str, str], dict | None] | None = None
        self.replica_wait = ReplicaWait(redis) if redis is not None and is_cluster(redis) else None

    @property
    def queued(self) -> int:
        return self._queued

    async def put(self, q: Quote) -> None:
        while not self.put_nowait(q):
            self._room.clear()
            self._wake.set()
            await self._room.wait()

    def put_nowait(self, q: Quote) -> bool:
        """Queue a quote unless the queue is full (then False: use ``put``)."""
        if self._queued >= self.max_queued:
            return False
        if not self._pending:
            self._wake.set()                  # the first item of a batch starts its flush_s
        self._pending.setdefault((q.exchange, q.symbol), []).append(q)
        self._queued += 1
        return True

    async def flush(self) -> None:
        batch, self._pending = self._pending, {}
        pipe = self.redis.pipeline(transaction=False)
        new = []
        for (ex, sym), quotes in batch.items():
            key = quotes_key(ex, sym)
            if key not in self._known:
                new.append(key)
            if self.maxlen:
                pipe.xadd(key, encode_quotes(ex, sym, quotes), maxlen=self.maxlen, approximate=True)
            else:
                pipe.xadd(key, encode_quotes(ex, sym, quotes))
            state = self.state_provider(ex, sym) if self.state_provider else None
            if state:
                pipe.hset(book_key(ex, sym), mapping=state)
        if new:
            pipe.sadd(QUOTE_STREAMS_SET, *new)
        try:
            await execute_flush(pipe, self.replica_wait, batch, quotes_key)
        except BaseException:
            for k, qs in self._pending.items():
                batch.setdefault(k, []).extend(qs)
            self._pending = batch
            raise
        self._known.update(new)
        sent = sum(len(v) for v in batch.values())
        self._queued -= sent
        self.published += sent
        if self._queued < self.max_queued:
            self._room.set()
