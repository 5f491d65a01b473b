"""The `marketdata` command."""

from __future__ import annotations

import argparse
import difflib
import sys


def main(argv: list[str] | None = None) -> int:
    from .settings import NotConfigured

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except NotConfigured as e:
        print(f"marketdata {argv[0] if argv else ''}: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    commands = {
        "up": "start and supervise the whole local platform",
        "status": "per venue: state, ticks/s, lag, open holes, last tick, persist lag; stores; UI address",
        "simulate": "run the local venue simulator",
        "ingest": "run one venue's connector (--venue NAME)",
        "persist": "run a persist worker (Redis -> ClickHouse)",
        "tail": "print ticks of EXCHANGE:SYMBOL as they arrive",
        "decode": "raw venue frames on stdin -> canonical ticks as JSON lines",
        "migrate": "apply the ClickHouse DDL in sql/",
        "clickhouse": "run the local ClickHouse server (the embedded engine behind ClickHouse's HTTP interface)",
        "bench": "benchmark the pipeline (--bars: a 30-day bars_1m backfill; --books: book resync time)",
        "backfill": "load trades from venue REST history for a range, then rebuild its bars",
        "export": "write bars|ticks to Parquet by venue/symbol/day with a completeness manifest",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        usage = "usage: marketdata COMMAND [options]   (marketdata COMMAND --help for its options)\n\ncommands:\n" \
            + "".join(f"  {k:10s} {v}\n" for k, v in commands.items())
        if not argv or argv[0] in ("-h", "--help"):
            print(usage, end="")
            return 0
        close = difflib.get_close_matches(argv[0], list(commands), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        print(usage + f"\nmarketdata: unknown command {argv[0]!r}{hint}", file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "up":
        from .up_groups import GROUPS
        ap = argparse.ArgumentParser(prog="marketdata up", description=commands["up"] + (
            ": embedded Redis, the venue simulator, one connector per venue, persist worker(s), Dagster "
            "webserver and daemon. One platform per data dir ($MARKETDATA_HOME): a second `up` on the "
            "same dir is refused. Ctrl-C or SIGTERM stops everything. With --only, some groups of it "
            "(several hosts, one platform): groups: " + "; ".join(f"{g}: {d}" for g, d in GROUPS.items())
            + ". Groups that run elsewhere share MARKETDATA_REDIS_URL, MARKETDATA_CLICKHOUSE_URL and the "
            "config file; two `up` on one machine need their own MARKETDATA_HOME each."))
        ap.add_argument("--config", default=None,
                        help="platform config (default $MARKETDATA_CONFIG or ./marketdata.yaml)")
        ap.add_argument("--only", default=None, metavar="GROUPS",
                        help=f"run only these groups, comma-separated ({', '.join(GROUPS)}); a group "
                             "needing Redis or ClickHouse that this up does not run takes "
                             "MARKETDATA_REDIS_URL / MARKETDATA_CLICKHOUSE_URL (default: every group)")
        ap.add_argument("--venues", default=None, metavar="NAMES",
                        help="the configured venues whose simulator and connectors this up runs, "
                             "comma-separated, to split venues across hosts (default: all)")
        ap.add_argument("--no-dagster", action="store_true",
                        help="run without the Dagster webserver and daemon (ingest and persist only)")
        ap.add_argument("--dagster-port", type=int, default=3000,
                        help="port of the Dagster UI (default 3000; a free port if it is taken)")
        gt = ap.add_mutually_exclusive_group()
        gt.add_argument("--ground-truth", dest="ground_truth", action="store_true", default=None,
                        help="the simulator writes every trade to <data dir>/simulator/ground_truth.csv "
                             "(grows ~60 bytes a trade; for tests; default: the config's "
                             "simulator.ground_truth, off)")
        gt.add_argument("--no-ground-truth", dest="ground_truth", action="store_false",
                        help="no ground-truth file, whatever the config says")
        a = ap.parse_args(rest)
        from .supervisor import up
        return up(a.config, dagster=not a.no_dagster, dagster_port=a.dagster_port, ground_truth=a.ground_truth,
                  only=a.only, venues=a.venues)
    if cmd == "status":
        from .status import main as status_main
        return status_main(rest)
    if cmd == "simulate":
        from .simulator.cli import main as sim_main
        return sim_main(rest) or 0
    if cmd == "ingest":
        from .ingest.runner import main as ingest_main
        return ingest_main(rest)
    if cmd == "persist":
        from .persist import main as persist_main
        return persist_main(rest) or 0
    if cmd == "tail":
        ap = argparse.ArgumentParser(prog="marketdata tail")
        ap.add_argument("target", help="EXCHANGE:SYMBOL, e.g. binance:BTC-USDT")
        ap.add_argument("--from-start", action="store_true", help="from the oldest entry kept, not only new ones")
        ap.add_argument("-n", "--count", type=int, default=None, help="stop after N ticks")
        ap.add_argument("--config", default=None,
                        help="config whose venues and symbols may be tailed before their stream exists")
        a = ap.parse_args(rest)
        from .tools import NoSuchStream, tail
        try:
            return tail(a.target, from_start=a.from_start, count=a.count, config_path=a.config)
        except NoSuchStream as e:
            print(f"marketdata tail: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
    if cmd == "decode":
        ap = argparse.ArgumentParser(prog="marketdata decode",
                                     description="Raw frames (one per line) on stdin -> ticks as JSON lines.")
        ap.add_argument("--venue", required=True,
                        help="a venue id, or a protocol variant such as kraken-v1")
        ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a venue option as in the config (repeatable)")
        ap.add_argument("--symbols", default=None,
                        help="canonical symbols to recognise, e.g. BTC-USDT,ETH-USDT (default: the config's)")
        ap.add_argument("--config", default=None, help="config for the default symbols and venue options")
        a = ap.parse_args(rest)
        from . import venues
        import yaml

        from .tools import DECODE_VARIANTS, decode
        venue, options = DECODE_VARIANTS.get(a.venue, (a.venue, {}))
        options = dict(options)
        if venue not in venues.names():
            valid = venues.names() + [v for v, (base, _) in DECODE_VARIANTS.items() if base in venues.names()]
            print(f"marketdata decode: unknown venue {a.venue!r}; valid: {', '.join(valid)}", file=sys.stderr)
            return 2
        for kv in a.option:
            k, sep, v = kv.partition("=")
            if not sep:
                print(f"marketdata decode: --option expects KEY=VALUE, not {kv!r}", file=sys.stderr)
                return 2
            options[k] = yaml.safe_load(v)
        symbols: list[str] = []
        if a.symbols:
            symbols = [s.strip() for s in a.symbols.split(",") if s.strip()]
        else:
            from .config import load_config
            from .errors import ConfigError
            try:
                cfg = load_config(a.config, resolve_endpoints=False)
                if venue in cfg.venues:
                    symbols = cfg.venues[venue].symbols
                    options = {**cfg.venues[venue].options, **options}
            except ConfigError:
                pass
        try:
            options = venues.get(venue).validate_options(options)
        except ValueError as e:
            print(f"marketdata decode: {venue}: {e}", file=sys.stderr)
            return 2
        counts = decode(venue, symbols, options=options)
        print(f"{a.venue}: {counts['frames']} frames, {counts['ticks']} ticks, {counts['malformed']} malformed, "
              f"{counts['unknown_symbol']} unknown symbol, {counts['unrecognised']} unrecognised, "
              f"{counts['unsequenced']} without a sequence field", file=sys.stderr)
        return 0
    if cmd == "migrate":
        argparse.ArgumentParser(prog="marketdata migrate", description=commands["migrate"] + (
            " at $MARKETDATA_CLICKHOUSE_URL (password from $MARKETDATA_CLICKHOUSE_PASSWORD), idempotently: "
            "safe to run on every deploy. With $MARKETDATA_CLICKHOUSE_CLUSTER set, every statement runs "
            "ON CLUSTER with Replicated tables and Distributed tables over them (README, "
            "\"ClickHouse cluster\").")).parse_args(rest)
        from .errors import ConfigError
        from .storage.clickhouse import ClickHouse
        from .storage.migrate import migrate
        ch = ClickHouse()
        try:
            print(f"applied {', '.join(migrate(ch))} to {ch}")
        except ConfigError as e:
            print(f"marketdata migrate: {e}", file=sys.stderr)
            return 2
        return 0
    if cmd == "clickhouse":
        return _clickhouse(rest)
    if cmd == "bench":
        if "--bars" in rest:
            from .bench.backfill import main as bars_bench_main
            return bars_bench_main(rest)
        if "--read" in rest:
            from .bench.read import main as read_bench_main
            return read_bench_main(rest)
        if "--books" in rest:
            from .bench.books import main as books_bench_main
            return books_bench_main([a for a in rest if a != "--books"])
        from .bench.platform import main as bench_main
        return bench_main(rest)
    if cmd == "backfill":
        from .backfill.cli import main as backfill_main
        return backfill_main(rest)
    if cmd == "export":
        from .export.cli import main as export_main
        return export_main(rest)
    return 2


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def _clickhouse(rest: list[str]) -> int:
    import logging
    import os
    from pathlib import Path

    from . import settings
    from .storage import clickhouse_server as srv
    ap = argparse.ArgumentParser(
        prog="marketdata clickhouse",
        description="The embedded ClickHouse engine, opened once, serving ClickHouse's HTTP interface. "
                    "Point clients at it with MARKETDATA_CLICKHOUSE_URL=http://HOST:PORT. With "
                    "MARKETDATA_CLICKHOUSE_PASSWORD set, user 'default' must give that password.")
    ap.add_argument("--data", default=None, help="engine data dir (default: $MARKETDATA_HOME/clickhouse)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; anything else exposes the store: set a password)")
    ap.add_argument("--port", type=int, default=8123, help="HTTP port (default 8123; 0 = any free port)")
    ap.add_argument("--max-memory", type=_size, default=_size(os.environ.get("MARKETDATA_CLICKHOUSE_MAX_MEMORY", "2G")),
                    help="bound on the engine's total memory, e.g. 2G (default: $MARKETDATA_CLICKHOUSE_MAX_MEMORY or 2G)")
    ap.add_argument("--mark-cache", type=_size, default=srv.DEFAULT_MARK_CACHE, help="mark cache size (default 256M)")
    ap.add_argument("--pool", type=int, default=srv.DEFAULT_POOL,
                    help="engine connections, i.e. queries run at once (default 8)")
    ap.add_argument("--url-file", default=None, help="write the server's URL here once it answers")
    a = ap.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = Path(a.data).expanduser().resolve() if a.data else settings.embedded_clickhouse_dir()
    return srv.serve(data, host=a.host, port=a.port, max_memory=a.max_memory, mark_cache=a.mark_cache,
                     pool_size=a.pool, url_file=Path(a.url_file) if a.url_file else None)


if __name__ == "__main__":
    sys.exit(main())
