"""The platform config file: which venues, which symbols, which endpoints.

    endpoints: simulator          # simulator | live: default for every venue
    venues:
      binance:
        symbols: [BTC-USDT, ETH-USDT]
        endpoints: live           # per-venue override; or ws_url / rest_url explicitly
        options: {trade_stream: trade}
        repair: true
        books: true               # keep order books, publish quotes (or a list of the symbols)
    simulator: {rate: 500, seed: 7, venue_options: {alpaca: {sessions: always}}}

Mistakes fail at load with a message that names the bad value and what is valid.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from . import settings
from . import venues as venue_registry
from .errors import ConfigError
from .tick import split_symbol
from .venues.base import NoOptions, VenueOptions


# WebSocket transports a venue's links can use (ingest/link.py says what each is).
WS_TRANSPORTS = ("websockets", "picows")


@dataclass
class VenueConfig:
    name: str
    symbols: list[str]
    ws_url: str
    rest_url: str
    endpoints: str = "live"
    repair: bool = True
    connections: int = 1
    idle_timeout: float | None = None      # None: the venue module's default
    max_lifetime: float | None = None      # rotate links after this many seconds (None: venue's)
    silent_after: float | None = None      # report a subscribed symbol silent this long (None: default)
    options: VenueOptions = field(default_factory=NoOptions)   # typed per venue (venues/<name>.py Options)
    books: list[str] = field(default_factory=list)   # symbols whose order book is kept (and quoted)
    transport: str | None = None           # WebSocket transport (ingest/link.py); None: MARKETDATA_WS_TRANSPORT or picows

    def __post_init__(self) -> None:
        # a mapping (as written in a config, or from a test) becomes the venue's typed options
        self.options = venue_registry.get(self.name).validate_options(self.options)


@dataclass
class SimulatorSettings:
    rate: float = 500.0
    seed: int = 7
    speed: float = 1.0
    start: str | None = None
    ping_interval: float = 20.0
    pong_timeout: float = 60.0
    ground_truth: bool = False   # write <data dir>/simulator/ground_truth.csv (every trade; grows)
    # simulated minutes of trades the simulator keeps for REST history and candles (null: all)
    history_minutes: float | None = 75.0
    # venue -> {option: value}: the simulator's per-venue knobs (``--venue-option venue.key=value``)
    venue_options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class PersistSettings:
    workers: int = 1
    batch_max: int = 50_000     # ticks per ClickHouse insert at the most
    block_ms: int = 200         # how long a read waits for new entries


@dataclass
class Config:
    venues: dict[str, VenueConfig]
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    persist: PersistSettings = field(default_factory=PersistSettings)
    path: Path | None = None


def simulator_endpoints_file() -> Path:
    return Path(os.environ.get("MARKETDATA_SIM_ENDPOINTS") or settings.data_dir() / "simulator" / "endpoints.json")


def _known(section: str, given: dict, allowed: set[str]) -> None:
    unknown = set(given) - allowed
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(allowed)}")


def _books(where: str, name: str, raw: Any, symbols: list[str]) -> list[str]:
    """``books: true`` (every symbol), ``false``, or a list of the venue's symbols."""
    if raw is False or raw is None:
        return []
    if raw is True:
        chosen = list(symbols)
    elif isinstance(raw, list) and raw:
        chosen = [str(s) for s in raw]
        unknown = [s for s in chosen if s not in symbols]
        if unknown:
            raise ConfigError(f"{where}: venues.{name}.books lists {unknown}, which are not in "
                              f"venues.{name}.symbols {symbols}")
    else:
        raise ConfigError(f"{where}: venues.{name}.books must be true, false or a list of the venue's "
                          f"symbols, not {raw!r}")
    if name not in venue_registry.book_names():
        raise ConfigError(f"{where}: venues.{name}.books: {name} has no order-book support; venues with "
                          f"books: {', '.join(venue_registry.book_names())}")
    return chosen


def load_config(path: str | Path | None = None, *, resolve_endpoints: bool = True,
                resolve_only: Collection[str] | None = None) -> Config:
    """Read and validate the config (default: $MARKETDATA_CONFIG or ./marketdata.yaml).
    ``resolve_only``: resolve the simulator's endpoints for these venues only (a connector needs
    its own venue's; the others' simulator may run elsewhere); the rest get empty URLs."""
    path = Path(path or os.environ.get("MARKETDATA_CONFIG") or "marketdata.yaml")
    if not path.exists():
        raise ConfigError(f"config file {path} not found: pass --config or set MARKETDATA_CONFIG")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_config(raw, path=path, resolve_endpoints=resolve_endpoints,
                        registry=venue_registry, resolve_only=resolve_only)


def parse_config(raw: dict, *, path: Path | None = None, resolve_endpoints: bool = True,
                 registry=None, resolve_only: Collection[str] | None = None) -> Config:
    if registry is None:
        registry = venue_registry
    where = str(path) if path else "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    _known(where, raw, {"endpoints", "venues", "simulator", "persist"})
    default_endpoints = raw.get("endpoints", "simulator")
    if default_endpoints not in ("simulator", "live"):
        raise ConfigError(f"{where}: endpoints must be 'simulator' or 'live', not {default_endpoints!r}")
    venues_raw = raw.get("venues") or {}
    if not isinstance(venues_raw, dict) or not venues_raw:
        raise ConfigError(f"{where}: 'venues' must map at least one venue to its settings; "
                          f"valid venues: {', '.join(registry.names())}")
    sim_eps: dict | None = None
    venues: dict[str, VenueConfig] = {}
    for name, v in venues_raw.items():
        if name not in registry.names():
            raise ConfigError(f"{where}: unknown venue {name!r}; valid venues: {', '.join(registry.names())}")
        v = v or {}
        _known(f"{where}: venues.{name}", v, {"symbols", "endpoints", "ws_url", "rest_url", "repair",
                                               "connections", "idle_timeout", "max_lifetime", "options", "enabled",
                                               "books", "silent_after", "transport"})
        if v.get("enabled", True) is False:
            continue
        symbols = v.get("symbols")
        if not symbols or not isinstance(symbols, list):
            raise ConfigError(f"{where}: venues.{name}.symbols must be a non-empty list like [BTC-USDT]")
        for s in symbols:
            try:
                split_symbol(str(s))
            except ValueError as e:
                raise ConfigError(f"{where}: venues.{name}.symbols: {e}") from None
        module = registry.get(name)
        try:
            options = module.validate_options(v.get("options"))
        except ValueError as e:
            raise ConfigError(f"{where}: venues.{name}.options: {e}") from None
        eps = v.get("endpoints", default_endpoints)
        if eps not in ("simulator", "live"):
            raise ConfigError(f"{where}: venues.{name}.endpoints must be 'simulator' or 'live', not {eps!r}")
        ws_url, rest_url = v.get("ws_url"), v.get("rest_url")
        if not (ws_url and rest_url):
            if eps == "live":
                ws_url, rest_url = ws_url or module.LIVE_WS_URL, rest_url or module.LIVE_REST_URL
            elif resolve_endpoints and (resolve_only is None or name in resolve_only):
                if sim_eps is None:
                    f = simulator_endpoints_file()
                    if not f.exists():
                        raise ConfigError(f"venue {name} uses the simulator but no simulator is running "
                                          f"({f} missing): start `marketdata simulate` or `marketdata up`, "
                                          "point MARKETDATA_SIM_ENDPOINTS at a running simulator's endpoints "
                                          f"file, give venues.{name}.ws_url and rest_url, or set endpoints: live")
                    sim_eps = orjson.loads(f.read_bytes())
                if name not in sim_eps:
                    raise ConfigError(f"the running simulator does not serve {name}; it serves {sorted(sim_eps)}")
                ws_url, rest_url = ws_url or sim_eps[name]["ws"], rest_url or sim_eps[name]["rest"]
            else:
                ws_url, rest_url = ws_url or "", rest_url or ""
        books = _books(where, name, v.get("books", False), [str(s) for s in symbols])
        silent_after = v.get("silent_after")
        if silent_after is not None and (isinstance(silent_after, bool) or not isinstance(silent_after, (int, float))
                                         or silent_after <= 0):
            raise ConfigError(f"{where}: venues.{name}.silent_after must be a positive number of seconds, "
                              f"not {silent_after!r}")
        transport = v.get("transport")
        if transport is not None and transport not in WS_TRANSPORTS:
            raise ConfigError(f"{where}: venues.{name}.transport must be one of {', '.join(WS_TRANSPORTS)}, "
                              f"not {transport!r}")
        conns = int(v.get("connections", 1))
        if conns not in (1, 2):
            raise ConfigError(f"{where}: venues.{name}.connections must be 1 or 2, not {conns}")
        venues[name] = VenueConfig(name=name, symbols=[str(s) for s in symbols], ws_url=ws_url,
                                   rest_url=rest_url, endpoints=eps, repair=bool(v.get("repair", True)),
                                   connections=conns, idle_timeout=v.get("idle_timeout"),
                                   max_lifetime=v.get("max_lifetime"), silent_after=silent_after,
                                   options=options, books=books, transport=transport)
    if not venues:
        raise ConfigError(f"{where}: every venue is disabled")
    sim_raw = raw.get("simulator") or {}
    _known(f"{where}: simulator", sim_raw, set(SimulatorSettings.__dataclass_fields__))
    if not isinstance(sim_raw.get("ground_truth", False), bool):
        raise ConfigError(f"{where}: simulator.ground_truth must be true or false, "
                          f"not {sim_raw['ground_truth']!r}")
    hm = sim_raw.get("history_minutes", 75.0)
    if hm is not None and (isinstance(hm, bool) or not isinstance(hm, (int, float)) or hm <= 0):
        raise ConfigError(f"{where}: simulator.history_minutes must be a positive number of minutes, or "
                          f"null to keep every trade; not {hm!r}")
    vopts = sim_raw.get("venue_options") or {}
    if not isinstance(vopts, dict) or not all(isinstance(o, dict) for o in vopts.values()):
        raise ConfigError(f"{where}: simulator.venue_options must map a venue to {{option: value}}, "
                          f"like {{alpaca: {{sessions: always}}}}")
    unknown = [v for v in vopts if v not in registry.names()]
    if unknown:
        raise ConfigError(f"{where}: simulator.venue_options: unknown venue(s) {unknown}; "
                          f"valid venues: {', '.join(registry.names())}")
    per_raw = raw.get("persist") or {}
    _known(f"{where}: persist", per_raw, set(PersistSettings.__dataclass_fields__))
    return Config(venues=venues, simulator=SimulatorSettings(**sim_raw),
                  persist=PersistSettings(**per_raw), path=path)
