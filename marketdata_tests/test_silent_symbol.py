"""A subscribed symbol that stays silent is reported: Bitstamp acknowledges a subscription to a pair
it lists but never trades, and nothing on the link tells that apart from a quiet market. The
connector names such a symbol once in its log and in ``silent_symbols`` of the health hash, and the
health evaluation turns it into a warning; symbols that trade, or whose coverage keeps advancing,
are never reported."""

from __future__ import annotations

import pytest

from marketdata.clock import now_us
from marketdata.config import parse_config
from marketdata.errors import ConfigError
from marketdata.ingest.health import HealthBounds, evaluate_venue
from marketdata.ingest.sequence import SymbolSequence
from marketdata.ingest.silence import SilenceWatch
from marketdata.stream import health_key, sequence_key
from marketdata.tick import Tick

from .harness import wait_for
from .pipeline import pipeline_factory  # noqa: F401

pytestmark = pytest.mark.timeout(180)

SILENT_AFTER = 3.0
LOG_LINE = "subscribed but silent"
BTC_SEQ = sequence_key("bitstamp", "BTC-USD")


# ----------------------------------------------------------------------------------- unit level
class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _tick(sym: str, ts_us: int, tid: str) -> Tick:
    return Tick("bitstamp", sym, ts_us, "1", "1", "1", "1", "0.1", 1, "buy", tid, ts_us + 5)


def test_silence_watch_reports_only_a_subscribed_symbol_without_trades_or_coverage(caplog):
    clock = _Clock()
    watch = SilenceWatch("bitstamp", 10.0, clock=clock)
    quiet = SymbolSequence("bitstamp", "SOL-USD", "solusd", lateness_us=2_000_000, sequential=False)
    busy = SymbolSequence("bitstamp", "BTC-USD", "btcusd", lateness_us=2_000_000, sequential=False)
    idle = SymbolSequence("bitstamp", "ETH-USD", "ethusd", lateness_us=2_000_000, sequential=False)
    for s in (quiet, busy, idle):
        s.on_subscribed()
    t0 = now_us()
    idle.accept(_tick("ETH-USD", t0, "1"), 0, [])       # one trade, then a quiet market
    for step in range(30):
        clock.t += 1.0
        busy.accept(_tick("BTC-USD", t0 + step * 1000, str(step + 10)), 0, [])
        for s in (quiet, busy, idle):
            # the venue clock estimate keeps an idle symbol's coverage moving: it is vouched for
            s.advance_coverage(t0 + int((step + 1) * 1e6) + 5_000_000)
            watch.observe(s)
    assert watch.silent == {"SOL-USD"}
    assert [r.getMessage() for r in caplog.records if LOG_LINE in r.getMessage()] == [
        "bitstamp SOL-USD: subscribed but silent for 10s (no trade, no coverage progress); the venue may have "
        "acknowledged a pair it does not trade"], "logged once, naming venue and symbol"
    # a trade clears it; unsubscribed time never counts towards silence
    quiet.accept(_tick("SOL-USD", t0, "99"), 0, [])
    watch.observe(quiet)
    assert watch.silent == set()
    quiet.on_disconnect()
    for _ in range(30):
        clock.t += 1.0
        watch.observe(quiet)
    assert watch.silent == set()


def test_health_flags_silent_symbols_as_a_warning_and_config_validates_silent_after():
    now = now_us()
    raw = {"heartbeat_us": str(now), "state": "running", "pid": "1", "lag_us": "1000", "connections": "1",
           "silent_symbols": "SOL-USD"}
    h = evaluate_venue("bitstamp", raw, now, HealthBounds())
    assert h.healthy and h.silent_symbols == ["SOL-USD"]
    assert len(h.warnings) == 1 and "SOL-USD" in h.warnings[0] and "WARNING" in h.summary()
    clean = evaluate_venue("bitstamp", {**raw, "silent_symbols": ""}, now, HealthBounds())
    assert clean.healthy and clean.silent_symbols == [] and clean.warnings == []

    base = {"ws_url": "ws://x", "rest_url": "http://x", "symbols": ["BTC-USD"]}
    cfg = parse_config({"venues": {"bitstamp": {**base, "silent_after": 90}}}, resolve_endpoints=False)
    assert cfg.venues["bitstamp"].silent_after == 90
    assert parse_config({"venues": {"bitstamp": base}}, resolve_endpoints=False).venues["bitstamp"].silent_after is None
    with pytest.raises(ConfigError, match="silent_after must be a positive number"):
        parse_config({"venues": {"bitstamp": {**base, "silent_after": 0}}}, resolve_endpoints=False)


# ----------------------------------------------------------------------------------- ingest process
def _health(p, field: str) -> str:
    v = p.r.hget(health_key(p.venue), field)
    return v.decode() if v is not None else ""


def _ingest_log(p) -> str:
    return p.ingest.log_path.read_text(errors="replace")


def _running(p, symbols: list[str]) -> int:
    """Waits until the connector is subscribed and the traded symbols are flowing; returns the
    process's heartbeat time then."""
    p.wait_health("connections", 1)
    p.wait_health("ticks_in", 500)
    wait_for(lambda: all(p.r.hget(sequence_key("bitstamp", s), "covered_to") not in (None, b"") for s in symbols),
             30, f"coverage of {symbols}", on_timeout=p.diagnostics)
    return int(_health(p, "heartbeat_us"))


def test_ingest_reports_a_quiet_bitstamp_pair_and_only_it(pipeline_factory):
    p = pipeline_factory(venue="bitstamp", symbols=["BTC-USD"], rate=1000,
                         sim_args=["--venue-option", 'bitstamp.quiet_symbols=["SOL-USD"]'], options={},
                         venue_config={"symbols": ["BTC-USD", "SOL-USD"], "silent_after": SILENT_AFTER})
    _running(p, ["BTC-USD"])
    wait_for(lambda: _health(p, "silent_symbols") == "SOL-USD", 30, "health names SOL-USD silent",
             on_timeout=p.diagnostics)
    assert LOG_LINE in _ingest_log(p)
    lines = [ln for ln in _ingest_log(p).splitlines() if LOG_LINE in ln]
    assert len(lines) == 1 and "bitstamp" in lines[0] and "SOL-USD" in lines[0], lines
    # the traded pair is unaffected: still flowing, coverage advancing, never named
    ticks, covered = p.health("ticks_in"), int(p.r.hget(BTC_SEQ, "covered_to"))
    wait_for(lambda: p.health("ticks_in") > ticks + 500
             and int(p.r.hget(BTC_SEQ, "covered_to")) > covered, 30,
             "BTC-USD still trading and covered", on_timeout=p.diagnostics)
    assert _health(p, "silent_symbols") == "SOL-USD"
    assert not any("BTC-USD" in ln for ln in _ingest_log(p).splitlines() if LOG_LINE in ln)
    h = evaluate_venue("bitstamp", {k.decode(): v.decode() for k, v in p.r.hgetall(health_key("bitstamp")).items()},
                       now_us(), HealthBounds())
    # (its receive lag is the simulated past's; only the warning matters here)
    assert h.silent_symbols == ["SOL-USD"] and any("SOL-USD" in w for w in h.warnings), h


def test_ingest_without_a_quiet_pair_reports_nothing(pipeline_factory):
    p = pipeline_factory(venue="bitstamp", symbols=["BTC-USD", "ETH-USD"], rate=1000, sim_args=[], options={},
                         venue_config={"silent_after": SILENT_AFTER})
    t0 = _running(p, ["BTC-USD", "ETH-USD"])
    # several silent_after spans of the process's own time, subscribed throughout
    wait_for(lambda: int(_health(p, "heartbeat_us") or 0) > t0 + 3 * SILENT_AFTER * 1e6, 30,
             "three silent_after spans of heartbeats", on_timeout=p.diagnostics)
    assert p.health("connections") >= 1 and p.health("reconnects") == 0
    assert p.r.hexists(health_key("bitstamp"), "silent_symbols"), "the field is written, empty"
    assert _health(p, "silent_symbols") == ""
    assert LOG_LINE not in _ingest_log(p)
