"""The ClickHouse cluster variant of sql/ (MARKETDATA_CLICKHOUSE_CLUSTER): every statement is valid
ClickHouse SQL by the engine's own parser, runs ON CLUSTER, stores each table in a Replicated twin
of its single-node engine at a {shard}/{replica} path, puts a Distributed table with the original
name over it, and differs from the single-node table in nothing else.

No multi-node cluster runs here (the local server is the embedded engine: no Keeper, no distributed
DDL, no remote shards), so the statements are checked by ClickHouse's parser on the local server
(`formatQuery`) and compared, canonically formatted, with the single-node statements; the settings
they name are checked against the engine's own tables of settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from marketdata.storage.clickhouse import ClickHouse
from marketdata.storage.migrate import (LOCAL_SUFFIX, REPLICATED_WINDOW_SECONDS, SCHEMA_MIGRATIONS, for_cluster,
                                        sql_dir, statements)

from .harness import REPO

CLUSTER = "prod"


def _all_statements() -> list[str]:
    out = [st for f in sorted(sql_dir().glob("*.sql")) for st in statements(f.read_text())]
    return out + [SCHEMA_MIGRATIONS]


def _tables() -> list[str]:
    return [st for st in _all_statements() if re.match(r"\s*CREATE\s+TABLE", st, re.I)]


def fmt(ch: ClickHouse, sql: str) -> str:
    """ClickHouse's own canonical formatting of a statement (raises on invalid SQL)."""
    return ch.rows("SELECT formatQuery({q:String})", {"q": sql})[0][0]


def test_single_node_statements_are_unchanged():
    for st in _all_statements():
        assert for_cluster(st, None) == [st]
        assert for_cluster(st, "") == [st]


def test_every_cluster_statement_parses_and_runs_on_cluster(clickhouse):
    n = 0
    for st in _all_statements():
        for v in for_cluster(st, CLUSTER):
            formatted = fmt(clickhouse, v)
            assert f"ON CLUSTER {CLUSTER}" in formatted, formatted
            n += 1
    # database + (local + distributed) per table
    assert n == 1 + 2 * len(_tables()) and len(_tables()) >= 8


def _strip_cluster(formatted_local: str, table: str) -> str:
    """Undo exactly what the cluster variant may change in a table: its name, ON CLUSTER, the
    Replicated prefix and path arguments, and the replicated deduplication settings."""
    s = formatted_local.replace(f"{table}{LOCAL_SUFFIX} ON CLUSTER {CLUSTER}", table)
    s = re.sub(r"ENGINE = Replicated(\w*MergeTree)\('/clickhouse/tables/\{shard\}/marketdata/"
               + re.escape(table + LOCAL_SUFFIX) + r"', '\{replica\}'(?:, )?", r"ENGINE = \1(", s)
    s = s.replace("MergeTree()", "MergeTree")
    return re.sub(r"\s*SETTINGS .*$", "", s, flags=re.S)


def test_local_tables_are_replicated_twins_of_the_single_node_tables(clickhouse):
    """Columns, types, defaults, indexes, engine arguments, partitioning and sorting key of every
    `<t>_local` equal the single-node `<t>`; only the name, ON CLUSTER, the Replicated engine with
    the {shard}/{replica} macros and the deduplication settings differ."""
    for st in _tables():
        table = re.search(r"EXISTS\s+marketdata\.(\w+)", st).group(1)
        local, dist = for_cluster(st, CLUSTER)
        single = fmt(clickhouse, st)
        f_local = fmt(clickhouse, local)
        assert f"marketdata.{table}{LOCAL_SUFFIX} ON CLUSTER {CLUSTER}" in f_local
        assert re.search(r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{shard\}/marketdata/"
                         + re.escape(table + LOCAL_SUFFIX) + r"', '\{replica\}'", f_local), f_local
        assert _strip_cluster(f_local, table) == re.sub(r"\s*SETTINGS .*$", "", single, flags=re.S), table
        # The single node's retry window carries over (same block count, kept in Keeper, 7 days);
        # a table that dedupes nothing on one node dedupes nothing on the cluster.
        window = re.search(r"non_replicated_deduplication_window = (\d+)", single)
        assert "non_replicated_deduplication_window" not in f_local
        if window:
            assert f"replicated_deduplication_window = {window.group(1)}" in f_local
            assert f"replicated_deduplication_window_seconds = {REPLICATED_WINDOW_SECONDS}" in f_local
        else:
            assert "replicated_deduplication_window = 0" in f_local


def test_distributed_tables_keep_the_names_and_shard_by_a_sorting_key_prefix(clickhouse):
    """`<t>` is Distributed over `<t>_local` on the same cluster, so every query of the platform
    names the same table on one node and on a cluster; its sharding key hashes a prefix of the
    sorting key, so all versions of a row (and all rows of a symbol) meet on one shard and the
    ReplacingMergeTree collapses them there."""
    for st in _tables():
        table = re.search(r"EXISTS\s+marketdata\.(\w+)", st).group(1)
        order_by = re.search(r"ORDER BY \(?([^)\n]*)\)?", fmt(clickhouse, st)).group(1)
        sort_cols = [c.strip() for c in order_by.split(",")]
        f_dist = fmt(clickhouse, for_cluster(st, CLUSTER)[1])
        m = re.fullmatch(rf"CREATE TABLE IF NOT EXISTS marketdata\.{table} ON CLUSTER {CLUSTER} AS "
                         rf"marketdata\.{table}{LOCAL_SUFFIX}\s+ENGINE = Distributed\({CLUSTER}, marketdata, "
                         rf"{table}{LOCAL_SUFFIX}, cityHash64\(([^)]*)\)\)", f_dist.strip())
        assert m, f_dist
        key = [c.strip() for c in m.group(1).split(",")]
        assert key == sort_cols[:len(key)], (table, key, sort_cols)
        if sort_cols[:2] == ["exchange", "symbol"]:
            assert key == ["exchange", "symbol"]


def test_the_settings_the_cluster_variant_names_exist_in_the_engine(clickhouse):
    names = {r[0] for r in clickhouse.rows(
        "SELECT name FROM system.merge_tree_settings WHERE name LIKE 'replicated_deduplication_window%'")}
    assert {"replicated_deduplication_window", "replicated_deduplication_window_seconds"} <= names
    session = {r[0] for r in clickhouse.rows(
        "SELECT name FROM system.settings WHERE name IN ('insert_distributed_sync', 'distributed_product_mode', "
        "'insert_deduplication_token')")}
    assert session == {"insert_distributed_sync", "distributed_product_mode", "insert_deduplication_token"}


@pytest.mark.parametrize("cluster", ["", CLUSTER])
def test_clients_on_a_cluster_insert_synchronously_and_run_subqueries_globally(clickhouse_server, monkeypatch,
                                                                            cluster):
    """The client settings reach the server: with a cluster configured, an INSERT into a
    Distributed table returns only after the shards committed (persist acks after that), and
    IN/JOIN subqueries over Distributed tables are GLOBAL; on one node nothing is set."""
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_CLUSTER", cluster)
    ch = ClickHouse(clickhouse_server.url)
    try:
        got = ch.rows("SELECT getSetting('insert_distributed_sync'), getSetting('distributed_product_mode')")[0]
    finally:
        ch.close()
    assert got == ((1, "global") if cluster else (0, "deny"))


def test_migrate_refuses_a_cluster_setting_over_single_node_tables(clickhouse_server, clickhouse, tmp_path):
    """A database made for one node, migrated with MARKETDATA_CLICKHOUSE_CLUSTER set: `IF NOT EXISTS`
    would keep the single-node tables where Distributed ones belong. `marketdata migrate` stops
    first (exit 2, nothing sent ON CLUSTER) and names the tables and what to do; without the
    setting it applies cleanly again."""
    env = dict(os.environ, MARKETDATA_CLICKHOUSE_URL=clickhouse_server.url, MARKETDATA_HOME=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "marketdata.cli", "migrate"], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env={**env, "MARKETDATA_CLICKHOUSE_CLUSTER": CLUSTER})
    assert p.returncode == 2, p.stderr
    assert f"MARKETDATA_CLICKHOUSE_CLUSTER={CLUSTER}" in p.stderr and "marketdata.ticks" in p.stderr
    assert "Traceback" not in p.stderr
    assert clickhouse.rows("SELECT engine FROM system.tables WHERE database = 'marketdata' AND name = 'ticks'") \
        == [("ReplacingMergeTree",)]
    p = subprocess.run([sys.executable, "-m", "marketdata.cli", "migrate"], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env={k: v for k, v in env.items() if k != "MARKETDATA_CLICKHOUSE_CLUSTER"})
    assert p.returncode == 0 and "002_ticks.sql" in p.stdout, p.stderr
