"""The simulator's own lag: how long after a trade's time it handed the trade to the socket.

The bench reports latency from trade time; on a loaded machine part of that is the load
generator falling behind, not the platform. Per write (one slice of generated trades) the lag of
its oldest trade, send time minus trade time in wall µs, is counted for every trade of the slice
(an upper bound per trade) in log-spaced buckets of about 9 % width: constant memory however long
the simulator runs, and histograms of several venues add up.
"""

from __future__ import annotations

import math

BUCKETS_PER_OCTAVE = 8


def bucket_of(lag_us: float) -> int:
    return 0 if lag_us < 1 else int(math.log2(lag_us) * BUCKETS_PER_OCTAVE) + 1


def bucket_upper_us(b: int) -> float:
    return 1.0 if b <= 0 else 2.0 ** (b / BUCKETS_PER_OCTAVE)


class SendLag:
    """A histogram of send lags, counted per trade."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add(self, lag_us: float, trades: int) -> None:
        b = bucket_of(lag_us)
        self.counts[b] = self.counts.get(b, 0) + trades

    def as_json(self) -> dict[str, int]:
        return {str(b): n for b, n in sorted(self.counts.items())}


def merge(hists: list[dict]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for b, n in (h or {}).items():
            out[int(b)] = out.get(int(b), 0) + int(n)
    return out


def quantiles_ms(counts: dict[int, int], qs=(0.5, 0.99)) -> list[float]:
    """Quantiles (ms, each the upper edge of its bucket) of a merged histogram."""
    total = sum(counts.values())
    if not total:
        return [float("nan")] * len(qs)
    out = []
    for q in qs:
        need, seen = q * total, 0
        for b in sorted(counts):
            seen += counts[b]
            if seen >= need:
                out.append(round(bucket_upper_us(b) / 1000.0, 3))
                break
    return out
