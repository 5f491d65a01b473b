"""The ClickHouse side of a batch: the insert plan, refused-entry isolation, error codes.

An insert is one short ClickHouse session: ticks, quotes, then gaps, then coverage (coverage last:
it vouches for the rest), each one request with a deduplication token, so a retried batch is
stored once. The ticks go to ClickHouse as one request body, expanded by ``INSERT ... SELECT ...
FROM input(...)`` (``rows.tick_insert_sql``). ``plan`` builds every payload before the first
request; ``send`` sends them.

``store`` inserts a batch until it is committed. A failure is waited out (``wait_out``: the
worker's backoff) unless ClickHouse says the *data* cannot be stored (``is_data_error``); then the
entries at fault are found -- by a strict decode of each entry, else by inserting halves on their
own -- and returned as dead letters, and the rest is inserted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable

from ..storage.clickhouse import insert_json_rows
from . import rows as R
from .group import DeadLetter

log = logging.getLogger("marketdata.persist")

TICKS_TABLE = "marketdata.ticks"
COVERAGE_TABLE = "marketdata.coverage"
GAPS_TABLE = "marketdata.gaps"
QUOTES_TABLE = "marketdata.quotes"

# ClickHouse error codes that mean "this data cannot be stored" rather than "try again later".
_DATA_ERROR_CODES = {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 130, 131, 349, 407, 691}
_CODE_RE = re.compile(r"Code: (\d+)")

# insert(parsed, allowed_cov): one insert of the entries, coverage only of allowed_cov.
Insert = Callable[[list[R.Parsed], list[R.Parsed]], None]
# wait_out(what, error, attempt): note a failure and wait before the next attempt.
WaitOut = Callable[[str, BaseException, int], None]


def is_data_error(exc: BaseException) -> bool:
    m = _CODE_RE.search(str(exc))
    return bool(m) and int(m.group(1)) in _DATA_ERROR_CODES


@dataclass
class InsertPlan:
    """The request bodies of one insert and their deduplication tokens (empty: nothing to send)."""
    ticks: bytes
    ticks_token: str | None
    quotes: bytes
    quotes_token: str | None
    gaps: bytes
    gaps_token: str | None
    coverage: bytes
    coverage_token: str | None
    gap_rows: int
    coverage_rows: int


def plan(parsed: list[R.Parsed], allowed_cov: list[R.Parsed]) -> InsertPlan | None:
    """The insert of ``parsed`` (coverage marks only of ``allowed_cov``); None if nothing to store."""
    with_ticks = sorted((p for p in parsed if p.line), key=lambda p: (p.stream, p.id))
    tick_payload = b"".join(p.line for p in with_ticks)
    tick_token = R.ids_token("ticks", with_ticks) if with_ticks else None
    gaps = R.gap_rows(g for p in parsed for g in p.gaps)
    gap_payload = R.json_each_row(gaps) if gaps else b""
    cov = R.merge_coverage((p.exchange, p.symbol, p.coverage, p.id_ms * 1000) for p in allowed_cov)
    cov_payload = R.json_each_row(cov) if cov else b""
    with_quotes = [p for p in parsed if p.quotes]
    quote_payload = b"".join(p.quotes for p in with_quotes)
    if not (tick_payload or gap_payload or cov_payload or quote_payload):
        return None
    return InsertPlan(
        tick_payload, tick_token,
        quote_payload, R.ids_token("quotes", with_quotes) if quote_payload else None,
        gap_payload, R.ids_token("gaps", (p for p in parsed if p.gaps), gap_payload) if gap_payload else None,
        cov_payload, R.ids_token("coverage", allowed_cov, cov_payload) if cov_payload else None,
        len(gaps), len(cov))


def send(client, p: InsertPlan) -> None:
    """Ticks, quotes, then gaps, then coverage, each one request with its deduplication token."""
    if p.ticks:
        client.command(R.tick_insert_sql(TICKS_TABLE), data=p.ticks,
                       settings={"insert_deduplication_token": p.ticks_token})
    if p.quotes:
        insert_json_rows(client, QUOTES_TABLE, R.QUOTE_COLUMNS, p.quotes, dedup_token=p.quotes_token)
    if p.gaps:
        insert_json_rows(client, GAPS_TABLE, R.GAP_COLUMNS, p.gaps, dedup_token=p.gaps_token)
    if p.coverage:
        insert_json_rows(client, COVERAGE_TABLE, R.COVERAGE_COLUMNS, p.coverage, dedup_token=p.coverage_token)


def store(insert: Insert, parsed: list[R.Parsed], allowed_cov: list[R.Parsed], fields_of: dict,
          wait_out: WaitOut) -> tuple[list[R.Parsed], list[DeadLetter]]:
    """Insert the batch, retrying until it is committed. Entries ClickHouse refuses as data
    are isolated and returned as dead letters; returns (stored, dead)."""
    dead: list[DeadLetter] = []
    attempt = 0
    while True:
        try:
            insert(parsed, allowed_cov)
            return parsed, dead
        except Exception as e:
            if not is_data_error(e):
                attempt += 1
                wait_out("insert", e, attempt)
                continue
            log.warning("persist: ClickHouse refused the batch's data (%s); finding the entries",
                        str(e).splitlines()[0][:300])
            bad = _find_bad(parsed, fields_of)
            if not bad:
                try:
                    bad = _bisect(insert, parsed, allowed_cov, fields_of)
                except Exception as e2:      # not a data error: wait, then start over
                    attempt += 1
                    wait_out("insert", e2, attempt)
                    continue
            if not bad:
                # Nothing to isolate (every part went in on its own): try the whole again.
                attempt += 1
                wait_out("insert", e, attempt)
                continue
            bad_keys = {(s, i) for s, i, _, _ in bad}
            dead += bad
            parsed = [p for p in parsed if (p.stream, p.id) not in bad_keys]
            allowed_cov = [p for p in allowed_cov if (p.stream, p.id) not in bad_keys]


def _find_bad(parsed: list[R.Parsed], fields_of: dict) -> list[DeadLetter]:
    bad = []
    for p in parsed:
        f = fields_of.get((p.stream, p.id))
        if f is None:
            continue
        try:
            R.validate_entry(f)
        except Exception as e:
            bad.append((p.stream, p.id, f, f"{type(e).__name__}: {e}"))
    return bad


def _bisect(insert: Insert, parsed: list[R.Parsed], allowed_cov: list[R.Parsed], fields_of: dict
            ) -> list[DeadLetter]:
    """Insert halves on their own to find entries ClickHouse refuses (each part has its own
    deduplication token, so what went in stays in once)."""
    cov_keys = {(p.stream, p.id) for p in allowed_cov}
    bad: list[DeadLetter] = []

    def go(part: list[R.Parsed]) -> None:
        if not part:
            return
        try:
            insert(part, [p for p in part if (p.stream, p.id) in cov_keys])
            return
        except Exception as e:
            if not is_data_error(e):
                raise
            if len(part) == 1:
                p = part[0]
                msg = str(e).splitlines()[0][:1000]
                bad.append((p.stream, p.id, fields_of.get((p.stream, p.id)) or {}, f"ClickHouse: {msg}"))
                return
        mid = len(part) // 2
        go(part[:mid])
        go(part[mid:])

    # Only entries that carry something can be refused.
    go([p for p in parsed if p.line or p.gaps or p.quotes or (p.stream, p.id) in cov_keys])
    return bad
