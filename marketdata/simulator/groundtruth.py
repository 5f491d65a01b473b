"""Ground-truth CSV: every trade every venue generated, including those faults kept off the wire.

Header ``exchange,symbol,trade_id,ts_us,price,qty,side``: canonical symbol (``BTC-USDT``), the
venue's trade id as text, ``ts_us`` the trade time as the venue reports it in integer microseconds
UTC, price and qty exactly as the wire strings, ``side`` the taker side (``buy``/``sell``).

Rows are written from the tapes incrementally (per venue and symbol, in trade-id order within a
symbol; symbols of one flush are grouped, so rows are not globally time-ordered). A venue whose
trades can change after the fact (corrections, cancels) offers ``truth_amendments()``; the
writer rewrites those rows on its next flush.
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
        amendments: dict[tuple[str, str, str], str] = {}
        for v in self.venues:
            take = getattr(v, "truth_amendments", None)
            if take is not None:
                amendments.update(take())
        if amendments:
            self._amend(amendments)
        return n

    def _amend(self, changes: dict[tuple[str, str, str], str]) -> None:
        """Rows a venue superseded after they were written (Alpaca corrections and cancels):
        ``(exchange, symbol, trade_id) -> new line`` ("" deletes). Rare, so the file is rewritten
        and swapped in atomically: a reader never sees a half-amended truth."""
        self._f.close()
        tmp = self.path.with_name(self.path.name + ".amend")
        with open(self.path, encoding="ascii", newline="") as src, \
                open(tmp, "w", encoding="ascii", newline="") as dst:
            for line in src:
                key = tuple(line.split(",", 3)[:3])
                dst.write(changes.get(key, line))
        os.replace(tmp, self.path)
        self._f = open(self.path, "a", encoding="ascii", newline="", buffering=1 << 20)

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
