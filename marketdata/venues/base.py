"""What a venue module declares, and the parsed-frame vocabulary the ingest runtime understands.

A venue module is protocol knowledge only. It turns raw frames into these events and builds
the requests the runtime sends; the runtime (``marketdata.ingest``) owns sockets, timers,
sequence state and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tick import Tick


class MalformedFrame(ValueError):
    """A frame the venue module cannot read; the runtime counts it, logs it and goes on."""


@dataclass(slots=True)
class Ack:
    request_id: Any = None


@dataclass(slots=True)
class VenueError:
    code: Any
    message: str
    request_id: Any = None


@dataclass(slots=True)
class UnknownSymbol:
    venue_symbol: str


@dataclass(slots=True)
class Reconnect:
    """The venue asks us to reconnect (shutdown notice, maintenance, token expiry)."""
    reason: str


@dataclass(slots=True)
class Ignored:
    """A well-formed frame that carries nothing for us (heartbeats, info)."""
    kind: str = ""


@dataclass(slots=True)
class Instrument:
    venue_symbol: str      # as the venue spells it in REST and payloads
    symbol: str            # canonical BASE-QUOTE
    status: str = "TRADING"
    extra: dict = field(default_factory=dict)


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    weight: int = 1


Event = Tick | Ack | VenueError | UnknownSymbol | Reconnect | Ignored
