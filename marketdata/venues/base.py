"""The venue contract (``Venue``, ``BookVenue``, typed ``VenueOptions``) and the parsed-frame
vocabulary the ingest runtime understands.

A venue is protocol knowledge only: one ``Venue`` subclass per venue module (``venues/binance.py``
is a complete one) fills in the members below; the runtime (``marketdata.ingest``, the backfill,
reconciliation) reads nothing else from a venue. It turns raw frames into these events and builds
the requests the runtime sends; the runtime owns sockets, timers, sequence state and Redis.

The parser contract (held by marketdata_tests/test_parser_fuzz.py): ``parse`` returns only the
events below, or raises MalformedFrame. Ticks are built with ``trade_tick`` (checked fields). A
control frame (pong, heartbeat, ack, status) is ``Ignored``; a well-formed data frame the parser
does not read is ``Unrecognised`` (counted and logged by the runtime), never passed over.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import orjson

from ..tick import Tick
from .retry_after import DEFAULT as DEFAULT_RETRY_AFTER
from .retry_after import RetryAfter

if TYPE_CHECKING:
    from .book import BookDelta, BookSnapshot, LocalBook


class MalformedFrame(ValueError):
    """A frame the venue module cannot read; the runtime counts it, logs it and goes on."""


def json_object(frame: str | bytes) -> dict:
    """A frame that must be one JSON object; anything else is malformed."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as e:
        raise MalformedFrame(f"invalid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise MalformedFrame("frame is not a JSON object")
    return msg


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
    """The venue asks us to reconnect (shutdown notice, maintenance, token expiry). With `rotate`
    the old link still delivers for a while: the runtime opens a new one make-before-break."""
    reason: str
    rotate: bool = False


@dataclass(slots=True)
class LastTradeId:
    """The venue's latest trade id for a symbol at `ts_us` (Coinbase heartbeat): ids beyond the
    last one we saw, up to it, were missed even if no trade follows them (a quiet market)."""
    symbol: str            # canonical
    trade_id: int
    ts_us: int


@dataclass(slots=True)
class Replay:
    """Recent trades a venue replays on every (re)subscribe (Bitfinex's trades snapshot), oldest
    first. They are real trades (`decode` prints them). They overlap what we have: trades older than
    the symbol's tape are not news and are dropped; the rest go through as ticks (known ids are
    de-duplicated there); a snapshot reaching back over our last trade closes the span we were
    away without REST (ingest/sequence.py `on_replay`)."""
    symbol: str            # canonical
    ticks: list


@dataclass(slots=True)
class Pause:
    """The venue stops this link's data for a while without closing it (Bitfinex maintenance):
    what the link would carry is a gap from now until it is replaced; it is not reconnected."""
    reason: str


@dataclass(slots=True)
class Ignored:
    """A well-formed control frame the parser recognises and that carries nothing for us
    (pongs, heartbeats, acks of other requests, status). Never a data frame."""
    kind: str = ""


@dataclass(slots=True)
class Unrecognised:
    """A well-formed frame the parser does not read: a data channel, topic, type or event it was
    not told about. Nothing is silently passed over: the runtime counts and logs it."""
    kind: str
    detail: str = ""


@dataclass(slots=True)
class Unsequenced:
    """A trade that lacks the venue's sequence field (Gate.io `id_market` in recordings before
    2025-01-08). The trade is published all the same; the symbol's continuity falls back to
    time (holes are spans of time, repaired by time) until the field is back."""
    tick: Tick
    missing: str


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
    headers: dict[str, str] | None = None    # venue credentials (Alpaca keys): never logged


Event = (Tick | Ack | VenueError | UnknownSymbol | Reconnect | LastTradeId | Replay | Pause | Ignored
         | Unrecognised | Unsequenced)

# Every event a parser may return: anything else (or an exception other than MalformedFrame) is a
# bug in the parser (the fuzz tests hold every venue to it).
PARSER_EVENTS = (Tick, Ack, VenueError, UnknownSymbol, Reconnect, LastTradeId, Replay, Pause, Ignored,
                 Unrecognised, Unsequenced)


# --- checked canonical ticks ---------------------------------------------------------------------

_DECIMAL = re.compile(r"\d+(?:\.\d+)?")
_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII).fullmatch     # plain ASCII decimal text, as sent
_SIDES = ("buy", "sell", "unknown")
MAX_TS_US = 4_102_444_800_000_000      # 2100-01-01


def decimal_text(v: Any, what: str) -> str:
    """A venue's price or quantity as plain non-negative decimal text, exactly as sent; exponent
    forms (5e-08) are written out. Anything else (numbers as JSON floats, NaN, signs, words)
    is malformed: a parser passes strings, or number text it read without a float."""
    if type(v) is not str or not v.isascii():
        raise MalformedFrame(f"{what} is not decimal text: {str(v)[:40]!r}")
    if _DECIMAL.fullmatch(v):
        return v
    try:
        d = Decimal(v)
    except (InvalidOperation, ValueError):
        raise MalformedFrame(f"{what} is not a decimal: {v[:40]!r}") from None
    if not d.is_finite() or d.is_signed() or v.strip() != v or "_" in v:
        raise MalformedFrame(f"{what} is not a non-negative decimal: {v[:40]!r}")
    return format(d, "f")


def trade_tick(exchange: str, symbol: str, ts_us: Any, price: Any, qty: Any, side: Any, trade_id: Any,
               recv_us: int, trade_count: Any = 1, source: str = "ws", event: str = "trade") -> Tick:
    """A single fill (or one venue-aggregated fill at one price) as a canonical tick, checked:
    positive integer µs before 2100, decimal text for price and quantity, a known taker side, a
    non-empty trade id, a positive count. (No lower bound on time: venues' own documentation
    examples carry 1973 times, and `int_field` already refuses true/false and text.) A field that fails is a MalformedFrame, so a retyped
    or renamed field never reaches Redis as a tick with a wrong value."""
    # One test for the common case (every field well-typed, plain decimals): 0.8 -> 0.45 µs a
    # trade; anything else goes through the checks below, which name the field that fails.
    if (type(ts_us) is int and 0 < ts_us < MAX_TS_US and type(price) is str and type(qty) is str
            and _PLAIN(price) is not None and _PLAIN(qty) is not None and side in _SIDES
            and type(trade_id) is str and 0 < len(trade_id) <= 64 and type(trade_count) is int and trade_count > 0):
        return Tick(exchange, symbol, ts_us, price, price, price, price, qty, trade_count, side,
                    trade_id, recv_us, source, event)
    if type(ts_us) is not int or not 0 < ts_us < MAX_TS_US:
        raise MalformedFrame(f"trade time {str(ts_us)[:40]!r} is not positive µs before 2100")
    if side not in _SIDES:
        raise MalformedFrame(f"taker side {str(side)[:20]!r} is not buy, sell or unknown")
    if type(trade_id) is not str or not trade_id or len(trade_id) > 64:
        raise MalformedFrame(f"trade id {str(trade_id)[:40]!r} is not a non-empty text id")
    if type(trade_count) is not int or trade_count < 1:
        raise MalformedFrame(f"trade count {str(trade_count)[:20]!r} is not a positive integer")
    px = decimal_text(price, "price")
    return Tick(exchange, symbol, ts_us, px, px, px, px, decimal_text(qty, "quantity"), trade_count, side,
                trade_id, recv_us, source, event)


def int_field(v: Any, what: str) -> int:
    """An integer field that venues send as a JSON number or as digit text ("1700000000123")."""
    if type(v) is int:
        return v
    if type(v) is str and v.isascii() and v.isdigit() and len(v) < 20:
        return int(v)
    raise MalformedFrame(f"{what} is not an integer: {str(v)[:40]!r}")


# --- typed venue options -------------------------------------------------------------------------

O = TypeVar("O", bound="VenueOptions")


@dataclass(frozen=True)
class VenueOptions(Mapping):
    """A venue's ``options:`` from the config, typed: one field per option, with its default.
    ``parse`` validates at config load (an unknown option or a bad value is a ValueError that says
    what is valid); venue code reads the fields. It also reads as the mapping of every option
    (``dict(options)``), which is how it travels to a subprocess or a Dagster run and back."""

    @classmethod
    def parse(cls: type[O], raw: Mapping[str, Any] | None, venue: str = "this venue") -> O:
        raw = dict(raw or {})
        known = [f.name for f in fields(cls)]
        unknown = set(raw) - set(known)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(known)}"
                             if known else f"unknown option(s) {sorted(unknown)}; {venue} takes none")
        return cls(**raw)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the bad value and what is valid (override per venue)."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return self.__dict__[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class NoOptions(VenueOptions):
    """A venue without options."""


def one_of(name: str, value: Any, valid: Any, note: str = "") -> None:
    """An option that takes one of ``valid`` (shown as given); else a ValueError saying so."""
    if value not in valid:
        raise ValueError(f"{name} must be one of {valid}{note}, not {value!r}")


def seconds_in(name: str, value: Any, upper: float, *, upper_open: bool = False, note: str = "") -> None:
    """An option that is a number of seconds in (0, upper] (or (0, upper)); true/false are not."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value
    if not ok or value > upper or (upper_open and value == upper):
        raise ValueError(f"{name} must be a number of seconds in (0, {upper:g}{')' if upper_open else ']'}{note}, "
                         f"not {value!r}")


# --- the contract --------------------------------------------------------------------------------

class _Contract:
    """What the trade and the book contract share: the options, the link (one per connection:
    URL, subscribe, keepalive, session, greeting, parser), instruments and REST backoff, and how a
    venue class is filled in."""

    NAME: ClassVar[str]
    Options: ClassVar[type[VenueOptions]] = NoOptions
    IDLE_TIMEOUT: ClassVar[float] = 30.0        # s without any bytes before a link is declared dead
    # the parser: Parser(symbols_by_venue_symbol, options).parse(frame, recv_us) -> list of events,
    # one per link (per-connection state such as channel ids lives in it). With GREETING, the
    # parser's ``ready`` turns True on the venue's greeting (KuCoin welcome); the runtime
    # subscribes only after it.
    Parser: ClassVar[type]
    GREETING: ClassVar[bool] = False

    @staticmethod
    def instruments_request() -> HttpRequest:
        raise NotImplementedError

    # how the venue tells a REST client to wait (429/418/...), as data (venues/retry_after.py):
    # a venue sets its own rule only where it differs from the common one
    RETRY_AFTER: ClassVar[RetryAfter] = DEFAULT_RETRY_AFTER

    @staticmethod
    def used_weight(headers: Any) -> int | None:
        """Weight used in the venue's current minute, from a response header; None: not reported."""
        return None

    @staticmethod
    def connect_url(base: str, venue_symbols: list[str], options: VenueOptions, session: object = None) -> str:
        raise NotImplementedError

    @staticmethod
    def subscribe_messages(venue_symbols: list[str], options: VenueOptions, first_id: int = 1) -> list[tuple[Any, str]]:
        raise NotImplementedError

    @staticmethod
    def keepalive(options: VenueOptions, session: object = None) -> tuple[float, Any] | None:
        """(interval s, message or callable) for an application ping; None: protocol pings only."""
        return None

    # links that need a session (KuCoin bullet token): the runtime fetches one per link and rotates
    # make-before-break at 80 % of its ttl. session_request(options) -> HttpRequest.
    session_request: ClassVar[Callable[[VenueOptions], HttpRequest] | None] = None

    @staticmethod
    def parse_session(body: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def session_ttl(session: Any, options: VenueOptions) -> float | None:
        return None

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any] | None) -> VenueOptions:
        """The config's options typed; a ValueError says what is wrong."""
        return cls.Options.parse(raw, cls.NAME)

    @classmethod
    def member(cls, fn, name: str | None = None):
        """Bind a module-level function (or the Parser class) as this venue's contract member of
        the same name (or ``name``); returns it unchanged, so the module keeps it too. A name the
        contract does not declare is a TypeError at import: a typo cannot hide behind a default."""
        name = name or fn.__name__
        contract = [k for k in cls.__mro__[1:] if k is not object]
        if not any(name in vars(k) or name in vars(k).get("__annotations__", {}) for k in contract):
            raise TypeError(f"{cls.__name__}: {name} is not a member of the venue contract (venues/base.py)")
        setattr(cls, name, fn if isinstance(fn, type) else staticmethod(fn))
        return fn


class Venue(_Contract):
    """What a trade venue fills in. Members without a default must be given; the rest default to
    what most venues do. Functions take the venue's typed options (``Options``) where they depend
    on them, and are bound from the venue module with ``@<VenueClass>.member``.

    The runtime reads a venue only through these members (no probing): an optional capability is
    a member that is None (``session_request``, ``auth_messages``, ``first_id_request``,
    ``history_by_time_request``, ``server_time_request``) or a default that says "none"."""

    # identity and endpoints
    LIVE_WS_URL: ClassVar[str]
    LIVE_REST_URL: ClassVar[str]
    MAX_LIFETIME: ClassVar[float] = 0.0         # s after which we reconnect on our terms (0: never)

    # continuity
    LATENESS_US: ClassVar[int] = 2_000_000      # how late a trade may arrive after its venue time
    SEQUENTIAL_IDS: ClassVar[bool] = False      # trade ids +1 per trade per symbol: a jump is a gap
    ID_SPAN_IS_COUNT: ClassVar[bool] = False    # an id span counts trades even across aggregates (OKX)
    # "id" (history_by_id_request / parse_history, REPAIR_PAGE per request), "time"
    # (history_by_time_request / parse_history_page), or None: past trades cannot be had, so holes
    # are recorded unrepairable
    REPAIR_BY: ClassVar[str | None] = None
    REPAIR_PAGE: ClassVar[int] = 1000
    BY_ID_TAKES_LIMIT: ClassVar[bool] = False   # history_by_id_request(..., limit=) pages smaller on asking
    CANDLES_HAVE_TRADE_COUNT: ClassVar[bool] = True
    # historical backfill (backfill/history.py): "id" (first_id_request / first_id_at, or a search
    # over ids from head_request, then by id), "time" (history_by_time_request), or None, with
    # NO_BACKFILL saying why
    BACKFILL_BY: ClassVar[str | None] = None
    NO_BACKFILL: ClassVar[str] = "its module declares no REST history paging (BACKFILL_BY)"

    @classmethod
    def sequence_rules(cls, options: VenueOptions) -> tuple[bool, str | None]:
        """(sequential ids, repair by) under these options; Kraken v1 has no trade ids."""
        return cls.SEQUENTIAL_IDS, cls.REPAIR_BY

    # symbols and instruments
    @staticmethod
    def to_venue_symbol(symbol: str) -> str:
        raise NotImplementedError

    @staticmethod
    def parse_instruments(body: Any) -> list[Instrument]:
        raise NotImplementedError

    # venues that authenticate on the link (Alpaca): auth_messages(options) -> list[str]
    auth_messages: ClassVar[Callable[[VenueOptions], list[str]] | None] = None

    # REST weight budget
    @staticmethod
    def rest_weight_limit(exchange_info: Any) -> int | None:
        """The REST weight budget per minute read from the instruments answer; None: not published."""
        return None

    # the venue clock (server_time_request() -> HttpRequest; None: trust ours)
    server_time_request: ClassVar[Callable[[], HttpRequest] | None] = None

    @staticmethod
    def parse_server_time(body: Any) -> int:
        raise NotImplementedError

    # repair and history by id (REPAIR_BY "id")
    @staticmethod
    def trade_id_int(trade_id: str) -> int:
        return int(trade_id)

    @staticmethod
    def history_by_id_request(venue_symbol: str, from_id: int, options: VenueOptions, **limit: int) -> HttpRequest:
        """Trades with id >= from_id, ascending; with BY_ID_TAKES_LIMIT, ``limit=`` at most."""
        raise NotImplementedError

    @staticmethod
    def parse_history(body: Any, symbol: str, recv_us: int, options: VenueOptions) -> list[Tick]:
        raise NotImplementedError

    # where paging by id starts for a time (first_id_request(venue_symbol, start_us, options)
    # -> HttpRequest; first_id_at(body, options) -> id | None); None: ids cannot be found by time
    first_id_request: ClassVar[Callable[[str, int, VenueOptions], HttpRequest] | None] = None

    @staticmethod
    def first_id_at(body: Any, options: VenueOptions) -> int | None:
        raise NotImplementedError

    # the venue's latest trades (head_request(venue_symbol, options) -> HttpRequest, read by
    # parse_history): where first_id_request is None, the first id at a time is searched for over
    # pages by id (rest/pager.py search_first_id, Coinbase); None: no such search
    head_request: ClassVar[Callable[[str, VenueOptions], HttpRequest] | None] = None

    # history by time (REPAIR_BY "time", or a venue whose REST pages by time):
    # history_by_time_request(venue_symbol, start_us, end_us, options, cursor) -> HttpRequest;
    # None: the venue cannot page its trades by time
    history_by_time_request: ClassVar[Callable[..., HttpRequest] | None] = None

    @staticmethod
    def parse_history_page(body: Any, symbol: str, recv_us: int, options: VenueOptions, start_us: int,
                           end_us: int | None) -> tuple[list[Tick], Any, bool]:
        """-> (ticks, next cursor | None, complete); complete=False: the venue's history ran out."""
        raise NotImplementedError

    # 1-minute candles for reconciliation: candles_request(venue_symbol, start_ms, end_ms) ->
    # HttpRequest; None: the venue publishes none
    candles_request: ClassVar[Callable[[str, int, int], HttpRequest] | None] = None

    @staticmethod
    def parse_candles(body: Any) -> list[dict]:
        """-> [{minute_us, open, high, low, close, volume, trade_count}], oldest first"""
        raise NotImplementedError


class BookVenue(_Contract):
    """What a venue with order books fills in (``venues/<venue>_book.py``). Options are the trade
    venue's (one ``options:`` per venue in the config). ``ingest/books/sync.py`` runs the rules."""

    # "rest": the snapshot is fetched over REST while the stream is buffered (Binance, KuCoin);
    # "ws": the venue sends it in-stream after (re)subscribing (OKX, Kraken)
    SNAPSHOT_FROM: ClassVar[str]
    DEPTH: ClassVar[int | None] = None          # None: a full book; N: a top-N view to truncate

    @classmethod
    def book_depth(cls, options: VenueOptions) -> int | None:
        return cls.DEPTH

    @staticmethod
    def parse_instruments(body: Any) -> dict[str, str]:
        """canonical -> venue symbol"""
        raise NotImplementedError

    # sequencing: stale -> already in the book (drop); aligns -> the first delta after a snapshot
    # may be applied; continues -> the next delta chains onto the book
    @staticmethod
    def stale(book_id: int, d: BookDelta) -> bool:
        raise NotImplementedError

    @staticmethod
    def aligns(book_id: int, d: BookDelta) -> bool:
        raise NotImplementedError

    @staticmethod
    def continues(book_id: int, d: BookDelta) -> bool:
        raise NotImplementedError

    # checksum(book) -> int, only where the venue sends checksums
    checksum: ClassVar[Callable[[LocalBook], int] | None] = None

    @staticmethod
    def resubscribe_messages(venue_symbol: str, options: VenueOptions) -> list[str]:
        """SNAPSHOT_FROM "ws": what asks the venue for a fresh snapshot of one symbol."""
        raise NotImplementedError

    # SNAPSHOT_FROM "rest"
    @staticmethod
    def snapshot_request(venue_symbol: str, options: VenueOptions) -> HttpRequest:
        raise NotImplementedError

    @staticmethod
    def snapshot_headers(options: VenueOptions) -> dict[str, str] | None:
        return None

    @staticmethod
    def parse_snapshot(body: Any, symbol: str, recv_us: int) -> BookSnapshot:
        raise NotImplementedError
