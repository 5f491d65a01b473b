"""A hole in a symbol's tape, and what became of it: the ``Gap`` record.

Gaps are found by the connectors (id jumps, reconnects, restarts, silence), by the historical
backfill and by the coverage-hole sensor; they travel in stream entries (field ``g``, see
``marketdata.stream``), are stored in ``marketdata.gaps`` and are updated by gap repair. A gap's
``gap_id`` is stable per hole, so a later record of the same hole replaces the earlier one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class Gap:
    """A detected hole in a symbol's tape, and what became of it."""
    exchange: str
    symbol: str
    gap_id: str               # stable per hole, so status updates replace the earlier record
    from_us: int              # time bounds of the hole (exclusive of the trades around it)
    to_us: int
    from_id: str = ""         # first missing trade id, where ids are sequential
    to_id: str = ""           # last missing trade id
    found_by: str = ""        # id_jump | reconnect | restart | heartbeat | ...
    status: str = "open"      # open | repaired | unrepairable
    repaired_by: str = ""     # rest_by_id | rest_by_time | redundant | ...
    recovered: int = 0        # trades recovered by the repair
    detected_us: int = 0
    updated_us: int = 0
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)
