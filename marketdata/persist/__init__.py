"""Persist: Redis consumer group ``persist`` -> ClickHouse (ticks, coverage, gaps).

    marketdata persist [--consumer NAME] [--batch-max N] [--block-ms MS] [--claim-idle-ms MS]
                       [--linger-ms MS] [--trim-interval S] [--log-level LEVEL]
    python -m marketdata.persist ...

Run one or several processes; each is a consumer of the group. Redis and ClickHouse come from the
environment (``marketdata.settings``); Redis may be a Redis Cluster (a ``redis+cluster://`` URL: the
worker then reads per stream, pipelined per master; see ``group.py``). Stops cleanly on SIGTERM / SIGINT (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from .group import DEADLETTER_STREAM
from .worker import PersistWorker

__all__ = ["PersistWorker", "DEADLETTER_STREAM", "main", "build_parser"]

log = logging.getLogger("marketdata.persist")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marketdata persist",
        description="Persist ticks, coverage and gaps from the Redis streams into ClickHouse "
                    "(consumer group 'persist'; run several for more throughput).")
    p.add_argument("--consumer", default=None,
                   help="consumer name in the group (default: <hostname>-<pid>); reuse a name to "
                        "resume that consumer's pending entries at once")
    p.add_argument("--batch-max", type=_positive_int, default=50_000,
                   help="ticks per ClickHouse insert at the most (default 50000)")
    p.add_argument("--block-ms", type=_positive_int, default=200,
                   help="how long a read waits for new entries (default 200)")
    p.add_argument("--claim-idle-ms", type=_positive_int, default=30_000,
                   help="claim entries another consumer has held unacknowledged this long "
                        "(default 30000)")
    p.add_argument("--linger-ms", type=int, default=100,
                   help="under a steady flow, insert at most once per this many ms and batch what "
                        "arrives meanwhile (default 100; 0: insert as soon as read)")
    p.add_argument("--trim-interval", type=_positive_float, default=5.0, metavar="SECONDS",
                   help="how often streams are trimmed behind what every group acknowledged (default 5)")
    p.add_argument("--log-level", default=os.environ.get("MARKETDATA_LOG_LEVEL", "INFO"),
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                   help="log level (default: $MARKETDATA_LOG_LEVEL or INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=args.log_level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("marketdata").setLevel(args.log_level)
    try:
        worker = PersistWorker(consumer=args.consumer, batch_max=args.batch_max,
                               block_ms=args.block_ms, claim_idle_ms=args.claim_idle_ms,
                               linger_ms=max(args.linger_ms, 0), trim_interval_s=args.trim_interval)
    except RuntimeError as e:          # e.g. no Redis configured
        print(f"marketdata persist: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("persist worker %s: %s received, stopping", worker.consumer, signal.Signals(signum).name)
        worker.interrupt()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.run(stop)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        worker.close()
    return 0
