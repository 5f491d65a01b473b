"""A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries (installed by
`make postgresql`), a cluster initialised in a temp dir, one database, on a free loopback port,
stopped by its PID and deleted afterwards.

The server requires a password (scram-sha-256 over TCP; the password is random per cluster), so a
client that does not pass it fails. PostgreSQL refuses to run as root, and the tests (and CI) run as
root: then initdb and postgres run as the unprivileged `nobody`, in a dir under the system temp dir
that `nobody` owns (pytest's tmp_path is root's alone and cannot be entered by it).

``env()`` gives the DAGSTER_PG_* variables that dagster.production.yaml's storage reads.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

UNPRIVILEGED_USER = "nobody"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path:
    """Debian's /usr/lib/postgresql/<major>/bin (the newest major), else the dir of `postgres` on PATH."""
    def major(p: Path) -> int:
        return int(p.parent.name) if p.parent.name.isdigit() else -1
    debian = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
                    key=major, reverse=True)
    if debian:
        return debian[0]
    found = shutil.which("postgres")
    if found and (Path(found).parent / "initdb").exists():
        return Path(found).parent
    raise RuntimeError("no PostgreSQL server binaries (initdb, postgres): install Debian's postgresql "
                       "(`make postgresql`, or apt-get install -y postgresql)")


class LocalPostgres:
    def __init__(self, *, user: str = "dagster", db: str = "dagster"):
        self.user, self.db = user, db
        self.password = "pg-" + secrets.token_hex(16)
        self.host = "127.0.0.1"
        self.port = 0
        self.root: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.version = ""

    def _as(self) -> dict:
        """Popen arguments that drop root to the unprivileged user (nothing when not root)."""
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam(UNPRIVILEGED_USER)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> "LocalPostgres":
        bindir = postgres_bindir()
        drop = self._as()
        self.root = Path(tempfile.mkdtemp(prefix="marketdata-pg-"))
        if drop:
            os.chown(self.root, drop["user"], drop["group"])
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if drop:
            os.chown(pwfile, drop["user"], drop["group"])
        data = self.root / "data"
        init = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={pwfile}",
                               "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                               "--locale=C.UTF-8", "--no-sync"],
                              cwd=str(self.root), capture_output=True, text=True, timeout=120, **drop)
        pwfile.unlink()
        if init.returncode != 0:
            self.stop()
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
        self.port = free_port()
        log = open(self.root / "postgres.log", "ab")
        # A test cluster: durability settings off (the data dir is deleted afterwards).
        self.proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-h", self.host,
             "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            cwd=str(self.root), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, **drop)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"postgres exited at start ({self.proc and self.proc.returncode}): {tail}")
            try:
                conn = self.connect("postgres")
                break
            except Exception as e:  # noqa: BLE001 - psycopg2.OperationalError while it starts up
                if "password authentication failed" in str(e) or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres on port {self.port} not ready: {e}\n{self.log_tail()}") from e
                time.sleep(0.1)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.db}"')
                cur.execute("SHOW server_version")
                self.version = cur.fetchone()[0]
        finally:
            conn.close()
        return self

    def connect(self, db: str | None = None):
        import psycopg2     # dagster-postgres's driver (the [production] and [test] extras)
        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=db or self.db, connect_timeout=3)

    def env(self) -> dict[str, str]:
        """The variables dagster.production.yaml's storage reads (DAGSTER_PG_PORT: see its note)."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db}

    def rows_holding(self, text: str) -> dict[str, int]:
        """Per table of the database: how many rows hold ``text`` anywhere (as the row's text)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
                tables = [t for (t,) in cur.fetchall()]
                out = {}
                for t in tables:
                    assert re.fullmatch(r"[a-z0-9_]+", t), t
                    cur.execute(f'SELECT count(*) FROM "{t}" x WHERE strpos(x::text, %s) > 0', (text,))
                    n = cur.fetchone()[0]
                    if n:
                        out[t] = n
                return out
        finally:
            conn.close()

    def tables(self) -> list[str]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
                return sorted(t for (t,) in cur.fetchall())
        finally:
            conn.close()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return (self.root / "postgres.log").read_text(errors="replace")[-n:] if self.root else ""
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)          # "fast" shutdown: ends sessions, no wait
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
