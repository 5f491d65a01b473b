"""Test harness: real processes of the platform, started on free ports in temp dirs and stopped
by PID; waiting is on observable conditions (with a deadline), never on fixed sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import httpx
import orjson
import yaml

from marketdata.procs import default_signals, terminate

REPO = Path(__file__).resolve().parents[1]


def wait_for(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition", interval: float = 0.1,
             on_timeout: Callable[[], str] | None = None):
    """Poll `cond` until it returns a truthy value; fail with `what` (and diagnostics) at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{extra}")
        time.sleep(interval)


class Proc:
    """A `marketdata` subprocess with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "marketdata.cli", *args], env=env, cwd=str(REPO),
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=default_signals)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        terminate(self.proc, timeout)
        self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class SimProc(Proc):
    """`marketdata simulate` as a subprocess, with its control API."""

    def __init__(self, args: list[str], env: dict, log_dir: Path):
        self.endpoints_file = log_dir / "sim-endpoints.json"
        self.endpoints_file.unlink(missing_ok=True)
        super().__init__("simulator", [*args, "--endpoints-file", str(self.endpoints_file)], env, log_dir)
        wait_for(self.endpoints_file.exists, 30, "simulator endpoints", on_timeout=self.log)
        self.endpoints = wait_for(self._read_endpoints, 10, "simulator endpoints JSON")

    def _read_endpoints(self):
        try:
            return orjson.loads(self.endpoints_file.read_bytes())
        except orjson.JSONDecodeError:
            return None

    def control(self, venue: str, path: str, body: dict | None = None) -> dict:
        url = self.endpoints[venue]["rest"] + path
        r = httpx.post(url, json=body or {}, timeout=10) if body is not None or path != "/_sim/stats" \
            else httpx.get(url, timeout=10)
        r.raise_for_status()
        return r.json() if r.content else {}

    def stats(self, venue: str) -> dict:
        r = httpx.get(self.endpoints[venue]["rest"] + "/_sim/stats", timeout=10)
        r.raise_for_status()
        return r.json()

    def fault(self, venue: str, **body) -> dict:
        return self.control(venue, "/_sim/fault", body)


def fresh_store(url: str):
    """The platform's database on the ClickHouse server at ``url``, dropped and created again
    (schema applied)."""
    from marketdata.storage.clickhouse import ClickHouse
    from marketdata.storage.migrate import migrate
    ch = ClickHouse(url)
    ch.command("DROP DATABASE IF EXISTS marketdata SYNC")
    migrate(ch)
    return ch


@contextmanager
def own_store(tmp: Path):
    """A ClickHouse server of its own (for module-scoped data that other tests, which empty the
    shared server's database, must not touch): (server, store with the schema), stopped after."""
    from marketdata.storage.clickhouse import LocalClickHouse
    with LocalClickHouse(tmp / "clickhouse", publish_url=False, max_memory=1 << 30) as srv:
        ch = fresh_store(srv.url)
        try:
            yield srv, ch
        finally:
            ch.close()


def platform_env(home: Path, redis_url: str, clickhouse_url: str, config: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update({"MARKETDATA_HOME": str(home), "MARKETDATA_REDIS_URL": redis_url,
                "MARKETDATA_CLICKHOUSE_URL": clickhouse_url, "PYTHONUNBUFFERED": "1"})
    if config:
        env["MARKETDATA_CONFIG"] = str(config)
    return env


def write_config(path: Path, venues: dict, **extra) -> Path:
    path.write_text(yaml.safe_dump({"venues": venues, **extra}, sort_keys=False))
    return path
