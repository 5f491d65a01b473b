"""Apply the DDL in sql/ in file-name order. Every file is idempotent (IF NOT EXISTS), so applying
all of them again is safe; applied files are recorded with their checksum for the record.

The same DDL serves one server (the local one or any ClickHouse) and a cluster: with
``MARKETDATA_CLICKHOUSE_CLUSTER=<cluster>`` every statement runs ``ON CLUSTER <cluster>`` and each
``*MergeTree`` engine becomes its ``Replicated*MergeTree`` twin at
``/clickhouse/tables/{shard}/marketdata/<table>`` with replica ``{replica}`` (the macros every
ClickHouse cluster config defines). Replicated tables deduplicate retried inserts by block hash or
``insert_deduplication_token`` over ``replicated_deduplication_window`` blocks (default 1000, kept in
Keeper, so a retry through another replica is caught too); ``non_replicated_deduplication_window``
applies to single-node tables only and is dropped from the replicated variant."""

from __future__ import annotations

import hashlib
import os
import re
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


_CREATE_RE = re.compile(r"^(\s*CREATE\s+(?:TABLE|DATABASE)\s+IF\s+NOT\s+EXISTS\s+([\w.]+))", re.I)
_ENGINE_RE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)(\s*\(([^)]*)\))?", re.I)


def for_cluster(stmt: str, cluster: str | None) -> str:
    """The statement for a cluster (ON CLUSTER, Replicated engines), or unchanged without one."""
    if not cluster:
        return stmt
    m = _CREATE_RE.match(stmt)
    if not m:
        return stmt
    name = m.group(2)
    out = stmt[:m.end()] + f" ON CLUSTER `{cluster}`" + stmt[m.end():]

    def replicated(e: re.Match) -> str:
        engine, args = e.group(1), (e.group(3) or "").strip()
        if engine.lower().startswith("replicated"):
            return e.group(0)
        table = name.split(".")[-1]
        path = f"'/clickhouse/tables/{{shard}}/marketdata/{table}', '{{replica}}'"
        return f"ENGINE = Replicated{engine}({path}{', ' + args if args else ''})"

    out = _ENGINE_RE.sub(replicated, out)
    out = re.sub(r",?\s*non_replicated_deduplication_window\s*=\s*\d+", "", out)
    return re.sub(r"\bSETTINGS\s*$", "", out.rstrip()).rstrip()


def migrate(ch: ClickHouse | None = None) -> list[str]:
    """Apply every sql/*.sql file; returns the names of the files applied."""
    ch = ch or ClickHouse()
    cluster = os.environ.get("MARKETDATA_CLICKHOUSE_CLUSTER") or None
    files = sorted(sql_dir().glob("*.sql"))
    if not files:
        raise RuntimeError(f"no DDL found in {sql_dir()} (set MARKETDATA_SQL_DIR to the repo's sql/ folder)")
    applied = []
    with ch.session() as c:
        for f in files:
            text = f.read_text()
            for stmt in statements(text):
                c.command(for_cluster(stmt, cluster))
            applied.append(f.name)
        c.command(for_cluster("CREATE TABLE IF NOT EXISTS marketdata.schema_migrations (name String, sha256 String, "
                              "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree "
                              "ORDER BY name", cluster))
        rows = "\n".join(f'{{"name":"{f.name}","sha256":"{hashlib.sha256(f.read_bytes()).hexdigest()}"}}'
                         for f in files).encode()
        c.raw_insert("marketdata.schema_migrations", ["name", "sha256"], insert_block=rows, fmt="JSONEachRow")
    return applied
