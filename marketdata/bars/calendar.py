"""Market calendars: which minutes of an hour a (exchange, symbol) is expected to have a bar for.

Crypto venues trade 24/7: every minute of every hour is expected. Equities (Alpaca) trade in
NYSE sessions (``SessionCalendar("XNYS")`` from the maintained ``exchange_calendars`` library);
other calendars plug in through ``register_calendar`` without touching the audit.

Interface: a calendar answers ``expected_minutes(hour_start_us) -> tuple[int, ...]``, the minute
offsets (0..59) inside the UTC hour starting at ``hour_start_us`` that should hold a complete bar.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Protocol

from ..clock import US_PER_HOUR, US_PER_MINUTE

ALL_MINUTES: tuple[int, ...] = tuple(range(60))


class MarketCalendar(Protocol):
    name: str

    def expected_minutes(self, hour_start_us: int) -> tuple[int, ...]:
        """Minute offsets (0..59) of the UTC hour starting at hour_start_us that expect a bar."""
        ...


class AlwaysOpen:
    """24/7 market (every crypto venue): 60 expected minutes in every hour."""

    name = "24/7"

    def expected_minutes(self, hour_start_us: int) -> tuple[int, ...]:
        return ALL_MINUTES

    def __repr__(self) -> str:
        return "AlwaysOpen()"


ALWAYS_OPEN = AlwaysOpen()

_BY_EXCHANGE: dict[str, MarketCalendar] = {}


class SessionCalendar:
    """An exchange that trades in sessions (``exchange_calendars`` code, e.g. ``XNYS``): the
    expected minutes are the session minutes, in UTC, so holidays give none, early closes (13:00
    ET) stop early and daylight-saving switches move the session by an hour on their own.

    The library is imported on first use (it pulls pandas); its schedule is turned once into
    sorted open/close arrays so each hour is a bisect, not a pandas lookup."""

    def __init__(self, code: str, start: str = "2000-01-01") -> None:
        self.name = code
        self.code = code
        self.start = start
        self._opens: list[int] = []
        self._closes: list[int] = []
        self._first_us = self._last_us = 0

    def _load(self) -> None:
        import exchange_calendars  # a maintained calendar: holiday and early-close rules are its job

        cal = exchange_calendars.get_calendar(self.code, start=self.start)
        sched = cal.schedule
        self._opens = [int(t.value // 1000) for t in sched["open"]]
        self._closes = [int(t.value // 1000) for t in sched["close"]]
        self._first_us = int(cal.first_session.value // 1000)
        self._last_us = int(cal.last_session.value // 1000) + 24 * US_PER_HOUR

    def sessions(self, start_us: int, end_us: int) -> list[tuple[int, int]]:
        """(open_us, close_us) of the sessions overlapping [start_us, end_us)."""
        if not self._opens:
            self._load()
        if start_us < self._first_us or end_us > self._last_us:
            raise ValueError(f"{self.code} calendar covers {self._first_us}..{self._last_us} µs only; "
                             f"asked for {start_us}..{end_us}")
        i = max(0, bisect_right(self._opens, start_us) - 1)
        out = []
        while i < len(self._opens) and self._opens[i] < end_us:
            if self._closes[i] > start_us:
                out.append((self._opens[i], self._closes[i]))
            i += 1
        return out

    def expected_minutes(self, hour_start_us: int) -> tuple[int, ...]:
        end = hour_start_us + US_PER_HOUR
        out = []
        for o, c in self.sessions(hour_start_us, end):
            for m in range(60):
                t = hour_start_us + m * US_PER_MINUTE
                if o <= t and t + US_PER_MINUTE <= c:
                    out.append(m)
        return tuple(sorted(set(out)))

    def __repr__(self) -> str:
        return f"SessionCalendar({self.code!r})"


NYSE = SessionCalendar("XNYS")

# Alpaca streams US equities; the bars we audit are the NYSE regular session (09:30-16:00
# America/New_York). IEX prints outside it are stored but those minutes are not expected.
_BY_EXCHANGE: dict[str, MarketCalendar] = {"alpaca": NYSE}


def register_calendar(exchange: str, calendar: MarketCalendar) -> None:
    """Use ``calendar`` for every symbol of ``exchange`` (replaces any earlier registration)."""
    _BY_EXCHANGE[exchange] = calendar


def calendar_for(exchange: str, symbol: str | None = None) -> MarketCalendar:
    """The calendar of a pair: a registered one for its venue, else 24/7."""
    return _BY_EXCHANGE.get(exchange, ALWAYS_OPEN)


def expected_minutes(exchange: str, symbol: str, hour_start_us: int) -> tuple[int, ...]:
    if hour_start_us % US_PER_HOUR:
        raise ValueError(f"hour_start_us {hour_start_us} is not the start of a UTC hour")
    return calendar_for(exchange, symbol).expected_minutes(hour_start_us)


def expected_count(exchange: str, symbol: str, hour_start_us: int) -> int:
    return len(expected_minutes(exchange, symbol, hour_start_us))


def next_expected_us(exchange: str, symbol: str, from_us: int, until_us: int) -> int:
    """The start of the first minute at or after the minute containing ``from_us`` that the pair's
    calendar expects a bar for, capped at ``until_us``; ``from_us`` itself when that minute is
    expected (24/7 venues: always). So [from_us, result) is a span the market expects nothing of:
    a venue whose coverage ends at ``from_us`` outside its session is not behind until the next
    session opens (the watermark's notion of "behind" uses the same calendar as the audit)."""
    cal = calendar_for(exchange, symbol)
    if cal is ALWAYS_OPEN or from_us >= until_us:
        return from_us
    minute = from_us // US_PER_MINUTE * US_PER_MINUTE
    hour = minute // US_PER_HOUR * US_PER_HOUR
    while hour < until_us:
        for m in cal.expected_minutes(hour):
            t = hour + m * US_PER_MINUTE
            if t >= minute:
                return max(from_us, t) if t < until_us else until_us
        hour += US_PER_HOUR
    return until_us
