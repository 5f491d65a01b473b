"""The simulator's bounded history: how far back the tapes (and the order books' per-trade
sequence) keep trades when the simulator runs for a long time, as in `marketdata up`.

Unbounded (the default for `marketdata simulate`, the tests and the bench), every trade stays on
the tape for the run: ~45 bytes a trade, 8 MB a minute at the demo's 3,000 trades/s. With
``history_s`` set (``--history-minutes``), the tapes are rings: trades older than that much
*simulated* time are dropped, cut at a minute boundary and never inside a taker order, and never
before the ground truth has written them; the last ``MIN_KEPT_TRADES`` of a symbol always stay,
so "the latest N trades" endpoints answer in full however quiet the market. Indices stay absolute
(``generator.RingColumn``), so ids derived from them do not change. What the REST history serves
(trade history by id or time, candles) starts at the ring's first minute; a request for older
data gets what the ring holds.

Sizing: a connector repairs a gap within seconds to minutes of it; Dagster reconciles an hour's
bars with the venue's candles once the hour closed (within ~5 minutes of it). Keeping 75 minutes
serves both for the hour just closed.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .venue import Venue

US_PER_MINUTE = 60_000_000
MIN_KEPT_TRADES = 1000      # >= every "latest N trades" REST limit the venues serve
DEFAULT_HISTORY_MINUTES = 75.0


def trim_venue(v: "Venue", now_us: int, history_s: float, written: dict[tuple[str, int], int] | None = None) -> int:
    """Drop the trades of every symbol of ``v`` older than ``history_s`` before ``now_us`` (see the
    module doc); ``written`` is the ground truth's rows written per (venue, symbol index). Returns
    the trades dropped."""
    cut_us = now_us - int(history_s * 1_000_000)
    cut_us -= cut_us % US_PER_MINUTE
    dropped = 0
    v.ensure_books()        # a book behind the tape reads the trades about to be dropped
    for si, tape in enumerate(v.tapes):
        n = len(tape)
        idx = min(bisect_left(tape.ts, cut_us), n - MIN_KEPT_TRADES)
        if written is not None:
            idx = min(idx, written.get((v.name, si), 0))
        if idx <= tape.first:
            continue
        # The ring starts at a whole minute, so its oldest candle is never a partial one.
        ts = tape.ts[idx]
        idx = bisect_left(tape.ts, ts - ts % US_PER_MINUTE)
        if idx <= tape.first:
            continue
        dropped += tape.drop_before(idx)
        if v.books:
            v.books[si].trade_seq.drop_before(tape.first)
    return dropped
