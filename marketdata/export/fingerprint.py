"""Per-day content fingerprints of what an export writes, computed inside ClickHouse.

One query per dataset returns, per (exchange, symbol, UTC day): rows, the newest build (bars) or
tick version, and a checksum over every exported column of every row (a sum of row hashes, so it
does not depend on row order). An export compares them with the manifest of the previous export
and rewrites only the days whose fingerprint changed. Tick files carry each tick's minute
completeness, so a tick day's fingerprint also folds in the day's complete minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bars.build import TICKS_FINAL
from ..bars.universe import Pair, pairs_param

BARS_DAYS_SQL = """
SELECT exchange, symbol, toString(toDate(minute)) AS day, count() AS n_rows, max(build_version) AS max_version,
       sum(cityHash64(minute, open, high, low, close, volume, trade_count, vwap, complete, build_version)) AS checksum
FROM marketdata.bars_1m FINAL
WHERE (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
  AND minute >= toDateTime(intDiv({a:Int64}, 1000000), 'UTC')
  AND minute < toDateTime(intDiv({b:Int64}, 1000000), 'UTC')
GROUP BY exchange, symbol, day
SETTINGS do_not_merge_across_partitions_select_final = 1
"""

TICKS_DAYS_SQL = f"""
SELECT exchange, symbol, toString(toDate(fromUnixTimestamp64Micro(ts_us))) AS day, count() AS n_rows,
       max(version) AS max_version,
       sum(cityHash64(trade_id, ts_us, open, high, low, close, volume, trade_count, side, source, event, version))
FROM marketdata.ticks FINAL
WHERE (exchange, symbol) IN {{pairs:Array(Tuple(String, String))}}
  AND ts_us >= {{a:Int64}} AND ts_us < {{b:Int64}}
GROUP BY exchange, symbol, day
SETTINGS {TICKS_FINAL}
"""

COMPLETE_MINUTES_SQL = """
SELECT exchange, symbol, toString(toDate(minute)) AS day,
       sum(cityHash64(minute)) AS checksum
FROM marketdata.bars_1m FINAL
WHERE (exchange, symbol) IN {pairs:Array(Tuple(String, String))}
  AND minute >= toDateTime(intDiv({a:Int64}, 1000000), 'UTC')
  AND minute < toDateTime(intDiv({b:Int64}, 1000000), 'UTC')
  AND complete = 1
GROUP BY exchange, symbol, day
SETTINGS do_not_merge_across_partitions_select_final = 1
"""

DayKey = tuple[str, str, str]          # (exchange, symbol, "YYYY-MM-DD")


@dataclass(frozen=True)
class DayPrint:
    rows: int
    version: int                       # max build_version (bars) or tick version (ticks)
    checksum: str

    def as_dict(self) -> dict:
        return {"rows": self.rows, "max_version": self.version, "checksum": self.checksum}


def day_prints(client, kind: str, pairs: list[Pair], start_us: int, end_us: int) -> dict[DayKey, DayPrint]:
    """{(exchange, symbol, day): DayPrint} of the days with data in [start_us, end_us)."""
    params = {"pairs": pairs_param(pairs), "a": start_us, "b": end_us}
    sql = BARS_DAYS_SQL if kind == "bars" else TICKS_DAYS_SQL
    out = {(str(e), str(s), str(d)): DayPrint(int(n), int(v), f"{int(h):016x}")
           for e, s, d, n, v, h in client.query(sql, parameters=params).result_rows}
    if kind == "ticks":
        done = {(str(e), str(s), str(d)): int(h) for e, s, d, h in
                client.query(COMPLETE_MINUTES_SQL, parameters=params).result_rows}
        out = {k: DayPrint(p.rows, p.version, f"{p.checksum}-{done.get(k, 0):016x}") for k, p in out.items()}
    return out
