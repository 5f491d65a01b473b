"""The simulator's clock: without a start it reads wall time from the moment it starts (a clock
pinned at construction ran behind the wall by the start-up time, reported by every connector as
lag); with a start and a speed it maps wall time onto simulated time."""

import time

from marketdata.simulator.clock import SimClock


def test_a_clock_without_a_start_reads_wall_time_however_late_it_starts():
    c = SimClock()
    time.sleep(0.3)                                   # start-up work between construction and start
    c.start()
    assert abs(c.now_us() - time.time() * 1e6) < 50_000


def test_a_clock_with_a_start_and_speed_maps_wall_time():
    c = SimClock(start_us=1_700_000_000_000_000, speed=60)
    assert c.now_us() == 1_700_000_000_000_000      # before start it reads its start
    c.start(wall0=time.monotonic() - 1.0)           # started a second ago
    assert abs(c.now_us() - (1_700_000_000_000_000 + 60_000_000)) < 3_000_000
