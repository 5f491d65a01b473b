"""The persist worker: Redis consumer group ``persist`` -> ClickHouse ticks, quotes, gaps, coverage.

The loop, one batch at a time, and what runs beside it:

    read      the next batch from the group (``batch.py``: own pending entries after a restart,
              entries claimed from consumers idle > claim_idle_ms, else new ones; batching up to
              ``batch_max`` ticks or ``linger_ms``); an entry that does not decode goes to the
              dead letter stream ``md:deadletter`` (with its origin, id and the error) and is acked
    barrier   which coverage marks may go in now (below)
    inserting one short ClickHouse session (``sink.py``: ticks, quotes, then gaps, then coverage,
              each with a deduplication token, so a retried batch is stored once; entries
              ClickHouse refuses as data are isolated and dead-lettered)
    acking    XACK, pipelined, only after ClickHouse committed (``group.py`` sends every Redis
              command, on one Redis or a Redis Cluster)

Failures (Redis or ClickHouse down) are waited out with capped, jittered exponential backoff while
the batch is held; nothing is acked early, nothing is dropped. Entries held across a long wait are
re-claimed by us every claim_idle_ms / 3 so that another worker does not take them while we are
alive.

The coverage barrier: coverage marks vouch for the ticks of their entry *and earlier ones* of the
stream. With several workers (or after a crash) an earlier entry may still be pending with another
consumer, so a mark is inserted only when no older entry of its stream is pending elsewhere;
otherwise the entry's ticks and gaps are stored, and the entry is held (not acked) until its mark
can go in. Coverage in ClickHouse therefore never runs ahead of the ticks it vouches for.

Health: a background thread publishes the worker's health hash every second (``md:health:
{persist:<consumer>}``, read by ``ingest/health.py``), re-claims held entries, trims streams behind
what every group has acknowledged, and removes consumers that are gone and own nothing.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from typing import Callable, Iterable, TypeVar

from .. import settings
from ..clock import now_us
from ..storage.clickhouse import ClickHouse
from ..stream import PERSIST_GROUP, health_key
from . import rows as R
from . import sink
from .batch import Batch, BatchReader, Stopped
from .group import DEADLETTER_STREAM, GroupMember, id_key, id_ms

log = logging.getLogger("marketdata.persist")

HEALTH_TTL_S = 86_400                      # a crashed worker's health hash goes away after a day

T = TypeVar("T")


class PersistWorker:
    """A consumer of group ``persist``; run several with different consumer names to scale out.

    In-process: ``run(stop_event)`` until the event is set, or ``run_once()`` for one batch.
    """

    def __init__(self, redis_url: str | None = None, clickhouse_url: str | None = None,
                 consumer: str | None = None, batch_max: int = 50_000, block_ms: int = 200,
                 claim_idle_ms: int = 30_000, *, linger_ms: int = 100, trim_interval_s: float = 5.0,
                 streams_refresh_s: float = 1.0, health_interval_s: float = 1.0,
                 backoff_base_s: float = 0.05, backoff_max_s: float = 10.0,
                 group: str = PERSIST_GROUP, deadletter_stream: str = DEADLETTER_STREAM,
                 consumer_gone_ms: int | None = None, cluster_poll_ms: int = 25):
        if batch_max < 1 or block_ms < 1 or claim_idle_ms < 1:
            raise ValueError("batch_max, block_ms and claim_idle_ms must be positive")
        self.redis_url = redis_url or settings.redis_url()
        self.ch = ClickHouse(clickhouse_url)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.group = group
        self.batch_max = batch_max
        self.block_ms = block_ms
        self.trim_interval_s = trim_interval_s
        self.health_interval_s = health_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.deadletter_stream = deadletter_stream
        self.consumer_gone_ms = consumer_gone_ms if consumer_gone_ms is not None else 2 * claim_idle_ms
        self.health_key = health_key(f"persist:{self.consumer}")

        self._stop = threading.Event()
        self.member = GroupMember(self.redis_url, group, self.consumer, block_ms=block_ms,
                                  streams_refresh_s=streams_refresh_s, cluster_poll_ms=cluster_poll_ms,
                                  deadletter_stream=deadletter_stream, wait=self._wait)
        self.reader = BatchReader(self.member, batch_max=batch_max, block_ms=block_ms,
                                  claim_idle_ms=claim_idle_ms, linger_s=max(linger_ms, 0) / 1000.0,
                                  wait=self._wait, set_phase=self._set_phase)
        self._deferred: list[R.Parsed] = []        # ticks stored, coverage waiting for older entries
        self._held: dict[bytes, list[bytes]] = {}  # stream -> ids delivered to us and not acked
        self._held_oldest_ms = 0
        self._last_session_start = 0.0
        self._next_trim = 0.0
        self._next_status = 0.0
        self._next_health = 0.0
        self._last_keepalive = 0.0
        self._last_health_error = 0.0
        self._maint_thread: threading.Thread | None = None
        self._maint_lock = threading.Lock()
        self.phase = "idle"
        self.stats = {
            "ticks_persisted": 0, "entries_acked": 0, "batches": 0, "last_batch_ticks": 0,
            "last_batch_entries": 0, "last_insert_ms": 0, "pending": 0,
            "group_pending": 0, "lag_ms": 0, "deadletters": 0, "claimed": 0, "trimmed": 0,
            "trim_runs": 0, "coverage_rows": 0, "gap_rows": 0, "deferred": 0, "errors": 0,
            "consumers_removed": 0, "vanished": 0,
        }
        self.last_error = ""
        self.started_us = now_us()

    def __repr__(self) -> str:
        return (f"PersistWorker(consumer={self.consumer!r}, redis={settings.redact(self.redis_url)}, "
                f"clickhouse={settings.redact(self.ch.url)})")

    @property
    def claim_idle_ms(self) -> int:
        """Entries another consumer has held unacknowledged this long are claimed (``BatchReader``);
        ours are re-claimed every third of it so that nobody else takes them."""
        return self.reader.claim_idle_ms

    @claim_idle_ms.setter
    def claim_idle_ms(self, ms: int) -> None:
        self.reader.claim_idle_ms = ms

    @property
    def _streams(self) -> tuple[bytes, ...]:
        """The streams this worker reads (found in the stream sets)."""
        return self.member.streams

    def _wait(self, seconds: float) -> bool:
        """Wait unless stopped; True if stop was requested."""
        return self._stop.wait(seconds)

    # ------------------------------------------------------------------ running

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Persist until ``stop_event`` is set; the batch in hand is finished if it can be, else
        abandoned unacknowledged (another consumer, or this one restarted, picks it up)."""
        if stop_event is not None:
            self._stop = stop_event
        log.info("persist worker %s starting: redis=%s clickhouse=%s batch_max=%d block_ms=%d "
                 "claim_idle_ms=%d", self.consumer, settings.redact(self.redis_url),
                 settings.redact(self.ch.url), self.batch_max, self.block_ms, self.claim_idle_ms)
        self._maint_thread = threading.Thread(target=self._maintenance_loop, name="persist-maintenance",
                                              daemon=True)
        self._maint_thread.start()
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Stopped:
                    break
        finally:
            self._stop.set()
            if self._maint_thread is not None:
                self._maint_thread.join(timeout=10)
                self._maint_thread = None
            self._set_phase("stopped")
            self._publish_health()
            log.info("persist worker %s stopped: %d ticks, %d entries acked in %d batches",
                     self.consumer, self.stats["ticks_persisted"], self.stats["entries_acked"],
                     self.stats["batches"])

    def stop(self) -> None:
        self._stop.set()

    def interrupt(self) -> None:
        """For a signal handler: stop. An insert under way finishes (or fails), then the worker
        stops; a batch not yet committed is abandoned, not acked."""
        self._stop.set()

    def run_once(self) -> int:
        """Read one batch and persist it. Returns the number of entries handled (0: nothing to do).
        Raises ``Stopped`` only from ``run``'s point of view; called directly it returns 0."""
        if self._maint_thread is None:
            self.maintain()
        try:
            batch = self._retry("read", self._read)
            if not batch.entries and not batch.vanished and not self._deferred:
                self._set_phase("idle")
                return 0
            return self._process(batch)
        except Stopped:
            # The batch in hand is abandoned unacknowledged: stop re-claiming it, so that another
            # consumer can take it over once it is idle.
            self._held = {}
            self._held_oldest_ms = 0
            if self._maint_thread is None:
                return 0
            raise

    def close(self) -> None:
        self.member.close()
        self.ch.close()

    # ------------------------------------------------------------------ read, insert, ack

    def _read(self) -> Batch:
        batch = self.reader.read(self._last_session_start, self._deferred, self._held)
        self.stats["claimed"] = self.reader.claimed
        return batch

    def _insert(self, parsed: list[R.Parsed], allowed_cov: list[R.Parsed]) -> None:
        """One insert of ``parsed`` (coverage marks only of ``allowed_cov``): see ``sink``."""
        plan = sink.plan(parsed, allowed_cov)
        if plan is None:
            return
        self._set_phase("inserting")
        t1 = time.monotonic()
        self._last_session_start = t1
        sink.send(self.ch.client(), plan)
        self.stats["last_insert_ms"] = int((time.monotonic() - t1) * 1000)
        self.stats["coverage_rows"] += plan.coverage_rows
        self.stats["gap_rows"] += plan.gap_rows

    def _ack(self, keys: list[tuple[bytes, bytes]]) -> None:
        self.member.ack(keys)

    # ------------------------------------------------------------------ one batch

    def _process(self, batch: Batch) -> int:
        parsed, dead = batch.parsed, batch.dead
        self._hold([(p.stream, p.id) for p in parsed] + [(s, i) for s, i, _, _ in dead] + batch.vanished)
        for s, i, _, err in dead:
            log.warning("persist: entry %s %s cannot be decoded (%s); moving it to %s",
                        s.decode(errors="replace"), i.decode(), err, self.deadletter_stream)
        fields_of = {(s, i): f for s, i, f in batch.entries}

        # Coverage marks go in only when no older entry of their stream is pending elsewhere.
        candidates = [p for p in parsed if p.coverage is not None] + self._deferred
        allowed, deferred = self._retry("coverage-barrier", lambda: self._coverage_barrier(candidates))
        previously_deferred = self._deferred
        stored, more_dead = sink.store(self._insert, parsed, allowed, fields_of, self._wait_out)
        dead = dead + more_dead
        dead_keys = {(s, i) for s, i, _, _ in more_dead}
        deferred = [p for p in deferred if (p.stream, p.id) not in dead_keys]

        if dead:
            self._retry("dead-letter", lambda: self.member.write_deadletters(dead))
            self.stats["deadletters"] += len(dead)

        deferred_keys = {(p.stream, p.id) for p in deferred}
        to_ack = [(p.stream, p.id) for p in stored if (p.stream, p.id) not in deferred_keys]
        to_ack += [(p.stream, p.id) for p in previously_deferred if (p.stream, p.id) not in deferred_keys]
        to_ack += [(s, i) for s, i, _, _ in dead] + batch.vanished
        self._set_phase("acking")
        self._retry("ack", lambda: self._ack(to_ack))
        self._deferred = deferred
        self._hold([])
        if batch.vanished:
            self.stats["vanished"] += len(batch.vanished)
            log.warning("persist: %d pending entries no longer exist in their stream (deleted or "
                        "trimmed by someone else); acknowledged without persisting", len(batch.vanished))

        n_ticks = sum(p.n_ticks for p in stored)
        self.stats["ticks_persisted"] += n_ticks
        self.stats["entries_acked"] += len(to_ack)
        if batch.entries or to_ack:
            self.stats["batches"] += 1
            self.stats["last_batch_ticks"] = n_ticks
            self.stats["last_batch_entries"] = len(batch.entries)
        self.stats["deferred"] = len(deferred)
        self._set_phase("idle")
        return len(batch.entries) + len(batch.vanished)

    def _hold(self, keys: Iterable[tuple[bytes, bytes]]) -> None:
        held: dict[bytes, list[bytes]] = {}
        oldest = 0
        for p in self._deferred:
            held.setdefault(p.stream, []).append(p.id)
        for s, i in keys:
            held.setdefault(s, []).append(i)
        for ids in held.values():          # ids of a stream are held mostly oldest first
            ms = id_ms(ids[0])
            oldest = ms if not oldest else min(oldest, ms)
        self._held = held
        self._held_oldest_ms = oldest
        self.stats["pending"] = sum(len(v) for v in held.values())

    def _coverage_barrier(self, candidates: list[R.Parsed]) -> tuple[list[R.Parsed], list[R.Parsed]]:
        """Split coverage-carrying entries into (insert now, defer): a mark waits while an older
        entry of its stream is pending with another consumer (its ticks may not be stored yet)."""
        if not candidates:
            return [], []
        streams = sorted({p.stream for p in candidates})
        held_count = {s: len(ids) for s, ids in self._held.items()}
        me = self.consumer.encode()
        limit: dict[bytes, tuple[int, int] | None] = {}     # first foreign pending id, None: none
        lookups: list[tuple[bytes, bytes]] = []
        for s, pending in zip(streams, self.member.pending_consumers(streams)):
            limit[s] = None
            if pending.get(me, 0) > held_count.get(s, 0):
                # Something of ours is pending that we do not hold (a previous life of this
                # consumer name): re-read it first and hold back this stream's marks meanwhile.
                self.member.recover_own.add(s)
                limit[s] = (0, 0)
                continue
            lookups += [(s, c) for c, n in pending.items() if c != me and n > 0]
        if lookups:
            for (s, _), oldest in zip(lookups, self.member.oldest_pending(lookups)):
                if oldest is not None:
                    k = id_key(oldest)
                    cur = limit[s]
                    if cur is None or k < cur:
                        limit[s] = k
        allowed, deferred = [], []
        for p in candidates:
            lim = limit.get(p.stream)
            if lim is None or id_key(p.id) < lim:
                allowed.append(p)
            else:
                deferred.append(p)
        if deferred:
            log.debug("persist: %d coverage marks wait for older entries pending elsewhere", len(deferred))
        return allowed, deferred

    # ------------------------------------------------------------------ retries

    def _backoff(self, attempt: int) -> None:
        delay = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(attempt - 1, 20)))
        delay *= random.uniform(0.5, 1.0)
        if self._wait(delay):
            raise Stopped()

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except Stopped:
                raise
            except Exception as e:
                attempt += 1
                self._wait_out(what, e, attempt)

    def _note_error(self, what: str, e: BaseException, attempt: int) -> None:
        self.stats["errors"] += 1
        msg = settings.redact(f"{type(e).__name__}: {e}".splitlines()[0][:500])
        self.last_error = f"{what}: {msg}"
        level = logging.WARNING if attempt in (1, 2) or attempt % 20 == 0 else logging.DEBUG
        log.log(level, "persist: %s failed (attempt %d, holding %d entries, retrying with backoff): %s",
                what, attempt, self.stats["pending"], msg)

    def _wait_out(self, what: str, e: BaseException, attempt: int) -> None:
        self._note_error(what, e, attempt)
        self._backoff(attempt)

    # ------------------------------------------------------------------ health and maintenance

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        try:
            # the batch count goes with the phase, so a reader knows which batch a phase is of
            # (the full hash is written once a second: a fast worker does several batches in it)
            self.member.hr.hset(self.health_key, mapping={"phase": phase, "phase_us": now_us(),
                                                          "pending": self.stats["pending"],
                                                          "batches": self.stats["batches"]})
        except Exception as e:
            self._health_error(e)

    def _health_error(self, e: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_health_error > 10:
            self._last_health_error = now
            log.warning("persist: cannot publish health to Redis: %s", settings.redact(str(e)))

    def _publish_health(self) -> None:
        lag = self.stats["lag_ms"]
        if self._held_oldest_ms:
            lag = max(lag, int(time.time() * 1000) - self._held_oldest_ms)
        fields = {**self.stats, "lag_ms": max(lag, 0), "heartbeat_us": now_us(), "phase": self.phase,
                  "consumer": self.consumer, "group": self.group, "pid": os.getpid(),
                  "host": socket.gethostname(), "started_us": self.started_us,
                  "streams": len(self._streams), "last_error": self.last_error,
                  "batch_max": self.batch_max, "claim_idle_ms": self.claim_idle_ms}
        try:
            pipe = self.member.hr.pipeline(transaction=False)
            pipe.hset(self.health_key, mapping=fields)
            pipe.expire(self.health_key, HEALTH_TTL_S)
            pipe.execute()
        except Exception as e:
            self._health_error(e)

    def _maintenance_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.maintain()
            except Exception as e:
                self._health_error(e)
            self._stop.wait(0.1)

    def maintain(self) -> None:
        """Whatever is due: health, held-entry keepalive, stream status, trimming, consumer
        cleanup. Runs on the maintenance thread (or inline when driven by ``run_once``)."""
        with self._maint_lock:
            now = time.monotonic()
            if now >= self._next_status or now >= self._next_trim:
                trim = now >= self._next_trim
                self._next_status = now + self.health_interval_s
                if trim:
                    self._next_trim = now + self.trim_interval_s
                try:
                    self._stream_status(trim)
                    if trim:
                        self._remove_gone_consumers()
                except Exception as e:
                    self._note_error("trim" if trim else "status", e, 1)
            if self._held and now - self._last_keepalive >= self.claim_idle_ms / 3000.0:
                self._last_keepalive = now
                try:
                    self.member.keepalive(self._held)
                except Exception as e:
                    self._health_error(e)
            if now >= self._next_health:
                self._next_health = now + self.health_interval_s
                self._publish_health()

    def _stream_status(self, trim: bool) -> None:
        status = self.member.status(trim)
        if status is None:
            self.stats["group_pending"] = 0
            self.stats["lag_ms"] = 0
            return
        pending, oldest, trimmed = status
        self.stats["group_pending"] = pending
        self.stats["lag_ms"] = max(0, int(time.time() * 1000) - oldest) if oldest is not None else 0
        if trim:
            self.stats["trim_runs"] += 1
            self.stats["trimmed"] += trimmed
            if trimmed:
                log.debug("persist: trimmed %d acknowledged entries", trimmed)

    def _remove_gone_consumers(self) -> None:
        removed = self.member.remove_gone_consumers(self.consumer_gone_ms)
        if removed:
            self.stats["consumers_removed"] += removed
            log.info("persist: removed %d idle consumers that owned nothing", removed)
