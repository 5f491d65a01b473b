"""Deterministic, seeded trade generator and the in-memory tape (venue-neutral).

The generator produces *taker orders*: a symbol is drawn, its price random-walks on a tick grid
(bid/ask bounce with a one-tick spread and a weak pull back to the anchor price), a taker side is
drawn, and the order fills against 1..k resting orders at one price, each fill a trade with its
own consecutive trade id and a random quantity on the lot grid.  All fills of an order share one
timestamp.

The sequence of orders and trades (symbols, ids, prices, quantities, sides and their order) is a
pure function of ``seed``, venue name and the symbol list: generation always produces whole
orders from one RNG, so how the trades are split into time slices never changes the sequence.
Only the timestamps depend on when a slice was generated.

Prices and quantities are integers in units of 1e-8 (``SCALE``); venues format them.
Timestamps are integer microseconds UTC of simulated time, already quantized to the venue's
resolution (Binance: milliseconds), so what the tape holds is exactly what the venue reports.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

SCALE = 100_000_000  # 1e-8 units

# Number of fills per taker order: 55 % one fill, a tail up to 10.
FILL_TABLE: tuple[int, ...] = tuple([1] * 55 + [2] * 20 + [3] * 10 + [4] * 6 + [5] * 4 + [6, 7, 8, 9, 10])

# Plausible anchors (in quote units) for well-known bases; others get a seeded price.
_ANCHORS = {
    "BTC": 90000.0, "XBT": 90000.0, "ETH": 3000.0, "SOL": 150.0, "BNB": 600.0, "XRP": 2.2,
    "DOGE": 0.15, "XDG": 0.15, "ADA": 0.7, "AVAX": 30.0, "LTC": 90.0, "DOT": 5.0, "LINK": 15.0,
    "TRX": 0.25, "MATIC": 0.5, "POL": 0.5, "BCH": 450.0, "ATOM": 6.0, "UNI": 8.0, "XLM": 0.3,
    "SHIB": 0.00002, "PEPE": 0.00001, "OKB": 45.0, "KCS": 10.0, "AAPL": 230.0, "MSFT": 420.0,
    "NVDA": 140.0, "TSLA": 250.0, "AMZN": 200.0, "SPY": 590.0, "GOOGL": 180.0, "META": 600.0,
}
_QUOTE_IN_USD = {"BTC": 90000.0, "ETH": 3000.0, "EUR": 1.08, "GBP": 1.27, "BNB": 600.0}


def split_canonical(symbol: str) -> tuple[str, str]:
    """``"BTC-USDT" -> ("BTC", "USDT")``; raises ValueError for anything else."""
    parts = symbol.strip().upper().split("-")
    if len(parts) != 2 or not all(parts) or not all(p.isalnum() for p in parts):
        raise ValueError(f"not a canonical BASE-QUOTE symbol: {symbol!r}")
    return parts[0], parts[1]


def _pow10_units(exp10: int) -> int:
    """10**exp10 expressed in 1e-8 units, clamped to [1, SCALE * 1000]."""
    exp10 = max(-8, min(exp10, 3))
    return 10 ** (exp10 + 8)


@dataclass
class SymbolSpec:
    """Static, seeded description of one instrument."""

    canonical: str
    base: str
    quote: str
    anchor_units: int  # anchor (initial) price in 1e-8 units
    tick_units: int  # price grid
    lot_units: int  # quantity grid
    qty_mean_lots: float  # scale of the fill size distribution, in lots
    first_trade_id: int
    first_order_id: int  # venue may use it as first aggregate id
    first_update_id: int  # venue may use it for synthetic order books
    weight: float = 1.0

    @classmethod
    def make(cls, canonical: str, seed: str, id_range: tuple[int, int] = (1_000_000_000, 5_000_000_000),
             weight: float = 1.0) -> "SymbolSpec":
        base, quote = split_canonical(canonical)
        rng = random.Random(f"{seed}:spec:{base}-{quote}")
        if base in _ANCHORS:
            price = _ANCHORS[base] / _QUOTE_IN_USD.get(quote, 1.0)
        else:
            price = 10 ** rng.uniform(-1, 2.5) / _QUOTE_IN_USD.get(quote, 1.0)
        price *= rng.uniform(0.97, 1.03)
        tick = _pow10_units(int(math.floor(math.log10(price))) - 6)
        anchor = max(tick * 100, int(round(price * SCALE / tick)) * tick)
        price_usd = max(price * _QUOTE_IN_USD.get(quote, 1.0), 1e-8)
        lot = _pow10_units(int(math.floor(math.log10(1.0 / price_usd))))
        return cls(
            canonical=f"{base}-{quote}", base=base, quote=quote, anchor_units=anchor, tick_units=tick,
            lot_units=lot, qty_mean_lots=rng.uniform(8.0, 40.0),
            first_trade_id=rng.randrange(*id_range),
            first_order_id=rng.randrange(id_range[0] // 3, id_range[1] // 3),
            first_update_id=rng.randrange(10_000_000_000, 90_000_000_000),
            weight=weight,
        )


#: what a ring column answers for a dropped entry of a sorted column (ids, ts, order_start):
#: below every real value, so a bisect over the column lands at or after the first kept entry
BEFORE_RING = -(1 << 62)


class RingColumn(array):
    """A tape column whose oldest entries can be dropped while indices stay absolute.

    ``len()`` and indices count every entry ever appended; ``base`` entries were dropped. Reading
    a dropped index of a sorted column (ids, ts, order_start) returns ``floor`` (``BEFORE_RING``),
    so a bisect over the whole column stays correct and lands on a kept entry; a dropped index of
    any other column raises IndexError (a reader that walks past the ring fails loudly instead of
    serving made-up trades). A slice returns only its kept part (a plain ``array``); iterating
    yields the kept entries; appending is the plain array's. Used only when the simulator keeps a
    bounded history (``history_s``); unbounded tapes use plain arrays.
    """

    __slots__ = ("base", "floor")

    def __new__(cls, typecode: str, floor: int | None = None) -> "RingColumn":
        self = super().__new__(cls, typecode)
        self.base = 0
        self.floor = floor
        return self

    def __len__(self) -> int:
        return self.base + array.__len__(self)

    def __getitem__(self, i):
        b = self.base
        if i.__class__ is int:
            if i < 0:
                i += b + array.__len__(self)
            if i >= b:
                return array.__getitem__(self, i - b)
            if i < 0 or self.floor is None:
                raise IndexError(f"tape index {i} is older than the simulator's history ring")
            return self.floor
        start, stop, step = i.indices(b + array.__len__(self))
        return array.__getitem__(self, slice(max(0, start - b), max(0, stop - b), step))

    def __setitem__(self, i, v) -> None:
        if i.__class__ is not int:
            raise TypeError("a ring column is changed one entry at a time")
        b = self.base
        if i < 0:
            i += b + array.__len__(self)
        if i < b:
            raise IndexError(f"tape index {i} was dropped from the ring")
        array.__setitem__(self, i - b, v)

    def drop_before(self, index: int) -> int:
        """Drop every entry below absolute ``index``; returns how many were dropped."""
        k = min(index, len(self)) - self.base
        if k <= 0:
            return 0
        array.__delitem__(self, slice(0, k))
        self.base += k
        return k


class SymbolTape:
    """Column arrays of every trade generated for one symbol, in generation order.

    ``order_start[o]`` is the index of the first trade of taker order ``o``; the order's fills are
    ``order_start[o] .. order_start[o+1]-1`` (or to the end).  ``side`` is 1 for a taker buy, 0 for
    a taker sell.  ``ts`` and ``ids`` are non-decreasing, so lookups bisect.

    With ``ring=True`` the columns are :class:`RingColumn`: ``drop_before`` forgets the oldest
    trades (memory stays bounded) while every index keeps its meaning; ``first`` is the oldest
    index still held (0 for a plain tape).
    """

    __slots__ = ("spec", "ids", "ts", "px", "qty", "side", "order_start", "withheld")

    def __init__(self, spec: SymbolSpec, ring: bool = False) -> None:
        self.spec = spec
        if ring:
            self.ids = RingColumn("q", BEFORE_RING)
            self.ts = RingColumn("q", BEFORE_RING)
            self.px = RingColumn("q")
            self.qty = RingColumn("q")
            self.side = RingColumn("b")
            self.order_start = RingColumn("q", BEFORE_RING)
        else:
            self.ids = array("q")
            self.ts = array("q")
            self.px = array("q")
            self.qty = array("q")
            self.side = array("b")
            self.order_start = array("q")
        self.withheld = 0  # trades kept off the WebSocket by faults (still on the tape)

    @property
    def first(self) -> int:
        """Index of the oldest trade still held."""
        return getattr(self.ids, "base", 0)

    def drop_before(self, index: int) -> int:
        """Forget trades below ``index`` (rounded down to the start of the order holding it, so
        an order is never split) and the orders that held them; returns trades dropped."""
        if not isinstance(self.ids, RingColumn):
            raise TypeError("this tape keeps its whole history (not a ring)")
        index = min(index, len(self.ids))
        o = self.order_of_index(index) if index < len(self.ids) else len(self.order_start)
        if 0 <= o < len(self.order_start):
            index = self.order_start[o]
        if index <= self.first:
            return 0
        self.order_start.drop_before(o)
        for col in (self.ts, self.px, self.qty, self.side):
            col.drop_before(index)
        return self.ids.drop_before(index)

    def __len__(self) -> int:
        return len(self.ids)

    def order_end(self, o: int) -> int:
        return self.order_start[o + 1] if o + 1 < len(self.order_start) else len(self.ids)

    def index_of_id(self, trade_id: int) -> int:
        """Index of the first trade with id >= trade_id."""
        return bisect_left(self.ids, trade_id)

    def index_at_ts(self, ts_us: int, right: bool = False) -> int:
        return bisect_right(self.ts, ts_us) if right else bisect_left(self.ts, ts_us)

    def order_of_index(self, i: int) -> int:
        """The taker order containing trade index ``i``."""
        return bisect_right(self.order_start, i) - 1

    def memory_bytes(self) -> int:
        return sum(a.itemsize * array.__len__(a)
                   for a in (self.ids, self.ts, self.px, self.qty, self.side, self.order_start))


class _SymState:
    __slots__ = ("spec", "tape", "bid", "tick", "lot", "qmean", "anchor", "next_id", "app")

    def __init__(self, spec: SymbolSpec, ring: bool = False) -> None:
        self.spec = spec
        self.tape = SymbolTape(spec, ring)
        self.bid = spec.anchor_units
        self.tick = spec.tick_units
        self.lot = spec.lot_units
        self.qmean = spec.qty_mean_lots
        self.anchor = spec.anchor_units
        self.next_id = spec.first_trade_id
        t = self.tape
        self.app = (t.ids.append, t.ts.append, t.px.append, t.qty.append, t.side.append, t.order_start.append)


class TradeGenerator:
    """Generates taker orders for a fixed list of symbols from one seeded RNG."""

    def __init__(self, specs: list[SymbolSpec], seed: str, ring: bool = False) -> None:
        if not specs:
            raise ValueError("at least one symbol is required")
        self.specs = specs
        self.states = [_SymState(s, ring) for s in specs]
        self.tapes = [st.tape for st in self.states]
        self._rng = random.Random(f"{seed}:orders")
        weights = [max(0.0, s.weight) for s in specs]
        total = sum(weights)
        if total <= 0:
            raise ValueError("symbol weights must not all be zero")
        if all(w == weights[0] for w in weights):
            self._cum: list[float] | None = None
        else:
            acc, cum = 0.0, []
            for w in weights:
                acc += w / total
                cum.append(acc)
            cum[-1] = 1.0
            self._cum = cum
        self.generated = 0
        self.orders = 0

    def spread_units(self, si: int) -> int:
        return self.states[si].tick

    def best_bid(self, si: int) -> int:
        return self.states[si].bid

    def generate(self, n: int, t0_us: int, t1_us: int, quantum_us: int = 1) -> list[tuple[int, int, int, int, int]]:
        """Generate whole orders until at least ``n`` trades were produced.

        Trade timestamps are spread over ``(t0_us, t1_us]`` (quantized down to ``quantum_us``).
        Returns ``[(symbol_index, i0, i1, o0, o1), ...]`` for each symbol that traded: the new
        trade index range and the new order index range on its tape.
        """
        if n <= 0:
            return []
        states = self.states
        before = [(len(st.tape.ids), len(st.tape.order_start)) for st in states]
        rng = self._rng
        rnd = rng.random
        log = math.log     # expovariate(1.0) is -log(1.0 - random()) / 1.0: inlined, same numbers
        nsym = len(states)
        cum = self._cum
        fills = FILL_TABLE
        span = max(0, t1_us - t0_us)
        q = max(1, quantum_us)
        k = 0
        orders = 0
        while k < n:
            if cum is None:
                st = states[int(rnd() * nsym)]
            else:
                st = states[bisect_right(cum, rnd())] if nsym > 1 else states[0]
            tick = st.tick
            bid = st.bid
            r = rnd()
            if r < 0.3:
                anchor = st.anchor
                up = 0.5 + (anchor - bid) / anchor * 4.0
                if rnd() < up:
                    bid += tick
                elif bid > tick * 20:
                    bid -= tick
                if r < 0.006:  # occasional sweep of several ticks
                    jump = tick * int(2 + rnd() * 20)
                    if rnd() < up:
                        bid += jump
                    elif bid > jump + tick * 20:
                        bid -= jump
                st.bid = bid
            buy = 1 if rnd() < 0.5 else 0
            price = bid + tick if buy else bid
            nf = fills[int(rnd() * 100)]
            ts = (t0_us + ((k + 1) * span) // n) // q * q
            a_id, a_ts, a_px, a_q, a_sd, a_os = st.app
            a_os(len(st.tape.ids))
            nid = st.next_id
            lot = st.lot
            qmean = st.qmean
            for _ in range(nf):
                e = -log(1.0 - rnd())
                a_id(nid)
                nid += 1
                a_ts(ts)
                a_px(price)
                a_q(lot * (1 + int(e * e * qmean)))
                a_sd(buy)
            st.next_id = nid
            k += nf
            orders += 1
        self.generated += k
        self.orders += orders
        out = []
        for si, st in enumerate(states):
            i0, o0 = before[si]
            i1 = len(st.tape.ids)
            if i1 != i0:
                out.append((si, i0, i1, o0, len(st.tape.order_start)))
        return out
