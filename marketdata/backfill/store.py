"""What the history loader and the gap repair write to ClickHouse: ticks, coverage, gap records,
backfill progress cursors and repair attempts (sql/002-004, sql/006). One short session per call.

Every write is idempotent: ticks collapse by (exchange, symbol, trade_id) in their
ReplacingMergeTree, coverage intervals may overlap (readers merge them), gap records and progress
rows are replaced by later ones (higher updated_us), and each batch carries a deduplication token
derived from its content, so a retried batch is inserted once.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import orjson

from ..clock import now_us
from ..gap import Gap
from ..persist.rows import COVERAGE_COLUMNS, GAP_COLUMNS, TICK_COLUMNS
from ..storage.clickhouse import ClickHouse, insert_json_rows
from ..tick import Tick

_clock_lock = threading.Lock()
_last_us = 0


def version_us() -> int:
    """now_us(), strictly increasing within the process: the version of a replacing row."""
    global _last_us
    with _clock_lock:
        _last_us = max(now_us(), _last_us + 1)
        return _last_us


def _token(kind: str, payload: bytes) -> str:
    return f"md-backfill-{kind}-{hashlib.blake2b(payload, digest_size=16).hexdigest()}"


def _json_rows(rows: Iterable[dict]) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows)


def tick_rows(ticks: Iterable[Tick]) -> list[dict]:
    """Canonical ticks -> ticks table rows (a trade has version 0; corrections version recv_us)."""
    out = []
    for t in ticks:
        out.append({
            "exchange": t.exchange, "symbol": t.symbol, "trade_id": t.trade_id, "ts_us": t.ts_us,
            "open": t.open, "high": t.high, "low": t.low, "close": t.close, "volume": t.volume,
            "trade_count": t.trade_count, "side": t.side, "recv_us": t.recv_us, "source": t.source,
            "event": t.event, "version": 0 if t.event == "trade" else t.recv_us,
            "is_deleted": 1 if t.event == "cancel" else 0,
        })
    return out


def write(ch: ClickHouse, *, ticks: Sequence[Tick] = (), coverage: Sequence[tuple] = (),
          gaps: Sequence[Gap] = (), progress: Sequence["Progress"] = (),
          attempts: Sequence["RepairAttempt"] = ()) -> None:
    """One session: ticks first, then gap records, then coverage (coverage vouches for the ticks
    and goes last), then progress and attempts (bookkeeping of what is now stored).

    ``coverage`` items are (exchange, symbol, from_us, to_us, source), bounds inclusive."""
    with ch.session() as c:
        if ticks:
            payload = _json_rows(tick_rows(ticks))
            insert_json_rows(c, "marketdata.ticks", TICK_COLUMNS, payload, _token("ticks", payload))
        if gaps:
            payload = _json_rows({col: getattr(g, col) for col in GAP_COLUMNS} for g in gaps)
            insert_json_rows(c, "marketdata.gaps", GAP_COLUMNS, payload, _token("gaps", payload))
        spans = [s for s in coverage if s[3] >= s[2]]
        if spans:
            rec = now_us()
            payload = _json_rows({"exchange": ex, "symbol": sym, "from_us": f, "to_us": t, "source": src,
                                  "recorded_us": rec} for ex, sym, f, t, src in spans)
            insert_json_rows(c, "marketdata.coverage", COVERAGE_COLUMNS, payload, _token("coverage", payload))
        if progress:
            payload = _json_rows(p.row() for p in progress)
            insert_json_rows(c, "marketdata.backfill_progress", PROGRESS_COLUMNS, payload)
        if attempts:
            payload = _json_rows(a.row() for a in attempts)
            insert_json_rows(c, "marketdata.gap_repair_attempts", ATTEMPT_COLUMNS, payload)


# --- backfill progress ----------------------------------------------------------------------

@dataclass
class Progress:
    """The cursor of one (exchange, symbol, range) history load."""
    exchange: str
    symbol: str
    from_us: int
    to_us: int
    first_id: str = ""
    end_id: str = ""
    next_id: str = ""
    loaded_to_us: int = 0
    trades: int = 0
    pages: int = 0
    status: str = "running"          # running | done | incomplete | failed
    detail: str = ""
    started_us: int = 0
    updated_us: int = 0

    def row(self) -> dict:
        self.updated_us = version_us()
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def pct(self) -> float:
        """Share of the range loaded: by trade ids when the end id is known, else by time."""
        if self.status == "done":
            return 100.0
        if self.first_id and self.end_id and self.next_id:
            total = int(self.end_id) - int(self.first_id)
            if total > 0:
                return round(min(100.0, 100.0 * (int(self.next_id) - int(self.first_id)) / total), 2)
        span = self.to_us - self.from_us
        if span <= 0 or not self.loaded_to_us:
            return 0.0
        return round(min(100.0, 100.0 * (self.loaded_to_us - self.from_us) / span), 2)

    @property
    def total_trades(self) -> int | None:
        """Trades in the range (from the ids at its bounds), when known."""
        if self.first_id and self.end_id:
            return max(0, int(self.end_id) - int(self.first_id))
        return None


PROGRESS_COLUMNS = [f.name for f in fields(Progress)]


def read_progress(ch: ClickHouse, exchange: str, symbol: str, from_us: int, to_us: int) -> Progress | None:
    rows = ch.rows(
        f"SELECT {', '.join(PROGRESS_COLUMNS)} FROM marketdata.backfill_progress FINAL "
        "WHERE exchange = {ex:String} AND symbol = {sym:String} AND from_us = {f:Int64} AND to_us = {t:Int64}",
        {"ex": exchange, "sym": symbol, "f": from_us, "t": to_us})
    if not rows:
        return None
    return Progress(**{c: (str(v) if isinstance(v, str) else int(v)) for c, v in zip(PROGRESS_COLUMNS, rows[0])})


def list_progress(ch: ClickHouse, exchange: str | None = None) -> list[Progress]:
    """Every backfill cursor (newest state), for status displays."""
    where = "WHERE exchange = {ex:String}" if exchange else ""
    rows = ch.rows(f"SELECT {', '.join(PROGRESS_COLUMNS)} FROM marketdata.backfill_progress FINAL {where} "
                   "ORDER BY exchange, symbol, from_us", {"ex": exchange} if exchange else None)
    return [Progress(**{c: (str(v) if isinstance(v, str) else int(v)) for c, v in zip(PROGRESS_COLUMNS, r)})
            for r in rows]


# --- gap repair attempts --------------------------------------------------------------------

@dataclass
class RepairAttempt:
    exchange: str
    symbol: str
    gap_id: str
    attempts: int
    last_attempt_us: int
    result: str                      # repaired | unrepairable | failed
    detail: str = ""

    def row(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ATTEMPT_COLUMNS = [f.name for f in fields(RepairAttempt)]


def gap_from_row(row: Sequence) -> Gap:
    """A row of SELECT <GAP_COLUMNS> -> Gap."""
    d = dict(zip(GAP_COLUMNS, row))
    for k in ("from_us", "to_us", "recovered", "detected_us", "updated_us"):
        d[k] = int(d[k])
    for k in ("exchange", "symbol", "gap_id", "from_id", "to_id", "found_by", "status", "repaired_by", "detail"):
        d[k] = str(d[k])
    return Gap(**d)
