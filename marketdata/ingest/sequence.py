"""Per-symbol trade sequence: which trade ids we have, where the holes are, and how far the
tape is known complete (coverage).

Rules (DESIGN.md, "Venues and connectors"):
- where ids are consecutive, a jump is a hole [last+1, id-1];
- after any (re)connect or restart, the span from the last trade before it is an open-ended hole
  until a trade or a REST catch-up shows where it ends;
- coverage advances only while there is no hole before it: up to 1 µs before the first hole's
  preceding trade, or before the last trade (a trade sharing its timestamp may still come);
  while idle, up to the venue clock estimated from the last venue timestamp plus local elapsed
  time, less the venue's lateness allowance; never while disconnected;
- a hole that cannot be repaired is skipped: coverage resumes after the trade that followed it,
  so its minutes stay incomplete instead of being silently filled;
- a trade without the venue's sequence field (`accept_unsequenced`) is published all the same and
  the symbol falls back to time-based continuity (`fallback` names the missing field): an open
  id hole becomes a span of time, later holes are spans of time, and the first trade that carries
  the field again resumes id continuity from itself;
- a snapshot the venue replays on (re)subscribe (`on_replay`) that reaches back over a trade we
  had holds every trade since: the span we were away closes from it, without REST.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from ..clock import now_us
from ..gap import Gap
from ..tick import Tick


@dataclass
class Hole:
    lo: int                       # first missing id
    hi: int | None                # last missing id; None: open-ended (after a reconnect/restart)
    before_ts: int                # ts of the trade before the hole
    after_ts: int | None = None   # ts of the trade after it, once seen
    found_by: str = "id_jump"
    detected_us: int = 0
    gap_id: str = ""
    recovered: int = 0
    dead: bool = False            # unrepairable: coverage skips it
    first: int = 0                # lo when found (lo advances as the repair fills the hole)
    by_time: bool = False         # a span of time (venues without consecutive ids), not of ids
    how: str = ""                 # how recovered trades came in (rest_by_id, ...), once some did

    @property
    def closed(self) -> bool:
        """Its end is known: the last missing id, or for a time hole the trade that followed it."""
        return self.after_ts is not None if self.by_time else self.hi is not None

    def as_json(self) -> dict:
        return {k: getattr(self, k) for k in ("lo", "hi", "before_ts", "after_ts", "found_by",
                                                 "detected_us", "gap_id", "recovered", "dead", "first", "by_time", "how")}


class RecentIds:
    """At least the last `keep` ids seen (up to twice as many), for de-duplication without
    consecutive ids: two generations of sets, the older dropped whole when the newer is full.
    Measured at 200,000 ids (1,000,000 fresh ids, this class against an OrderedDict trimmed one
    id at a time, two runs): 0.50 against 0.80 µs a trade, and 0.38 against 1.29 written inline."""

    __slots__ = ("keep", "_cur", "_old")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._cur: set = set()
        self._old: set = set()

    def __contains__(self, tid) -> bool:
        return tid in self._cur or tid in self._old

    def add(self, tid) -> None:
        cur = self._cur
        cur.add(tid)
        if len(cur) >= self.keep:
            self._old, self._cur = cur, set()


@dataclass
class SymbolSequence:
    exchange: str
    symbol: str
    venue_symbol: str
    lateness_us: int = 2_000_000
    sequential: bool = True       # ids are +1 per trade; else holes are spans of time
    recent_ids: int = 200_000     # time mode: how many recent ids to remember for de-duplication
    last_id: int | None = None
    last_ts: int = 0
    covered_to: int | None = None
    holes: list[Hole] = field(default_factory=list)
    venue_ts: int = 0             # latest venue timestamp seen, and when (local µs)
    venue_seen_at: int = 0
    links: int = 0                # subscribed links (connections) carrying this symbol now
    duplicates: int = 0
    late: int = 0                 # trades arriving inside already-vouched time
    gaps_found: int = 0
    gaps_repaired: int = 0
    gaps_unrepairable: int = 0
    fallback: str = ""            # the sequence field the venue stopped sending: continuity by time
    unsequenced: int = 0          # trades that came without it
    _recent: RecentIds = field(default=None, repr=False)     # set from recent_ids after init

    def __post_init__(self) -> None:
        if self._recent is None:
            self._recent = RecentIds(self.recent_ids)

    # --- trades -------------------------------------------------------------------------------

    def accept(self, tick: Tick, tid: int, gaps_out: list[Gap], first: int | None = None) -> bool:
        """A trade from the WebSocket. True if it is new and must be published. `first`: the first
        id a venue-aggregated tick covers (OKX: tradeId - count + 1); default `tid`."""
        if not self.sequential:
            if not self.fallback:
                return self._accept_by_time(tick)
            self._resume_ids(tick)
        f = tid if first is None else first
        ts = tick.ts_us
        if ts > self.venue_ts:
            self.venue_ts, self.venue_seen_at = ts, tick.recv_us
        last = self.last_id
        if last is None:
            self.last_id, self.last_ts = tid, ts
            if self.covered_to is None:
                self.covered_to = ts          # coverage starts after the first trade we saw
            return True
        if f == last + 1 and not self.holes:
            self.last_id, self.last_ts = tid, ts
            self._check_late(ts)
            return True
        if tid <= last:
            return self._fill(tick, tid, gaps_out, "redundant")
        # tid > last: it ends an open-ended hole, or opens a new one.
        tail = self.holes[-1] if self.holes else None
        if tail is not None and not tail.closed:
            tail.hi, tail.after_ts = f - 1, ts
            if tail.lo > tail.hi:
                self.holes.pop()
                if tail.recovered:
                    # The REST catch-up ran ahead of the link and met it at this trade: repaired.
                    self.gaps_repaired += 1
                    gaps_out.append(self._gap(tail, "repaired", tail.how or "rest_by_id"))
                # else nothing was missed across the reconnect
        elif f > last + 1:
            self._open(Hole(last + 1, f - 1, self.last_ts, ts, "id_jump"), gaps_out)
        self.last_id, self.last_ts = tid, ts
        self._check_late(ts)
        return True

    def accept_unsequenced(self, tick: Tick, missing: str) -> bool:
        """A trade without the venue's sequence field (`missing`): never dropped for it. From here
        the symbol's continuity is by time: what we can know is that we were subscribed. True if
        it is new and must be published; True from `fallback` changing is the caller's cue to log."""
        self.unsequenced += 1
        if self.sequential:
            self.sequential = False
            self.fallback = missing
            tail = self.holes[-1] if self.holes else None
            if tail is not None and not tail.closed:
                tail.by_time = True           # the span since the reconnect: repaired by time
            if self.last_id is None:
                self.last_id = 0
        return self._accept_by_time(tick)

    def _resume_ids(self, tick: Tick) -> None:
        """The sequence field is back: id continuity starts again from this trade (the time
        before it was vouched for by the subscription, and an open span closes at it)."""
        tail = self.holes[-1] if self.holes else None
        if tail is not None and not tail.closed:
            tail.after_ts = tick.ts_us
        self.sequential = True
        self.fallback = ""
        self.last_id = None

    def on_replay(self, ticks: list[Tick], gaps_out: list[Gap]) -> list[Tick]:
        """A snapshot of the venue's latest trades, oldest first, replayed on a (re)subscribe
        (Bitfinex). Returns the trades to pass on: those not older than our tape (known ids among
        them are de-duplicated by `accept`), so a resubscribe never counts a trade twice. When the
        snapshot reaches back over the last trade we had -- it holds an id we have, or its oldest
        trade is older than our last -- nothing since is missing: the open span we were away
        closes here, without REST (recorded repaired from the snapshot if it held trades we lacked)."""
        fresh = [t for t in ticks if t.ts_us >= self.last_ts]
        self.duplicates += len(ticks) - len(fresh)
        tail = self.holes[-1] if self.holes else None
        if (tail is None or tail.closed or not tail.by_time or tail.dead or not ticks or self.last_id is None
                or not self.connected):
            return fresh
        if not (ticks[0].ts_us < self.last_ts or any(t.trade_id in self._recent for t in ticks)):
            return fresh
        self.holes.pop()
        new = [t for t in fresh if t.trade_id not in self._recent]
        if new:
            tail.recovered += len(new)
            tail.after_ts = new[0].ts_us
            self.gaps_repaired += 1
            gaps_out.append(self._gap(tail, "repaired", "ws_snapshot"))
        return fresh

    def _accept_by_time(self, tick: Tick) -> bool:
        """Without consecutive ids a dropped message cannot be seen; what we can know is that we
        were subscribed. Duplicates (overlapping links, REST repair) are recognised by id."""
        tid = tick.trade_id
        if tid in self._recent:
            self.duplicates += 1
            return False
        self._remember(tid)
        ts = tick.ts_us
        if ts > self.venue_ts:
            self.venue_ts, self.venue_seen_at = ts, tick.recv_us
        if self.last_id is None:
            self.last_id = 0                  # "we have a tape"; ids carry no order here
            if self.covered_to is None:
                self.covered_to = ts
        tail = self.holes[-1] if self.holes else None
        if tail is not None and not tail.closed:
            tail.after_ts = ts                # the first trade after the reconnect ends the span
        self._check_late(ts)
        if ts > self.last_ts:
            self.last_ts = ts
        return True

    def on_last_trade_id(self, tid: int, ts_us: int, gaps_out: list[Gap]) -> bool:
        """The venue says its latest trade id at `ts_us` is `tid` (Coinbase heartbeat). Ids after
        ours up to it were missed even if no trade follows (a quiet market): a hole found by
        "heartbeat", bounded by `ts_us`. An open-ended hole (after a reconnect) ends there. True
        when a hole opened or changed, so the repair should run."""
        if not self.sequential or self.last_id is None:
            return False
        tail = self.holes[-1] if self.holes else None
        if tail is not None and not tail.closed:
            if tid < tail.lo:                     # nothing beyond what we have: the span is closed
                self.holes.pop()
                if tail.recovered:
                    tail.hi, tail.after_ts = tail.lo - 1, max(self.last_ts, tail.before_ts)
                    self.gaps_repaired += 1
                    gaps_out.append(self._gap(tail, "repaired", "rest_by_id"))
                return True
            tail.hi, tail.after_ts = tid, ts_us
        elif tid > self.last_id:
            self._open(Hole(self.last_id + 1, tid, self.last_ts, ts_us, "heartbeat"), gaps_out)
        else:
            return False
        # Trades after `tid` continue the tape; last_ts stays that of the last trade we hold.
        self.last_id = max(self.last_id, tid)
        return True

    def _remember(self, tid: str) -> None:
        self._recent.add(tid)

    def _check_late(self, ts: int) -> None:
        if self.covered_to is not None and ts <= self.covered_to:
            self.late += 1

    def _fill(self, tick: Tick, tid: int, gaps_out: list[Gap], how: str) -> bool:
        for i, h in enumerate(self.holes):
            if h.dead:
                continue
            hi = h.hi if h.hi is not None else self.last_id
            if h.lo <= tid <= hi:
                if tid == h.lo:
                    h.lo += 1
                    h.recovered += 1
                    self._close_if_done(i, gaps_out, how)
                    return True
                # Inside but not at the front: keep it (published), the repair will pass over it.
                h.recovered += 1
                return True
        self.duplicates += 1
        return False

    def _close_if_done(self, i: int, gaps_out: list[Gap], how: str) -> None:
        h = self.holes[i]
        if h.hi is not None and h.lo > h.hi:
            self.holes.pop(i)
            self.gaps_repaired += 1
            gaps_out.append(self._gap(h, "repaired", how))

    def _open(self, hole: Hole, gaps_out: list[Gap]) -> None:
        hole.detected_us = now_us()
        hole.first = hole.lo
        hole.gap_id = f"{hole.found_by}:{hole.before_ts if hole.by_time else hole.lo}:{hole.detected_us}"
        self.holes.append(hole)
        self.gaps_found += 1
        if hole.closed:
            gaps_out.append(self._gap(hole, "open", ""))

    def _gap(self, h: Hole, status: str, how: str, detail: str = "") -> Gap:
        t = now_us()
        hi = h.hi if h.hi is not None else h.lo - 1
        first, last = ("", "") if h.by_time else (str(h.first), str(hi))
        return Gap(self.exchange, self.symbol, h.gap_id, h.before_ts, h.after_ts or h.before_ts,
                   first, last, h.found_by, status, how,
                   h.recovered, h.detected_us, t, detail)

    # --- connection events ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.links > 0

    def on_disconnect(self, found_by: str = "reconnect") -> None:
        """A subscribed link is gone. If it was the last one carrying the symbol, whatever trades
        it would have carried are an open-ended hole; if another link is live (make-before-break
        rotation, a redundant connection), nothing was missed."""
        self.links = max(0, self.links - 1)
        if self.links or self.last_id is None:
            return
        if self.holes and not self.holes[-1].closed:
            return
        self._open(self._span_hole(found_by), [])

    def _span_hole(self, found_by: str) -> Hole:
        if self.sequential:
            return Hole(self.last_id + 1, None, self.last_ts, None, found_by)
        return Hole(0, None, self.last_ts, None, found_by, by_time=True)

    def on_subscribed(self) -> None:
        self.links += 1

    # --- repair -----------------------------------------------------------------------------------

    def next_repair(self) -> Hole | None:
        for h in self.holes:
            if not h.dead:
                return h
        return None

    def apply_repair(self, hole: Hole, ticks: list[Tick], page_full: bool, gaps_out: list[Gap],
                     how: str = "rest_by_id") -> list[Tick]:
        """One page of REST trades (ascending ids, from `hole.lo`) for `hole`. Returns the trades to
        publish. The hole closes when its last id arrived; a page that skips ids, or ends short of the
        hole, means the venue cannot give them back (unrepairable). For an open-ended hole a short
        page means the catch-up reached the head of the tape: nothing more was missed."""
        out: list[Tick] = []
        for t in ticks:
            tid = int(t.trade_id)
            if tid < hole.lo:
                continue
            if hole.hi is not None and tid > hole.hi:
                break
            if tid > hole.lo:
                if hole.hi is None:
                    # Ids lo..tid-1 do not exist at the venue; the catch-up goes on from tid.
                    lost = Hole(hole.lo, tid - 1, self.last_ts, t.ts_us, hole.found_by)
                    self._open(lost, gaps_out)
                    self.holes.remove(lost)            # it precedes the open hole
                    self.holes.insert(self.holes.index(hole), lost)
                    self.mark_unrepairable(lost, gaps_out, "venue history skips these ids")
                    hole.lo = tid
                else:
                    break
            out.append(t)
            hole.lo = tid + 1
            hole.recovered += 1
            hole.how = how
            if self.last_id is None or tid > self.last_id:
                # The catch-up ran ahead of the WebSocket.
                self.last_id, self.last_ts = tid, t.ts_us
                hole.before_ts = t.ts_us
                if t.ts_us > self.venue_ts:
                    self.venue_ts, self.venue_seen_at = t.ts_us, t.recv_us
        if hole not in self.holes:
            return out
        i = self.holes.index(hole)
        if hole.hi is None:
            if not page_full:
                self.holes.pop(i)
                if hole.recovered:
                    hole.hi, hole.after_ts = hole.lo - 1, self.last_ts
                    self.gaps_repaired += 1
                    gaps_out.append(self._gap(hole, "repaired", how))
            return out
        if hole.lo > hole.hi:
            self._close_if_done(i, gaps_out, how)
        elif not page_full or not out:
            self.mark_unrepairable(hole, gaps_out, "venue history does not return the missing ids")
        return out

    def apply_time_repair(self, hole: Hole, ticks: list[Tick], complete: bool, gaps_out: list[Gap],
                          how: str = "rest_by_time") -> list[Tick]:
        """REST trades for a time hole (from its start to its end, or to now while it is open).
        `complete`: the venue's history covered the whole span, so what it returned is all there
        was. Returns the trades to publish."""
        end = hole.after_ts if hole.closed else None
        start = hole.before_ts
        out = []
        for t in ticks:
            if t.ts_us < hole.before_ts or (end is not None and t.ts_us > end) or t.trade_id in self._recent:
                continue
            self._remember(t.trade_id)
            out.append(t)
            hole.recovered += 1
            if not hole.closed and t.ts_us > self.last_ts:
                self.last_ts = t.ts_us
                hole.before_ts = t.ts_us      # caught up to here
                if t.ts_us > self.venue_ts:
                    self.venue_ts, self.venue_seen_at = t.ts_us, t.recv_us
        if hole not in self.holes:
            return out
        if not complete:
            if not hole.closed and ticks:
                # An open hole whose history starts after it: the span up to the oldest trade the
                # venue still has is lost; what came later is here or on the live link.
                hole.before_ts, hole.after_ts = start, min(t.ts_us for t in ticks)
            self.mark_unrepairable(hole, gaps_out, "venue history does not cover the span")
            return out
        self.holes.remove(hole)
        if hole.recovered or hole.closed:
            self.gaps_repaired += 1
            if hole.after_ts is None:
                hole.after_ts = self.last_ts
            hole.before_ts = start            # the record spans the whole hole, not the catch-up's end
            gaps_out.append(self._gap(hole, "repaired", how))
        return out

    def mark_unrepairable(self, hole: Hole, gaps_out: list[Gap], detail: str) -> None:
        if not hole.closed:
            # Open-ended: we cannot know its end until a trade arrives; coverage stays frozen.
            return
        hole.dead = True
        self.gaps_unrepairable += 1
        gaps_out.append(self._gap(hole, "unrepairable", "", detail))

    # --- coverage ----------------------------------------------------------------------------------

    def coverage_bound(self, now: int) -> int | None:
        if self.covered_to is None:
            return None
        if self.holes:
            return self.holes[0].before_ts - 1
        bound = self.last_ts - 1
        if self.connected and self.venue_seen_at:
            est = self.venue_ts + (now - self.venue_seen_at) - self.lateness_us
            if est > bound:
                bound = est
        return bound

    def advance_coverage(self, now: int) -> list[tuple[int, int]]:
        """Coverage spans to publish now, in order; skips dead holes."""
        spans = []
        while self.covered_to is not None:
            bound = self.coverage_bound(now)
            if bound is not None and bound > self.covered_to:
                spans.append((self.covered_to + 1, bound))
                self.covered_to = bound
            if self.holes and self.holes[0].dead and self.holes[0].after_ts is not None \
                    and self.covered_to >= self.holes[0].before_ts - 1:
                h = self.holes.pop(0)
                self.covered_to = max(self.covered_to, h.after_ts)
                continue
            break
        return spans

    # --- persistence -------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"last_id": "" if self.last_id is None else str(self.last_id), "last_ts": str(self.last_ts),
                "covered_to": "" if self.covered_to is None else str(self.covered_to),
                "holes": orjson.dumps([h.as_json() for h in self.holes]), "fallback": self.fallback}

    def restore(self, raw: dict) -> None:
        """Resume from stored state: what was missing stays missing, and the time we were away is a hole."""
        st = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
              for k, v in raw.items()}
        if st.get("last_id"):
            self.last_id = int(st["last_id"])
            self.last_ts = int(st.get("last_ts") or 0)
        if st.get("covered_to"):
            self.covered_to = int(st["covered_to"])
        if st.get("holes"):
            self.holes = [Hole(**h) for h in orjson.loads(st["holes"])]
        if st.get("fallback") and self.sequential:
            # Stopped while the venue sent no sequence field: the time away is a span of time.
            self.sequential, self.fallback = False, st["fallback"]
        # The time we were away is an open-ended hole (unless one from before is still open).
        if self.last_id is not None and not (self.holes and not self.holes[-1].closed):
            self._open(self._span_hole("restart"), [])
