"""Ground-truth CSV: every trade every venue generated, including those faults kept off the wire.

Header ``exchange,symbol,trade_id,ts_us,price,qty,side``: canonical symbol (``BTC-USDT``), the
venue's trade id as text, ``ts_us`` the trade time as the venue reports it in integer microseconds
UTC, price and qty exactly as the wire strings, ``side`` the taker side (``buy``/``sell``).

Rows are written from the tapes incrementally (per venue and symbol, in trade-id order within a
symbol; symbols of one flush are grouped, so rows are not globally time-ordered).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .venue import Venue

HEADER = "exchange,symbol,trade_id,ts_us,price,qty,side\n"


class GroundTruthWriter:
    def __init__(self, path: str | os.PathLike[str], venues: "list[Venue]") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w", encoding="ascii", newline="", buffering=1 << 20)
        self._f.write(HEADER)
        self._f.flush()
        self.venues = venues
        self._written: dict[tuple[str, int], int] = {}
        self.rows = 0
        self.closed = False

    def flush(self) -> int:
        """Append every trade not yet written, flush to the OS. Returns rows written now."""
        if self.closed:
            return 0
        n = 0
        write = self._f.write
        for v in self.venues:
            for si, tape in enumerate(v.tapes):
                key = (v.name, si)
                w = self._written.get(key, 0)
                end = len(tape)
                if end > w:
                    write(v.ground_truth_lines(si, w, end))
                    self._written[key] = end
                    n += end - w
        self._f.flush()
        self.rows += n
        return n

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        try:
            os.fsync(self._f.fileno())
        except OSError:  # pragma: no cover
            pass
        self._f.close()
        self.closed = True
