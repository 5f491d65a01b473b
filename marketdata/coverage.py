"""A coverage mark: the one type for "every trade of this symbol in [from_us, to_us] is published".

A connector's publisher builds it, a stream entry carries it (field ``c``, the JSON array
``[from_us, to_us, source]``, see ``marketdata.stream``), and the persist worker decodes it back
into the same type before storing it in ``marketdata.coverage``. It names no symbol: the mark
belongs to the entry (and stream) it travels in, which does. Being a tuple, it is exactly the
shape written on the wire. (The minutes that coverage makes complete are ``bars.coverage``'s.)
"""

from __future__ import annotations

from typing import NamedTuple


class Coverage(NamedTuple):
    """Every trade with ts in [from_us, to_us] (inclusive µs) has been published, in this entry or
    an earlier one of its stream."""
    from_us: int
    to_us: int
    source: str = "ws"          # ws | rest | backfill: what vouches for the span
