"""Fault registry (venue-neutral bookkeeping).

The registry only records what was asked for and what is still pending (withheld trades, failing
REST calls); acting on connections is the venue's job (see :mod:`marketdata.simulator.venue`).

Fault kinds (``kind`` plus keyword parameters):

=================  ============================================================================
``silent_drop``    stop sending anything (data, pings, acks, pongs) to the target connection(s),
                   ignore what they send, keep TCP open.  Trades keep being generated.
``close``          send a close frame (``code`` default 1000, ``reason``) and close.
``abort``          TCP reset (SO_LINGER 0 + abort): no close frame.
``skip_ids``       the next ``count`` trades of ``symbol`` are generated (tape, ground truth,
                   REST) but never sent on the WebSocket; with ``conn`` only that connection
                   misses them, otherwise every connection does.
``malformed``      send ``count`` malformed frames; ``variant`` = ``invalid_json`` |
                   ``missing_fields`` | ``mixed`` (default, alternating).
``unknown_symbol`` send ``count`` (default 1) well-formed trades for ``symbol`` (default an
                   unlisted one) that the client never subscribed to.
``rest_fail``      the next ``count`` REST calls answer ``status`` (500 default, or 429/418 with
                   ``Retry-After: retry_after``).
``rest_delay``     the next ``count`` REST calls are delayed by ``delay`` seconds.
``notice``         the venue's reconnect notice (Binance ``serverShutdown``, OKX ``64008``,
                   Kraken ``systemStatus`` maintenance); with ``close_after`` seconds the
                   connection is then closed.
``seq_gap``        the next ``count`` (default 1) order-book diff messages (optionally only of
                   ``symbol``) are not sent to the target connection(s), so its book sequence
                   jumps (Binance ``U``, OKX ``prevSeqId``, KuCoin ``sequenceStart``; Kraken v1
                   has no sequence: its next checksum fails).
``bad_checksum``   the next ``count`` book messages carry a wrong checksum (OKX, Kraken).
``token_expiry``   KuCoin: the token of the target connection(s) expires now (all of that
                   token's connections are closed); without ``conn`` every issued token expires.
=================  ============================================================================

Connection targets: ``conn`` = a connection id (ids start at 0 per venue and increase with every
accepted WebSocket connection; see ``/_sim/stats``) or ``None`` for every open connection.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

CONNECTION_FAULTS = frozenset({"silent_drop", "close", "abort", "malformed", "unknown_symbol", "notice",
                               "seq_gap", "bad_checksum", "token_expiry"})
STREAM_FAULTS = frozenset({"skip_ids"})
REST_FAULTS = frozenset({"rest_fail", "rest_delay"})
FAULT_KINDS = CONNECTION_FAULTS | STREAM_FAULTS | REST_FAULTS


class FaultError(ValueError):
    """A fault request that cannot be applied (unknown kind, bad parameter, no such target)."""


@dataclass
class FaultRecord:
    seq: int
    kind: str
    params: dict[str, Any]
    wall_time: float
    sim_time_us: int
    applied_to: list[int] = field(default_factory=list)  # connection ids acted on
    hits: int = 0  # REST calls / trades affected so far
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "kind": self.kind, "params": self.params, "wall_time": self.wall_time,
            "sim_time_us": self.sim_time_us, "applied_to": self.applied_to, "hits": self.hits, "note": self.note,
        }


class SkipRequest:
    """``remaining`` trades of one symbol still to be withheld from ``conn`` (None = all)."""

    __slots__ = ("remaining", "conn", "record", "withheld_ids")

    def __init__(self, remaining: int, conn: int | None, record: FaultRecord) -> None:
        self.remaining = remaining
        self.conn = conn
        self.record = record
        self.withheld_ids: list[int] = []  # [first, last] once known


class FaultRegistry:
    def __init__(self) -> None:
        self.records: list[FaultRecord] = []
        self.skips: dict[int, list[SkipRequest]] = {}  # symbol index -> pending skip requests
        self._rest_fail: deque[tuple[int, float, FaultRecord]] = deque()
        self._rest_delay: deque[tuple[float, FaultRecord]] = deque()
        self.rest_failed = 0
        self.rest_delayed = 0

    def record(self, kind: str, params: dict[str, Any], sim_time_us: int) -> FaultRecord:
        rec = FaultRecord(len(self.records), kind, dict(params), time.time(), sim_time_us)
        self.records.append(rec)
        return rec

    # skip_ids -------------------------------------------------------------------------------
    def add_skip(self, si: int, count: int, conn: int | None, rec: FaultRecord) -> None:
        self.skips.setdefault(si, []).append(SkipRequest(count, conn, rec))

    def take_skips(self, si: int, i0: int, i1: int, ids) -> list[tuple[int, int, int | None]]:
        """Consume pending skips for new trades ``[i0, i1)`` of symbol ``si``.

        Returns withheld index ranges ``[(lo, hi, conn_or_None), ...]``.
        """
        pending = self.skips.get(si)
        if not pending:
            return []
        out = []
        for req in pending:
            m = min(req.remaining, i1 - i0)
            if m <= 0:
                continue
            out.append((i0, i0 + m, req.conn))
            if not req.withheld_ids:
                req.withheld_ids = [ids[i0], ids[i0 + m - 1]]
            else:
                req.withheld_ids[1] = ids[i0 + m - 1]
            req.remaining -= m
            req.record.hits += m
            req.record.note = f"withheld trade ids {req.withheld_ids[0]}..{req.withheld_ids[1]}"
        self.skips[si] = [r for r in pending if r.remaining > 0]
        if not self.skips[si]:
            del self.skips[si]
        return out

    # REST --------------------------------------------------------------------------------------
    def add_rest_fail(self, count: int, status: int, retry_after: float, rec: FaultRecord) -> None:
        for _ in range(count):
            self._rest_fail.append((status, retry_after, rec))

    def add_rest_delay(self, count: int, delay: float, rec: FaultRecord) -> None:
        for _ in range(count):
            self._rest_delay.append((delay, rec))

    def take_rest_fail(self) -> tuple[int, float] | None:
        if not self._rest_fail:
            return None
        status, retry_after, rec = self._rest_fail.popleft()
        self.rest_failed += 1
        rec.hits += 1
        return status, retry_after

    def take_rest_delay(self) -> float:
        if not self._rest_delay:
            return 0.0
        delay, rec = self._rest_delay.popleft()
        self.rest_delayed += 1
        rec.hits += 1
        return delay

    def pending(self) -> dict[str, Any]:
        return {
            "rest_fail": len(self._rest_fail),
            "rest_delay": len(self._rest_delay),
            "skip_ids": {str(si): sum(r.remaining for r in reqs) for si, reqs in self.skips.items()},
        }
