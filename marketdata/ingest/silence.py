"""Which subscribed symbols stay silent: no trade and no coverage progress for ``silent_after``
seconds of wall time while their link is subscribed.

A venue may acknowledge a subscription and then never send anything for it (Bitstamp does so for
a pair it does not trade): nothing on the link distinguishes that from a quiet market, so the
symbol is reported (a warning, once per silent spell) rather than treated as an error. Coverage
that keeps advancing from the venue's clock means the venue vouches for the quiet; a symbol that
never traded has no such clock and stays put.
"""

from __future__ import annotations

import logging
import time

from .sequence import SymbolSequence

log = logging.getLogger("marketdata.ingest")

SILENT_AFTER_S = 300.0     # a few minutes: quiet pairs trade at least that often on a listed venue


class SilenceWatch:
    def __init__(self, venue: str, silent_after: float = SILENT_AFTER_S, clock=time.monotonic):
        self.venue = venue
        self.silent_after = float(silent_after)
        self.clock = clock
        self.silent: set[str] = set()
        self._mark: dict[str, tuple] = {}
        self._quiet_since: dict[str, float] = {}

    def observe(self, seq: SymbolSequence) -> None:
        """Called after each coverage round for every symbol."""
        sym, now = seq.symbol, self.clock()
        mark = (seq.last_id, seq.last_ts, seq.covered_to)
        moved = mark != self._mark.get(sym)
        self._mark[sym] = mark
        if moved and sym in self.silent:
            self.silent.discard(sym)
            log.info("%s %s: trading again after being reported silent", self.venue, sym)
        if not seq.connected:
            # unsubscribed: silence is expected; the clock starts again once subscribed
            self._quiet_since.pop(sym, None)
            return
        if moved or sym not in self._quiet_since:
            self._quiet_since[sym] = now
            return
        quiet = now - self._quiet_since[sym]
        if quiet >= self.silent_after and sym not in self.silent:
            self.silent.add(sym)
            log.warning("%s %s: subscribed but silent for %.0fs (no trade, no coverage progress); "
                        "the venue may have acknowledged a pair it does not trade", self.venue, sym, quiet)
