"""How a venue tells a REST client to wait (429 "too many requests", Binance's 418 IP ban, Bybit's
403 rate block): as data, so the one REST client (``marketdata.rest``) reads every venue's answer
the same way. A venue class (``venues/base.py``) sets ``RETRY_AFTER = RetryAfter(...)`` only
where it differs from ``DEFAULT``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class RetryAfter:
    statuses: tuple[int, ...] = (429,)     # answers that mean "wait, then ask again"
    default_s: float = 1.0                 # the wait when the header is absent or unreadable
    header: str | None = "Retry-After"     # None: the venue's header is not read (default_s always)
    unit_s: float = 1.0                    # header value x unit_s = seconds (0.001: milliseconds)

    def wait_s(self, status: int, headers: Mapping[str, Any]) -> float | None:
        """Seconds to wait before the next call, or None when the answer is not a "wait"."""
        if status not in self.statuses:
            return None
        if self.header is None:
            return self.default_s
        raw = headers.get(self.header) or headers.get(self.header.lower())
        if not raw:
            return self.default_s
        try:
            return float(raw) * self.unit_s
        except ValueError:
            return self.default_s


DEFAULT = RetryAfter()
