"""Apply the DDL in sql/ in file-name order. Every file is idempotent (IF NOT EXISTS), so applying
all of them again is safe; applied files are recorded with their checksum for the record."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .clickhouse import ClickHouse


def sql_dir() -> Path:
    override = os.environ.get("MARKETDATA_SQL_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "sql"


def statements(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def migrate(ch: ClickHouse | None = None) -> list[str]:
    """Apply every sql/*.sql file; returns the names of the files applied."""
    ch = ch or ClickHouse()
    files = sorted(sql_dir().glob("*.sql"))
    if not files:
        raise RuntimeError(f"no DDL found in {sql_dir()} (set MARKETDATA_SQL_DIR to the repo's sql/ folder)")
    applied = []
    with ch.session() as c:
        for f in files:
            text = f.read_text()
            for stmt in statements(text):
                c.command(stmt)
            applied.append(f.name)
        c.command("CREATE TABLE IF NOT EXISTS marketdata.schema_migrations (name String, sha256 String, "
                  "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name")
        rows = "\n".join(f'{{"name":"{f.name}","sha256":"{hashlib.sha256(f.read_bytes()).hexdigest()}"}}'
                         for f in files).encode()
        c.raw_insert("marketdata.schema_migrations", ["name", "sha256"], insert_block=rows, fmt="JSONEachRow")
    return applied
