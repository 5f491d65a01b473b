"""Market calendars: which minutes of an hour a (exchange, symbol) is expected to have a bar for.

Crypto venues trade 24/7: every minute of every hour is expected. Equities (Alpaca) trade in
sessions; their calendar plugs in here through ``register_calendar`` without touching the audit.

Interface: a calendar answers ``expected_minutes(hour_start_us) -> tuple[int, ...]``, the minute
offsets (0..59) inside the UTC hour starting at ``hour_start_us`` that should hold a complete bar.
"""

from __future__ import annotations

from typing import Protocol

from ..clock import US_PER_HOUR

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

# TODO(equities calendar issue): Alpaca must follow the NYSE regular session (09:30-16:00
# America/New_York: 14:30-21:00 UTC, 13:30-20:00 UTC during US DST), with NYSE holidays and early
# closes (13:00 ET). No maintained exchange-calendar library is installed yet; the reference
# notes recommend `exchange_calendars` (XNYS: sessions, early_closes, is_open_on_minute).
# Until it is added, alpaca uses the 24/7 rule below, so an Alpaca hour outside the session is
# only complete if the connector kept marking coverage through it (it does while subscribed).
# Plug the real calendar in with register_calendar("alpaca", NyseCalendar()).
_BY_EXCHANGE: dict[str, MarketCalendar] = {}


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
