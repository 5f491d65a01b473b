"""ClickHouse access: one code path, clickhouse-connect over HTTP, to any ClickHouse server.

The URL is ``MARKETDATA_CLICKHOUSE_URL`` (``http(s)://user@host:port/db``; the password, if not
in the URL, from ``MARKETDATA_CLICKHOUSE_PASSWORD``) or, unset, the local server of the data dir
that ``marketdata up`` or ``marketdata clickhouse`` started (its URL is in
``<data dir>/clickhouse-server/url``). The local server is the embedded engine behind ClickHouse's
HTTP interface (``clickhouse_server.py``); this module also starts and stops it as a child process
(``LocalClickHouse``), as ``redis.py`` does for redis-server.

``ClickHouse.session()`` hands out the process's one HTTP client (thread-safe, pooled
connections, no ClickHouse session, so concurrent queries from threads never lock each other);
there is no lock and nothing to open per unit of work.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from .. import settings
from ..procs import default_signals, terminate


def _loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ClickHouse:
    """The ClickHouse store at one URL (http(s)://host:port[/database])."""

    def __init__(self, url: str | None = None, database: str = settings.CLICKHOUSE_DATABASE):
        self.url = url or settings.clickhouse_url()
        self.database = database
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"MARKETDATA_CLICKHOUSE_URL scheme {parsed.scheme!r} is not supported: use "
                             "http(s)://host:port for a ClickHouse server (the local one: `marketdata up` "
                             "or `marketdata clickhouse`)")
        self._client: Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClickHouse({settings.redact(self.url)})"

    def _open(self) -> Client:
        p = urlparse(self.url)
        password = unquote(p.password) if p.password else os.environ.get("MARKETDATA_CLICKHOUSE_PASSWORD", "")
        return clickhouse_connect.get_client(
            host=p.hostname, port=p.port or (8443 if p.scheme == "https" else 8123),
            username=unquote(p.username) if p.username else "default", password=password,
            secure=p.scheme == "https", database="default",
            # No ClickHouse session: the client is shared by threads, and a session serialises them.
            autogenerate_session_id=False,
            # On loopback compression costs CPU on both ends and saves nothing.
            compress=not _loopback(p.hostname),
            settings={"async_insert": 0, **cluster_settings()})

    def client(self) -> Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._open()
        return self._client

    @contextmanager
    def session(self) -> Iterator[Client]:
        """The client, for a unit of work (kept for its callers: there is nothing to open or lock)."""
        yield self.client()

    # Small conveniences for callers that need one statement.
    def command(self, sql: str, parameters: dict | None = None, settings: dict | None = None):
        return self.client().command(sql, parameters=parameters, settings=settings)

    def rows(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        return self.client().query(sql, parameters=parameters).result_rows

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def cluster_settings() -> dict:
    """Client settings a cluster needs (MARKETDATA_CLICKHOUSE_CLUSTER set; none on one node):
    an INSERT into a Distributed table returns only once every shard has committed its rows
    (`insert_distributed_sync`, the name every server version knows), so persist acknowledges
    a Redis entry only after ClickHouse holds it, as on one node; and an IN/JOIN subquery over a
    Distributed table runs once on the initiator (`distributed_product_mode = 'global'`, always
    correct) instead of being refused when the cluster has several shards."""
    if not os.environ.get("MARKETDATA_CLICKHOUSE_CLUSTER"):
        return {}
    return {"insert_distributed_sync": 1, "distributed_product_mode": "global"}


def insert_json_rows(client: Client, table: str, columns: list[str], rows: bytes,
                     dedup_token: str | None = None) -> None:
    """Insert newline-separated JSON objects; with a token, a retried batch is inserted once."""
    settings_: dict = {"input_format_skip_unknown_fields": 1}
    if dedup_token:
        settings_["insert_deduplication_token"] = dedup_token
    client.raw_insert(table, columns, insert_block=rows, fmt="JSONEachRow", settings=settings_)


class LocalClickHouse:
    """The local ClickHouse server (``marketdata clickhouse``) as a child process, stopped by PID.

    ``data_dir`` holds the engine's data; ``<data_dir>-server/`` (beside it) its URL file and log.
    """

    def __init__(self, data_dir: Path | None = None, port: int = 0, publish_url: bool = True,
                 max_memory: int | None = None, env: dict | None = None):
        from .redis import free_port

        self.dir = Path(data_dir or settings.embedded_clickhouse_dir())
        self.run_dir = self.dir.parent / (self.dir.name + "-server")
        self.port = port or free_port()
        self.publish_url = publish_url
        self.max_memory = max_memory
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "marketdata.cli", "clickhouse", "--data", str(self.dir),
                "--port", str(self.port)]
        if self.max_memory:
            args += ["--max-memory", str(self.max_memory)]
        if self.publish_url:
            args += ["--url-file", str(self.run_dir / "url")]
        return args

    def start(self, timeout: float = 60.0) -> "LocalClickHouse":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.run_dir / "clickhouse.log", "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=default_signals, env=self.env)
        log.close()
        wait_ready(self.url, timeout, self.proc, self.run_dir / "clickhouse.log")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        terminate(self.proc, timeout)
        self.proc = None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "LocalClickHouse":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None, log_path: Path | None = None) -> None:
    """Wait until the server at ``url`` answers /ping (the readiness check), or fail saying why."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"the ClickHouse server exited at start ({proc.returncode}): {tail}")
        try:
            if httpx.get(url + "/ping", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ClickHouse server at {url} did not answer /ping within {timeout:.0f}s")
        time.sleep(0.05)
