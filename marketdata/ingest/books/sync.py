"""Venue-neutral book sequencing: buffer deltas until a snapshot, align, apply, and on a gap or a
checksum failure discard the book and resync.

A venue's book contract supplies the rules (``venues.base.BookVenue``, filled in by
``venues/<venue>_book.py``):

    SNAPSHOT_FROM   "rest": the snapshot is fetched over REST while the stream is buffered
                    (Binance, KuCoin); "ws": the venue sends it in-stream after (re)subscribing
                    (OKX, Kraken), so nothing needs buffering
    DEPTH           None for a full book, or N for a top-N view the client must truncate
    stale(book_id, delta)     -> the delta is already contained in the book (drop it)
    aligns(book_id, delta)    -> the first delta after a snapshot may be applied
    continues(book_id, delta) -> the next delta chains onto the book
    checksum(book) -> int     (only if the venue sends checksums)

``BookSync`` never does I/O: ``on_delta``/``on_snapshot`` return what the runtime must do next
(``NEED_SNAPSHOT`` / ``RESUBSCRIBE``), and the runtime calls back with the snapshot. Resync time is
measured from the moment the fault is detected to the moment the book is aligned again.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from ...venues.base import BookVenue
from ...venues.book import BadLevel, BookDelta, BookSnapshot, LocalBook

# actions returned to the runtime
NOTHING = 0
NEED_SNAPSHOT = 1      # fetch a REST snapshot and call on_snapshot
RESUBSCRIBE = 2        # resubscribe the symbol's book channel; the venue sends a snapshot


@dataclass(slots=True)
class Resync:
    symbol: str
    reason: str                      # seq_gap | checksum | reconnect | snapshot_stale | bad_level
    detected: float                  # time.monotonic()
    detail: str = ""
    duration_ms: float | None = None


@dataclass
class SyncStats:
    deltas: int = 0
    stale: int = 0
    checksums_ok: int = 0
    resyncs: int = 0
    snapshots: int = 0
    last_resync_ms: float = 0.0
    durations_ms: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


class BookSync:
    """The sequencing state of one symbol's book on one link."""

    def __init__(self, symbol: str, rules: type[BookVenue], *, max_buffer: int = 10_000,
                 keep_durations: int = 10_000):
        self.symbol = symbol
        self.rules = rules
        self.rest_snapshot = rules.SNAPSHOT_FROM == "rest"
        self.depth: int | None = rules.DEPTH
        self.has_checksum = rules.checksum is not None
        self.book = LocalBook()
        self.update_id: int | None = None
        self.live = False
        self.buffer: deque[BookDelta] = deque(maxlen=max_buffer)
        self.pending: Resync | None = None      # a resync in progress (or the first sync)
        self._aligning = False                  # snapshot loaded, waiting for a delta straddling it
        self.stats = SyncStats()
        self.keep_durations = keep_durations
        self.history: deque[Resync] = deque(maxlen=100)
        self.last_ts_us = 0
        self.last_recv_us = 0

    # ------------------------------------------------------------------ entry points
    def start(self) -> int:
        """A (re)subscribed link: everything before is unknown. Not counted as a resync."""
        self._discard()
        return NEED_SNAPSHOT if self.rest_snapshot else NOTHING

    def link_lost(self) -> None:
        self._discard()
        self.pending = None

    def on_delta(self, d: BookDelta) -> int:
        self.stats.deltas += 1
        if not self.live:
            if self.rest_snapshot:
                self.buffer.append(d)
            return NOTHING
        r = self.rules
        if self.update_id is not None and r.stale(self.update_id, d):
            self.stats.stale += 1
            return NOTHING
        if self.update_id is not None:
            ok = r.aligns(self.update_id, d) if self._aligning else r.continues(self.update_id, d)
            if not ok:
                return self.resync("seq_gap", f"book at {self.update_id}, delta {d.first_id}..{d.last_id}"
                                              f" prev {d.prev_id}", keep=d)
        if self._aligning:
            self._aligning = False
            act = self._apply(d)
            if act == NOTHING:
                self._aligned()
            return act
        return self._apply(d)

    def on_snapshot(self, s: BookSnapshot) -> int:
        """Load a snapshot (REST, or in-stream after a resubscribe) and apply what was buffered."""
        self.stats.snapshots += 1
        try:
            self.book.load(s.bids, s.asks)
        except BadLevel as e:
            return self.resync("bad_level", str(e))
        if self.depth:
            self.book.truncate(self.depth)
        self.update_id = s.update_id
        self.last_ts_us, self.last_recv_us = s.ts_us, s.recv_us
        if s.checksum is not None and self.has_checksum and self.rules.checksum(self.book) != s.checksum:
            return self.resync("checksum", "snapshot checksum mismatch")
        buffered, self.buffer = self.buffer, deque(maxlen=self.buffer.maxlen)
        r = self.rules
        first = True
        for i, d in enumerate(buffered):
            if self.update_id is not None and r.stale(self.update_id, d):
                self.stats.stale += 1
                continue
            ok = r.aligns(self.update_id, d) if first else r.continues(self.update_id, d)
            if not ok:
                if first:
                    # The snapshot is older than what was buffered: fetch a newer one, keep the rest.
                    self.buffer.extend(list(buffered)[i:])
                    self.stats.reasons["snapshot_stale"] = self.stats.reasons.get("snapshot_stale", 0) + 1
                    return NEED_SNAPSHOT
                return self.resync("seq_gap", f"buffered delta {d.first_id}..{d.last_id} after {self.update_id}",
                                   keep=d)
            first = False
            self.live = True            # _apply checks the checksum of a live book
            act = self._apply(d)
            if act != NOTHING:
                return act
        self.live = True
        if self.rest_snapshot and first and self.update_id is not None:
            # Nothing buffered after the snapshot yet: the next delta must straddle it, and only
            # then is the book aligned.
            self._aligning = True
        else:
            self._aligned()
        return NOTHING

    def resync(self, reason: str, detail: str = "", keep: BookDelta | None = None) -> int:
        """Discard the book; the runtime fetches a snapshot or resubscribes."""
        self._discard()
        if self.pending is None:
            self.pending = Resync(self.symbol, reason, time.monotonic(), detail)
            self.stats.resyncs += 1
            self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
        if keep is not None and self.rest_snapshot:
            self.buffer.append(keep)
        return NEED_SNAPSHOT if self.rest_snapshot else RESUBSCRIBE

    # ------------------------------------------------------------------ internals
    def _discard(self) -> None:
        self.book.clear()
        self.update_id = None
        self.live = False
        self._aligning = False
        self.buffer.clear()

    def _apply(self, d: BookDelta) -> int:
        r = self.rules
        book = self.book
        try:
            if d.per_level_seq and self.update_id is not None:
                uid = self.update_id
                book.apply([l for l in d.bids if int(l[2]) > uid], [l for l in d.asks if int(l[2]) > uid])
            else:
                book.apply(d.bids, d.asks)
        except (BadLevel, IndexError, ValueError) as e:
            return self.resync("bad_level", str(e))
        if self.depth:
            book.truncate(self.depth)
        if d.last_id is not None:
            self.update_id = d.last_id
        self.last_ts_us, self.last_recv_us = d.ts_us, d.recv_us
        if d.checksum is not None and self.has_checksum:
            if r.checksum(book) != d.checksum:
                return self.resync("checksum", f"checksum {d.checksum} does not match the book at {self.update_id}")
            self.stats.checksums_ok += 1
        return NOTHING

    def _aligned(self) -> None:
        p = self.pending
        if p is None:
            return
        self.pending = None
        p.duration_ms = (time.monotonic() - p.detected) * 1000.0
        self.stats.last_resync_ms = p.duration_ms
        self.stats.durations_ms.append(p.duration_ms)
        if len(self.stats.durations_ms) > self.keep_durations:
            del self.stats.durations_ms[: self.keep_durations // 2]
        self.history.append(p)

    # ------------------------------------------------------------------ reading
    def quote(self) -> tuple | None:
        """(bid_px, bid_qty, ask_px, ask_qty) of a live book, else None."""
        if not self.live or self._aligning:
            return None
        b, a = self.book.best_bid(), self.book.best_ask()
        return (b[0] if b else "", b[1] if b else "", a[0] if a else "", a[1] if a else "")


__all__ = ["BookDelta", "BookSnapshot", "BookSync", "NEED_SNAPSHOT", "NOTHING", "RESUBSCRIBE",
           "Resync"]
