"""`marketdata backfill`: load trades from a venue's REST history into ClickHouse, with a
progress bar, then rebuild bars_1m over the range.

    marketdata backfill --venue binance --symbols BTC-USDT,ETH-USDT \\
        --from 2026-01-05T10:00Z --to 2026-01-05T12:00Z
    marketdata backfill --status                       # every backfill cursor

Venues whose REST pages its trade history by id or by time (``history.backfill_venues``); any
other venue is refused with the reason. Resumable: interrupt it (Ctrl-C) or let it fail, run the same command again, and it continues
from the stored cursor; a range already loaded is skipped (``--restart`` reloads it). The REST
endpoint is the config's for the venue (``--config`` / $MARKETDATA_CONFIG), else ``--rest-url``,
else the venue's live URL. Exit status: 0 loaded, 1 failed, 2 usage error, 3 not complete yet
(stopped early, or the venue's tape has not reached the end of the range).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .. import venues as venue_registry
from ..clock import US_PER_HOUR


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="marketdata backfill",
                                 description="Load trades from a venue's REST history, then rebuild bars_1m.")
    from .history import backfill_venues
    ok = [v for v, why in backfill_venues().items() if not why]
    ap.add_argument("--venue", help=f"venue id, one whose REST pages its trade history ({', '.join(ok)})")
    ap.add_argument("--symbols", help="canonical symbols, comma separated, e.g. BTC-USDT,ETH-USDT")
    ap.add_argument("--from", dest="start", help="range start, ISO 8601 UTC, e.g. 2026-01-05T10:00Z")
    ap.add_argument("--to", dest="end", help="range end (exclusive), ISO 8601 UTC")
    ap.add_argument("--config", default=None, help="platform config (default $MARKETDATA_CONFIG or ./marketdata.yaml)")
    ap.add_argument("--rest-url", default=None, help="the venue's REST base URL (overrides the config)")
    ap.add_argument("--page-size", type=int, default=None, help="trades per REST page (default: the venue's maximum)")
    ap.add_argument("--weight-fraction", type=float, default=0.5,
                    help="share of the venue's REST weight budget to use (default 0.5: live repairs keep the rest)")
    ap.add_argument("--restart", action="store_true", help="ignore a stored cursor and load the range again")
    ap.add_argument("--no-bars", action="store_true", help="do not rebuild bars_1m afterwards")
    ap.add_argument("--status", action="store_true", help="list backfill cursors and exit")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _endpoint(venue: str, config: str | None, rest_url: str | None) -> tuple[str, dict, str]:
    """(rest_url, options, where it came from). A config that exists must load (a venue on the
    simulator needs the simulator running): it is never silently swapped for the live venue."""
    import os
    from pathlib import Path

    from ..config import load_config
    options: dict = {}
    path = Path(config or os.environ.get("MARKETDATA_CONFIG") or "marketdata.yaml")
    if path.exists():
        cfg = load_config(path, resolve_endpoints=not rest_url)
        if venue in cfg.venues:
            v = cfg.venues[venue]
            options = dict(v.options)
            if not rest_url:
                return v.rest_url, options, f"config {path}"
    elif config:
        raise FileNotFoundError(f"config file {path} not found")
    if rest_url:
        return rest_url, options, "--rest-url"
    return venue_registry.get(venue).LIVE_REST_URL, options, "the venue's live endpoint (not in the config)"


def _status(ch) -> int:
    from ..clock import format_us
    from .store import list_progress
    rows = list_progress(ch)
    if not rows:
        print("no backfills recorded")
        return 0
    print(f"{'venue':10s} {'symbol':12s} {'from':20s} {'to':20s} {'status':10s} {'trades':>10s} {'pages':>6s} {'%':>6s}")
    for p in rows:
        print(f"{p.exchange:10s} {p.symbol:12s} {format_us(p.from_us):20s} {format_us(p.to_us):20s} "
              f"{p.status:10s} {p.trades:10d} {p.pages:6d} {p.pct:6.1f}" + (f"  {p.detail}" if p.detail else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..storage.clickhouse import ClickHouse
    from ..storage.migrate import migrate
    from ..clock import format_us, parse_time_us
    from .history import BackfillError, backfill_by, backfill_venues, load_history
    from .rebuild import rebuild_hours, span_hours
    from ..rest.client import RestError

    err = lambda msg: (print(f"marketdata backfill: {msg}", file=sys.stderr), 2)[1]  # noqa: E731
    ch = ClickHouse()
    migrate(ch)
    if a.status:
        return _status(ch)
    if not (a.venue and a.symbols and a.start and a.end):
        return err("--venue, --symbols, --from and --to are required (or --status)")
    if a.venue not in venue_registry.names():
        return err(f"unknown venue {a.venue!r}; valid: {', '.join(venue_registry.names())}")
    try:
        backfill_by(venue_registry.get(a.venue))
    except BackfillError as e:
        ok = [v for v, why in backfill_venues().items() if not why]
        return err(f"{e}; venues that can be backfilled: {', '.join(ok)}")
    symbols = [s.strip().upper() for s in a.symbols.split(",") if s.strip()]
    try:
        start_us, end_us = parse_time_us(a.start), parse_time_us(a.end)
    except ValueError as e:
        return err(str(e))
    if end_us <= start_us:
        return err(f"--to ({a.end}) must be after --from ({a.start})")
    try:
        rest_url, options, where = _endpoint(a.venue, a.config, a.rest_url)
    except Exception as e:
        return err(str(e))

    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the current page (progress is kept; Ctrl-C again to abort)", file=sys.stderr)
    old = signal.signal(signal.SIGINT, on_sigint)

    print(f"backfill {a.venue} {', '.join(symbols)} {format_us(start_us)} .. {format_us(end_us)} "
          f"from {rest_url} ({where})")
    progress_cm, on_progress = _progress_bar(symbols, a.quiet)
    try:
        with progress_cm:
            res = load_history(ch, a.venue, symbols, start_us, end_us, rest_url=rest_url, options=options,
                               page_size=a.page_size, weight_fraction=a.weight_fraction, restart=a.restart,
                               on_progress=on_progress, stop=stop.is_set)
    except (BackfillError, RestError) as e:
        print(f"marketdata backfill: failed: {e}\nprogress is stored; run the same command to continue",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aborted; progress up to the last stored batch is kept", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGINT, old)

    for p in res.symbols:
        print(f"  {p.symbol:12s} {p.status:10s} {p.trades:>10d} trades {p.pages:>6d} pages {p.pct:6.1f}%"
              + (f"  {p.detail}" if p.detail else ""))
    print(f"loaded {res.trades_this_run} trades in {res.pages_this_run} pages this run, {res.elapsed_s}s; "
          f"REST {res.rest.get('requests')} requests, weight {res.rest.get('weight')}, "
          f"{res.rest.get('rate_limited')} rate-limit waits")
    if res.gaps:
        print(f"  {len(res.gaps)} hole(s) in the venue's history recorded as unrepairable gaps")
    if not a.no_bars:
        hours = span_hours(start_us, end_us)
        rb = rebuild_hours(ch, hours, None)
        stored = sum(x.stored for x in rb.audits)
        expected = sum(x.expected for x in rb.audits)
        print(f"bars_1m rebuilt for {rb.hours} hour(s) ({format_us(hours[0])} .. "
              f"{format_us(hours[-1] + US_PER_HOUR)}): {rb.bars_written} bars, "
              f"{stored}/{expected} complete, {rb.build_seconds}s")
    if stop.is_set() or not res.done:
        print("not complete yet: run the same command again to continue")
        return 3
    return 0


class _NullCM:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress_bar(symbols: list[str], quiet: bool):
    if quiet or not sys.stderr.isatty():
        def log_progress(p):
            print(f"  {p.symbol}: {p.status} {p.trades} trades, {p.pages} pages, {p.pct:.1f}%", file=sys.stderr)
        return _NullCM(), (None if quiet else log_progress)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description:12s}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                   MofNCompleteColumn(), TextColumn("trades"), TimeRemainingColumn(), transient=False)
    tasks: dict[str, int] = {}

    def update(p) -> None:
        total = p.total_trades
        if p.symbol not in tasks:
            tasks[p.symbol] = bar.add_task(p.symbol, total=total or None)
        tid = tasks[p.symbol]
        if total:
            bar.update(tid, total=total, completed=total if p.status == "done" else min(total, p.trades))
        else:
            bar.update(tid, total=100, completed=p.pct)
    return bar, update


if __name__ == "__main__":
    sys.exit(main())
