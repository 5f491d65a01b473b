"""The manifest written next to an export: what was asked, how complete it is, what was lost.

``manifest.json`` (one per dataset directory, e.g. OUT/bars/manifest.json):

    format            "marketdata-export/1"
    dataset           bars | ticks
    query             venues, symbols, pairs, from / to (the exact [from, to) range, ISO UTC and µs)
    generated_at      when this export ran
    days              "exchange/symbol/YYYY-MM-DD" -> path, rows, max_version, checksum, expected,
                      stored (complete minutes), written_at: every day file in the directory,
                      carried over from earlier exports unless rewritten
    written, unchanged  the day keys this run wrote / found unchanged (and so left alone)
    completeness      per "exchange:symbol": expected, stored, missing totals and per hour
                      {"2026-01-05T10:00Z": [expected, stored]}, plus "missing_minutes" (ISO
                      minutes, from the same audit as the Dagster check)
    gaps              every gap of marketdata.gaps overlapping the range: where, how found,
                      status, repaired (bool), how, and the trades recovered
    build_versions    per "exchange:symbol": min and max build_version of the exported bars

A backtest can refuse data it should not trust by reading ``completeness`` (or ``days``) first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..bars.completeness import HourAudit
from ..bars.universe import Pair, pair_key, pairs_param
from ..clock import iso_hour, iso_minute

FORMAT = "marketdata-export/1"
FILENAME = "manifest.json"

GAPS_SQL = """
SELECT exchange, symbol, gap_id, from_us, to_us, from_id, to_id, found_by, status, repaired_by,
       recovered, detected_us, updated_us, detail
FROM marketdata.gaps FINAL
WHERE (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
  AND to_us >= {a:Int64} AND from_us < {b:Int64}
ORDER BY exchange, symbol, from_us, gap_id
"""

VERSIONS_SQL = """
SELECT exchange, symbol, min(build_version), max(build_version)
FROM marketdata.bars_1m FINAL
WHERE (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
  AND minute >= toDateTime(intDiv({a:Int64}, 1000000), 'UTC')
  AND minute < toDateTime(intDiv({b:Int64}, 1000000), 'UTC')
GROUP BY exchange, symbol
SETTINGS do_not_merge_across_partitions_select_final = 1
"""


def read_manifest(directory: Path) -> dict[str, Any]:
    p = Path(directory) / FILENAME
    if not p.exists():
        return {}
    try:
        m = orjson.loads(p.read_bytes())
    except orjson.JSONDecodeError:
        return {}                        # unreadable: everything is rewritten, nothing trusted
    return m if m.get("format") == FORMAT else {}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Atomically (write to a temp file, then rename)."""
    p = Path(directory) / FILENAME
    tmp = p.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    tmp.replace(p)
    return p


def gaps(client, pairs: list[Pair], start_us: int, end_us: int) -> list[dict[str, Any]]:
    rows = client.query(GAPS_SQL, parameters={"pairs": pairs_param(pairs), "a": start_us, "b": end_us}).result_rows
    cols = ["exchange", "symbol", "gap_id", "from_us", "to_us", "from_id", "to_id", "found_by", "status",
            "repaired_by", "recovered", "detected_us", "updated_us", "detail"]
    out = []
    for r in rows:
        g = dict(zip(cols, r))
        g.update({k: int(g[k]) for k in ("from_us", "to_us", "recovered", "detected_us", "updated_us")})
        g["repaired"] = g["status"] == "repaired"
        g["from"], g["to"] = iso_us(g["from_us"]), iso_us(g["to_us"])
        out.append(g)
    return out


def build_versions(client, pairs: list[Pair], start_us: int, end_us: int) -> dict[str, dict[str, int]]:
    rows = client.query(VERSIONS_SQL, parameters={"pairs": pairs_param(pairs), "a": start_us, "b": end_us}).result_rows
    return {pair_key((e, s)): {"min": int(lo), "max": int(hi)} for e, s, lo, hi in rows}


def completeness_section(audits: list[HourAudit]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in sorted(audits, key=lambda a: (a.key, a.hour_start_us)):
        c = out.setdefault(a.key, {"expected": 0, "stored": 0, "missing": 0, "hours": {}, "missing_minutes": []})
        c["expected"] += a.expected
        c["stored"] += a.stored
        c["missing"] += a.missing
        c["hours"][iso_hour(a.hour_start_us)] = [a.expected, a.stored]
        c["missing_minutes"].extend(a.missing_minutes)
    for c in out.values():
        c["complete"] = c["missing"] == 0
    return out


def day_completeness(audits: list[HourAudit]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """{(exchange, symbol, day): (expected, stored)} from the hourly audits."""
    out: dict[tuple[str, str, str], list[int]] = {}
    for a in audits:
        k = (a.exchange, a.symbol, iso_minute(a.hour_start_us)[:10])
        v = out.setdefault(k, [0, 0])
        v[0] += a.expected
        v[1] += a.stored
    return {k: (v[0], v[1]) for k, v in out.items()}


def iso_us(ts_us: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(ts_us / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
