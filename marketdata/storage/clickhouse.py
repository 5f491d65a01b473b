"""ClickHouse access: the embedded engine (chdb) or a server, through clickhouse-connect.

The embedded engine can be held by one process at a time (ClickHouse locks its data dir), so
every unit of work opens it inside ``ClickHouse.session()``, which takes an inter-process lock
first and closes the engine after. The lock is fair: a process waiting for the store gets it
before a busy process (the persist worker) can take it again. With a server URL the same
``session()`` hands out a pooled HTTP client and takes no lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse, unquote

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from .. import settings


class _FairFileLock:
    """Inter-process lock with a turnstile: waiters queue on the gate while holding it, so the
    process that just released ``main`` cannot overtake them."""

    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.gate_path = path / "gate"
        self.main_path = path / "main"

    @contextmanager
    def hold(self) -> Iterator[None]:
        gate = os.open(self.gate_path, os.O_RDWR | os.O_CREAT, 0o644)
        main = os.open(self.main_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(gate, fcntl.LOCK_EX)
            try:
                fcntl.flock(main, fcntl.LOCK_EX)
            finally:
                fcntl.flock(gate, fcntl.LOCK_UN)
            try:
                yield
            finally:
                fcntl.flock(main, fcntl.LOCK_UN)
        finally:
            os.close(gate)
            os.close(main)


class ClickHouse:
    """Factory of ClickHouse sessions for one URL (chdb://path or http(s)://host)."""

    _local = threading.local()          # re-entrancy: nested sessions in one thread share a client
    _process_lock = threading.RLock()   # one engine per process: threads take turns

    def __init__(self, url: str | None = None, database: str = settings.CLICKHOUSE_DATABASE):
        self.url = url or settings.clickhouse_url()
        self.database = database
        parsed = urlparse(self.url)
        self.embedded = parsed.scheme == "chdb"
        if self.embedded:
            self.path = Path(unquote(parsed.netloc + parsed.path)).expanduser().resolve()
            self._lock = _FairFileLock(self.path.parent / (self.path.name + ".lock"))
        elif parsed.scheme not in ("http", "https"):
            raise ValueError(f"MARKETDATA_CLICKHOUSE_URL scheme {parsed.scheme!r} is not supported: "
                             "use chdb:///path for the embedded engine or http(s)://host:port for a server")
        self._http_client: Client | None = None

    def __repr__(self) -> str:
        return f"ClickHouse({settings.redact(self.url)})"

    def _open_http(self) -> Client:
        p = urlparse(self.url)
        password = unquote(p.password) if p.password else os.environ.get("MARKETDATA_CLICKHOUSE_PASSWORD", "")
        db = p.path.strip("/") or self.database
        self.database = db
        return clickhouse_connect.get_client(
            host=p.hostname, port=p.port or (8443 if p.scheme == "https" else 8123),
            username=unquote(p.username) if p.username else "default", password=password,
            secure=p.scheme == "https", database="default",
            settings={"async_insert": 0})

    @contextmanager
    def session(self) -> Iterator[Client]:
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == self.url:
            yield held[1]
            return
        if not self.embedded:
            if self._http_client is None:
                self._http_client = self._open_http()
            self._local.held = (self.url, self._http_client)
            try:
                yield self._http_client
            finally:
                self._local.held = None
            return
        with self._process_lock, self._lock.hold():
            self.path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{self.path}")
            self._local.held = (self.url, client)
            try:
                yield client
            finally:
                self._local.held = None
                client.close()

    # Small conveniences for callers that need one statement.
    def command(self, sql: str, parameters: dict | None = None, settings: dict | None = None):
        with self.session() as c:
            return c.command(sql, parameters=parameters, settings=settings)

    def rows(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        with self.session() as c:
            return c.query(sql, parameters=parameters).result_rows

    def close(self) -> None:
        if self._http_client is not None:
            self._http_client.close()
            self._http_client = None


def insert_json_rows(client: Client, table: str, columns: list[str], rows: bytes,
                     dedup_token: str | None = None) -> None:
    """Insert newline-separated JSON objects; with a token, a retried batch is inserted once."""
    settings_: dict = {"input_format_skip_unknown_fields": 1}
    if dedup_token:
        settings_["insert_deduplication_token"] = dedup_token
    client.raw_insert(table, columns, insert_block=rows, fmt="JSONEachRow", settings=settings_)
