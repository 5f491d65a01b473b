"""The `marketdata` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "up": "start and supervise the whole local platform",
        "simulate": "run the local venue simulator",
        "ingest": "run one venue's connector (--venue NAME)",
        "persist": "run a persist worker (Redis -> ClickHouse)",
        "tail": "print ticks of EXCHANGE:SYMBOL as they arrive",
        "decode": "raw venue frames on stdin -> canonical ticks as JSON lines",
        "migrate": "apply the ClickHouse DDL in sql/",
        "bench": "benchmark the pipeline (--bars: a 30-day bars_1m backfill; --books: book resync time)",
        "backfill": "load trades from venue REST history for a range, then rebuild its bars",
        "export": "write bars|ticks to Parquet by venue/symbol/day with a completeness manifest",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: marketdata COMMAND [options]\n\ncommands:")
        for k, v in commands.items():
            print(f"  {k:10s} {v}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "up":
        ap = argparse.ArgumentParser(prog="marketdata up")
        ap.add_argument("--config", default=None)
        ap.add_argument("--no-dagster", action="store_true")
        ap.add_argument("--dagster-port", type=int, default=3000)
        a = ap.parse_args(rest)
        from .supervisor import up
        return up(a.config, dagster=not a.no_dagster, dagster_port=a.dagster_port)
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
        a = ap.parse_args(rest)
        from .tools import tail
        try:
            return tail(a.target, from_start=a.from_start, count=a.count)
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
        ap.add_argument("--config", default=None)
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
            from .config import ConfigError, load_config
            try:
                cfg = load_config(a.config, resolve_endpoints=False)
                if venue in cfg.venues:
                    symbols = cfg.venues[venue].symbols
                    options = {**cfg.venues[venue].options, **options}
            except ConfigError:
                pass
        try:
            venues.get(venue).validate_options(options)
        except ValueError as e:
            print(f"marketdata decode: {venue}: {e}", file=sys.stderr)
            return 2
        counts = decode(venue, symbols, options=options)
        print(f"{a.venue}: {counts['frames']} frames, {counts['ticks']} ticks, {counts['malformed']} malformed, "
              f"{counts['unknown_symbol']} unknown symbol", file=sys.stderr)
        return 0
    if cmd == "migrate":
        from .storage.clickhouse import ClickHouse
        from .storage.migrate import migrate
        ch = ClickHouse()
        print(f"applied {', '.join(migrate(ch))} to {ch}")
        return 0
    if cmd == "bench":
        if "--bars" in rest:
            from .backfill.bench import main as bars_bench_main
            return bars_bench_main(rest)
        if "--read" in rest:
            from .read.bench import main as read_bench_main
            return read_bench_main(rest)
        if "--books" in rest:
            from .ingest.books.bench import main as books_bench_main
            return books_bench_main([a for a in rest if a != "--books"])
        from .bench import main as bench_main
        return bench_main(rest)
    if cmd == "backfill":
        from .backfill.cli import main as backfill_main
        return backfill_main(rest)
    if cmd == "export":
        from .export.cli import main as export_main
        return export_main(rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())
