"""Apply the DDL in sql/ in file-name order. Every file is idempotent (IF NOT EXISTS), so applying
all of them again is safe; applied files are recorded with their checksum for the record.

The same DDL serves one server (the local one or any ClickHouse) and a cluster: with
``MARKETDATA_CLICKHOUSE_CLUSTER=<cluster>`` every statement runs ``ON CLUSTER <cluster>``, each
table ``t`` is stored as ``t_local``, the ``Replicated*MergeTree`` twin of its engine at
``/clickhouse/tables/{shard}/marketdata/t_local`` with replica ``{replica}`` (the macros every
ClickHouse cluster config defines), and ``t`` becomes a ``Distributed`` table over it, sharded by
symbol. Queries and inserts name ``t`` on one node and on a cluster alike. Replicated tables
deduplicate retried inserts by block hash or ``insert_deduplication_token`` in Keeper (so a retry
through another replica is caught too), over the same number of blocks the single-node table keeps
(``non_replicated_deduplication_window`` becomes ``replicated_deduplication_window``). README,
"ClickHouse cluster", has the layout and the semantics."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ..errors import ConfigError
from .clickhouse import ClickHouse


def sql_dir() -> Path:
    override = os.environ.get("MARKETDATA_SQL_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "sql"


def statements(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


_CREATE_RE = re.compile(r"^(\s*CREATE\s+(TABLE|DATABASE)\s+IF\s+NOT\s+EXISTS\s+([\w.]+))", re.I)
_ENGINE_RE = re.compile(r"ENGINE\s*=\s*(\w*MergeTree)(\s*\(([^)]*)\))?", re.I)
_ORDER_BY_RE = re.compile(r"\bORDER\s+BY\s+(\(([^)]*)\)|(\w+))", re.I)
_NON_REPLICATED_WINDOW_RE = re.compile(r"\bnon_replicated_deduplication_window\s*=\s*(\d+)", re.I)

# How long a replicated table keeps a block's hash, where its single-node twin keeps the last N
# blocks with no time bound (non_replicated_deduplication_window): 7 days, the default of older
# servers (this engine, 26.9, defaults to 1 hour: system.merge_tree_settings). It bounds what a retry can rely on: a persist worker that retries a batch
# after an outage longer than the window inserts it again (ReplacingMergeTree still collapses the rows).
REPLICATED_WINDOW_SECONDS = 7 * 24 * 3600
LOCAL_SUFFIX = "_local"


def sharding_key(stmt: str) -> str:
    """The Distributed table's sharding key: a hash of a prefix of the sorting key (exchange, symbol
    where the table starts with them), so every row a ReplacingMergeTree has to collapse, and every
    row of one symbol, lands on one shard: FINAL, argMax and per-symbol windows stay correct shard
    by shard."""
    m = _ORDER_BY_RE.search(stmt)
    if not m:
        raise ValueError(f"a table without ORDER BY cannot be sharded: {stmt[:80]}")
    cols = [c.strip() for c in (m.group(2) or m.group(3)).split(",")]
    prefix = cols[:2] if cols[:2] == ["exchange", "symbol"] else cols[:1]
    return f"cityHash64({', '.join(prefix)})"


def for_cluster(stmt: str, cluster: str | None) -> list[str]:
    """The statement(s) for a cluster, or ``[stmt]`` unchanged without one.

    On a cluster every CREATE runs ``ON CLUSTER``; a table ``db.t`` becomes ``db.t_local``, a
    ``Replicated*MergeTree`` at ``/clickhouse/tables/{shard}/db/t_local`` (replica ``{replica}``),
    plus ``db.t``, a ``Distributed`` table over it with the same columns. The platform queries and
    inserts ``db.t`` everywhere, so not one query changes between one node and a cluster: a read
    from any node sees every shard, an insert from any node reaches the right shard."""
    if not cluster:
        return [stmt]
    m = _CREATE_RE.match(stmt)
    if not m:
        return [stmt]
    on = f" ON CLUSTER `{cluster}`"
    if m.group(2).upper() == "DATABASE":
        return [stmt[:m.end()] + on + stmt[m.end():]]
    name = m.group(3)
    db, table = name.split(".") if "." in name else ("default", name)
    local = f"{db}.{table}{LOCAL_SUFFIX}"
    head = stmt[:m.start(3)] + local + on
    out = head + stmt[m.end():]

    def replicated(e: re.Match) -> str:
        engine, args = e.group(1), (e.group(3) or "").strip()
        if engine.lower().startswith("replicated"):
            return e.group(0)
        path = f"'/clickhouse/tables/{{shard}}/{db}/{table}{LOCAL_SUFFIX}', '{{replica}}'"
        return f"ENGINE = Replicated{engine}({path}{', ' + args if args else ''})"

    out = _ENGINE_RE.sub(replicated, out, count=1)
    # The single node's retry window, kept: the same number of blocks, now in Keeper, and a time
    # bound long enough for an outage. A table without one dedupes nothing on one node, and nothing
    # on a cluster either (window 0): a rebuild that writes the same rows again is applied, as there.
    window = _NON_REPLICATED_WINDOW_RE.search(out)
    if window:
        out = _NON_REPLICATED_WINDOW_RE.sub(
            f"replicated_deduplication_window = {window.group(1)}, "
            f"replicated_deduplication_window_seconds = {REPLICATED_WINDOW_SECONDS}", out)
    elif re.search(r"\bSETTINGS\b", out, re.I):
        out = out.rstrip() + ", replicated_deduplication_window = 0"
    else:
        out = out.rstrip() + "\nSETTINGS replicated_deduplication_window = 0"
    dist = (f"CREATE TABLE IF NOT EXISTS {db}.{table}{on} AS {local}\n"
            f"ENGINE = Distributed(`{cluster}`, {db}, {table}{LOCAL_SUFFIX}, {sharding_key(stmt)})")
    return [out, dist]


SCHEMA_MIGRATIONS = ("CREATE TABLE IF NOT EXISTS marketdata.schema_migrations (name String, sha256 String, "
                     "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name")


def layout_mismatch(c, cluster: str | None, stmts: list[str]) -> str | None:
    """What is wrong when the database was made for the other layout, else None. `CREATE ... IF NOT
    EXISTS` would silently keep a single-node table where the cluster needs a Distributed one (or
    the reverse), and the platform would run half-replicated without a word."""
    names = [m.group(3).split(".")[-1] for st in stmts if (m := _CREATE_RE.match(st)) and m.group(2).upper() == "TABLE"]
    rows = c.query("SELECT name, engine FROM system.tables WHERE database = 'marketdata' AND name IN {n:Array(String)}",
                   parameters={"n": names}).result_rows
    if cluster:
        single = sorted(n for n, engine in rows if engine != "Distributed")
        if single:
            return (f"MARKETDATA_CLICKHOUSE_CLUSTER={cluster}, but marketdata.{', marketdata.'.join(single)} "
                    "already exist as single-node tables; the cluster layout needs them as Distributed tables "
                    "over <table>_local. Migrate into a fresh database, or unset MARKETDATA_CLICKHOUSE_CLUSTER "
                    "(README, \"ClickHouse cluster\")")
    else:
        dist = sorted(n for n, engine in rows if engine == "Distributed")
        if dist:
            return (f"marketdata.{', marketdata.'.join(dist)} are Distributed tables (the cluster layout): set "
                    "MARKETDATA_CLICKHOUSE_CLUSTER to the cluster's name")
    return None


def migrate(ch: ClickHouse | None = None) -> list[str]:
    """Apply every sql/*.sql file; returns the names of the files applied."""
    ch = ch or ClickHouse()
    cluster = os.environ.get("MARKETDATA_CLICKHOUSE_CLUSTER") or None
    files = sorted(sql_dir().glob("*.sql"))
    if not files:
        raise RuntimeError(f"no DDL found in {sql_dir()} (set MARKETDATA_SQL_DIR to the repo's sql/ folder)")
    applied = []
    with ch.session() as c:
        problem = layout_mismatch(c, cluster, [st for f in files for st in statements(f.read_text())])
        if problem:
            raise ConfigError(problem)
        for f in files:
            text = f.read_text()
            for stmt in statements(text):
                for st in for_cluster(stmt, cluster):
                    c.command(st)
            applied.append(f.name)
        for st in for_cluster(SCHEMA_MIGRATIONS, cluster):
            c.command(st)
        rows = "\n".join(f'{{"name":"{f.name}","sha256":"{hashlib.sha256(f.read_bytes()).hexdigest()}"}}'
                         for f in files).encode()
        c.raw_insert("marketdata.schema_migrations", ["name", "sha256"], insert_block=rows, fmt="JSONEachRow")
    return applied
