"""Is each venue's ingest process (and each persist worker) alive and keeping up? Pure library:
Dagster's ``ingest_health`` sensor calls it, and so can anything else (CLI, tests, alerting).

Inputs are the health hashes the processes refresh every second in Redis:

    md:health:{<venue>}             written by ``VenueConnector._write_health`` (heartbeat_us, pid,
                                    connections, ticks_in, lag_us, covered_to_us, state, ...)
    md:health:{persist:<consumer>}  written by ``PersistWorker._publish_health`` (heartbeat_us,
                                    pending, lag_ms, ticks_persisted, phase, ...)

A venue is healthy when its heartbeat is fresher than ``stale_s``, its state is not "stopped" and
its receive lag (venue event time -> our receive time of the last tick) is within ``max_lag_ms``.
Symbols the process reports silent (``silent_symbols``: subscribed, yet no trade and no coverage
progress for a while) are a warning, not a failure; so are symbols whose continuity fell back to
time because the venue stopped sending its sequence field (``sequence_fallback``: SYMBOL:field,
comma-separated; their trades still flow, gaps are found by time), and frames the parser did not
recognise (``unrecognised``: counted and logged by the process, never silently passed over).
A persist worker is healthy when its heartbeat is fresh and its lag (age of the oldest entry it
has not yet acknowledged) is within ``persist_max_lag_ms``; the persist side as a whole is
healthy when at least one worker is live and every live worker is healthy.

Rates (ticks/s) come from two readings of a monotonically increasing counter. The previous reading
is a ``RateSample`` the caller keeps (the Dagster sensor keeps it in its cursor); a counter that
went backwards or a changed pid means the process restarted and the rate is unknown for one round.

Bounds come from the environment (``HealthBounds.from_env``):

    MARKETDATA_HEALTH_STALE_S               heartbeat older than this = stale (default 30)
    MARKETDATA_HEALTH_MAX_LAG_MS            venue receive lag bound (default 10000)
    MARKETDATA_HEALTH_PERSIST_MAX_LAG_MS    persist lag bound (default 60000)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..settings import env_number
from ..stream import health_key

ENV_STALE_S = "MARKETDATA_HEALTH_STALE_S"
ENV_MAX_LAG_MS = "MARKETDATA_HEALTH_MAX_LAG_MS"
ENV_PERSIST_MAX_LAG_MS = "MARKETDATA_HEALTH_PERSIST_MAX_LAG_MS"

PERSIST_HEALTH_PATTERN = "md:health:{persist:*}"




@dataclass(frozen=True)
class HealthBounds:
    stale_s: float = 30.0
    max_lag_ms: float = 10_000.0
    persist_max_lag_ms: float = 60_000.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "HealthBounds":
        env = os.environ if env is None else env
        d = cls()
        return cls(stale_s=env_number(env, ENV_STALE_S, d.stale_s, positive=True),
                   max_lag_ms=env_number(env, ENV_MAX_LAG_MS, d.max_lag_ms, positive=True),
                   persist_max_lag_ms=env_number(env, ENV_PERSIST_MAX_LAG_MS, d.persist_max_lag_ms, positive=True))


@dataclass(frozen=True)
class RateSample:
    """One reading of a process's counter, kept between evaluations to derive a rate."""
    pid: int
    count: int
    at_us: int          # the process's own heartbeat time of the reading

    def to_list(self) -> list[int]:
        return [self.pid, self.count, self.at_us]

    @classmethod
    def from_list(cls, v: Any) -> "RateSample | None":
        try:
            pid, count, at = v
            return cls(int(pid), int(count), int(at))
        except (TypeError, ValueError):
            return None


def rate_per_s(prev: RateSample | None, cur: RateSample | None) -> float | None:
    """Counter increase per second between two readings of the same process; None when unknown
    (no previous reading, a restart, or no time elapsed)."""
    if prev is None or cur is None or prev.pid != cur.pid or cur.count < prev.count:
        return None
    dt = (cur.at_us - prev.at_us) / 1e6
    if dt <= 0:
        return None
    return round((cur.count - prev.count) / dt, 3)


# --- reading Redis ------------------------------------------------------------------------------

def _decode(h: Mapping) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in h.items()}


def read_venue_health(r, venues: Iterable[str]) -> dict[str, dict[str, str]]:
    """HGETALL of every venue's health hash in one pipelined round trip ({} for a missing hash).
    Works on a Redis Cluster client too: each key is one command in its own slot."""
    venues = list(venues)
    pipe = r.pipeline(transaction=False)
    for v in venues:
        pipe.hgetall(health_key(v))
    return {v: _decode(h or {}) for v, h in zip(venues, pipe.execute())}


def read_persist_health(r, *, max_workers: int = 256) -> dict[str, dict[str, str]]:
    """Health hashes of the persist workers, by consumer name (SCAN, then one pipelined HGETALL)."""
    keys = []
    for k in r.scan_iter(match=PERSIST_HEALTH_PATTERN, count=500):
        keys.append(k.decode() if isinstance(k, bytes) else k)
        if len(keys) >= max_workers:
            break
    keys.sort()
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
    out = {}
    for k, h in zip(keys, pipe.execute()):
        consumer = k[k.index("{persist:") + len("{persist:"):k.rindex("}")]
        if h:
            out[consumer] = _decode(h)
    return out


# --- evaluation ---------------------------------------------------------------------------------

def _int(h: Mapping[str, str], k: str, default: int = 0) -> int:
    try:
        return int(float(h.get(k, default)))
    except (TypeError, ValueError):
        return default


@dataclass
class VenueHealth:
    venue: str
    healthy: bool
    status: str                          # ok | stale | stopped | lagging | missing
    reasons: list[str] = field(default_factory=list)
    present: bool = False
    state: str = ""                      # the process's own state field (running | stopped)
    pid: int = 0
    heartbeat_us: int = 0
    heartbeat_age_s: float | None = None
    lag_ms: float = 0.0
    connections: int = 0
    symbols: int = 0
    ticks_in: int = 0
    ticks_published: int = 0
    ticks_per_s: float | None = None
    queued: int = 0
    malformed: int = 0
    unrecognised: int = 0
    unsequenced: int = 0
    sequence_fallback: list[str] = field(default_factory=list)
    reconnects: int = 0
    open_holes: int = 0
    gaps_found: int = 0
    gaps_repaired: int = 0
    gaps_unrepairable: int = 0
    last_tick_recv_us: int = 0
    last_tick_age_s: float | None = None
    last_trade_ts_us: int = 0
    covered_to_us: int = 0
    coverage_age_s: float | None = None
    last_error: str = ""
    silent_symbols: list[str] = field(default_factory=list)
    # Worth a look but not a failure: the process is up and the rest of its symbols flow.
    warnings: list[str] = field(default_factory=list)
    sample: RateSample | None = None     # keep for the next evaluation's rate

    def summary(self) -> str:
        warn = f"; WARNING: {'; '.join(self.warnings)}" if self.warnings else ""
        if self.healthy:
            rate = f", {self.ticks_per_s:g} ticks/s" if self.ticks_per_s is not None else ""
            return (f"{self.venue}: healthy (heartbeat {self.heartbeat_age_s:.1f}s ago, lag "
                    f"{self.lag_ms:.0f} ms, {self.connections} connection(s){rate}){warn}")
        return f"{self.venue}: UNHEALTHY: {'; '.join(self.reasons)}{warn}"


def evaluate_venue(venue: str, raw: Mapping[str, str] | None, now_us: int, bounds: HealthBounds,
                   prev: RateSample | None = None) -> VenueHealth:
    """Judge one venue's ingest process from its health hash (``raw``; empty/None = absent)."""
    if not raw:
        return VenueHealth(venue, healthy=False, status="missing",
                           reasons=[f"no heartbeat in Redis ({health_key(venue)} absent): the ingest "
                                    "process has not run against this Redis"])
    hb = _int(raw, "heartbeat_us")
    age = max(0.0, (now_us - hb) / 1e6) if hb else None
    last_recv = _int(raw, "last_tick_recv_us")
    covered = _int(raw, "covered_to_us")
    sample = RateSample(_int(raw, "pid"), _int(raw, "ticks_in"), hb) if hb else None
    h = VenueHealth(
        venue, healthy=True, status="ok", present=True, state=raw.get("state", ""),
        pid=_int(raw, "pid"), heartbeat_us=hb, heartbeat_age_s=None if age is None else round(age, 3),
        lag_ms=round(_int(raw, "lag_us") / 1000.0, 3), connections=_int(raw, "connections"),
        symbols=_int(raw, "symbols"), ticks_in=_int(raw, "ticks_in"),
        ticks_published=_int(raw, "ticks_published"), queued=_int(raw, "queued"),
        malformed=_int(raw, "malformed"), unrecognised=_int(raw, "unrecognised"),
        unsequenced=_int(raw, "unsequenced"),
        sequence_fallback=[s for s in raw.get("sequence_fallback", "").split(",") if s],
        reconnects=_int(raw, "reconnects"),
        open_holes=_int(raw, "open_holes"), gaps_found=_int(raw, "gaps_found"),
        gaps_repaired=_int(raw, "gaps_repaired"), gaps_unrepairable=_int(raw, "gaps_unrepairable"),
        last_tick_recv_us=last_recv,
        last_tick_age_s=round(max(0.0, (now_us - last_recv) / 1e6), 3) if last_recv else None,
        last_trade_ts_us=_int(raw, "last_trade_ts_us"), covered_to_us=covered,
        coverage_age_s=round(max(0.0, (now_us - covered) / 1e6), 3) if covered else None,
        last_error=raw.get("last_error", ""), sample=sample,
        silent_symbols=[s for s in raw.get("silent_symbols", "").split(",") if s],
        ticks_per_s=rate_per_s(prev, sample))
    if h.state == "stopped":
        h.status = "stopped"
        h.reasons.append(f"the ingest process stopped (pid {h.pid}, last heartbeat "
                         f"{'?' if age is None else f'{age:.0f}s'} ago)")
    elif age is None or age > bounds.stale_s:
        h.status = "stale"
        h.reasons.append(f"heartbeat stale: {'never written' if age is None else f'{age:.1f}s old'} "
                         f"(bound {bounds.stale_s:g}s; {ENV_STALE_S})")
    if h.lag_ms > bounds.max_lag_ms:
        if h.status == "ok":
            h.status = "lagging"
        h.reasons.append(f"receive lag {h.lag_ms:.0f} ms exceeds {bounds.max_lag_ms:g} ms ({ENV_MAX_LAG_MS})")
    if h.silent_symbols and h.state != "stopped":
        h.warnings.append(f"subscribed but silent (no trade, no coverage progress): "
                          f"{', '.join(h.silent_symbols)}; is the pair traded on {venue}?")
    if h.sequence_fallback and h.state != "stopped":
        h.warnings.append("continuity by time, not by trade id (the venue's frames lack the sequence "
                          f"field): {', '.join(h.sequence_fallback)}")
    if h.unrecognised:
        h.warnings.append(f"{h.unrecognised} frame(s) the parser does not recognise (see the ingest log)")
    h.healthy = not h.reasons
    return h


@dataclass
class WorkerHealth:
    consumer: str
    live: bool                    # heartbeat fresh and not stopped
    healthy: bool
    reasons: list[str] = field(default_factory=list)
    pid: int = 0
    phase: str = ""
    heartbeat_age_s: float | None = None
    pending: int = 0
    group_pending: int = 0
    lag_ms: float = 0.0
    ticks_persisted: int = 0
    ticks_per_s: float | None = None
    deadletters: int = 0
    errors: int = 0
    sample: RateSample | None = None


@dataclass
class PersistHealth:
    healthy: bool
    reasons: list[str]
    workers: list[WorkerHealth]

    @property
    def live(self) -> list[WorkerHealth]:
        return [w for w in self.workers if w.live]

    @property
    def pending(self) -> int:
        # group_pending is the whole group's count (each worker reports the same streams);
        # the max over live workers is the freshest view of it.
        return max((max(w.group_pending, w.pending) for w in self.live), default=0)

    @property
    def lag_ms(self) -> float:
        return max((w.lag_ms for w in self.live), default=0.0)

    @property
    def ticks_per_s(self) -> float | None:
        rates = [w.ticks_per_s for w in self.live if w.ticks_per_s is not None]
        return round(sum(rates), 3) if rates else None


def evaluate_persist(workers_raw: Mapping[str, Mapping[str, str]], now_us: int, bounds: HealthBounds,
                     prev: Mapping[str, RateSample] | None = None) -> PersistHealth:
    """Judge the persist workers from their health hashes (by consumer name)."""
    prev = prev or {}
    workers: list[WorkerHealth] = []
    for consumer, raw in sorted(workers_raw.items()):
        hb = _int(raw, "heartbeat_us")
        age = max(0.0, (now_us - hb) / 1e6) if hb else None
        sample = RateSample(_int(raw, "pid"), _int(raw, "ticks_persisted"), hb) if hb else None
        w = WorkerHealth(consumer, live=False, healthy=False, pid=_int(raw, "pid"),
                         phase=raw.get("phase", ""), heartbeat_age_s=None if age is None else round(age, 3),
                         pending=_int(raw, "pending"), group_pending=_int(raw, "group_pending"),
                         lag_ms=float(_int(raw, "lag_ms")), ticks_persisted=_int(raw, "ticks_persisted"),
                         deadletters=_int(raw, "deadletters"), errors=_int(raw, "errors"), sample=sample,
                         ticks_per_s=rate_per_s(prev.get(consumer), sample))
        w.live = age is not None and age <= bounds.stale_s and w.phase != "stopped"
        if w.live and w.lag_ms > bounds.persist_max_lag_ms:
            w.reasons.append(f"persist worker {consumer}: lag {w.lag_ms:.0f} ms exceeds "
                             f"{bounds.persist_max_lag_ms:g} ms ({ENV_PERSIST_MAX_LAG_MS})")
        w.healthy = w.live and not w.reasons
        workers.append(w)
    reasons = [r for w in workers for r in w.reasons]
    if not any(w.live for w in workers):
        reasons.insert(0, "no live persist worker (no heartbeat fresher than "
                          f"{bounds.stale_s:g}s under {PERSIST_HEALTH_PATTERN})")
    return PersistHealth(healthy=not reasons, reasons=reasons, workers=workers)
