"""The order-book vocabulary venues and the book runtime share: the snapshot and delta a book
parser emits (``BookSnapshot``, ``BookDelta``), the sides (``BID``, ``ASK``) and the local book of
one symbol (``LocalBook``), whose price levels are keyed by exact decimal price.

Levels keep the venue's wire strings, because checksums (OKX, Kraken) are computed over the text
the venue sent, not over a re-formatted number ("0.10" and "0.1" hash differently). Keys are
``Decimal`` so that the same price written two ways is still one level. Each side keeps a sorted
key list next to its dict: books hold hundreds of levels, where ``bisect`` on a list is cheaper
than any tree and the best level is an index away.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Iterable, Sequence

BID = 0
ASK = 1


@dataclass(slots=True)
class BookSnapshot:
    symbol: str
    bids: list                       # [[price, qty], ...] as wire strings
    asks: list
    update_id: int | None = None     # the last update contained (None: the venue has no ids)
    checksum: int | None = None
    ts_us: int = 0
    recv_us: int = 0


@dataclass(slots=True)
class BookDelta:
    symbol: str
    bids: list                       # [[price, qty(, seq)], ...]: absolute quantities, "0" deletes
    asks: list
    first_id: int | None = None      # first update id covered
    last_id: int | None = None       # last update id covered (the book's id after applying)
    prev_id: int | None = None       # the id the book must have before (OKX prevSeqId)
    checksum: int | None = None
    ts_us: int = 0
    recv_us: int = 0
    per_level_seq: bool = False      # levels carry their own sequence as a third element (KuCoin)


Level = tuple[str, str]          # (price, quantity) as the venue wrote them


class BadLevel(ValueError):
    """A level whose price or quantity is not a number."""


def _num(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise BadLevel(f"not a decimal: {text!r}") from None
    if not d.is_finite():
        raise BadLevel(f"not a finite decimal: {text!r}")
    return d


class _Side:
    __slots__ = ("levels", "keys", "descending")

    def __init__(self, descending: bool) -> None:
        self.levels: dict[Decimal, Level] = {}
        self.keys: list[Decimal] = []          # ascending
        self.descending = descending

    def set(self, px: str, qty: str) -> None:
        key = _num(px)
        if _num(qty) == 0:
            if self.levels.pop(key, None) is not None:
                del self.keys[bisect_left(self.keys, key)]
            return
        if key not in self.levels:
            insort(self.keys, key)
        self.levels[key] = (px, qty)

    def best(self) -> Level | None:
        if not self.keys:
            return None
        return self.levels[self.keys[-1] if self.descending else self.keys[0]]

    def top(self, n: int | None = None) -> list[Level]:
        keys = self.keys
        if self.descending:
            sel = keys[::-1] if n is None else keys[:-n - 1:-1] if n > 0 else []
        else:
            sel = keys if n is None else keys[:n]
        lv = self.levels
        return [lv[k] for k in sel]

    def truncate(self, n: int) -> None:
        extra = len(self.keys) - n
        if extra <= 0:
            return
        if self.descending:
            drop, self.keys = self.keys[:extra], self.keys[extra:]
        else:
            drop, self.keys = self.keys[n:], self.keys[:n]
        for k in drop:
            del self.levels[k]

    def clear(self) -> None:
        self.levels.clear()
        self.keys.clear()


class LocalBook:
    __slots__ = ("sides",)

    def __init__(self) -> None:
        self.sides = (_Side(descending=True), _Side(descending=False))

    @property
    def bids(self) -> _Side:
        return self.sides[BID]

    @property
    def asks(self) -> _Side:
        return self.sides[ASK]

    def clear(self) -> None:
        for s in self.sides:
            s.clear()

    def load(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        self.clear()
        self.apply(bids, asks)

    def apply(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        """Absolute quantities per level; a zero quantity deletes the level."""
        b, a = self.sides
        for lvl in bids:
            b.set(lvl[0], lvl[1])
        for lvl in asks:
            a.set(lvl[0], lvl[1])

    def set(self, side: int, px: str, qty: str) -> None:
        self.sides[side].set(px, qty)

    def best_bid(self) -> Level | None:
        return self.sides[BID].best()

    def best_ask(self) -> Level | None:
        return self.sides[ASK].best()

    def top(self, side: int, n: int | None = None) -> list[Level]:
        """Best ``n`` levels of a side (all with None), best first, as wire strings."""
        return self.sides[side].top(n)

    def truncate(self, n: int) -> None:
        """Keep the best ``n`` levels per side (a venue that streams a top-N view)."""
        for s in self.sides:
            s.truncate(n)

    def depth(self) -> tuple[int, int]:
        return len(self.sides[BID].keys), len(self.sides[ASK].keys)

    def crossed(self) -> bool:
        b, a = self.best_bid(), self.best_ask()
        return b is not None and a is not None and _num(b[0]) >= _num(a[0])

    def as_dicts(self) -> tuple[dict[str, str], dict[str, str]]:
        """``({price: qty} bids, {price: qty} asks)`` in wire strings, for comparisons."""
        return ({p: q for p, q in self.sides[BID].levels.values()},
                {p: q for p, q in self.sides[ASK].levels.values()})
