"""Batched, pipelined publishing of ticks, coverage marks and gap records to Redis Streams.

Everything queued for a stream goes out as one entry per flush (two if a coverage mark does not
continue the previous one); all streams share one pipelined round trip. A flush happens every
`flush_ms` after the first item of a batch was queued, or as soon as `flush_ticks` are queued. If Redis is unreachable the batch is kept and
retried with backoff. The queue is bounded: when it is full `put` waits, which stops the
WebSocket reader and pushes back on the venue through TCP instead of dropping what was received.

On a Redis Cluster the pipeline is split per master by the cluster client, and each master's part
ends with ``WAIT 1 <ms>`` (``replica_wait.py``): a flush counts as published once a replica holds
it, so a failover cannot lose what was counted. On a single Redis the flush is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..storage.redis import is_cluster
from ..coverage import Coverage
from ..gap import Gap
from ..stream import STREAMS_SET, encode_entry, sequence_key, stream_key
from ..tick import Tick
from ..backoff import Backoff
from .replica_wait import ReplicaWait, execute_flush
from .resp_pipeline import RespPipeline

log = logging.getLogger("marketdata.ingest.publisher")


class _Segment:
    """One future stream entry: ticks, then the coverage mark vouching for them, and gap records."""
    __slots__ = ("ticks", "coverage", "gaps")

    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self.coverage: Coverage | None = None
        self.gaps: list[Gap] = []


class FlushLoop:
    """The flush loop both publishers share: a batch goes out `flush_s` after its first item was
    queued (or at once when woken, e.g. full), in one pipelined round trip; while Redis is down the
    batch is kept and retried with capped backoff. With nothing queued the loop waits on `_wake`
    alone, with no timer: an idle publisher costs nothing (a 5 ms `wait_for` cycle cost about a
    task and a timer 200 times a second per process). Subclasses provide flush(), _pending, _wake
    (set by the subclass when the first item of a batch is queued, and when it is full: `_full`),
    flush_s, _queued, failures,
    last_error, and `what` (for the log).

    After `stop`, what is left is flushed, and a Redis that stays down is retried for `drain_s`;
    then the loop gives up and returns with `abandoned` set to what it still held: a process asked
    to stop must stop. Nothing vouches for what was abandoned (its coverage mark went down with
    it), so the span is a hole that the completeness audit reports and repair refills from the
    venue's REST history."""

    what = "ticks"
    drain_s = 10.0
    abandoned = 0

    async def run(self, stop: asyncio.Event) -> None:
        waker = asyncio.ensure_future(self._wake_on(stop))
        try:
            await self._run(stop)
        finally:
            waker.cancel()

    def _full(self) -> bool:
        return self._queued >= self.max_queued

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None
        while True:
            if stop.is_set() and give_up_at is None:
                give_up_at = loop.time() + self.drain_s
            if not stop.is_set():
                if not self._pending:
                    await self._wake.wait()             # idle: until the first item is queued
                if not stop.is_set() and not self._full():
                    # Let the batch fill for flush_s, unless it fills (or is asked for) first.
                    self._wake.clear()
                    timer = loop.call_later(self.flush_s, self._wake.set)
                    await self._wake.wait()
                    timer.cancel()
            self._wake.clear()
            if self._pending:
                try:
                    await self.flush()
                    backoff.reset()
                except (RedisError, OSError) as e:
                    self.failures += 1
                    self.last_error = f"{type(e).__name__}: {e}"
                    if give_up_at is not None and loop.time() >= give_up_at:
                        self.abandoned = self._queued
                        log.error("stopping with %d %s not published: Redis stayed down for the %.0fs "
                                  "a stop waits (%s); their span is not marked covered, so the audit "
                                  "shows it and repair refills it", self.abandoned, self.what,
                                  self.drain_s, self.last_error)
                        return
                    delay = backoff.next_delay()
                    if give_up_at is not None:
                        delay = max(0.0, min(delay, give_up_at - loop.time()))
                    log.warning("redis publish failed (%s); %d %s kept, retrying in %.2fs",
                                self.last_error, self._queued, self.what, delay)
                    await asyncio.sleep(delay)
                    continue
            if stop.is_set() and not self._pending:
                return


class Publisher(FlushLoop):
    def __init__(self, redis: aioredis.Redis, *, flush_ms: float = 5.0, flush_ticks: int = 5000,
                 max_queued: int = 500_000):
        self.redis = redis
        self.flush_s = flush_ms / 1000.0
        self.flush_ticks = flush_ticks
        self.max_queued = max_queued
        self._pending: dict[tuple[str, str], list[_Segment]] = {}
        self._queued = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._known_streams: set[str] = set()
        self.published_ticks = 0
        self.published_entries = 0
        self.failures = 0
        self.last_error = ""
        # Called at flush time for each stream flushed: the sequence state to store after the entry.
        self.state_provider: Callable[[str, str], dict | None] | None = None
        # Cluster only (decided once here; a single node's flush never looks at it again).
        self.replica_wait = ReplicaWait(redis) if is_cluster(redis) else None
        # A single Redis: commands packed by hand on one held connection (resp_pipeline.py).
        self._resp = RespPipeline(redis) if self.replica_wait is None else None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await super().run(stop)
        finally:
            if self._resp is not None:
                await self._resp.release()

    @property
    def queued(self) -> int:
        return self._queued

    def _full(self) -> bool:
        return self._queued >= self.flush_ticks

    def _last(self, exchange: str, symbol: str) -> _Segment:
        segs = self._pending.get((exchange, symbol))
        if segs is None:
            if not self._pending:
                self._wake.set()              # the first item of a batch starts its flush_s
            segs = self._pending[(exchange, symbol)] = [_Segment()]
        return segs[-1]

    async def put(self, tick: Tick) -> None:
        while not self.put_nowait(tick):
            self._room.clear()
            self._wake.set()
            await self._room.wait()

    def put_nowait(self, tick: Tick) -> bool:
        """Queue a tick unless the queue is full (then False: use ``put``, which waits for room)."""
        if self._queued >= self.max_queued:
            return False
        segs = self._pending.get((tick.exchange, tick.symbol))
        if segs is None:
            if not self._pending:
                self._wake.set()              # the first item of a batch starts its flush_s
            segs = self._pending[(tick.exchange, tick.symbol)] = [_Segment()]
        segs[-1].ticks.append(tick)
        self._queued += 1
        if self._queued >= self.flush_ticks:
            self._wake.set()
        return True

    def put_coverage(self, exchange: str, symbol: str, from_us: int, to_us: int, source: str = "ws") -> None:
        """Vouch for [from_us, to_us]; it goes out after every tick queued before it."""
        seg = self._last(exchange, symbol)
        if seg.coverage is None:
            seg.coverage = Coverage(from_us, to_us, source)
        elif seg.coverage.to_us + 1 >= from_us and seg.coverage.source == source:
            seg.coverage = Coverage(seg.coverage.from_us, max(seg.coverage.to_us, to_us), source)
        else:
            nxt = _Segment()
            nxt.coverage = Coverage(from_us, to_us, source)
            self._pending[(exchange, symbol)].append(nxt)

    def put_gap(self, gap: Gap) -> None:
        self._last(gap.exchange, gap.symbol).gaps.append(gap)
        self._wake.set()

    def request_flush(self) -> None:
        self._wake.set()

    async def flush(self) -> None:
        batch, self._pending = self._pending, {}
        pipe = self._resp or self.redis.pipeline(transaction=False)
        new_streams = []
        for (exchange, symbol), segs in batch.items():
            key = stream_key(exchange, symbol)
            if key not in self._known_streams:
                new_streams.append(key)
            for seg in segs:
                if seg.ticks or seg.coverage or seg.gaps:
                    pipe.xadd(key, encode_entry(exchange, symbol, seg.ticks, seg.coverage, seg.gaps))
            state = self.state_provider(exchange, symbol) if self.state_provider else None
            if state:
                # Written after the entries: stored state never runs ahead of what was published.
                pipe.hset(sequence_key(exchange, symbol), mapping=state)
        if new_streams:
            pipe.sadd(STREAMS_SET, *new_streams)
        try:
            await execute_flush(pipe, self.replica_wait, batch, stream_key)
        except BaseException:
            # Keep the batch, in front of whatever was queued while the round trip was out.
            for k, segs in self._pending.items():
                batch.setdefault(k, []).extend(segs)
            self._pending = batch
            raise
        self._known_streams.update(new_streams)
        sent = sum(len(s.ticks) for segs in batch.values() for s in segs)
        self._queued -= sent
        self.published_ticks += sent
        self.published_entries += sum(len(segs) for segs in batch.values())
        if self._queued < self.max_queued:
            self._room.set()
