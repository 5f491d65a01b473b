"""Coverage is vouched only up to the last moment a link was heard from.

In a quiet market a connector advances coverage from the venue clock it estimates. A link that dies
without a close frame keeps looking quiet until the watchdog gives up on it (idle_timeout), so an
estimate from the local clock alone would vouch for seconds whose trades never arrived. Here, at
real speed and a low trade rate, a silent drop with repair disabled must leave an unrepairable gap
that no persisted coverage interval reaches into.
"""

from __future__ import annotations

from .harness import wait_for
from .pipeline import pipeline_factory  # noqa: F401  (the fixture)

SYMBOLS = ["BTC-USDT"]


def test_a_silent_drop_is_never_covered(pipeline_factory, clickhouse):
    p = pipeline_factory(venue="binance", symbols=SYMBOLS, rate=4, speed=1, repair=False,
                         venue_config={"idle_timeout": 4.0})
    p.wait_health("connections", 1)
    p.wait_health("ticks_in", 8)
    p.wait_health("covered_to_us", 1)
    p.inject(kind="silent_drop")
    p.wait_health("reconnects", 1, timeout=30)
    p.wait_health("gaps_unrepairable", 1, timeout=30)

    def persisted():
        gaps = clickhouse.rows("SELECT from_us, to_us FROM marketdata.gaps FINAL WHERE status = 'unrepairable'")
        top = clickhouse.rows("SELECT max(to_us) FROM marketdata.coverage")[0][0]
        return gaps if gaps and top > max(t for _, t in gaps) else None
    gaps = wait_for(persisted, 60, "the gap and coverage beyond it in ClickHouse", interval=0.5,
                    on_timeout=p.diagnostics)
    intervals = clickhouse.rows("SELECT from_us, to_us FROM marketdata.coverage ORDER BY from_us")
    for f, t in gaps:
        # the gap is (f, t): the trades around it exist; nothing strictly between may be vouched for
        inside = [(a, b) for a, b in intervals if a < t and b > f]
        assert not inside, (f, t, inside)
