"""Export bars or ticks to Parquet, partitioned by venue, symbol and UTC day (hive style), with a
manifest, rewriting only the days that changed since the last export into the same directory.

    OUT/bars/exchange=binance/symbol=BTC-USDT/date=2026-01-05/part-0.parquet
    OUT/bars/manifest.json                      (see marketdata.export.manifest)

Files hold the columns of ``marketdata.read.bars`` (1m) / ``ticks`` except the partition keys;
``read_export`` (or any hive-aware reader: polars, pyarrow, DuckDB, Spark) gives the frame back.

Incremental: every day's content fingerprint (rows, newest build or tick version, checksum of
every row; ``marketdata.export.fingerprint``) is stored in the manifest; a day is written again
only if its fingerprint differs or its file is gone. Data is read from ClickHouse as Arrow in
chunks of up to ``CHUNK_DAYS`` days (one query per chunk for all pairs), each chunk's day files are
written by pyarrow's dataset writer in one pass, replacing those partitions, and the manifest is
written last, so after an interruption the next run finds fingerprints that do not match and
writes those days again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from ..bars.universe import Pair, pair_key
from ..clock import US_PER_DAY, format_us, now_us
from ..read.bars import SCHEMA_1M, query_bars_1m
from ..read.completeness import audits_for
from ..read.ticks import SCHEMA as TICKS_SCHEMA
from ..read.ticks import query_ticks
from ..storage.clickhouse import ClickHouse
from . import manifest as mf
from .fingerprint import DayKey, day_prints

CHUNK_DAYS = 31
KINDS = ("bars", "ticks")
PARTITION_COLS = ["exchange", "symbol", "date"]


@dataclass
class ExportResult:
    kind: str
    directory: Path
    manifest_path: Path
    start_us: int
    end_us: int
    pairs: list[Pair]
    written: list[str] = field(default_factory=list)     # day keys "exchange/symbol/day"
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rows_written: int = 0
    expected: int = 0
    stored: int = 0
    missing_minutes: dict[str, list[str]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def completeness_pct(self) -> float:
        return round(100.0 * self.stored / self.expected, 4) if self.expected else 100.0


def day_key(k: DayKey) -> str:
    return f"{k[0]}/{k[1]}/{k[2]}"


def day_path(k: DayKey) -> str:
    return f"exchange={k[0]}/symbol={k[1]}/date={k[2]}/part-0.parquet"


def _day_start_us(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()) * 1_000_000


def _chunks(days: list[str], start_us: int, end_us: int) -> list[tuple[int, int]]:
    """Sorted days -> [(a, b)] ranges of up to CHUNK_DAYS consecutive days, clipped to the range."""
    out: list[tuple[int, int]] = []
    for d in days:
        a = _day_start_us(d)
        if out and a == out[-1][1] and (a - out[-1][0]) < CHUNK_DAYS * US_PER_DAY:
            out[-1] = (out[-1][0], a + US_PER_DAY)
        else:
            out.append((a, a + US_PER_DAY))
    return [(max(a, start_us), min(b, end_us)) for a, b in out]


def read_frame(client, kind: str, pairs: list[Pair], a: int, b: int) -> pl.DataFrame:
    return query_bars_1m(client, pairs, a, b) if kind == "bars" else query_ticks(client, pairs, a, b)


def export(store: ClickHouse, kind: str, pairs: list[Pair], start_us: int, end_us: int, out_dir: str | Path, *,
           progress: bool = True, query: dict[str, Any] | None = None) -> ExportResult:
    """Write ``kind`` (bars | ticks) of ``pairs`` over [start_us, end_us) under OUT/kind/."""
    if kind not in KINDS:
        raise ValueError(f"export kind {kind!r} is not one of {', '.join(KINDS)}")
    t0 = time.monotonic()
    directory = Path(out_dir) / kind
    directory.mkdir(parents=True, exist_ok=True)
    old = mf.read_manifest(directory)
    old_days: dict[str, dict] = old.get("days", {})
    want = set(pairs)
    with store.session() as c:
        prints = day_prints(c, kind, pairs, start_us, end_us)
        audits = audits_for(store, pairs, start_us, end_us)
        gaps = mf.gaps(c, pairs, start_us, end_us)
        versions = mf.build_versions(c, pairs, start_us, end_us)
        changed: list[DayKey] = []
        unchanged: list[DayKey] = []
        for k, p in sorted(prints.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
            prev = old_days.get(day_key(k))
            same = (prev is not None and prev.get("checksum") == p.checksum and prev.get("rows") == p.rows
                    and prev.get("max_version") == p.version and prev.get("range") == _day_range(k, start_us, end_us)
                    and (directory / day_path(k)).exists())
            (unchanged if same else changed).append(k)
        result = ExportResult(kind, directory, directory / mf.FILENAME, start_us, end_us, list(pairs),
                              unchanged=[day_key(k) for k in unchanged])
        bar = _progress(len(changed), f"export {kind}", progress)
        by_day: dict[str, set[DayKey]] = {}
        for k in changed:
            by_day.setdefault(k[2], set()).add(k)
        now = format_us(now_us())
        new_days = dict(old_days)
        for a, b in _chunks(sorted(by_day), start_us, end_us):
            keys = {k for d, ks in by_day.items() if a <= _day_start_us(d) + US_PER_DAY - 1 and _day_start_us(d) < b
                    for k in ks}
            frame = read_frame(c, kind, sorted({(k[0], k[1]) for k in keys}), a, b)
            frame = frame.with_columns(date=pl.col("time").dt.date().cast(pl.String))
            wanted = pl.DataFrame([list(x) for x in zip(*sorted(keys))], schema=PARTITION_COLS, orient="col")
            frame = frame.join(wanted, on=PARTITION_COLS, how="semi", maintain_order="left")
            write_partitions(frame, directory)
            counts = dict(frame.group_by(PARTITION_COLS).len().select(
                pl.concat_str(PARTITION_COLS, separator="/"), "len").iter_rows())
            for k in sorted(keys):
                p = prints[k]
                new_days[day_key(k)] = {"path": day_path(k), **p.as_dict(), "written_at": now,
                                        "range": _day_range(k, start_us, end_us)}
                result.written.append(day_key(k))
                result.rows_written += int(counts.get(day_key(k), 0))
            bar.update(len(keys))
        bar.close()
    # days of these pairs inside the range that have no data any more: their files go
    for key in list(new_days):
        ex, sym, day = key.split("/")
        d0 = _day_start_us(day)
        if (ex, sym) in want and start_us <= d0 and d0 + US_PER_DAY <= end_us and (ex, sym, day) not in prints:
            shutil.rmtree(directory / f"exchange={ex}/symbol={sym}/date={day}", ignore_errors=True)
            del new_days[key]
            result.removed.append(key)
    per_day = mf.day_completeness(audits)
    for k in prints:
        e, s = per_day.get(k, (0, 0))
        new_days[day_key(k)].update({"expected": e, "stored": s})
    comp = mf.completeness_section(audits)
    result.expected = sum(v["expected"] for v in comp.values())
    result.stored = sum(v["stored"] for v in comp.values())
    result.missing_minutes = {k: v["missing_minutes"] for k, v in comp.items() if v["missing_minutes"]}
    manifest = {
        "format": mf.FORMAT, "dataset": kind,
        "query": {**(query or {}), "pairs": [pair_key(p) for p in pairs], "from": format_us(start_us), "to": format_us(end_us),
                  "from_us": start_us, "to_us": end_us, "interval": "1m" if kind == "bars" else "tick",
                  "columns": [c for c in (SCHEMA_1M if kind == "bars" else TICKS_SCHEMA)]},
        "generated_at": format_us(now_us()),
        "partitioning": PARTITION_COLS,
        "days": dict(sorted(new_days.items())),
        "written": result.written, "unchanged": result.unchanged, "removed": result.removed,
        "completeness": comp, "gaps": gaps, "build_versions": versions,
    }
    mf.write_manifest(directory, manifest)
    result.elapsed_s = round(time.monotonic() - t0, 3)
    return result


def write_partitions(frame: pl.DataFrame, directory: Path) -> None:
    """One Parquet file per (exchange, symbol, date) of ``frame``, hive style, replacing the
    partitions it writes (pyarrow's dataset writer: multi-threaded, one pass over the frame)."""
    import pyarrow.dataset as ds

    if frame.height == 0:
        return
    table = frame.to_arrow()
    ds.write_dataset(
        table, directory, format="parquet",
        partitioning=ds.partitioning(table.select(PARTITION_COLS).schema, flavor="hive"),
        basename_template="part-{i}.parquet", existing_data_behavior="delete_matching",
        file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
        max_rows_per_file=0, max_rows_per_group=1 << 20, use_threads=True)


def _day_range(k: DayKey, start_us: int, end_us: int) -> str:
    """The part of day k this export covers (a day cut by the range is a different content)."""
    d0 = _day_start_us(k[2])
    return f"{max(d0, start_us)}-{min(d0 + US_PER_DAY, end_us)}"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="file")


def read_export(directory: str | Path, kind: str = "bars") -> pl.DataFrame:
    """An export directory (OUT or OUT/kind) -> the frame ``bars()`` / ``ticks()`` returned."""
    d = Path(directory)
    if (d / kind).is_dir():
        d = d / kind
    schema = SCHEMA_1M if kind == "bars" else TICKS_SCHEMA
    lf = pl.scan_parquet(d / "**" / "*.parquet", hive_partitioning=True,
                         hive_schema={"exchange": pl.String, "symbol": pl.String, "date": pl.String})
    return lf.select(schema).sort("exchange", "symbol", "time", maintain_order=True).collect()


ENV_EXPORT_DIR = "MARKETDATA_EXPORT_DIR"


def default_export_dir() -> Path:
    """$MARKETDATA_EXPORT_DIR, else <data dir>/exports."""
    import os

    from ..settings import data_dir
    return Path(os.environ.get(ENV_EXPORT_DIR) or data_dir() / "exports")
