"""One batch of stream entries, read from the group and decoded: ``Batch`` and ``BatchReader``.

Where a batch comes from, in this order: our own pending entries of streams that need recovery
(after a restart, a read error, or a stream new to us); else, every ``claim_interval_s``, entries
XAUTOCLAIMed from consumers idle > ``claim_idle_ms``; else new entries (XREADGROUP ">").

Each entry is decoded as it arrives (``rows.parse_entry``); an entry that does not decode is kept
as a dead letter of the batch. A batch is closed at ``batch_max`` ticks, or -- when the streams are
not backlogged -- ``linger_ms`` (default 100) after the previous insert began, so a steady flow goes
in as about ten inserts a second rather than one per read (each insert costs a few Redis and HTTP
round trips whatever its size); the price is up to linger_ms of extra latency. How many entries a
read asks for follows the ticks per entry seen so far, so a read does not overshoot ``batch_max``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import redis

from . import rows as R
from .group import DeadLetter, GroupMember, as_bytes

log = logging.getLogger("marketdata.persist")


class Stopped(Exception):
    """Stop requested while the batch was waiting: abandon it (it stays pending in Redis)."""


@dataclass
class Batch:
    entries: list[tuple[bytes, bytes, dict | None]]          # (stream, id, fields) as read
    parsed: list[R.Parsed] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    vanished: list[tuple[bytes, bytes]] = field(default_factory=list)
    claimed: bool = False


class BatchReader:
    """Reads the next batch for ``member``. ``wait(seconds)`` waits unless stopped and says whether
    stop was requested; ``set_phase`` publishes what the worker is doing."""

    def __init__(self, member: GroupMember, *, batch_max: int, block_ms: int, claim_idle_ms: int,
                 linger_s: float, wait: Callable[[float], bool], set_phase: Callable[[str], None]):
        self.member = member
        self.batch_max = batch_max
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_interval_s = min(max(claim_idle_ms / 2000.0, 0.05), 5.0)
        self.linger_s = linger_s
        self._wait = wait
        self._set_phase = set_phase
        self._avg_ticks_per_entry = 100.0
        self._next_claim = 0.0
        self.claimed = 0                   # entries claimed from other consumers, in all

    def read(self, last_insert_began: float, deferred: list[R.Parsed],
             held: dict[bytes, list[bytes]]) -> Batch:
        """The next batch. ``last_insert_began`` (monotonic) times the linger; ``deferred`` are
        entries stored but held back for their coverage mark (not read again), ``held`` every
        entry we hold unacknowledged."""
        m = self.member
        try:
            m.refresh_streams()
            if m.recover_own:
                b = self._read_own_pending(deferred)
                if b.entries or b.vanished:
                    return b
            now = time.monotonic()
            if now >= self._next_claim:
                self._next_claim = now + self.claim_interval_s
                b = self._claim(held)
                if b.entries or b.vanished:
                    return b
            return self._read_new(last_insert_began)
        except (redis.RedisError, OSError):
            # Part of a read may have been delivered to us before the error: re-read our own
            # pending entries first next time rather than wait for them to be claimed.
            m.recover_own.update(m.streams)
            raise

    def _budget_count(self, remaining: float, n_streams: int) -> int:
        per_stream = remaining / max(self._avg_ticks_per_entry, 1.0) / max(n_streams, 1)
        return int(min(max(per_stream, 1), 10_000))

    def _collect(self, resp, batch: Batch) -> tuple[int, dict[bytes, int]]:
        cost = 0
        got: dict[bytes, int] = {}
        for stream, items in resp or ():
            stream = as_bytes(stream)
            got[stream] = len(items)
            for entry_id, fields in items:
                if not fields:
                    if entry_id is not None:
                        batch.vanished.append((stream, entry_id))
                    continue
                batch.entries.append((stream, entry_id, fields))
                cost += 1
        return cost, got

    def _read_new(self, last_insert_began: float) -> Batch:
        batch = Batch([])
        streams = self.member.streams
        if not streams:
            self._set_phase("idle")
            if self._wait(self.block_ms / 1000.0):
                raise Stopped()
            return batch
        self._set_phase("reading")
        budget = self.batch_max
        count = self._budget_count(budget, len(streams))
        resp = self.member.xreadgroup({s: ">" for s in streams}, count, self.block_ms)
        taken, got = self._collect(resp, batch)
        ticks = self._parse_into(batch, 0)
        if not taken:
            return batch
        # Fill the batch up to batch_max: drain without blocking while full reads say there is
        # more; otherwise linger (blocking reads) until linger_ms after the previous insert
        # began -- every insert costs round trips whatever its size, so under a steady flow
        # fewer, larger batches are cheaper than many small ones.
        deadline = last_insert_began + self.linger_s
        while ticks < budget and len(batch.entries) < budget:
            more = [s for s, n in got.items() if n >= count]
            if more:
                count = self._budget_count(budget - ticks, len(more))
                resp = self.member.xreadgroup({s: ">" for s in more}, count, None)
            else:
                wait_ms = int((deadline - time.monotonic()) * 1000)
                if wait_ms < 1 or self._wait(0):          # wait(0): has stop been requested?
                    break
                count = self._budget_count(budget - ticks, len(streams))
                resp = self.member.xreadgroup({s: ">" for s in streams}, count, min(wait_ms, self.block_ms))
            taken, got = self._collect(resp, batch)
            if taken:
                ticks = self._parse_into(batch, ticks)
            elif more:
                got = {}
        return batch

    def _read_own_pending(self, held_back: list[R.Parsed]) -> Batch:
        """Entries delivered to this consumer name before (a restart) that were never acked."""
        m = self.member
        batch = Batch([], claimed=True)
        self._set_phase("reading")
        streams = [s for s in m.streams if s in m.recover_own]
        deferred = {(p.stream, p.id) for p in held_back}
        last = {s: "0" for s in streams}
        ticks = 0
        while last and ticks < self.batch_max:
            count = self._budget_count(self.batch_max - ticks, len(last))
            resp = m.xreadgroup(dict(last), count, None)
            seen = {}
            for stream, items in resp or ():
                stream = as_bytes(stream)
                for entry_id, fields in items:
                    seen[stream] = entry_id
                    if (stream, entry_id) in deferred:
                        continue
                    if not fields:
                        batch.vanished.append((stream, entry_id))
                    else:
                        batch.entries.append((stream, entry_id, fields))
                if len(items) < count:
                    m.recover_own.discard(stream)
                    last.pop(stream, None)
            for s in list(last):
                if s in seen:
                    last[s] = seen[s]
                else:
                    m.recover_own.discard(s)
                    last.pop(s)
            ticks = self._parse_into(batch, ticks)
        if batch.entries or batch.vanished:
            log.info("persist: re-reading %d entries left pending by an earlier run of consumer %s",
                     len(batch.entries) + len(batch.vanished), m.consumer)
        return batch

    def _claim(self, held: dict[bytes, list[bytes]]) -> Batch:
        """XAUTOCLAIM entries idle longer than claim_idle_ms (their consumer died or hangs)."""
        batch = Batch([], claimed=True)
        ticks = 0
        for s in self.member.streams:
            cursor = b"0-0"
            saw_deleted = False
            while ticks < self.batch_max:
                count = self._budget_count(self.batch_max - ticks, 1)
                resp = self.member.autoclaim(s, self.claim_idle_ms, cursor, count)
                if resp is None:
                    break
                cursor, items = resp
                for entry_id, fields in items:
                    if entry_id is None:          # Redis < 7: an entry deleted while pending
                        saw_deleted = True
                    elif not fields:
                        batch.vanished.append((s, entry_id))
                    else:
                        batch.entries.append((s, entry_id, fields))
                ticks = self._parse_into(batch, ticks)
                if cursor == b"0-0":
                    break
            if saw_deleted:
                have = {i for st, i, _ in batch.entries if st == s} | set(held.get(s, ()))
                batch.vanished += [(s, i) for i in self.member.vanished_ids(s, have)]
        n = len(batch.entries) + len(batch.vanished)
        if n:
            self.claimed += n
            log.info("persist: claimed %d entries idle > %d ms from other consumers",
                     n, self.claim_idle_ms)
        return batch

    def _parse_into(self, batch: Batch, ticks: int) -> int:
        """Decode entries read so far (those not decoded yet); returns ticks in the batch."""
        start = len(batch.parsed) + len(batch.dead)
        for stream, entry_id, fields in batch.entries[start:]:
            try:
                p = R.parse_entry(stream, entry_id, fields)
            except Exception as e:
                batch.dead.append((stream, entry_id, fields, f"{type(e).__name__}: {e}"))
                continue
            batch.parsed.append(p)
            ticks += p.n_ticks
        if batch.parsed:
            n_entries = len(batch.parsed)
            avg = ticks / n_entries if n_entries else 1.0
            self._avg_ticks_per_entry = 0.5 * self._avg_ticks_per_entry + 0.5 * max(avg, 1.0)
        return ticks
