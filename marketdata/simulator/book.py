"""Deterministic order book per symbol, driven by the trade generator (venue-neutral).

The book lives on the symbol's tick grid inside a window of ``depth_ticks`` ticks per side around
the generator's bid: bids ``bid - (D-1)*tick .. bid``, asks ``bid + tick .. bid + D*tick``.  Inside
the window a price level exists with probability ``density`` (the best bid and best ask always
exist).  Quantities are integers in 1e-8 units on the lot grid.

It is advanced one taker order at a time, from the tape, in generation order:

1. **recentre** to the bid implied by the order (a buy prints at the ask = bid + tick, a sell at the
   bid): levels that would cross or fall out of the window are deleted, prices that enter the
   window get levels (seeded presence), the best bid/ask are (re)created if missing;
2. **fills**: every fill of the order is one change on the maker side at the trade price: the
   level shrinks by the fill quantity, or, if the fill would exhaust it, is replenished with a new
   quantity (a new resting order took its place);
3. **noise**: 0..2 random adds / quantity changes / cancels within 25 ticks of the touch.

Every change gets the next **update id** (consecutive integers from the symbol's seeded
``first_update_id``); ``trade_seq[i]`` is the update id of trade ``i``'s fill change, so a venue
whose trades share the book's sequence space (KuCoin) can number them consistently.  Changes are
kept in a bounded log so venues can build diff streams over any window (``coalesced``).

The book is a pure function of seed, venue, symbol and the order sequence (its RNG is per symbol
and advanced per order), so, like the tape, it does not depend on how generation was sliced.
The book does not enforce ``best bid < trade price <= best ask`` beyond what the recentring gives.
"""

from __future__ import annotations

import random
import zlib
from math import log as _log
from array import array
from bisect import bisect_left, insort
from typing import TYPE_CHECKING

from .generator import RingColumn

if TYPE_CHECKING:  # pragma: no cover
    from .generator import SymbolSpec, SymbolTape

BID = 0
ASK = 1


class OrderBook:
    __slots__ = (
        "spec", "tick", "lot", "qscale", "depth", "density", "rng", "bids", "asks", "bid_px", "ask_px",
        "bid_ts", "ask_ts", "update_id", "trade_seq", "orders_applied", "log_px", "log_qty", "log_first",
        "max_log", "center", "_rnd",
    )

    def __init__(self, spec: "SymbolSpec", seed: str, depth_ticks: int = 400, density: float = 0.85,
                 start_ts_us: int = 0, max_log: int = 1 << 18, ring: bool = False) -> None:
        self.spec = spec
        self.tick = spec.tick_units
        self.lot = spec.lot_units
        self.qscale = spec.qty_mean_lots * 4.0
        self.depth = max(30, int(depth_ticks))
        self.density = float(density)
        self.rng = random.Random(f"{seed}:book:{spec.canonical}")
        self._rnd = self.rng.random
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_px: list[int] = []  # ascending
        self.ask_px: list[int] = []  # ascending
        self.bid_ts: dict[int, int] = {}
        self.ask_ts: dict[int, int] = {}
        self.update_id = spec.first_update_id
        # by trade index like the tape; a ring when the tape is one (trimmed with it)
        self.trade_seq = RingColumn("q") if ring else array("q")
        self.orders_applied = 0
        self.log_px = array("q")  # price, negated for asks
        self.log_qty = array("q")
        self.log_first = self.update_id + 1  # update id of log index 0
        # With a bounded history (ring) the change log is kept shorter too: diff streams read only
        # the changes since their last push (<= 1 s); half of 1 << 16 is over a minute of changes.
        self.max_log = max(1024, int(min(max_log, 1 << 16) if ring else max_log))
        self.center = spec.anchor_units
        # initial state (update id = first_update_id, not in the log)
        rnd = self.rng.random
        c, t = self.center, self.tick
        for k in range(self.depth):
            p = c - k * t
            if p < t:
                break
            if k == 0 or rnd() < self.density:
                self.bids[p] = self._new_qty()
                self.bid_ts[p] = start_ts_us
        for k in range(1, self.depth + 1):
            p = c + k * t
            if k == 1 or rnd() < self.density:
                self.asks[p] = self._new_qty()
                self.ask_ts[p] = start_ts_us
        self.bid_px = sorted(self.bids)
        self.ask_px = sorted(self.asks)

    # ------------------------------------------------------------------ mutation
    def _new_qty(self) -> int:
        e = -_log(1.0 - self._rnd())     # rng.expovariate(1.0), inlined: the same numbers
        return self.lot * (1 + int(e * self.qscale))

    def _set(self, side: int, px: int, qty: int, ts: int) -> bool:
        if side:
            book, lst, lts = self.asks, self.ask_px, self.ask_ts
        else:
            book, lst, lts = self.bids, self.bid_px, self.bid_ts
        if qty > 0:
            if px not in book:
                insort(lst, px)
            book[px] = qty
            lts[px] = ts
        else:
            if px not in book:
                return False
            del book[px]
            del lts[px]
            del lst[bisect_left(lst, px)]
        self.update_id += 1
        self.log_px.append(-px if side else px)
        self.log_qty.append(qty)
        return True

    def _trim_log(self) -> None:
        k = len(self.log_px) // 2
        del self.log_px[:k]
        del self.log_qty[:k]
        self.log_first += k

    def _recenter(self, b: int, ts: int) -> None:
        # The changes of _set written out (levels leaving the window, then levels entering it,
        # then the touch), in the same order with the same draws: this is ~45 % of a book's time.
        t, D = self.tick, self.depth
        c = self.center
        blo, bhi = max(t, b - (D - 1) * t), b
        alo, ahi = b + t, b + D * t
        bl, al = self.bid_px, self.ask_px
        bids, asks, bts, ats = self.bids, self.asks, self.bid_ts, self.ask_ts
        lp_app, lq_app = self.log_px.append, self.log_qty.append
        uid = self.update_id
        while bl and bl[-1] > bhi:
            p = bl.pop()
            del bids[p], bts[p]
            uid += 1
            lp_app(p)
            lq_app(0)
        while bl and bl[0] < blo:
            p = bl.pop(0)
            del bids[p], bts[p]
            uid += 1
            lp_app(p)
            lq_app(0)
        while al and al[0] < alo:
            p = al.pop(0)
            del asks[p], ats[p]
            uid += 1
            lp_app(-p)
            lq_app(0)
        while al and al[-1] > ahi:
            p = al.pop()
            del asks[p], ats[p]
            uid += 1
            lp_app(-p)
            lq_app(0)
        rnd = self.rng.random
        dens = self.density
        lot, qscale = self.lot, self.qscale
        old_blo, old_bhi = max(t, c - (D - 1) * t), c
        old_alo, old_ahi = c + t, c + D * t
        for sign, book, lts, lst, lo, hi, olo, ohi, best in (
                (1, bids, bts, bl, blo, bhi, old_blo, old_bhi, bhi),
                (-1, asks, ats, al, alo, ahi, old_alo, old_ahi, alo)):
            for p, r_hi in ((lo, min(hi, olo - t)), (max(lo, ohi + t), hi)):
                while p <= r_hi:
                    if p == best or rnd() < dens:
                        if p not in book:
                            insort(lst, p)
                        book[p] = q = lot * (1 + int(-_log(1.0 - rnd()) * qscale))
                        lts[p] = ts
                        uid += 1
                        lp_app(sign * p)
                        lq_app(q)
                    p += t
        self.update_id = uid
        if bhi not in bids:
            self._set(BID, bhi, self._new_qty(), ts)
        if alo not in asks:
            self._set(ASK, alo, self._new_qty(), ts)
        self.center = b

    def apply_orders(self, tape: "SymbolTape", o0: int, o1: int) -> None:
        """Advance the book over taker orders ``[o0, o1)`` of ``tape`` (must be the next ones)."""
        if o0 != self.orders_applied:
            raise RuntimeError(f"book of {self.spec.canonical}: orders must be applied in sequence "
                               f"(expected {self.orders_applied}, got {o0})")
        ostart, pxs, qtys, sides, tss = tape.order_start, tape.px, tape.qty, tape.side, tape.ts
        n_orders, n_trades = len(ostart), len(tape.ids)
        t = self.tick
        rnd = self.rng.random
        seq_app = self.trade_seq.append
        lp_app = self.log_px.append
        lq_app = self.log_qty.append
        new_qty = self._new_qty
        lot, qscale = self.lot, self.qscale
        asks, bids, ask_ts, bid_ts = self.asks, self.bids, self.ask_ts, self.bid_ts
        ask_px, bid_px = self.ask_px, self.bid_px
        for o in range(o0, o1):
            a = ostart[o]
            b = ostart[o + 1] if o + 1 < n_orders else n_trades
            px = pxs[a]
            buy = sides[a]
            ts = tss[a]
            bid = px - t if buy else px
            if bid != self.center:
                self._recenter(bid, ts)
            if buy:
                book, lts, lpx = asks, ask_ts, -px
            else:
                book, lts, lpx = bids, bid_ts, px
            if px not in book:  # cannot happen after recentring; keep the invariant anyway
                self._set(ASK if buy else BID, px, new_qty(), ts)
            uid = self.update_id
            cur = book[px]
            for i in range(a, b):
                fq = qtys[i]
                # _new_qty() inlined: the same draw
                cur = cur - fq if cur > fq else lot * (1 + int(-_log(1.0 - rnd()) * qscale))
                uid += 1
                lp_app(lpx)
                lq_app(cur)
                seq_app(uid)
            book[px] = cur
            lts[px] = ts
            r = rnd()
            if r >= 0.35:
                # noise: 0..2 random adds / quantity changes / cancels within 25 ticks of the touch
                # (one draw for the side, one for the distance, a cancel draw for a present level
                # off the touch, else a quantity draw)
                c = self.center
                for _ in (0, 1) if r >= 0.8 else (0,):
                    if rnd() < 0.5:
                        k = int(rnd() * 25)
                        p = c + t * (1 + k)
                        nb, nl, nts, lp = asks, ask_px, ask_ts, -p
                    else:
                        k = int(rnd() * 25)
                        p = c - t * k
                        if p < t:
                            continue
                        nb, nl, nts, lp = bids, bid_px, bid_ts, p
                    if k > 0 and p in nb and rnd() < 0.3:
                        del nb[p]
                        del nts[p]
                        del nl[bisect_left(nl, p)]
                        lq_app(0)
                    else:
                        if p not in nb:
                            insort(nl, p)
                        nb[p] = q = lot * (1 + int(-_log(1.0 - rnd()) * qscale))
                        nts[p] = ts
                        lq_app(q)
                    uid += 1
                    lp_app(lp)
            self.update_id = uid
        self.orders_applied = o1
        if len(self.log_px) > self.max_log:
            self._trim_log()

    # ------------------------------------------------------------------ reading
    def top(self, side: int, n: int | None = None) -> list[tuple[int, int]]:
        """Best ``n`` levels of a side, best first, as ``(price_units, qty_units)``."""
        if side == BID:
            lst = self.bid_px if n is None else self.bid_px[-n:] if n > 0 else []
            book = self.bids
            return [(p, book[p]) for p in reversed(lst)]
        lst = self.ask_px if n is None else self.ask_px[:n]
        book = self.asks
        return [(p, book[p]) for p in lst]

    def level_ts(self, side: int, px: int) -> int:
        return (self.ask_ts if side else self.bid_ts).get(px, 0)

    def best(self) -> tuple[int | None, int | None]:
        return (self.bid_px[-1] if self.bid_px else None, self.ask_px[0] if self.ask_px else None)

    def coalesced(self, after_uid: int) -> tuple[int, dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
        """Changes with update id > ``after_uid``, last one per price and side.

        Returns ``(first_uid, bids, asks)`` with ``{price: (qty, uid)}`` (qty 0 = deleted);
        ``first_uid`` is the first update id covered (greater than ``after_uid + 1`` when the log
        was trimmed past it, i.e. the window has a hole).
        """
        start = max(after_uid + 1, self.log_first)
        bids: dict[int, tuple[int, int]] = {}
        asks: dict[int, tuple[int, int]] = {}
        first = self.log_first
        pxs, qtys = self.log_px, self.log_qty
        for j in range(start - first, len(pxs)):
            p = pxs[j]
            if p < 0:
                asks[-p] = (qtys[j], first + j)
            else:
                bids[p] = (qtys[j], first + j)
        return start, bids, asks


# ---------------------------------------------------------------------------------- checksums
def crc32_signed(text: str) -> int:
    v = zlib.crc32(text.encode())
    return v - (1 << 32) if v >= 1 << 31 else v


def okx_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]], depth: int = 25) -> int:
    """OKX: ``bid1px:bid1sz:ask1px:ask1sz:...`` over up to 25 levels, CRC32 as signed int32."""
    parts: list[str] = []
    for i in range(depth):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    return crc32_signed(":".join(parts))


def kraken_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]], depth: int = 10) -> int:
    """Kraken: top 10 asks (ascending) then top 10 bids (descending); per level price and volume
    with ``.`` removed and leading zeros stripped; unsigned CRC32."""
    s = "".join(p.replace(".", "").lstrip("0") + v.replace(".", "").lstrip("0")
                for p, v in list(asks[:depth]) + list(bids[:depth]))
    return zlib.crc32(s.encode())
