"""The persist worker: Redis consumer group ``persist`` -> ClickHouse ticks, coverage and gaps.

One batch at a time:

    read      XREADGROUP ">" over every stream in ``STREAMS_SET`` and ``QUOTE_STREAMS_SET`` (or:
              our own pending entries after a restart; entries XAUTOCLAIMed from consumers idle > claim_idle_ms)
    decode    ``rows.parse_entry`` per entry; an entry that does not decode goes to the dead
              letter stream ``md:deadletter`` (with its origin, id and the error) and is acked
    inserting one short ClickHouse session: ticks, quotes, then gaps, then coverage, each with a
              deduplication token, so a retried batch is stored once
    acking    XACK, pipelined, only after ClickHouse committed

Failures (Redis or ClickHouse down) are waited out
with capped, jittered exponential backoff while the batch is held; nothing is acked early, nothing
is dropped. Entries held across a long wait are re-claimed by us every claim_idle_ms / 3 so that
another worker does not take them while we are alive.

Coverage marks vouch for the ticks of their entry *and earlier ones* of the stream. With several
workers (or after a crash) an earlier entry may still be pending with another consumer, so a mark
is inserted only when no older entry of its stream is pending elsewhere; otherwise the entry's
ticks and gaps are stored, and the entry is held (not acked) until its mark can go in. Coverage in
ClickHouse therefore never runs ahead of the ticks it vouches for.

A background thread publishes health every second, re-claims held entries, trims streams behind
what every group has acknowledged, and removes consumers that are gone and own nothing.

On a Redis Cluster (a ``redis+cluster://`` URL) the streams live on several masters and Redis
refuses one XREADGROUP over keys of different slots (CROSSSLOT). There a read is one
non-blocking XREADGROUP per stream, all of them in one cluster pipeline (the client sends each
master its share on one connection, the masters answer in parallel); when every stream is empty
the worker polls again every ``cluster_poll_ms`` (default 25) until ``block_ms`` has passed. Every
other command already touches one key at a time (XAUTOCLAIM, XPENDING, XACK, XCLAIM, the status and
delete-consumer Lua scripts, whose only key is the stream), so it is routed to the stream's slot;
the scripts are sent with EVAL there (the cluster pipeline does not load scripts). Several workers
share the group on every stream exactly as on one Redis. A failover (a master replaced by its
replica) surfaces as Redis errors that the worker waits out with backoff, like Redis being down;
the cluster client refreshes its slot map and the worker carries on from the group's state on
the promoted replica (entries the old master delivered or acked that had not reached the replica
are delivered again; ClickHouse stores each trade once).

Batching: a batch is closed at ``batch_max`` ticks, or -- when the streams are not backlogged --
``linger_ms`` (default 100) after the previous insert began, so a steady flow goes in as about ten
inserts a second rather than one per read (each insert costs a few Redis and HTTP round trips
whatever its size); the price is up to linger_ms of extra latency. The ticks go to ClickHouse as
one request body, expanded by ``INSERT ... SELECT ... FROM input(...)`` (``rows.tick_insert_sql``).
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

import redis

from .. import settings
from ..clock import now_us
from ..storage import redis as redis_storage
from ..storage.clickhouse import ClickHouse, insert_json_rows
from ..stream import PERSIST_GROUP, QUOTE_STREAMS_SET, STREAMS_SET, health_key
from . import rows as R

log = logging.getLogger("marketdata.persist")

DEADLETTER_STREAM = "md:deadletter"
DEADLETTER_FIELD_PREFIX = b"e:"            # the original entry's fields, under this prefix
HEALTH_TTL_S = 86_400                      # a crashed worker's health hash goes away after a day

TICKS_TABLE = "marketdata.ticks"
COVERAGE_TABLE = "marketdata.coverage"
GAPS_TABLE = "marketdata.gaps"
QUOTES_TABLE = "marketdata.quotes"

# ClickHouse error codes that mean "this data cannot be stored" rather than "try again later".
_DATA_ERROR_CODES = {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 130, 131, 349, 407, 691}
_CODE_RE = re.compile(r"Code: (\d+)")

T = TypeVar("T")


class _Stopped(Exception):
    """Stop requested while the batch was waiting: abandon it (it stays pending in Redis)."""


def _is_data_error(exc: BaseException) -> bool:
    m = _CODE_RE.search(str(exc))
    return bool(m) and int(m.group(1)) in _DATA_ERROR_CODES


def _b(v) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def _id_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


# Trim point and status of one stream, atomically. The trim point is the oldest entry any group
# still needs: its oldest pending entry, or the entry after its last-delivered id when nothing is
# pending. KEYS[1] stream; ARGV[1] our group; ARGV[2] "1" to trim.
# Returns {our pending count, our oldest unacked id or false, entries trimmed}.
_STATUS_LUA = """
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups.err then return {0, false, 0} end
local function split(id)
  local d = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
end
local bound_ms, bound_seq, bound = nil, nil, nil
local ours_pending, ours_oldest, ours_found = 0, false, false
for _, g in ipairs(groups) do
  local name, pending, last
  for i = 1, #g, 2 do
    local k = g[i]
    if k == 'name' then name = g[i + 1]
    elseif k == 'pending' then pending = tonumber(g[i + 1])
    elseif k == 'last-delivered-id' then last = g[i + 1] end
  end
  local b
  if pending > 0 then
    b = redis.call('XPENDING', KEYS[1], name)[2]
  else
    local lms, lseq = split(last)
    b = string.sub(last, 1, string.find(last, '-', 1, true) - 1) .. '-' .. string.format('%d', lseq + 1)
  end
  local ms, seq = split(b)
  if bound == nil or ms < bound_ms or (ms == bound_ms and seq < bound_seq) then
    bound_ms, bound_seq, bound = ms, seq, b
  end
  if name == ARGV[1] then
    ours_found = true
    ours_pending = pending
    if pending > 0 then
      ours_oldest = b
    else
      local nx = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
      if #nx > 0 then ours_oldest = nx[1][1] end
    end
  end
end
local trimmed = 0
-- Without our group on the stream (not created yet, or deleted) nothing is known to be
-- persisted: never trim then.
if ARGV[2] == '1' and bound ~= nil and ours_found then
  trimmed = redis.call('XTRIM', KEYS[1], 'MINID', bound)
end
return {ours_pending, ours_oldest, trimmed}
"""

# Remove a consumer only if it owns nothing and has been idle long enough, atomically (a consumer
# deleted with pending entries would orphan them). KEYS[1] stream; ARGV group, consumer, idle ms.
_DELCONSUMER_LUA = """
local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(cs) ~= 'table' or cs.err then return 0 end
for _, c in ipairs(cs) do
  local name, pending, idle
  for i = 1, #c, 2 do
    local k = c[i]
    if k == 'name' then name = c[i + 1]
    elseif k == 'pending' then pending = tonumber(c[i + 1])
    elseif k == 'idle' then idle = tonumber(c[i + 1]) end
  end
  if name == ARGV[2] then
    if pending == 0 and idle >= tonumber(ARGV[3]) then
      return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) + 1
    end
    return 0
  end
end
return 0
"""


@dataclass
class _Batch:
    entries: list[tuple[bytes, bytes, dict | None]]          # (stream, id, fields) as read
    parsed: list[R.Parsed] = field(default_factory=list)
    dead: list[tuple[bytes, bytes, dict, str]] = field(default_factory=list)
    vanished: list[tuple[bytes, bytes]] = field(default_factory=list)
    claimed: bool = False


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
        self.claim_idle_ms = claim_idle_ms
        self.linger_s = max(linger_ms, 0) / 1000.0
        self.trim_interval_s = trim_interval_s
        self.streams_refresh_s = streams_refresh_s
        self.health_interval_s = health_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.deadletter_stream = deadletter_stream
        self.consumer_gone_ms = consumer_gone_ms if consumer_gone_ms is not None else 2 * claim_idle_ms
        self.claim_interval_s = min(max(claim_idle_ms / 2000.0, 0.05), 5.0)
        self.health_key = health_key(f"persist:{self.consumer}")

        sock_timeout = max(10.0, block_ms / 1000.0 + 5.0)
        self.r = redis_storage.client(self.redis_url, socket_timeout=sock_timeout, socket_connect_timeout=3)
        self.hr = redis_storage.client(self.redis_url, socket_timeout=5, socket_connect_timeout=3)
        self.cluster = redis_storage.is_cluster(self.r)
        self.cluster_poll_s = max(cluster_poll_ms, 1) / 1000.0
        self._status_script = self.hr.register_script(_STATUS_LUA)
        self._delconsumer_script = self.hr.register_script(_DELCONSUMER_LUA)

        self._stop = threading.Event()
        self._streams: tuple[bytes, ...] = ()
        self._group_ready: set[bytes] = set()
        self._recover_own: set[bytes] = set()      # streams whose own pending entries to re-read
        self._deferred: list[R.Parsed] = []        # ticks stored, coverage waiting for older entries
        self._held: dict[bytes, list[bytes]] = {}  # stream -> ids delivered to us and not acked
        self._held_oldest_ms = 0
        self._last_session_start = 0.0
        self._avg_ticks_per_entry = 100.0
        self._next_refresh = 0.0
        self._next_claim = 0.0
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
                except _Stopped:
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
        Raises ``_Stopped`` only from ``run``'s point of view; called directly it returns 0."""
        if self._maint_thread is None:
            self.maintain()
        try:
            batch = self._retry("read", self._read)
            if not batch.entries and not batch.vanished and not self._deferred:
                self._set_phase("idle")
                return 0
            return self._process(batch)
        except _Stopped:
            # The batch in hand is abandoned unacknowledged: stop re-claiming it, so that another
            # consumer can take it over once it is idle.
            self._held = {}
            self._held_oldest_ms = 0
            if self._maint_thread is None:
                return 0
            raise

    def close(self) -> None:
        for c in (self.r, self.hr):
            try:
                c.close()
            except Exception:
                pass
        self.ch.close()

    # ------------------------------------------------------------------ reading

    def _refresh_streams(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_refresh:
            return
        if self.cluster:       # the two sets live in different slots: no SUNION across them
            pipe = self.r.pipeline(transaction=False)
            pipe.smembers(STREAMS_SET)
            pipe.smembers(QUOTE_STREAMS_SET)
            members = {_b(m) for ms in pipe.execute() for m in ms}
        else:
            members = {_b(m) for m in self.r.sunion(STREAMS_SET, QUOTE_STREAMS_SET)}
        for s in sorted(members - self._group_ready):
            self._ensure_group(s)
            self._recover_own.add(s)
        self._streams = tuple(sorted(members))
        self._next_refresh = now + self.streams_refresh_s

    def _ensure_group(self, stream: bytes) -> None:
        try:
            self.r.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready.add(stream)

    def _xreadgroup(self, streams: dict, count: int, block: int | None):
        if self.cluster:
            return self._xreadgroup_cluster(streams, count, block)
        try:
            return self.r.xreadgroup(self.group, self.consumer, streams, count=count, block=block)
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            log.warning("persist: consumer group missing on a stream (deleted or Redis restarted "
                        "empty?); creating it again")
            for s in streams:
                self._group_ready.discard(_b(s))
                self._ensure_group(_b(s))
            return self.r.xreadgroup(self.group, self.consumer, streams, count=count, block=block)

    def _xreadgroup_cluster(self, streams: dict, count: int, block: int | None):
        """XREADGROUP over streams of many slots: one non-blocking read per stream, pipelined
        (per master, in parallel); polled every cluster_poll_ms while all are empty, up to
        ``block`` ms. Same answer shape as one XREADGROUP: [[stream, [(id, fields), ...]], ...]."""
        deadline = time.monotonic() + block / 1000.0 if block else None
        items = list(streams.items())
        while True:
            pipe = self.r.pipeline(transaction=False)
            for s, i in items:
                pipe.xreadgroup(self.group, self.consumer, {s: i}, count=count)
            out, missing = [], []
            for (s, _), res in zip(items, pipe.execute(raise_on_error=False)):
                if isinstance(res, Exception):
                    if "NOGROUP" not in str(res):
                        raise res
                    missing.append(_b(s))
                elif res:
                    out.extend(res)
            if missing:
                log.warning("persist: consumer group missing on %d streams (deleted, or lost with a "
                            "failover?); creating it again", len(missing))
                for s in missing:
                    self._group_ready.discard(s)
                    self._ensure_group(s)
                continue
            if out or deadline is None:
                return out
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.wait(min(left, self.cluster_poll_s)):
                return out

    def _read(self) -> _Batch:
        try:
            self._refresh_streams()
            if self._recover_own:
                b = self._read_own_pending()
                if b.entries or b.vanished:
                    return b
            now = time.monotonic()
            if now >= self._next_claim:
                self._next_claim = now + self.claim_interval_s
                b = self._claim()
                if b.entries or b.vanished:
                    return b
            return self._read_new()
        except (redis.RedisError, OSError):
            # Part of a read may have been delivered to us before the error: re-read our own
            # pending entries first next time rather than wait for them to be claimed.
            self._recover_own.update(self._streams)
            raise

    def _budget_count(self, remaining: float, n_streams: int) -> int:
        per_stream = remaining / max(self._avg_ticks_per_entry, 1.0) / max(n_streams, 1)
        return int(min(max(per_stream, 1), 10_000))

    def _collect(self, resp, batch: _Batch) -> tuple[int, dict[bytes, int]]:
        cost = 0
        got: dict[bytes, int] = {}
        for stream, items in resp or ():
            stream = _b(stream)
            got[stream] = len(items)
            for entry_id, fields in items:
                if not fields:
                    if entry_id is not None:
                        batch.vanished.append((stream, entry_id))
                    continue
                batch.entries.append((stream, entry_id, fields))
                cost += 1
        return cost, got

    def _read_new(self) -> _Batch:
        batch = _Batch([])
        streams = self._streams
        if not streams:
            self._set_phase("idle")
            if self._stop.wait(self.block_ms / 1000.0):
                raise _Stopped()
            return batch
        self._set_phase("reading")
        budget = self.batch_max
        count = self._budget_count(budget, len(streams))
        resp = self._xreadgroup({s: ">" for s in streams}, count, self.block_ms)
        taken, got = self._collect(resp, batch)
        ticks = self._parse_into(batch, 0)
        if not taken:
            return batch
        # Fill the batch up to batch_max: drain without blocking while full reads say there is
        # more; otherwise linger (blocking reads) until linger_ms after the previous insert
        # began -- every insert costs round trips whatever its size, so under a steady flow
        # fewer, larger batches are cheaper than many small ones.
        deadline = self._last_session_start + self.linger_s
        while ticks < budget and len(batch.entries) < budget:
            more = [s for s, n in got.items() if n >= count]
            if more:
                count = self._budget_count(budget - ticks, len(more))
                resp = self._xreadgroup({s: ">" for s in more}, count, None)
            else:
                wait_ms = int((deadline - time.monotonic()) * 1000)
                if wait_ms < 1 or self._stop.is_set():
                    break
                count = self._budget_count(budget - ticks, len(streams))
                resp = self._xreadgroup({s: ">" for s in streams}, count, min(wait_ms, self.block_ms))
            taken, got = self._collect(resp, batch)
            if taken:
                ticks = self._parse_into(batch, ticks)
            elif more:
                got = {}
        return batch

    def _read_own_pending(self) -> _Batch:
        """Entries delivered to this consumer name before (a restart) that were never acked."""
        batch = _Batch([], claimed=True)
        self._set_phase("reading")
        streams = [s for s in self._streams if s in self._recover_own]
        deferred = {(p.stream, p.id) for p in self._deferred}
        last = {s: "0" for s in streams}
        ticks = 0
        while last and ticks < self.batch_max:
            count = self._budget_count(self.batch_max - ticks, len(last))
            resp = self._xreadgroup(dict(last), count, None)
            seen = {}
            for stream, items in resp or ():
                stream = _b(stream)
                for entry_id, fields in items:
                    seen[stream] = entry_id
                    if (stream, entry_id) in deferred:
                        continue
                    if not fields:
                        batch.vanished.append((stream, entry_id))
                    else:
                        batch.entries.append((stream, entry_id, fields))
                if len(items) < count:
                    self._recover_own.discard(stream)
                    last.pop(stream, None)
            for s in list(last):
                if s in seen:
                    last[s] = seen[s]
                else:
                    self._recover_own.discard(s)
                    last.pop(s)
            ticks = self._parse_into(batch, ticks)
        if batch.entries or batch.vanished:
            log.info("persist: re-reading %d entries left pending by an earlier run of consumer %s",
                     len(batch.entries) + len(batch.vanished), self.consumer)
        return batch

    def _claim(self) -> _Batch:
        """XAUTOCLAIM entries idle longer than claim_idle_ms (their consumer died or hangs)."""
        batch = _Batch([], claimed=True)
        ticks = 0
        for s in self._streams:
            cursor = b"0-0"
            saw_deleted = False
            while ticks < self.batch_max:
                count = self._budget_count(self.batch_max - ticks, 1)
                try:
                    resp = self.r.xautoclaim(s, self.group, self.consumer, self.claim_idle_ms,
                                             start_id=cursor, count=count)
                except redis.ResponseError as e:
                    if "NOGROUP" not in str(e):
                        raise
                    self._ensure_group(s)
                    break
                cursor = _b(resp[0])
                for entry_id, fields in resp[1]:
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
                self._find_vanished(s, batch)
        n = len(batch.entries) + len(batch.vanished)
        if n:
            self.stats["claimed"] += n
            log.info("persist: claimed %d entries idle > %d ms from other consumers",
                     n, self.claim_idle_ms)
        return batch

    def _find_vanished(self, stream: bytes, batch: _Batch) -> None:
        """Redis 6.2 reports entries deleted while pending as nil without their id: find our
        pending ids that no longer exist, so they can be acked (they cannot be persisted)."""
        have = {i for s, i, _ in batch.entries if s == stream} | set(self._held.get(stream, ()))
        start = "-"
        while True:
            rows = self.r.xpending_range(stream, self.group, start, "+", 1000, consumername=self.consumer)
            for row in rows:
                i = _b(row["message_id"])
                if i not in have and not self.r.xrange(stream, i, i):
                    batch.vanished.append((stream, i))
            if len(rows) < 1000:
                break
            start = "(" + rows[-1]["message_id"].decode()

    def _parse_into(self, batch: _Batch, ticks: int) -> int:
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

    # ------------------------------------------------------------------ one batch

    def _process(self, batch: _Batch) -> int:
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
        stored, more_dead = self._persist(parsed, allowed, fields_of)
        dead = dead + more_dead
        dead_keys = {(s, i) for s, i, _, _ in more_dead}
        deferred = [p for p in deferred if (p.stream, p.id) not in dead_keys]

        if dead:
            self._retry("dead-letter", lambda: self._write_deadletters(dead))
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
            ms = _id_ms(ids[0])
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
        pipe = self.r.pipeline(transaction=False)
        for s in streams:
            pipe.xpending(s, self.group)
        summaries = pipe.execute()
        held_count = {s: len(ids) for s, ids in self._held.items()}
        me = self.consumer.encode()
        limit: dict[bytes, tuple[int, int] | None] = {}     # first foreign pending id, None: none
        lookups: list[tuple[bytes, bytes]] = []
        for s, summ in zip(streams, summaries):
            others = [c for c in summ.get("consumers") or () if _b(c["name"]) != me and int(c["pending"]) > 0]
            mine = sum(int(c["pending"]) for c in summ.get("consumers") or () if _b(c["name"]) == me)
            limit[s] = None
            if mine > held_count.get(s, 0):
                # Something of ours is pending that we do not hold (a previous life of this
                # consumer name): re-read it first and hold back this stream's marks meanwhile.
                self._recover_own.add(s)
                limit[s] = (0, 0)
                continue
            for c in others:
                lookups.append((s, _b(c["name"])))
        if lookups:
            pipe = self.r.pipeline(transaction=False)
            for s, c in lookups:
                pipe.xpending_range(s, self.group, "-", "+", 1, consumername=c)
            for (s, _), rows in zip(lookups, pipe.execute()):
                if rows:
                    k = _id_key(_b(rows[0]["message_id"]))
                    cur = limit[s]
                    if cur is None or k < cur:
                        limit[s] = k
        allowed, deferred = [], []
        for p in candidates:
            lim = limit.get(p.stream)
            if lim is None or _id_key(p.id) < lim:
                allowed.append(p)
            else:
                deferred.append(p)
        if deferred:
            log.debug("persist: %d coverage marks wait for older entries pending elsewhere", len(deferred))
        return allowed, deferred

    # ------------------------------------------------------------------ ClickHouse

    def _persist(self, parsed: list[R.Parsed], allowed_cov: list[R.Parsed], fields_of: dict
                 ) -> tuple[list[R.Parsed], list[tuple[bytes, bytes, dict, str]]]:
        """Insert the batch, retrying until it is committed. Entries ClickHouse refuses as data
        are isolated and returned as dead letters; returns (stored, dead)."""
        dead: list[tuple[bytes, bytes, dict, str]] = []
        attempt = 0
        while True:
            try:
                self._insert(parsed, allowed_cov)
                return parsed, dead
            except Exception as e:
                if not _is_data_error(e):
                    attempt += 1
                    self._note_error("insert", e, attempt)
                    self._backoff(attempt)
                    continue
                log.warning("persist: ClickHouse refused the batch's data (%s); finding the entries",
                            str(e).splitlines()[0][:300])
                bad = self._find_bad(parsed, fields_of)
                if not bad:
                    try:
                        bad = self._bisect(parsed, allowed_cov, fields_of)
                    except _Stopped:
                        raise
                    except Exception as e2:      # not a data error: wait, then start over
                        attempt += 1
                        self._note_error("insert", e2, attempt)
                        self._backoff(attempt)
                        continue
                if not bad:
                    # Nothing to isolate (every part went in on its own): try the whole again.
                    attempt += 1
                    self._note_error("insert", e, attempt)
                    self._backoff(attempt)
                    continue
                bad_keys = {(s, i) for s, i, _, _ in bad}
                dead += bad
                parsed = [p for p in parsed if (p.stream, p.id) not in bad_keys]
                allowed_cov = [p for p in allowed_cov if (p.stream, p.id) not in bad_keys]

    def _find_bad(self, parsed: list[R.Parsed], fields_of: dict) -> list[tuple[bytes, bytes, dict, str]]:
        bad = []
        for p in parsed:
            f = fields_of.get((p.stream, p.id))
            if f is None:
                continue
            try:
                R.validate_entry(f)
            except Exception as e:
                bad.append((p.stream, p.id, f, f"{type(e).__name__}: {e}"))
        return bad

    def _bisect(self, parsed: list[R.Parsed], allowed_cov: list[R.Parsed], fields_of: dict
                ) -> list[tuple[bytes, bytes, dict, str]]:
        """Insert halves on their own to find entries ClickHouse refuses (each part has its own
        deduplication token, so what went in stays in once)."""
        cov_keys = {(p.stream, p.id) for p in allowed_cov}
        bad: list[tuple[bytes, bytes, dict, str]] = []

        def go(part: list[R.Parsed]) -> None:
            if not part:
                return
            try:
                self._insert(part, [p for p in part if (p.stream, p.id) in cov_keys])
                return
            except Exception as e:
                if not _is_data_error(e):
                    raise
                if len(part) == 1:
                    p = part[0]
                    msg = str(e).splitlines()[0][:1000]
                    bad.append((p.stream, p.id, fields_of.get((p.stream, p.id)) or {}, f"ClickHouse: {msg}"))
                    return
            mid = len(part) // 2
            go(part[:mid])
            go(part[mid:])

        # Only entries that carry something can be refused.
        go([p for p in parsed if p.line or p.gaps or p.quotes or (p.stream, p.id) in cov_keys])
        return bad

    def _insert(self, parsed: list[R.Parsed], allowed_cov: list[R.Parsed]) -> None:
        """Ticks, quotes, then gaps, then coverage (coverage last: it vouches for the rest), each
        one request with its deduplication token. Payloads are built before the first request."""
        with_ticks = sorted((p for p in parsed if p.line), key=lambda p: (p.stream, p.id))
        tick_payload = b"".join(p.line for p in with_ticks)
        tick_token = R.ids_token("ticks", with_ticks) if with_ticks else None
        gaps = R.gap_rows(g for p in parsed for g in p.gaps)
        gap_payload = R.json_each_row(gaps) if gaps else b""
        cov = R.merge_coverage((p.exchange, p.symbol, p.coverage, p.id_ms * 1000) for p in allowed_cov)
        cov_payload = R.json_each_row(cov) if cov else b""
        with_quotes = [p for p in parsed if p.quotes]
        quote_payload = b"".join(p.quotes for p in with_quotes)
        if not (tick_payload or gap_payload or cov_payload or quote_payload):
            return
        self._set_phase("inserting")
        t1 = time.monotonic()
        self._last_session_start = t1
        c = self.ch.client()
        if tick_payload:
            c.command(R.tick_insert_sql(TICKS_TABLE), data=tick_payload,
                      settings={"insert_deduplication_token": tick_token})
        if quote_payload:
            insert_json_rows(c, QUOTES_TABLE, R.QUOTE_COLUMNS, quote_payload,
                             dedup_token=R.ids_token("quotes", with_quotes))
        if gap_payload:
            insert_json_rows(c, GAPS_TABLE, R.GAP_COLUMNS, gap_payload,
                             dedup_token=R.ids_token("gaps", (p for p in parsed if p.gaps), gap_payload))
        if cov_payload:
            insert_json_rows(c, COVERAGE_TABLE, R.COVERAGE_COLUMNS, cov_payload,
                             dedup_token=R.ids_token("coverage", allowed_cov, cov_payload))
        self.stats["last_insert_ms"] = int((time.monotonic() - t1) * 1000)
        self.stats["coverage_rows"] += len(cov)
        self.stats["gap_rows"] += len(gaps)

    # ------------------------------------------------------------------ Redis writes

    def _write_deadletters(self, dead: list[tuple[bytes, bytes, dict, str]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        failed_us = str(now_us())
        for s, i, f, err in dead:
            entry = {b"origin_stream": s, b"origin_id": i, b"error": err[:4000].encode(errors="replace"),
                     b"consumer": self.consumer.encode(), b"failed_us": failed_us.encode()}
            for k, v in (f or {}).items():
                entry[DEADLETTER_FIELD_PREFIX + _b(k)] = v
            pipe.xadd(self.deadletter_stream, entry)
        pipe.execute()

    def _ack(self, keys: list[tuple[bytes, bytes]]) -> None:
        if not keys:
            return
        by_stream: dict[bytes, list[bytes]] = {}
        for s, i in keys:
            by_stream.setdefault(s, []).append(i)
        pipe = self.r.pipeline(transaction=False)
        for s, ids in by_stream.items():
            for k in range(0, len(ids), 5000):
                pipe.xack(s, self.group, *ids[k:k + 5000])
        pipe.execute()

    # ------------------------------------------------------------------ retries

    def _backoff(self, attempt: int) -> None:
        delay = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(attempt - 1, 20)))
        delay *= random.uniform(0.5, 1.0)
        if self._stop.wait(delay):
            raise _Stopped()

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except _Stopped:
                raise
            except Exception as e:
                attempt += 1
                self._note_error(what, e, attempt)
                self._backoff(attempt)

    def _note_error(self, what: str, e: BaseException, attempt: int) -> None:
        self.stats["errors"] += 1
        msg = settings.redact(f"{type(e).__name__}: {e}".splitlines()[0][:500])
        self.last_error = f"{what}: {msg}"
        level = logging.WARNING if attempt in (1, 2) or attempt % 20 == 0 else logging.DEBUG
        log.log(level, "persist: %s failed (attempt %d, holding %d entries, retrying with backoff): %s",
                what, attempt, self.stats["pending"], msg)

    # ------------------------------------------------------------------ health and maintenance

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        try:
            # the batch count goes with the phase, so a reader knows which batch a phase is of
            # (the full hash is written once a second: a fast worker does several batches in it)
            self.hr.hset(self.health_key, mapping={"phase": phase, "phase_us": now_us(),
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
            pipe = self.hr.pipeline(transaction=False)
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
                    self._keepalive()
                except Exception as e:
                    self._health_error(e)
            if now >= self._next_health:
                self._next_health = now + self.health_interval_s
                self._publish_health()

    def _stream_status(self, trim: bool) -> None:
        streams = self._streams
        if not streams:
            self.stats["group_pending"] = 0
            self.stats["lag_ms"] = 0
            return
        pipe = self.hr.pipeline(transaction=False)
        for s in streams:
            self._script(pipe, self._status_script, _STATUS_LUA, s, self.group, "1" if trim else "0")
        results = pipe.execute()
        pending = 0
        oldest = None
        trimmed = 0
        for res in results:
            p, o, t = res
            pending += int(p)
            trimmed += int(t)
            if o:
                ms = _id_ms(_b(o))
                oldest = ms if oldest is None else min(oldest, ms)
        self.stats["group_pending"] = pending
        self.stats["lag_ms"] = max(0, int(time.time() * 1000) - oldest) if oldest is not None else 0
        if trim:
            self.stats["trim_runs"] += 1
            self.stats["trimmed"] += trimmed
            if trimmed:
                log.debug("persist: trimmed %d acknowledged entries", trimmed)

    def _remove_gone_consumers(self) -> None:
        streams = self._streams
        if not streams:
            return
        pipe = self.hr.pipeline(transaction=False)
        for s in streams:
            pipe.xinfo_consumers(s, self.group)
        infos = pipe.execute(raise_on_error=False)
        me = self.consumer.encode()
        candidates = []
        for s, info in zip(streams, infos):
            if isinstance(info, Exception):
                continue
            for c in info:
                name = _b(c["name"])
                if name != me and int(c["pending"]) == 0 and int(c["idle"]) >= self.consumer_gone_ms:
                    candidates.append((s, name))
        if not candidates:
            return
        pipe = self.hr.pipeline(transaction=False)
        for s, name in candidates:
            self._script(pipe, self._delconsumer_script, _DELCONSUMER_LUA, s, self.group, name,
                         self.consumer_gone_ms)
        removed = sum(1 for r in pipe.execute() if r and int(r) > 0)
        if removed:
            self.stats["consumers_removed"] += removed
            log.info("persist: removed %d idle consumers that owned nothing", removed)

    def _script(self, pipe, script, source: str, key: bytes, *args) -> None:
        """Queue a one-key Lua script: EVALSHA (loaded on demand) on one Redis; EVAL on a cluster,
        whose pipeline cannot load scripts (and a promoted replica may not have them cached)."""
        if self.cluster:
            pipe.execute_command("EVAL", source, 1, key, *args)
        else:
            script(keys=[key], args=list(args), client=pipe)

    def _keepalive(self) -> None:
        """Reset the idle time of entries we hold, so nobody claims them while we are alive."""
        held = self._held
        if not held:
            return
        pipe = self.hr.pipeline(transaction=False)
        for s, ids in held.items():
            for k in range(0, len(ids), 5000):
                pipe.xclaim(s, self.group, self.consumer, 0, ids[k:k + 5000], justid=True)
        pipe.execute(raise_on_error=False)
