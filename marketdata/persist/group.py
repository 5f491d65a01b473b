"""This consumer's side of the Redis consumer group: read, claim, ack, dead letters, trim.

``GroupMember`` is every Redis command the persist worker sends about its entries: it finds the
streams (``STREAMS_SET`` and ``QUOTE_STREAMS_SET``) and creates the group on each, reads new and own
pending entries (XREADGROUP), claims entries idle too long with other consumers (XAUTOCLAIM), finds
entries deleted while pending, reports what other consumers hold (for the coverage barrier), acks,
writes dead letters to ``md:deadletter``, keeps held entries from being claimed (XCLAIM), reports
the group's pending count and lag while trimming streams behind what every group acknowledged, and
removes consumers that are gone and own nothing. It decides nothing about batches: that is
``batch.py`` and ``worker.py``.

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
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import redis

from ..clock import now_us
from ..storage import redis as redis_storage
from ..stream import QUOTE_STREAMS_SET, STREAMS_SET

log = logging.getLogger("marketdata.persist")

DEADLETTER_STREAM = "md:deadletter"
DEADLETTER_FIELD_PREFIX = b"e:"            # the original entry's fields, under this prefix

# A dead letter: (stream, entry id, the entry's fields, why it cannot be stored).
DeadLetter = tuple[bytes, bytes, dict, str]


def as_bytes(v) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def id_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def id_key(entry_id: bytes) -> tuple[int, int]:
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


class GroupMember:
    """Consumer ``consumer`` of group ``group`` on every tick and quote stream.

    ``r`` carries the batch's commands (reads, claims, acks); ``hr``, with a short timeout, the
    maintenance thread's (status, trim, keepalive, consumer cleanup) and the worker's health.
    ``wait(seconds)`` waits unless stopped and says whether stop was requested (cluster polling).
    """

    def __init__(self, redis_url: str, group: str, consumer: str, *, block_ms: int,
                 streams_refresh_s: float, cluster_poll_ms: int, deadletter_stream: str,
                 wait: Callable[[float], bool]):
        self.group = group
        self.consumer = consumer
        self.deadletter_stream = deadletter_stream
        self.streams_refresh_s = streams_refresh_s
        self._wait = wait
        sock_timeout = max(10.0, block_ms / 1000.0 + 5.0)
        self.r = redis_storage.client(redis_url, socket_timeout=sock_timeout, socket_connect_timeout=3)
        self.hr = redis_storage.client(redis_url, socket_timeout=5, socket_connect_timeout=3)
        self.cluster = redis_storage.is_cluster(self.r)
        self.cluster_poll_s = max(cluster_poll_ms, 1) / 1000.0
        self._status_script = self.hr.register_script(_STATUS_LUA)
        self._delconsumer_script = self.hr.register_script(_DELCONSUMER_LUA)
        self.streams: tuple[bytes, ...] = ()
        self._group_ready: set[bytes] = set()
        self.recover_own: set[bytes] = set()       # streams whose own pending entries to re-read
        self._next_refresh = 0.0

    def close(self) -> None:
        for c in (self.r, self.hr):
            try:
                c.close()
            except Exception:
                pass

    # ------------------------------------------------------------------ streams

    def refresh_streams(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_refresh:
            return
        if self.cluster:       # the two sets live in different slots: no SUNION across them
            pipe = self.r.pipeline(transaction=False)
            pipe.smembers(STREAMS_SET)
            pipe.smembers(QUOTE_STREAMS_SET)
            members = {as_bytes(m) for ms in pipe.execute() for m in ms}
        else:
            members = {as_bytes(m) for m in self.r.sunion(STREAMS_SET, QUOTE_STREAMS_SET)}
        for s in sorted(members - self._group_ready):
            self.ensure_group(s)
            self.recover_own.add(s)
        self.streams = tuple(sorted(members))
        self._next_refresh = now + self.streams_refresh_s

    def ensure_group(self, stream: bytes) -> None:
        try:
            self.r.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready.add(stream)

    # ------------------------------------------------------------------ reading and claiming

    def xreadgroup(self, streams: dict, count: int, block: int | None):
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
                self._group_ready.discard(as_bytes(s))
                self.ensure_group(as_bytes(s))
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
                    missing.append(as_bytes(s))
                elif res:
                    out.extend(res)
            if missing:
                log.warning("persist: consumer group missing on %d streams (deleted, or lost with a "
                            "failover?); creating it again", len(missing))
                for s in missing:
                    self._group_ready.discard(s)
                    self.ensure_group(s)
                continue
            if out or deadline is None:
                return out
            left = deadline - time.monotonic()
            if left <= 0 or self._wait(min(left, self.cluster_poll_s)):
                return out

    def autoclaim(self, stream: bytes, idle_ms: int, cursor: bytes, count: int):
        """XAUTOCLAIM from ``cursor``: (next cursor, [(id, fields), ...]); None when the group is
        missing on the stream (it is created again: nothing to claim there)."""
        try:
            resp = self.r.xautoclaim(stream, self.group, self.consumer, idle_ms, start_id=cursor,
                                     count=count)
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self.ensure_group(stream)
            return None
        return as_bytes(resp[0]), resp[1]

    def vanished_ids(self, stream: bytes, have: set[bytes]) -> list[bytes]:
        """Redis 6.2 reports entries deleted while pending as nil without their id: our pending ids
        (other than ``have``) that no longer exist, so they can be acked (they cannot be persisted)."""
        out = []
        start = "-"
        while True:
            rows = self.r.xpending_range(stream, self.group, start, "+", 1000, consumername=self.consumer)
            for row in rows:
                i = as_bytes(row["message_id"])
                if i not in have and not self.r.xrange(stream, i, i):
                    out.append(i)
            if len(rows) < 1000:
                break
            start = "(" + rows[-1]["message_id"].decode()
        return out

    # ------------------------------------------------------------------ what the others hold

    def pending_consumers(self, streams: list[bytes]) -> list[dict[bytes, int]]:
        """Per stream: consumer name -> its pending count (XPENDING summary)."""
        pipe = self.r.pipeline(transaction=False)
        for s in streams:
            pipe.xpending(s, self.group)
        return [{as_bytes(c["name"]): int(c["pending"]) for c in summ.get("consumers") or ()}
                for summ in pipe.execute()]

    def oldest_pending(self, pairs: list[tuple[bytes, bytes]]) -> list[bytes | None]:
        """Per (stream, consumer): the oldest entry id that consumer holds, None if none."""
        pipe = self.r.pipeline(transaction=False)
        for s, c in pairs:
            pipe.xpending_range(s, self.group, "-", "+", 1, consumername=c)
        return [as_bytes(rows[0]["message_id"]) if rows else None for rows in pipe.execute()]

    # ------------------------------------------------------------------ writes

    def write_deadletters(self, dead: list[DeadLetter]) -> None:
        pipe = self.r.pipeline(transaction=False)
        failed_us = str(now_us())
        for s, i, f, err in dead:
            entry = {b"origin_stream": s, b"origin_id": i, b"error": err[:4000].encode(errors="replace"),
                     b"consumer": self.consumer.encode(), b"failed_us": failed_us.encode()}
            for k, v in (f or {}).items():
                entry[DEADLETTER_FIELD_PREFIX + as_bytes(k)] = v
            pipe.xadd(self.deadletter_stream, entry)
        pipe.execute()

    def ack(self, keys: list[tuple[bytes, bytes]]) -> None:
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

    # ------------------------------------------------------------------ maintenance (on hr)

    def keepalive(self, held: dict[bytes, list[bytes]]) -> None:
        """Reset the idle time of entries we hold, so nobody claims them while we are alive."""
        if not held:
            return
        pipe = self.hr.pipeline(transaction=False)
        for s, ids in held.items():
            for k in range(0, len(ids), 5000):
                pipe.xclaim(s, self.group, self.consumer, 0, ids[k:k + 5000], justid=True)
        pipe.execute(raise_on_error=False)

    def status(self, trim: bool) -> tuple[int, int | None, int] | None:
        """(entries pending in our group over every stream, ms time of the group's oldest unacked
        entry or None, entries trimmed), None without streams; with ``trim``, each stream is also trimmed behind
        what every group still needs."""
        streams = self.streams
        if not streams:
            return None
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
                ms = id_ms(as_bytes(o))
                oldest = ms if oldest is None else min(oldest, ms)
        return pending, oldest, trimmed

    def remove_gone_consumers(self, gone_ms: int) -> int:
        """Delete the other consumers idle >= gone_ms that own nothing; returns how many."""
        streams = self.streams
        if not streams:
            return 0
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
                name = as_bytes(c["name"])
                if name != me and int(c["pending"]) == 0 and int(c["idle"]) >= gone_ms:
                    candidates.append((s, name))
        if not candidates:
            return 0
        pipe = self.hr.pipeline(transaction=False)
        for s, name in candidates:
            self._script(pipe, self._delconsumer_script, _DELCONSUMER_LUA, s, self.group, name, gone_ms)
        return sum(1 for r in pipe.execute() if r and int(r) > 0)

    def _script(self, pipe, script, source: str, key: bytes, *args) -> None:
        """Queue a one-key Lua script: EVALSHA (loaded on demand) on one Redis; EVAL on a cluster,
        whose pipeline cannot load scripts (and a promoted replica may not have them cached)."""
        if self.cluster:
            pipe.execute_command("EVAL", source, 1, key, *args)
        else:
            script(keys=[key], args=list(args), client=pipe)
